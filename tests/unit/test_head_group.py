"""Head groups: every head of one depth as one wide graph, equal to the per-head models and PyTorch."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import DEPTH

from trunkserve.artifacts import load_head, read_canary
from trunkserve.bert import BertConfig
from trunkserve.canary import DEFAULT_CANARY_TEXTS
from trunkserve.export.errors import GraphMismatchError, RepositoryError
from trunkserve.export.head_groups import (
    export_group_from_folders,
    export_head_group,
    group_heads,
    group_name,
    group_outputs,
    validate_head_group,
)
from trunkserve.export.inspection import compare_canary
from trunkserve.export.onnx_export import export_head
from trunkserve.export.repository import hidden_feeds
from trunkserve.export.validate import sentence_feeds
from trunkserve.head_group import HeadGroup, HeadGroupError, load_group
from trunkserve.modules import Head
from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN
from trunkserve.synthetic import make_untrained_head

CONFIG = BertConfig()  # the packaged MiniLM's architecture (384 hidden, 12 attention heads)
TOL = 1e-4


def mixed_heads(num_layers: int, seed: int = 0) -> dict[str, Head]:
    """A 2-label, a 3-label and a regression head with random weights."""
    torch.manual_seed(seed)
    heads = {
        "two": Head(CONFIG, num_layers, 2),
        "three": Head(CONFIG, num_layers, 3),
        "score": Head(CONFIG, num_layers, 1, "regression"),
    }
    return {t: h.eval() for t, h in heads.items()}


def padded_batch(batch: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random hidden states and a mask with rows of several lengths (the first row full)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, CONFIG.hidden_size, generator=g)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).to(torch.int64)
    return hidden, mask


def per_head(heads: dict[str, Head], hidden, mask) -> list[torch.Tensor]:
    with torch.no_grad():
        return [o for h in heads.values() for o in h.serving_outputs(hidden, mask, served=False)]


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 17), (6, 64)])
def test_group_matches_each_head_in_pytorch(num_layers, batch, seq):
    heads = mixed_heads(num_layers)
    group = HeadGroup(heads)
    hidden, mask = padded_batch(batch, seq)
    with torch.no_grad():
        got = group(hidden, mask)
    want = per_head(heads, hidden, mask)
    assert [tuple(t.shape) for t in got] == [(batch, 2), (batch, 2), (batch, 3), (batch, 3), (batch, 1)]
    for name, g, w in zip(group.spec("g").output_names, got, want):
        torch.testing.assert_close(g, w, atol=TOL, rtol=0, msg=name)
    # The heads really differ, so a group that mixed them up would fail above.
    assert (want[0] - per_head({"x": mixed_heads(num_layers, seed=1)["two"]}, hidden, mask)[0]).abs().max() > 1e-2


def test_padded_positions_do_not_reach_the_outputs():
    heads = mixed_heads(1)
    group = HeadGroup(heads)
    hidden, mask = padded_batch(4, 20, seed=3)
    noisy = hidden.clone()
    noisy[mask == 0] = 1e3 * torch.randn(int((mask == 0).sum()), CONFIG.hidden_size)
    assert (mask == 0).any()
    with torch.no_grad():
        for a, b in zip(group(hidden, mask), group(noisy, mask)):
            torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_probabilities_cover_each_heads_own_labels():
    group = HeadGroup(mixed_heads(1))
    with torch.no_grad():
        _, p2, _, p3, _ = group(*padded_batch(5, 9))
    torch.testing.assert_close(p2.sum(-1), torch.ones(5))
    torch.testing.assert_close(p3.sum(-1), torch.ones(5))
    assert (p3 > 0).all()


def test_heads_of_another_shape_are_refused(head_dirs):
    torch.manual_seed(0)
    with pytest.raises(HeadGroupError, match="layers"):
        HeadGroup({"a": Head(CONFIG, 1, 2), "b": Head(CONFIG, 2, 2)})
    other = BertConfig(intermediate_size=768)
    with pytest.raises(HeadGroupError, match="intermediate_size"):
        HeadGroup({"a": Head(CONFIG, 1, 2), "b": Head(other, 1, 2)})
    with pytest.raises(HeadGroupError, match="at least one"):
        HeadGroup({})
    with pytest.raises(HeadGroupError, match="one branch depth"):
        load_group([head_dirs["sst2"], head_dirs["mrpc"]])  # the fixture puts them at different depths


@dataclass
class Entry:
    task: str
    branch_layer: int
    num_layers: int = 1


def test_group_heads_by_depth_and_layer_count():
    entries = [Entry("sst2", 3), Entry("cola", 2), Entry("rte", 3), Entry("mrpc", 3, 2), Entry("stsb", 2)]
    assert group_heads(entries) == {"heads_d2": ["cola", "stsb"], "heads_d3": ["rte", "sst2"], "heads_d3_l2": ["mrpc"]}
    assert group_name(3) == "heads_d3" and group_name(2, 2) == "heads_d2_l2"
    with pytest.raises(RepositoryError, match="heads_d3"):
        group_heads([Entry("sst2", 3), Entry("heads_d3", 2)])
    with pytest.raises(RepositoryError, match="twice"):
        group_heads([Entry("sst2", 3), Entry("sst2", 3)])


@pytest.fixture(scope="module")
def mixed_dirs(tmp_path_factory, backbone, trunk, head_dirs):
    """The fixture's heads at the first depth (2-label sst2, regression stsb) plus a 3-label head there."""
    root = tmp_path_factory.mktemp("group_heads")
    three = make_untrained_head(backbone, root / "nli", "nli", labels=["a", "b", "c"], branch_layer=DEPTH, seed=7,
                                trunk=trunk)
    return [head_dirs["sst2"], three, head_dirs["stsb"]]


