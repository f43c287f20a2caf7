"""Many Triton replicas on one model repository, behind a real load balancer, with metrics.

``local``: N ``tritonserver`` processes on this machine plus HAProxy (and optionally
Prometheus), for trying a fleet and for the tests (``python -m trunkserve.fleet``,
``make fleet``). The Kubernetes form of the same fleet is in ``deploy/kubernetes/``.
"""
