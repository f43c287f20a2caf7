"""Int8 study plumbing on the test repository: scoring order, quantised copy, CLI (real graphs, few GLUE rows)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

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
    q = quantised_copy(built_repo.repo, tmp_path / "int8")
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
