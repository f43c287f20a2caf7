"""Three real tritonservers on one repository behind a real HAProxy, scraped by a real Prometheus."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from servertools import execution_counts, infer
from trunkserve.client.api import TrunkserveClient
from trunkserve.fleet.local import FleetError, LocalFleet, haproxy_config
from trunkserve.server import free_port

pytestmark = pytest.mark.server
needs_tools = pytest.mark.skipif(not (shutil.which("haproxy") and shutil.which("prometheus")),
                                 reason="haproxy and prometheus (Debian packages) are installed by .ci/run")


@pytest.fixture(scope="module")
def fleet(built_repo, tmp_path_factory):
    if not (shutil.which("haproxy") and shutil.which("prometheus")):
        pytest.skip("haproxy and prometheus (Debian packages) are installed by .ci/run")
    f = LocalFleet(built_repo.repo, tmp_path_factory.mktemp("fleet"), replicas=3, prometheus_port=free_port())
    f.start()
    yield f
    f.stop()


def _until(condition, timeout_s: float = 30.0, every: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return condition()


def test_the_rendered_balancer_config_is_accepted_by_haproxy(tmp_path):
    if not shutil.which("haproxy"):
        pytest.skip("haproxy is installed by .ci/run")
    import subprocess

    from trunkserve.server import TritonProcess

    replicas = [TritonProcess(tmp_path, tmp_path / f"{i}.log") for i in range(2)]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(replicas, free_port(), free_port(), free_port()))
    p = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    text = cfg.read_text()
    assert text.count("check port") == 2 and "option httpchk GET /v2/health/ready" in text


def test_the_client_works_through_the_balancer_over_http_and_grpc(fleet):
    answer = TrunkserveClient(fleet.http_url).infer("sst2", ["a fine film"])[0]
    assert answer["label"] in ("negative", "positive")
    over_grpc = TrunkserveClient(fleet.grpc_url, protocol="grpc").infer("sst2", ["a fine film"])[0]
    assert over_grpc["probabilities"] == pytest.approx(answer["probabilities"], abs=1e-5)
    assert grpcclient.InferenceServerClient(fleet.grpc_url).is_server_ready()


def test_requests_are_spread_over_every_replica(fleet):
    before = [execution_counts(httpclient.InferenceServerClient(u), ["head_sst2"])["head_sst2"] for u in fleet.replica_urls]
    c = httpclient.InferenceServerClient(fleet.http_url)
    for i in range(30):
        infer(c, "sst2", [f"sentence number {i}"], ["probabilities"])
    after = [execution_counts(httpclient.InferenceServerClient(u), ["head_sst2"])["head_sst2"] for u in fleet.replica_urls]
    assert all(a > b for a, b in zip(after, before)), (before, after)


def test_prometheus_sees_per_task_series_rising_under_load(fleet):
    query = 'sum(nv_inference_request_success{model="head_sst2"})'

    def total():
        result = fleet.query(query)
        return float(result[0]["value"][1]) if result else None

    start = _until(lambda: total() is not None and len(fleet.query('up{job="triton"} == 1')) == 3)
    assert start, "Prometheus never saw the three replicas"
    first = total()
    c = TrunkserveClient(fleet.http_url)
    for i in range(12):
        c.infer("sst2", [f"load {i}"])
    assert _until(lambda: (total() or 0) >= first + 12), (first, total())
    assert fleet.query('up{job="balancer"} == 1'), "the balancer's own metrics are not scraped"


def test_a_replica_that_stops_under_load_costs_no_request(fleet, built_repo):
    """The balancer stops routing to a replica that is going away (readiness check, redispatch on refusal)."""
    failures, done, stop = [], [], threading.Event()

    def load():
        c = TrunkserveClient(fleet.http_url)
        while not stop.is_set():
            try:
                c.infer("sst2", ["steady traffic"])
                done.append(1)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(2)
    leaving = fleet.servers[-1]
    assert leaving.stop() == 0
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(30)
    fleet.servers.pop()
    assert not failures, failures[:3]
    assert len(done) > 10
    fleet.start_replica()  # back to three for the tests after this one
    fleet.write_balancer_config()


def test_a_missing_balancer_is_a_clear_error(built_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FleetError, match="haproxy is not installed"):
        LocalFleet(built_repo.repo, tmp_path, replicas=0).start()


def test_every_metric_the_dashboard_plots_is_exported_by_the_fleet(fleet):
    """deploy/grafana's panels query series that the real replicas and the real balancer export."""
    import json
    import re
    from pathlib import Path
    from urllib.request import urlopen

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/trunkserve-fleet.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b((?:nv|haproxy)_[a-z_]+)", e)}
    TrunkserveClient(fleet.http_url).infer("sst2", ["warm the counters"])
    exported = "".join(urlopen(f"http://localhost:{s.metrics_port}/metrics", timeout=5).read().decode() for s in fleet.servers)
    exported += urlopen(f"http://localhost:{fleet.stats_port}/metrics", timeout=5).read().decode()
    assert names and not {n for n in names if not re.search(rf"^{n}[{{ ]", exported, re.M)}, names
    assert any('{model="head_sst2"' in line for line in exported.splitlines() if line.startswith("nv_inference_request_success"))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_locust_drives_the_fleet_through_the_balancer(fleet, tmp_path, protocol):
    from trunkserve.loadtest.run import LoadSpec, run_locust

    run = run_locust(LoadSpec(users=4, duration_s=5, protocol=protocol, ensemble="multitask"),
                     fleet.http_url, fleet.grpc_url, tmp_path)
    assert len(run.records) > 10, run.log[-2000:]
    assert all(r.ok for r in run.records), [r.error for r in run.records if not r.ok][:3]
