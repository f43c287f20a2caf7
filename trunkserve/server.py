"""Start and stop a local ``tritonserver`` (through the launcher) on free ports.

Used by the tests, the demo and the load-test runner: one place that knows how
to wait for readiness, keep the log, and shut the server down cleanly
(SIGINT, which Triton handles by unloading models, then SIGKILL as a last resort).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.error import URLError
from urllib.request import urlopen


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message holds the log's tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TritonProcess:
    repository: Path
    log_path: Path
    extra_args: Sequence[str] = ()
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    def command(self) -> list[str]:
        launcher = Path(sys.executable).parent / "tritonserver"
        cmd = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "trunkserve.launcher"]
        return [
            *cmd,
            f"--model-repository={self.repository}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def start(self, timeout_s: float = 180.0) -> "TritonProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(f"tritonserver not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (URLError, OSError):
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGINT and wait (Triton unloads models and exits); SIGKILL the group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def __enter__(self) -> "TritonProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
