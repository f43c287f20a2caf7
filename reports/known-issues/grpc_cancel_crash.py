"""Triton 2.51 (the nvidia-pytriton wheel's server, NGC 24.10) can crash or wedge when gRPC clients cancel.

A gRPC call whose deadline passes while Triton works on it is cancelled in the server. On this
server version that path is fragile: upstream issue 7368 ("gRPC Segfaults in Triton 24.08 due to Low
Request Cancellation Timeout", fixed by pull request 7840, merged 2024-11-27, after 24.10) and issue
8034 (a cancellation race, reported on 25.01). This script shows what it does to a trunkserve
repository: gRPC calls to ``multitask`` with a deadline shorter than an answer takes, then one normal
call with 30 s to answer. It prints how many calls were cancelled, whether the server still answers,
whether it segfaulted, and its exit code. Seen here (2026-11-30, N=5 merged repository): one
SIGSEGV, and in other runs the server wedged with requests counted in flight forever in the first
head of ``multitask`` (the normal call got no answer in 30 s; the stop waited out its exit timeout).
HTTP clients cannot cancel on this version, so they do not trigger it: with ``--deadline-ms 20``, two
runs each, gRPC left 2 and 1 ``multitask`` inferences in flight for good (exit code 1 after the 30 s
exit timeout) while HTTP shut down cleanly (exit code 0) both times; ``--deadline-ms 5`` and ``50``
over gRPC with one client for all calls wedged the server in three of three runs.

    python reports/known-issues/grpc_cancel_crash.py --repo model_repository [--deadline-ms 5] [--calls 40] [--protocol http]

``--protocol http`` makes the same calls over HTTP with the same client-side timeout, for comparison.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from trunkserve.client.transport import text_inputs
from trunkserve.server import TritonProcess


def call(server, protocol: str, text: str, timeout_s: float) -> None:
    """One ``multitask`` call that gives up after ``timeout_s`` (gRPC: a deadline, which cancels it in the server)."""
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            client.infer("multitask", text_inputs(grpcclient, [text]), client_timeout=timeout_s)
        finally:
            client.close()
    else:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=timeout_s)
        try:
            client.infer("multitask", text_inputs(httpclient, [text]))
        finally:
            client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", type=Path, default=Path("model_repository"))
    p.add_argument("--deadline-ms", type=float, default=5.0)
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    a = p.parse_args()
    log = Path(tempfile.mkdtemp()) / "tritonserver.log"
    server = TritonProcess(a.repo.resolve(), log).start()
    cancelled = 0
    for _ in range(a.calls):
        try:
            call(server, a.protocol, "a fine film about nothing much", a.deadline_ms / 1000.0)
        except Exception:
            cancelled += 1
    time.sleep(2.0)
    try:
        call(server, a.protocol, "a fine film", 30.0)
        answers = True
    except Exception as exc:
        answers = f"no ({str(exc)[:80]})"
    code = server.stop()
    crashed = "Signal (11) received" in log.read_text()
    print(f"{a.protocol}: {cancelled}/{a.calls} calls cut off by a {a.deadline_ms:g} ms client timeout; server still answers: {answers}; "
          f"SIGSEGV in the log: {crashed}; exit code {code}; log {log}")


if __name__ == "__main__":
    main()
