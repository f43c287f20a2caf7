"""Locust and the CPU breakdown against the real server (the load-test pieces without one: tests/unit/test_loadtest.py)."""

from __future__ import annotations

import json

import pytest

from trunkserve.loadtest.errors import LoadTestError


@pytest.mark.server
def test_short_locust_runs_against_the_server(server, tmp_path):
    from trunkserve.loadtest.run import LoadSpec, run_locust, summarise, write_summary

    spec = LoadSpec(stages="ramp:1:2,hold:2:2,step:2:4", ensemble="multitask", batch_size=2, stop_failure_ratio=0.5)
    run = run_locust(spec, server.http_url, server.grpc_url, tmp_path / "http")
    summary = summarise(run.records, spec)
    paths = write_summary(summary, run.records, tmp_path / "http")
    assert run.returncode == 0, run.log[-2000:]
    assert summary.overall.requests > 10 and summary.overall.failures == 0, summary.errors
    assert [s["users"] for s in summary.stages] == [2, 2, 4]
    assert json.loads(paths["json"].read_text())["overall"]["failures"] == 0
    assert paths["png"].stat().st_size > 1000 and "p99" in paths["md"].read_text()

    mixed = LoadSpec(duration_s=2, users=2, protocol="grpc", mix="sst2:2,stsb:1")
    run = run_locust(mixed, server.http_url, server.grpc_url, tmp_path / "grpc")
    s = summarise(run.records, mixed)
    assert s.overall.failures == 0 and set(s.per_model) == {"sst2", "stsb"}, s.errors


@pytest.mark.server
def test_locust_marks_wrong_model_as_failures_and_stops(server, tmp_path):
    from trunkserve.loadtest.run import LoadSpec, run_locust, summarise

    spec = LoadSpec(duration_s=20, users=1, ensemble="no_such_task", stop_failure_ratio=0.2)
    with pytest.raises(LoadTestError, match="not served .*no_such_task"):  # the runner checks first
        run_locust(spec, server.http_url, server.grpc_url, tmp_path)
    assert not (tmp_path / "records.jsonl").exists()
    run = run_locust(spec, server.http_url, server.grpc_url, tmp_path, check=False)  # Locust on its own
    s = summarise(run.records, spec)
    assert s.overall.failures == s.overall.requests > 0
    assert run.returncode == 3  # stopped by the failure-ratio watcher, long before 20 s
    assert max(r.start for r in run.records) - min(r.start for r in run.records) < 10


@pytest.mark.server
def test_breakdown_splits_server_cpu_by_model(server, built_repo, tmp_path):
    from trunkserve.deployment.layout import group_model_folders
    from trunkserve.export.repository import scan_heads, head_model_name
    from trunkserve.loadtest.breakdown import inprocess_parts, measure_server, render

    srv = measure_server(server, users=2, seconds=2.0, warm_s=2.0, out_dir=tmp_path)
    assert srv.inputs > 0 and srv.failures == 0
    heads = {head_model_name(e.task) for e in scan_heads(built_repo.repo)}
    assert {"triton", "tokenizer", "trunk"} | heads <= set(srv.cpu_ms_per_input)
    assert srv.cpu_ms_per_input["trunk"] > 0 and srv.requests_per_execution["trunk"] >= 1.0
    assert abs(sum(srv.cpu_ms_per_input.values()) - srv.total_ms_per_input) < 0.01

    # in-process runs what multitask runs: the trunk, then one graph per head group (named as the served models)
    groups = {f.name for f in group_model_folders(built_repo.repo)}
    assert groups and groups <= set(srv.cpu_ms_per_input)
    inproc = inprocess_parts(built_repo.repo, inputs=24, batch_size=8)
    assert set(inproc) == {"tokenizer", "trunk"} | groups and all(v > 0 for v in inproc.values())
    table = render(srv, inproc)
    assert "| trunk |" in table and "**total**" in table and "if every step did" in table


@pytest.mark.server
@pytest.mark.slow
def test_ratio_pairs_measure_the_server_and_in_process_in_turn(built_repo, tmp_path):
    from trunkserve.loadtest.compare import BenchConfig, ratio_pairs

    cfg = BenchConfig(ratio_repeats=2, ratio_hold_s=3.0)
    pairs = ratio_pairs(built_repo.repo, cfg, users=2, batch=4, out=tmp_path, log=lambda *_: None)
    assert len(pairs) == 2
    for p in pairs:
        assert p["server_failures"] == 0 and p["server_inputs_per_s"] > 0 and p["inprocess_inputs_per_s"] > 0
        assert p["ratio"] == pytest.approx(p["server_inputs_per_s"] / p["inprocess_inputs_per_s"], abs=1e-3)
    assert (tmp_path / "ratio-0" / "merged-5" / "steps.json").exists()
