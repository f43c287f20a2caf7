"""The serving-cost study's parts that need no server: FLOP counting, rates, the Zipf stream, the targets table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_product_costs_two_flops_per_output_element_per_inner_step():
    from trunkserve.loadtest.flops import product_flops

    assert product_flops([{"float": [2, 7, 384]}, {"float": [384, 1536]}], [{"float": [2, 7, 1536]}]) == 2 * 2 * 7 * 1536 * 384
    assert product_flops([{"float": [12, 1, 32]}, {"float": [12, 32, 384]}], [{"float": [12, 1, 384]}]) == 2 * 12 * 384 * 32


def test_profiled_flops_of_the_built_trunk_and_groups_match_bert_arithmetic(built_repo, backbone):
    """k layers of BERT on L tokens: 2L(4h^2 + 2hf) + 4L^2 h each; the heads grow with the group, not with L^2."""
    from trunkserve.deployment.reader import read_heads
    from trunkserve.loadtest.flops import repository_flops

    cfg = backbone.config
    h, f = cfg.hidden_size, cfg.intermediate_size
    k = max(head.entry.branch_layer for head in read_heads(built_repo.repo).values())
    for length in (16, 64):
        got = repository_flops(built_repo.repo, length)
        expected = k * (2 * length * (4 * h * h + 2 * h * f) + 4 * length * length * h)
        assert got.trunk == pytest.approx(expected, rel=0.02), (length, got.trunk, expected)
        assert got.heads and all(0 < v < got.trunk for v in got.heads.values())
    short, long = repository_flops(built_repo.repo, 16), repository_flops(built_repo.repo, 64)
    # one-layer heads read every token only through the attention scores and pooling: nearly flat in L
    assert sum(long.heads.values()) < 1.5 * sum(short.heads.values()) and long.trunk > 3.5 * short.trunk


def test_rates_spread_around_the_saturation_or_grow_from_a_start():
    from trunkserve.loadtest.online import FRACTIONS, planned_rates

    assert planned_rates(200.0) == [round(x * 200.0, 1) for x in FRACTIONS]
    assert planned_rates(None, start=5, factor=2, points=4) == [5.0, 10.0, 20.0, 40.0]


def test_the_zipf_stream_repeats_its_first_ranks_and_keeps_to_its_pool():
    from collections import Counter

    from trunkserve.loadtest.cache_study import zipf_stream

    corpus = [(f"sentence {i}", "") for i in range(500)] + [("sentence 1", "")]  # a duplicate is one input
    stream = zipf_stream(corpus, distinct=100, length=5000, s=1.1, seed=3)
    counts = Counter(stream).most_common()
    assert len(stream) == 5000 and len(counts) <= 100
    assert counts[0][1] > 10 * counts[len(counts) // 2][1]  # the head of the distribution dominates
    assert zipf_stream(corpus, 100, 5000, 1.1, seed=3) == stream and zipf_stream(corpus, 100, 5000, 1.1, seed=4) != stream


def _run(deployment, n, best, capacity=None, cpu=0.01, failures=0):
    curve = {"concurrency_1": {"p50_ms": 12.0, "p99_ms": 30.0}, "capacity": capacity,
             "open_loop": [{"rate": 10.0, "p50_ms": 9.0, "p99_ms": 20.0, "failures": failures}]} if capacity else None
    return {"deployment": deployment, "n": n, "best": {"inputs_per_s": best, "users": 8, "cpu_s_per_input": cpu},
            "steps": [{"users": 8, "failures": 0}], "extra": {"curve": curve} if curve else {}}


def test_targets_are_judged_from_the_figures_of_the_run():
    from trunkserve.loadtest.report import _runs
    from trunkserve.loadtest.report_online import failures_below_saturation, flop_bound, targets

    result = {"config": {"n_main": 5, "latency_bound_ms": 100.0},
              "runs": [_run("merged", 1, 400.0), _run("merged", 5, 300.0, capacity=250.0, cpu=0.006, failures=1),
                       _run("merged", 16, 280.0), _run("merged", 64, 150.0), _run("single-task", 5, 40.0, capacity=40.0)],
              "flops": {"1": 100e6, "5": 120e6, "16": 160e6, "64": 400e6},
              "inprocess": {"5": [{"batch_size": 8, "inputs_per_s": 330.0, "cpu_s_per_input": 0.0054}]},
              "inprocess_c1": {"p50_ms": 10.0, "p99_ms": 20.0},
              "old_defaults": {"best": {"inputs_per_s": 310.0}}}
    runs = _runs(result)
    assert flop_bound(result, runs) == {1: 400.0, 5: 333.3, 16: 250.0, 64: 100.0}
    text = "\n".join(targets(result, runs))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["low load, N=5: c=1 p50 <= 1.3x, p99 <= 2x in-process one at a time"].endswith("1.20x; p99 30.0 vs 20.0 ms = 1.50x | **met** |")
    assert "280.0 / 400.0 = 0.70; FLOP bound 0.62 | **not met**" in rows["scaling: merged N=16 >= 0.75 of N=1"]
    assert "150.0 / 400.0 = 0.38" in rows["scaling: merged N=64 >= 0.5 of N=1"]
    assert "250.0 req/s vs 330.0 inputs/s = 0.76 | **met**" in text and "250.0 vs 40.0 req/s = 6.2x | **met**" in text
    assert "0.0054 / 0.006 = 0.90 | **met**" in text and "300.0 vs 310.0 inputs/s | **not met**" in text
    assert failures_below_saturation(result) == 1


def test_the_report_still_renders_a_result_recorded_before_the_online_sections(tmp_path):
    from trunkserve.loadtest.report import write_report

    result = json.loads((ROOT / "reports" / "serving-cost.json").read_text())
    text = write_report(result, tmp_path).read_text()
    assert "## Sweep over N" in text and "## Targets" in text


def _int8_products(path) -> int:
    import onnx

    return sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(path)).graph.node)


def test_compare_builds_both_deployments_int8_when_asked(tmp_path):
    from trunkserve.deployment.layout import group_model_folders
    from trunkserve.export.configs import ServingOptions
    from trunkserve.export.errors import QuantisationError
    from trunkserve.export.quantised import trunk_quantisation
    from trunkserve.loadtest.deployments import MERGED, SINGLE, build

    with pytest.raises(QuantisationError, match="unknown quantisation scheme"):
        build(MERGED, 2, tmp_path / "bad", ServingOptions(), quantise="int4")
    assert not (tmp_path / "bad").exists()
    merged = build(MERGED, 2, tmp_path, ServingOptions(), quantise="int8-matmul-per-channel")
    assert trunk_quantisation(merged) == "int8-matmul-per-channel"
    assert _int8_products(merged / "trunk/1/model.onnx") and group_model_folders(merged)
    assert all(_int8_products(g / "1/model.onnx") for g in group_model_folders(merged))
    single = build(SINGLE, 1, tmp_path, ServingOptions(), quantise="int8-matmul-per-channel")
    graphs = sorted(single.glob("*/1/model.onnx"))
    assert graphs and all(_int8_products(g) for g in graphs if g.stat().st_size > 10_000_000)
