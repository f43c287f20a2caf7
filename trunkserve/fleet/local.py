"""N local Triton replicas on one repository behind HAProxy, optionally scraped by Prometheus.

Why real processes: a fleet's failure modes (a replica that is not ready, one that
stops, a balancer that keeps routing to it) only show with the real server and the
real balancer; this is what the fleet tests and ``make fleet`` run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Sequence
from urllib.error import URLError
from urllib.parse import quote
from urllib.request import urlopen

from trunkserve.server import ServerStartError, TritonProcess, free_port

HERE = Path(__file__).resolve().parent
HAPROXY_TEMPLATE = HERE / "haproxy.cfg.tmpl"
PROMETHEUS_CONFIG = HERE / "prometheus.yml"
#: Triton flags every replica gets: explicit control (a replica that starts late loads the repository as it is now),
#: latency summaries (p99 per model is a Prometheus series), and readiness that means "serving": with Triton's
#: default strict readiness one model loading, reloading or failed takes the whole replica out of the balancer.
REPLICA_ARGS = ("--model-control-mode=explicit", "--load-model=*", "--metrics-config=summary_latencies=true",
                "--strict-readiness=false")


class FleetError(RuntimeError):
    """A part of the local fleet (a replica, the balancer, Prometheus) did not start or is missing."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FleetError(f"{name} is not installed (Debian: apt-get install {name})")
    return path


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except (URLError, OSError):
        return 0, b""


