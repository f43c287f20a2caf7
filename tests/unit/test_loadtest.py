"""Load-test pieces without a server (shapes, traffic, validation, corpus, stats) and a short real Locust run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from trunkserve.loadtest.compare import Step, best_step
from trunkserve.loadtest.corpus import Sampler, read_corpus_file, read_glue_dev
from trunkserve.loadtest.errors import CorpusError, LoadTestError, ResponseInvalid
from trunkserve.loadtest.records import Record, window_stats
from trunkserve.loadtest.shapes import parse_stages, shape_at
from trunkserve.loadtest.traffic import Traffic, parse_mix
from trunkserve.loadtest.validation import ExpectedOutputs, check_response


def test_stages_ramp_hold_step():
    stages = parse_stages("ramp:10:8,hold:5:8,step:5:16")
    assert shape_at(stages, 0.0) == (8, pytest.approx(0.8))
    assert shape_at(stages, 12.0)[0] == 8
    assert shape_at(stages, 16.0) == (16, 1000.0)
    assert shape_at(stages, 20.5) is None
    for bad in ("ramp:10", "jump:1:2", "hold:-1:2", "hold:x:2"):
        with pytest.raises(LoadTestError):
            parse_stages(bad)


def test_mix_weights_are_followed():
    traffic = Traffic(mix=parse_mix("sst2:3,mrpc"))
    rng = random.Random(0)
    picks = [traffic.pick(rng) for _ in range(4000)]
    assert set(picks) == {"sst2", "mrpc"}
    assert 0.70 < picks.count("sst2") / len(picks) < 0.80
    assert Traffic(ensemble="stsb").pick(rng) == "stsb"
    with pytest.raises(LoadTestError):
        parse_mix("sst2:0")


EXPECTED = ExpectedOutputs({"truncated": (1,), "a_logits": (2,), "a_probabilities": (2,), "b_score": (1,)})


def _good(batch=2):
    logits = np.array([[0.5, -0.5], [2.0, 1.0]], dtype=np.float32)[:batch]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return {
        "truncated": np.zeros((batch, 1), bool),
        "a_logits": logits,
        "a_probabilities": (e / e.sum(-1, keepdims=True)).astype(np.float32),
        "b_score": np.ones((batch, 1), np.float32),
    }


def test_validation_accepts_a_right_response():
    check_response(_good(), EXPECTED, 2)


@pytest.mark.parametrize(
    "breaks, message",
    [
        (lambda o: o.pop("b_score"), "missing"),
        (lambda o: o.__setitem__("a_logits", o["a_logits"][:1]), "shape"),
        (lambda o: o.__setitem__("a_probabilities", o["a_probabilities"] * 0.5), "sum"),
        (lambda o: o.__setitem__("a_probabilities", np.array([[1.5, -0.5], [0.5, 0.5]], np.float32)), "sum"),
        (lambda o: o.__setitem__("a_probabilities", o["a_probabilities"][:, ::-1].copy()), "softmax"),
        (lambda o: o.__setitem__("b_score", np.full((2, 1), np.nan, np.float32)), "non-finite"),
    ],
)
def test_validation_rejects_wrong_responses(breaks, message):
    out = _good()
    breaks(out)
    with pytest.raises(ResponseInvalid, match=message):
        check_response(out, EXPECTED, 2)


def test_corpus_reads_glue_layout_and_files(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\n\t0\n")
    (tmp_path / "MRPC").mkdir()
    (tmp_path / "MRPC" / "dev.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA b.\tC d.\n", encoding="utf-8")
    assert sorted(read_glue_dev(tmp_path)) == [("A b.", "C d."), ("good film", "")]
    f = tmp_path / "c.txt"
    f.write_text("one\n\ntwo\tpair\n")
    assert read_corpus_file(f) == [("one", ""), ("two", "pair")]
    texts, pairs = Sampler(read_corpus_file(f), seed=1).batch(5)
    assert len(texts) == len(pairs) == 5
    with pytest.raises(CorpusError):
        read_glue_dev(tmp_path / "nothing")


def test_window_stats_and_best_step():
    recs = [Record(100.0 + i * 0.01, float(i + 1), 2, i != 50, "m") for i in range(100)]
    w = window_stats(recs, 100.0, 101.0)
    assert (w.requests, w.failures, w.inputs) == (100, 1, 198)
    assert w.p50_ms == pytest.approx(50.5) and w.p99_ms == pytest.approx(99.01)
    steps = [Step(1, 10, 5, 6, 7, 50, 0, 0.1, 1), Step(4, 30, 50, 60, 400, 50, 0, 0.1, 1),
             Step(8, 40, 300, 500, 900, 50, 0, 0.1, 1), Step(16, 35, 9, 9, 9, 50, 2, 0.1, 1)]
    assert best_step(steps, 500).users == 4


def test_a_bad_load_spec_fails_before_any_server_or_request(tmp_path, capsys):
    from trunkserve.loadtest.run import LoadSpec, main, preflight
    from trunkserve.server import free_port

    for kwargs, message in (
        ({"users": 0}, "at least 1 user"),
        ({"duration_s": 0}, "positive duration"),
        ({"spawn_rate": 0}, "spawn rate"),
        ({"mix": "sst2=1"}, "name:weight"),
        ({"mix": "sst2:-1"}, "must be > 0"),
        ({"batch_size": 0}, "batch size"),
    ):
        with pytest.raises(LoadTestError, match=message):
            LoadSpec(**kwargs)
    with pytest.raises(CorpusError, match="does not exist"):
        preflight(LoadSpec(corpus=str(tmp_path / "none.tsv")), "localhost:1")
    with pytest.raises(LoadTestError, match="cannot reach Triton"):
        preflight(LoadSpec(), f"localhost:{free_port()}")
    assert main(["--repo", str(tmp_path / "no_repository"), "--duration", "2", "--out", str(tmp_path / "o")]) == 2
    assert "ServerStartError" in capsys.readouterr().err


def test_bert_fusion_keeps_a_head_graph_exact(head_dirs, tmp_path):
    from trunkserve.export.onnx_export import export_head
    from trunkserve.export.graph_tuning import tune_graph
    from trunkserve.artifacts import load_head

    head, meta = load_head(head_dirs["sst2"])
    path = tmp_path / "head" / "1" / "model.onnx"
    export_head(head, meta.task, path)
    change = tune_graph(path, fuse=True)
    # The head's last layer attends from [CLS] only, so ORT's fused Attention (self-attention
    # over one input) does not apply; the layer's norms and GELU still fuse, outputs unchanged.
    assert change.fused.get("SkipLayerNormalization", 0) >= 1 and change.max_abs_diff < 1e-3


def test_stub_processes_are_attributed_to_their_model():
    from trunkserve.loadtest.breakdown import model_of

    stub = ["/x/backends/python/triton_python_backend_stub", "/srv/repo/head_sst2/1/model.py", "shm", "1048576"]
    assert model_of(stub) == "head_sst2"
    assert model_of(["/usr/bin/python3", "-m", "locust"]) is None


def test_ceilings_price_steps_at_their_in_process_cost():
    from trunkserve.loadtest.breakdown import ceilings

    served = {"triton": 1.0, "trunk": 4.0, "head_a": 2.0, "tokenizer": 1.0}
    inproc = {"trunk": 3.0, "head_a": 0.5, "tokenizer": 0.5}
    c = ceilings(served, inproc)
    assert c == {"measured": 0.5, "steps_in_process_but_trunk": round(4 / 6, 3), "every_step_in_process": 0.8}
    assert ceilings(served, inproc, keep=("trunk", "head_a"))["steps_in_process_but_trunk_head_a"] == round(4 / 7.5, 3)


def test_report_quotes_the_median_of_the_ratio_pairs(tmp_path):
    from pathlib import Path

    from trunkserve.loadtest.report import write_report

    result = json.loads((Path(__file__).resolve().parents[2] / "reports" / "serving-cost.json").read_text())
    result["ratio_pairs"] = [
        {"users": 64, "server_inputs_per_s": s, "server_p99_ms": 250.0, "server_failures": 0, "batch_size": 16,
         "inprocess_inputs_per_s": 400.0, "ratio": s / 400.0}
        for s in (280.0, 360.0, 320.0)
    ]
    text = write_report(result, tmp_path).read_text()
    assert "**median 0.80x** (range 0.70 to 0.90)" in text
    assert "280.0 / 400.0 = 0.70" in text


def test_capacity_is_the_highest_rate_under_the_bound_without_failures():
    from trunkserve.loadtest.latency import Latency, capacity

    points = [Latency(100, 10, 40, 0, 20), Latency(100, 12, 90, 0, 40), Latency(100, 30, 95, 2, 60),
              Latency(100, 80, 300, 0, 80)]
    assert capacity(points, 100) == 40  # 60/s stayed under the bound but lost requests
    assert capacity(points, 30) is None
