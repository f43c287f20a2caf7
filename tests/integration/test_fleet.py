"""Three real tritonservers on one repository behind a real HAProxy, scraped by a real Prometheus."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from repotools import tree_digest
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


def _perf_analyzer() -> str | None:
    return os.environ.get("TRUNKSERVE_PERF_ANALYZER") or shutil.which("perf_analyzer")


@pytest.mark.skipif(_perf_analyzer() is None, reason="no perf_analyzer ($TRUNKSERVE_PERF_ANALYZER or PATH; docs/fleet.md "
                                                     "says how to get one)")
def test_perf_analyzer_through_the_balancer_reports_throughput_and_no_error(fleet, tmp_path, capsys):
    """Triton's own load generator, pointed at the balancer as at one server: real text into ``multitask``."""
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"data": [{"text": ["a gripping, beautifully acted film."], "text_pair": [""]},
                                         {"text": ["the food was cold."], "text_pair": ["it was cold"]}]}))
    csv = tmp_path / "perf.csv"
    p = subprocess.run([_perf_analyzer(), "-m", "multitask", "-u", fleet.http_url, "-i", "http", "--input-data", str(data),
                        "--concurrency-range", "2", "--measurement-interval", "2000", "--max-trials", "3",
                        "--stability-percentage", "1000", "-f", str(csv)], capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    throughput = re.search(r"Concurrency: 2, throughput: ([0-9.]+) infer/sec", out)
    assert throughput and float(throughput.group(1)) > 0, out[-3000:]
    assert not re.search(r"(?i)error|failed", out), out[-3000:]
    header, row = csv.read_text().splitlines()[:2]
    assert float(dict(zip(header.split(","), row.split(",")))["Inferences/Second"]) > 0
    with capsys.disabled():
        print(f"\n[fleet] perf_analyzer through the balancer, multitask, concurrency 2:\n{p.stdout[-1500:]}")


def test_the_add_time_benchmark_times_one_server_and_a_fleet(built_repo, new_heads, tmp_path):
    """``python -m trunkserve.export.fleet_bench`` on a tiny run: its report's shape, the repository untouched."""
    if not shutil.which("haproxy"):
        pytest.skip("haproxy (Debian package) is installed by .ci/run")
    from trunkserve.export.fleet_bench import main

    files, out = tree_digest(built_repo.repo), tmp_path / "add-time.json"
    assert main(["--repo", str(built_repo.repo), "--head", str(new_heads["qnli"]), "--replicas", "2", "--repeat", "1",
                 "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    assert report["replicas"] == 2 and report["repeat"] == 1 and report["head"] == "qnli"
    for side in ("single", "fleet"):
        assert len(report[side]["times_s"]) == 1 and report[side]["median_s"] == report[side]["min_s"] > 0
    assert report["ratio_median"] == round(report["fleet"]["median_s"] / report["single"]["median_s"], 2)
    assert report["meets_target"] == (report["ratio_median"] < report["target_ratio"] == 2.0)
    assert tree_digest(built_repo.repo) == files, "the benchmark works on copies"
    repo = tmp_path / "work" / "fleet" / "model_repository"
    assert not (repo / "head_qnli").exists() and not (repo / "qnli").exists(), "every add was removed again"
