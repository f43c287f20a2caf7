"""Export side: PyTorch trunk/heads -> validated ONNX -> a Triton model repository, and its hot-swap tools.

Modules, top to bottom (pyproject.toml's ``export-layers`` contract keeps imports one way):
``cli`` with ``*_cli`` and ``cli_options`` (thin CLIs); ``hotswap`` (add/swap/rollback/remove/list
heads), ``baseline``, ``tensorrt``, ``quantise`` (an int8 copy of a repository); ``operation`` (the
operations' shared preamble, canaries and ``multitask`` rewrite); ``inspection`` (a head checked
offline), ``admin`` (Triton's repository API), ``transaction`` (undo log), ``repo_lock``; ``quantised``
(a quantised repository's float32 trunk and canaries), ``deployed`` (the deployed trunk run offline);
``repository`` (writes the whole ``model_repository/``); ``head_groups`` (the heads of one depth as one
graph); ``onnx_export``, ``shims``, ``validate`` (ONNX Runtime vs PyTorch), ``quality``, ``fit`` (does a
head fit the trunk), ``ensembles``, ``graph_tuning`` (ORT fusion and int8 of the graphs, sizes read from
the repository); ``configs`` (``config.pbtxt`` from Triton's protobuf), ``names``, ``quant_schemes``;
``errors``.

The layout, what each config says (written by ``configs``, parsed back for every reader) and the
lock are the core contract's, ``trunkserve.deployment``, which the Python-backend runtime uses too.
"""
