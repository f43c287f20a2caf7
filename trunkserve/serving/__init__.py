"""Code behind the Python-backend models; each ``model.py`` in the repository is a shim over it.

``batching`` (merge/split requests, pure numpy), ``tokenizer_runtime`` and
``onnx_runtime`` (the work, testable without Triton), ``triton_models`` (the
``TritonPythonModel`` classes that adapt them to ``triton_python_backend_utils``).
"""
