"""Int8 study plumbing on the test repository: scoring order, quantised copy, CLI (real graphs, few GLUE rows)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import DEPTHS
from loadtest.inprocess import MergedPipeline
from loadtest.int8 import _only, dev_scores, main, quantised_copy, served_outputs
from training.data.glue import default_glue_dir, load_glue_task

GLUE = default_glue_dir()
needs_glue = pytest.mark.skipif(not (GLUE / "SST-2/dev.tsv").exists(), reason="shared GLUE data not present")


@needs_glue
def test_served_outputs_keep_example_order(built_repo):
    pipeline = MergedPipeline(built_repo.repo)
    rows = load_glue_task("mrpc", GLUE, splits=("dev",)).dev["dev"][:14]
    batched = served_outputs(pipeline, rows, batch_size=4)
    one = _only(pipeline, "mrpc")
    for i in (0, 5, 13):
        alone = served_outputs(one, [rows[i]], batch_size=1)["mrpc"]
        np.testing.assert_allclose(batched["mrpc"][i], alone[0], atol=1e-5)
    assert set(batched) == {e.task for e, _ in pipeline.heads}


@needs_glue
def test_quantised_copy_is_int8_smaller_and_scored(built_repo, tmp_path):
    q = quantised_copy(built_repo.repo, tmp_path / "int8", "int8")
    src, dst = built_repo.repo / "trunk/1/model.onnx", q / "trunk/1/model.onnx"
    assert dst.stat().st_size < src.stat().st_size / 2
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(dst)).graph.node)
    f32, _ = dev_scores(MergedPipeline(built_repo.repo), GLUE, max_rows=24)
    i8, metrics = dev_scores(MergedPipeline(q), GLUE, max_rows=24)
    assert set(f32) == set(i8) == {"sst2", "mrpc", "stsb"}
    assert all(np.isfinite(v) for v in i8.values()) and "pearson" in metrics["stsb"]


def test_cli_refuses_to_quantise_in_place(built_repo, capsys):
    with pytest.raises(SystemExit):
        main(["--quantise", str(built_repo.repo), "--into", str(built_repo.repo)])
    assert "must differ" in capsys.readouterr().err


def _quantised_ops(path) -> int:
    return sum(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(path)).graph.node)


def _weight_scales(path) -> list[np.ndarray]:
    """The int8 weights' scale initialisers (``quantize_dynamic`` names them ``<weight>_scale``)."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_scale")]


def test_trunk_only_per_channel_scheme_leaves_heads_float32(built_repo, tmp_path):
    q = quantised_copy(built_repo.repo, tmp_path / "trunk-pc", "int8-trunk-matmul-per-channel")
    assert _quantised_ops(q / "trunk/1/model.onnx") > 0
    for head in ("head_sst2", "head_mrpc", "head_stsb"):
        assert _quantised_ops(q / head / "1/model.onnx") == 0
        assert (q / head / "1/model.onnx").read_bytes() == (built_repo.repo / head / "1/model.onnx").read_bytes()
    scales = _weight_scales(q / "trunk/1/model.onnx")  # MatMul weights only: the embedding tables stay float32
    assert len(scales) == 6 * max(DEPTHS) and all(s.size in (384, 1536) for s in scales)  # one scale per output column


def test_default_scheme_quantises_embeddings_with_one_scale_per_tensor(built_repo, tmp_path):
    q = quantised_copy(built_repo.repo, tmp_path / "pt", "int8")
    scales = _weight_scales(q / "trunk/1/model.onnx")
    assert len(scales) == 6 * max(DEPTHS) + 3 and all(s.size == 1 for s in scales)  # + word, position, token-type tables


def test_unknown_scheme_is_refused(built_repo, tmp_path):
    from loadtest.errors import LoadTestError

    with pytest.raises(LoadTestError, match="unknown quantisation scheme 'int4'.*int8-matmul-per-channel"):
        quantised_copy(built_repo.repo, tmp_path / "x", "int4")
    assert not (tmp_path / "x").exists()


def test_report_shows_each_scheme_against_float32():
    from loadtest.int8 import markdown

    def variant(name, sst2, stsb):
        return {"name": name, "scores": {"sst2": sst2, "stsb": stsb}, "inputs_per_s": 1.0, "cpu_s_per_input": 1.0, "model_mb": 1.0}

    res = {"heads": ["h"], "max_rows": None, "batch_size": 16, "command": "c", "trained_scores": {"sst2": 80.0},
           "schemes": {"int8": "a", "int8-matmul-per-channel": "b"},
           "variants": [variant("float32", 80.0, 84.0), variant("int8", 78.0, 83.0), variant("int8-matmul-per-channel", 79.5, 84.5)]}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in markdown(res).splitlines()
            if line.startswith("| ") and "---" not in line}
    assert rows["sst2"] == ["80.00", "80.00", "78.00 (-2.00)", "79.50 (-0.50)"]
    assert rows["stsb"] == ["-", "84.00", "83.00 (-1.00)", "84.50 (+0.50)"]
    assert rows["**average**"][2:] == ["**80.50 (-1.50)**", "**82.00 (+0.00)**"]


def test_cli_quantises_with_the_default_scheme(built_repo, tmp_path, capsys):
    into = tmp_path / "q"
    assert main(["--quantise", str(built_repo.repo), "--into", str(into)]) == 0
    assert "int8-matmul-per-channel" in capsys.readouterr().out
    for model in ("trunk", "head_sst2"):
        scales = _weight_scales(into / model / "1/model.onnx")
        assert scales and all(s.size > 1 for s in scales)  # per column, and no embedding table among them
