"""Export side: PyTorch trunk/heads -> validated ONNX -> a Triton model repository, and its hot-swap tools.

Modules, top to bottom (pyproject.toml's ``export-layers`` contract keeps imports one way):
``cli`` with ``*_cli`` and ``cli_options`` (thin CLIs); ``hotswap`` (add/swap/rollback/remove/list
heads), ``baseline``, ``tensorrt``; ``operation`` (the operations' shared preamble, canaries and
``multitask`` rewrite); ``inspection`` (a head checked offline), ``admin`` (Triton's repository API),
``transaction`` (undo log), ``repo_lock``; ``quantised``, ``deployed`` (the deployed trunk run
offline); ``repository`` (writes the whole ``model_repository/``); ``onnx_export``, ``shims``,
``validate`` (ONNX Runtime vs PyTorch), ``quality``, ``fit`` (does a head fit the trunk),
``ensembles``; ``configs`` (``config.pbtxt`` from Triton's protobuf), ``names``; ``errors``.

The layout, what each config says (written by ``configs``, parsed back for every reader) and the
lock are the core contract's, ``trunkserve.deployment``, which the Python-backend runtime uses too.
"""
