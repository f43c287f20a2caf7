"""ONNX export: named tensors and axes from the specs, validation against PyTorch, typed errors."""

import numpy as np
import onnx
import pytest
from conftest import DEPTH

from trunkserve.export.errors import GraphMismatchError
from trunkserve.export.onnx_export import export_head, export_trunk
from trunkserve.export.validate import check_interface, compare_with_torch, sentence_feeds
from trunkserve.artifacts import load_head
from trunkserve.modules import HeadGraph, Trunk
from trunkserve.specs import head_spec, trunk_spec


@pytest.fixture(scope="module")
def trunk24(backbone):
    return Trunk.from_state_dict(backbone.config, backbone.state_dict, [2, 4]).freeze()


@pytest.fixture(scope="module")
def trunk_onnx(tmp_path_factory, trunk24):
    path = tmp_path_factory.mktemp("onnx") / "trunk.onnx"
    export_trunk(trunk24, path)
    return path


def test_trunk_names_and_axes(trunk_onnx):
    model = onnx.load(str(trunk_onnx))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in model.graph.output] == ["hidden_2", "hidden_4"]
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence", 384]
    assert all(not n.startswith(("input.", "onnx::")) for n in [*map(lambda v: v.name, model.graph.input)])


def test_trunk_matches_torch_on_real_sentences(trunk_onnx, trunk24, tokenizer):
    spec = trunk_spec([2, 4], 384)
    report = compare_with_torch(trunk_onnx, spec, trunk24, sentence_feeds(tokenizer))
    assert set(report.max_abs_diff) == {"hidden_2", "hidden_4"}
    assert max(report.max_abs_diff.values()) <= 1e-4


def test_dynamic_axes_accept_other_shapes(trunk_onnx):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(trunk_onnx), providers=["CPUExecutionProvider"])
    ids = np.ones((5, 40), dtype=np.int64)
    h2, h4 = sess.run(None, {"input_ids": ids, "attention_mask": ids, "token_type_ids": 0 * ids})
    assert h2.shape == h4.shape == (5, 40, 384)
    # The served trunk skips padding: rows of any length mix, and a batch with no real token runs.
    mask = np.ones((5, 40), dtype=np.int64)
    mask[1, 3:] = 0
    mask[2, 1:] = 0
    h2m, _ = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})
    assert h2m.shape == (5, 40, 384) and np.all(h2m[mask == 0] == 0) and np.isfinite(h2m).all()
    zeros = np.zeros_like(ids)
    h2z, h4z = sess.run(None, {"input_ids": ids, "attention_mask": zeros, "token_type_ids": zeros})
    assert h2z.shape == (5, 40, 384) and not h4z.any()


def test_head_export_and_validation(tmp_path, head_dirs, trunk, tokenizer):
    from trunkserve.export.repository import hidden_feeds

    head, meta = load_head(head_dirs["stsb"])
    path = tmp_path / "head.onnx"
    spec = export_head(head, "stsb", path)
    assert spec.output_names == ["score"]
    report = compare_with_torch(path, spec, HeadGraph(head, served=False), hidden_feeds(trunk, tokenizer, DEPTH))
    assert report.max_abs_diff["score"] <= 1e-4


def test_mismatch_raises_typed_errors(tmp_path, trunk_onnx, trunk24, tokenizer, head_dirs):
    with pytest.raises(GraphMismatchError, match="output names"):
        check_interface(trunk_onnx, trunk_spec([2], 384))
    wrong = Trunk(trunk24.config, [2, 4]).eval()  # random weights: values differ
    with pytest.raises(GraphMismatchError, match="differs from PyTorch"):
        compare_with_torch(trunk_onnx, trunk_spec([2, 4], 384), wrong, sentence_feeds(tokenizer))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(GraphMismatchError, match="not a valid ONNX"):
        check_interface(corrupt, head_spec("x", "classification", 2, 384))