@pytest.fixture(scope="module")
def group_onnx(tmp_path_factory, mixed_dirs, trunk, tokenizer):
    path = tmp_path_factory.mktemp("group_onnx") / "model.onnx"
    spec, report = export_group_from_folders(mixed_dirs, path, hidden_feeds(trunk, tokenizer, DEPTH))
    return path, spec, report


def test_onnx_group_matches_each_head_on_real_trunk_outputs(group_onnx):
    _, spec, report = group_onnx
    assert spec.name == group_name(DEPTH)
    assert spec.output_names == ["sst2_logits", "sst2_probabilities", "nli_logits", "nli_probabilities", "stsb_score"]
    assert set(report.max_abs_diff) == set(spec.output_names)
    assert max(report.max_abs_diff.values()) <= TOL


def test_onnx_group_takes_other_batch_and_length(group_onnx, mixed_dirs):
    path, spec, _ = group_onnx
    heads = {load_head(d)[1].task: load_head(d)[0] for d in mixed_dirs}
    hidden, mask = padded_batch(7, 45, seed=5)
    got = group_outputs(path, {HEAD_HIDDEN: hidden.numpy(), ATTENTION_MASK: mask.numpy()})
    for name, want in zip(spec.output_names, per_head(heads, hidden, mask)):
        np.testing.assert_allclose(got[name], want.numpy(), atol=TOL, rtol=0, err_msg=name)


def test_each_heads_canary_passes_through_the_group(group_onnx, mixed_dirs, trunk, tokenizer):
    path, _, _ = group_onnx
    feeds = hidden_feeds_for(trunk, tokenizer, DEFAULT_CANARY_TEXTS)
    got = group_outputs(path, feeds)
    for folder in mixed_dirs:
        task, canary = load_head(folder)[1].task, read_canary(folder)
        assert compare_canary(got, canary, f"{task}_") <= canary["atol"]


def hidden_feeds_for(trunk, tokenizer, texts):
    feeds = sentence_feeds(tokenizer, texts)
    with torch.no_grad():
        outs = trunk(*[torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask", "token_type_ids")])
    return {HEAD_HIDDEN: outs[trunk.depths.index(DEPTH)].numpy(), ATTENTION_MASK: feeds[ATTENTION_MASK]}


def test_validation_catches_a_group_of_other_heads(group_onnx, mixed_dirs, head_dirs, trunk, tokenizer):
    path, spec, _ = group_onnx
    feeds = hidden_feeds(trunk, tokenizer, DEPTH)
    heads = {load_head(d)[1].task: load_head(d)[0] for d in mixed_dirs}
    swapped = {**heads, "sst2": load_head(head_dirs["mrpc"])[0]}  # same shape, other weights
    with pytest.raises(GraphMismatchError, match="sst2_"):
        validate_head_group(path, spec, swapped, feeds)
    reordered = dict(reversed(list(heads.items())))
    with pytest.raises(GraphMismatchError, match="not those of heads"):
        validate_head_group(path, spec, reordered, feeds)


@pytest.mark.parametrize("task", ["sst2", "stsb"])
def test_one_head_alone_equals_its_head_graph(tmp_path, head_dirs, trunk, tokenizer, task):
    import onnxruntime as ort

    head, meta = load_head(head_dirs[task])
    feeds = hidden_feeds(trunk, tokenizer, meta.branch_layer)
    spec = export_head_group(HeadGroup({task: head}), group_name(meta.branch_layer), tmp_path / "group.onnx")
    head_spec = export_head(head, task, tmp_path / "head.onnx")
    got = group_outputs(tmp_path / "group.onnx", feeds)
    want = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert spec.output_names == [f"{task}_{n}" for n in head_spec.output_names]
    for name, w in zip(spec.output_names, want):
        np.testing.assert_allclose(got[name], w, atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_onnx_group_of_random_mixed_heads(tmp_path, num_layers):
    heads = mixed_heads(num_layers, seed=2)
    spec = export_head_group(HeadGroup(heads), "heads_dx", tmp_path / "group.onnx")
    for batch, seq in [(1, 3), (5, 33)]:
        hidden, mask = padded_batch(batch, seq, seed=batch)
        feeds = {HEAD_HIDDEN: hidden.numpy(), ATTENTION_MASK: mask.numpy()}
        report = validate_head_group(tmp_path / "group.onnx", spec, heads, feeds)
        assert max(report.max_abs_diff.values()) <= TOL
