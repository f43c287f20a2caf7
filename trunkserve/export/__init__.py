"""Export side: PyTorch trunk/heads -> validated ONNX -> a Triton model repository, and its hot-swap tools.

Modules, top to bottom (pyproject.toml's ``export-layers`` contract keeps imports one way):
``cli`` with ``*_cli`` and ``cli_options`` (thin CLIs); ``hotswap`` (add/swap/rollback/remove/list
heads), ``baseline``, ``tensorrt``, ``quantise`` (an int8 copy of a repository); ``inspection`` (a
head checked offline), ``admin`` (Triton's repository API), ``transaction`` (undo log), ``repo_lock``;
``quantised`` (a quantised repository's float32 trunk and canaries), ``deployed`` (the deployed
repository read back); ``repository`` (writes the whole ``model_repository/``); ``onnx_export``,
``shims``, ``validate`` (ONNX Runtime vs PyTorch), ``quality``, ``graph_tuning`` (ORT fusion and
int8 of the graphs, sizes read from the repository); ``configs`` (``config.pbtxt`` from Triton's
protobuf), ``names`` (the layout's names), ``quant_schemes``; ``errors``.
"""
