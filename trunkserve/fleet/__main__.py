"""``python -m trunkserve.fleet``: N local replicas on one repository behind HAProxy, until Ctrl-C.

    python -m trunkserve.fleet --repo model_repository --replicas 3              # balancer on :8000 / :8001
    python -m trunkserve.fleet --repo model_repository --prometheus-port 9090    # and Prometheus on :9090
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from trunkserve.server import ServerStartError

from .local import FleetError, LocalFleet


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trunkserve.fleet", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="the one repository every replica serves")
    p.add_argument("--replicas", type=int, default=3, help="tritonserver processes")
    p.add_argument("--http-port", type=int, default=8000, help="the balancer's HTTP port")
    p.add_argument("--grpc-port", type=int, default=8001, help="the balancer's gRPC port")
    p.add_argument("--stats-port", type=int, default=8404, help="the balancer's /metrics and /stats")
    p.add_argument("--prometheus-port", type=int, default=None, help="start Prometheus here (default: none)")
    p.add_argument("--workdir", type=Path, default=Path("build/fleet"), help="logs and rendered configs")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    fleet = LocalFleet(a.repo.resolve(), a.workdir.resolve(), a.replicas, a.http_port, a.grpc_port, a.stats_port,
                       a.prometheus_port)
    try:
        fleet.start()
    except (ServerStartError, FleetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"balancer: http://{fleet.http_url} (gRPC {fleet.grpc_url}); replicas: {', '.join(fleet.replica_urls)}")
    print(f"balancer stats: http://localhost:{a.stats_port}/stats; logs in {a.workdir}")
    if a.prometheus_port:
        print(f"prometheus: http://localhost:{a.prometheus_port}")
    print("Ctrl-C stops the fleet.", flush=True)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
