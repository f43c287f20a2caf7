"""Load tests and the serving-cost benchmark for trunkserve.

``locustfile.py`` (Locust users for Triton over HTTP and gRPC, traffic options,
staged load shape) is what ``locust -f`` runs; ``run`` starts a server, runs
Locust headless and summarises; ``compare`` measures the merged deployment
against one-model-per-task serving and in-process ONNX Runtime.

Modules here import neither gevent nor Locust unless they are the Locust side
(``locustfile``, ``users``, ``shapes``), so the benchmark side stays unpatched.
"""
