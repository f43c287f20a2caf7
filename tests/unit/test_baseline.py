"""The single-task baseline repository: full-model shapes, configs that parse, and it serves."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from conftest import BASELINE_TASKS as TASKS
from trunkserve.export import configs
from trunkserve.export.baseline import build_baseline_repository, full_model_name, make_full_model
from trunkserve.export.errors import RepositoryError
from trunkserve.bert import BertConfig  # noqa: F401  (import check: full model built from the same blocks)


def test_every_config_parses_and_names_match(baseline_repo):
    repo = baseline_repo.repo
    names = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
    assert names == ["model_sst2", "model_stsb", "multitask", "sst2", "stsb", "tokenizer"]
    for name in names:
        assert configs.read_config(repo / name).name == name
    multi = configs.read_config(repo / "multitask")
    assert [s.model_name for s in multi.ensemble_scheduling.step] == ["tokenizer", "model_sst2", "model_stsb"]
    assert {o.name for o in multi.output} == {"truncated", "sst2_logits", "sst2_probabilities", "stsb_score"}


def test_full_model_has_every_layer(baseline_repo, backbone):
    graph = onnx.load(str(baseline_repo.repo / full_model_name("sst2") / "1" / "model.onnx"))
    params = sum(int(np.prod(t.dims)) for t in graph.graph.initializer)
    full = sum(v.numel() for k, v in backbone.state_dict.items() if "position_ids" not in k)
    assert params >= 0.98 * full, f"{params} parameters in the graph, the full encoder has {full}"
    assert baseline_repo.model_bytes > 2 * 4 * 0.98 * full


def test_full_model_graph_matches_torch(baseline_repo, backbone, tokenizer):
    import onnxruntime as ort

    enc = tokenizer.encode(["a fine film", "dull"], ["", ""]).as_dict()
    sess = ort.InferenceSession(str(baseline_repo.repo / "model_sst2" / "1" / "model.onnx"))
    logits, probs = sess.run(["logits", "probabilities"], enc)
    with torch.no_grad():
        ref = make_full_model(backbone, TASKS[0], seed=0)(*(torch.from_numpy(enc[n]) for n in ("input_ids", "attention_mask", "token_type_ids")))
    np.testing.assert_allclose(logits, ref[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_duplicate_tasks_refused(tmp_path, backbone):
    with pytest.raises(RepositoryError, match="duplicate"):
        build_baseline_repository([TASKS[0], TASKS[0]], out=tmp_path / "r", backbone=backbone)