def _wait(check, what: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise FleetError(f"{what} exited with {proc.returncode}:\n{tail}")
        if check():
            return
        time.sleep(0.3)
    raise FleetError(f"{what} not ready after {timeout_s:.0f}s")


def render_haproxy(http_servers: Sequence[str], grpc_servers: Sequence[str], http_port: int, grpc_port: int,
                   stats_port: int, bind: str = "127.0.0.1", resolvers: str = "", template: Path = HAPROXY_TEMPLATE) -> str:
    return Template(template.read_text()).substitute(
        bind=bind, http_port=http_port, grpc_port=grpc_port, stats_port=stats_port, resolvers=resolvers,
        http_servers="\n".join(f"    {s}" for s in http_servers), grpc_servers="\n".join(f"    {s}" for s in grpc_servers))


def haproxy_config(replicas: Sequence[TritonProcess], http_port: int, grpc_port: int, stats_port: int,
                   bind: str = "127.0.0.1") -> str:
    """The balancer's configuration for these replicas (HTTP and gRPC, readiness checks on each HTTP port)."""
    http = [f"server r{i} 127.0.0.1:{r.http_port} check" for i, r in enumerate(replicas)]
    grpc = [f"server r{i} 127.0.0.1:{r.grpc_port} proto h2 check port {r.http_port} check-proto h1"
            for i, r in enumerate(replicas)]
    return render_haproxy(http, grpc, http_port, grpc_port, stats_port, bind)


#: Docker's embedded DNS answers a service name with every replica's address (docker/docker-compose.yml).
COMPOSE_RESOLVERS = """
resolvers docker
    nameserver dns 127.0.0.11:53
    accepted_payload_size 8192
    hold valid 5s
"""


def compose_haproxy_config(service: str = "triton", replicas: int = 3) -> str:
    """docker/haproxy.cfg: the same balancer, its servers found by DNS (``server-template``) as replicas come and go."""
    dns = "resolvers docker init-addr none"
    http = [f"server-template {service} {replicas} {service}:8000 check {dns}"]
    grpc = [f"server-template {service} {replicas} {service}:8001 proto h2 check port 8000 check-proto h1 {dns}"]
    return render_haproxy(http, grpc, 8000, 8001, 8404, bind="", resolvers=COMPOSE_RESOLVERS)


@dataclass
class LocalFleet:
    """``replicas`` tritonservers on ``repository``, HAProxy on ``http_port``/``grpc_port``, optional Prometheus."""

    repository: Path
    workdir: Path
    replicas: int = 3
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    prometheus_port: int | None = None  # None: no Prometheus
    replica_args: Sequence[str] = REPLICA_ARGS
    servers: list[TritonProcess] = field(default_factory=list)
    _balancer: subprocess.Popen | None = None
    _prometheus: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def replica_urls(self) -> list[str]:
        return [s.http_url for s in self.servers]

    def start(self, timeout_s: float = 240.0) -> "LocalFleet":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for _ in range(self.replicas):
                self.start_replica(timeout_s)
            self._start_balancer()
            if self.prometheus_port is not None:
                self._start_prometheus()
        except (ServerStartError, FleetError):
            self.stop()
            raise
        return self

    def start_replica(self, timeout_s: float = 240.0) -> TritonProcess:
        """One more replica on the same repository (it loads the repository's current state)."""
        server = TritonProcess(self.repository, self.workdir / f"replica{len(self.servers)}.log", list(self.replica_args))
        self.servers.append(server)
        server.start(timeout_s)
        return server

    def write_balancer_config(self) -> Path:
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.servers, self.http_port, self.grpc_port, self.stats_port))
        return cfg

    def _start_balancer(self, tries: int = 3) -> None:
        """HAProxy on the fleet's ports; where one of them was taken since it was picked (``free_port`` cannot hold
        a port, and any outgoing connection may get it as its source port), on fresh ones."""
        for attempt in range(tries):
            try:
                return self._run_balancer()
            except FleetError as exc:
                if "Address already in use" not in str(exc) or attempt == tries - 1:
                    raise
                self.http_port, self.grpc_port, self.stats_port = free_port(), free_port(), free_port()

    def _run_balancer(self) -> None:
        cfg, log = self.write_balancer_config(), self.workdir / "haproxy.log"
        check = subprocess.run([_tool("haproxy"), "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise FleetError(f"haproxy rejected {cfg}:\n{check.stdout}{check.stderr}")
        with open(log, "ab") as out:
            self._balancer = subprocess.Popen([_tool("haproxy"), "-db", "-f", str(cfg)], stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True)
        ready = f"http://{self.http_url}/v2/health/ready"
        _wait(lambda: _get(ready)[0] == 200, "haproxy", 30, self._balancer, log)

    def write_prometheus_targets(self) -> None:
        targets = self.workdir / "prometheus" / "targets"
        targets.mkdir(parents=True, exist_ok=True)
        triton = [{"targets": [f"127.0.0.1:{s.metrics_port}" for s in self.servers], "labels": {"fleet": "local"}}]
        balancer = [{"targets": [f"127.0.0.1:{self.stats_port}"], "labels": {"fleet": "local"}}]
        for name, value in (("triton", triton), ("balancer", balancer)):
            tmp = targets / f".{name}.json"
            tmp.write_text(json.dumps(value))
            tmp.replace(targets / f"{name}.json")  # Prometheus never reads a half-written file

    def _start_prometheus(self) -> None:
        home = self.workdir / "prometheus"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROMETHEUS_CONFIG, home / "prometheus.yml")
        self.write_prometheus_targets()
        log = home / "prometheus.log"
        with open(log, "ab") as out:
            self._prometheus = subprocess.Popen(
                [_tool("prometheus"), f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.prometheus_port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
        ready = f"http://127.0.0.1:{self.prometheus_port}/-/ready"
        _wait(lambda: _get(ready)[0] == 200, "prometheus", 60, self._prometheus, log)

    def query(self, promql: str) -> list[dict]:
        """An instant PromQL query against the fleet's Prometheus: the result vector."""
        status, body = _get(f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?query={quote(promql)}", timeout=5)
        if status != 200:
            raise FleetError(f"prometheus query failed ({status}): {promql}")
        return json.loads(body)["data"]["result"]

    def stop(self) -> None:
        for proc in (self._prometheus, self._balancer):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for server in self.servers:
            server.stop()

    def __enter__(self) -> "LocalFleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
