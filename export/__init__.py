"""Export side: PyTorch trunk/heads -> validated ONNX -> a Triton model repository.

Modules: ``onnx_export`` (graphs with named tensors and axes), ``validate``
(ONNX Runtime vs PyTorch), ``configs`` (``config.pbtxt`` from Triton's protobuf),
``repository`` (writes the whole ``model_repository/``), ``cli`` (thin CLI).
"""
