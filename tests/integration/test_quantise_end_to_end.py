"""Int8 on a backbone that is not MiniLM: train, build, quantise, serve, infer, hot-add, on a random 128-wide BERT.

Why: every size the quantiser needs (width, attention heads, vocabulary) must come
from the repository, never MiniLM's 384 / 12; a 4-head, 128-wide BERT fails the
moment one literal is left. Everything is real: training through ``train_heads``,
``build_repository``, ``python -m trunkserve.export quantise``, ``tritonserver`` and ``trunkserve.client``.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import onnx
import pytest

HIDDEN, HEADS, LAYERS = 128, 4, 2
DEPTH = 1  # the trunk runs one layer; each head fine-tunes the other

TASKS = {
    "reviews": {"good": ["a wonderful, moving film", "great acting and a clever plot", "i loved every minute", "superb and funny"],
                "bad": ["a dull, lifeless mess", "boring and far too long", "i hated every minute", "awful script and acting"]},
    "topic": {"sport": ["the striker scored twice", "a late goal won the match", "the team trained all week", "he ran the marathon"],
              "food": ["the soup was too salty", "fresh bread and butter", "we baked a lemon cake", "a spicy curry with rice"]},
}


def random_bert(folder, backbone, seed: int = 0):
    """A random BERT of ``HIDDEN`` width and ``HEADS`` attention heads in Hugging Face layout, MiniLM's tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                  intermediate_size=4 * HIDDEN, vocab_size=backbone.config.vocab_size)
    transformers.BertModel(cfg).save_pretrained(str(folder))
    for f in backbone.tokenizer_files():
        shutil.copy2(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, backbone):
    """Both tasks' heads trained on the random BERT (a few steps each): ``(bert folder, {task: head folder})``."""
    from trunkserve.training.pipeline import train_heads

    root = tmp_path_factory.mktemp("bert_h128")
    bert = random_bert(root / "bert", backbone)
    custom = {}
    for task, classes in TASKS.items():
        rows = [{"text": t, "label": label} for label, texts in classes.items() for t in texts]
        f = root / f"{task}.jsonl"
        f.write_text("\n".join(json.dumps(r) for r in rows * 6) + "\n")
        custom[task] = {"train": str(f), "dev": str(f)}
    train_heads(list(TASKS), out=root / "heads", custom=custom, backbone=bert, depths=(DEPTH,), epochs=10, max_train=48,
                max_val=8, min_steps=0, refit_steps=0, lr=1e-3, progress=False, log=lambda *_: None)
    return bert, {task: root / "heads" / task for task in TASKS}


def _int8_ops(path) -> int:
    return sum(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(path)).graph.node)


def _valid_probabilities(result: dict, labels: set[str]) -> None:
    probs = result["probabilities"]
    assert set(probs) == labels and all(0.0 <= p <= 1.0 for p in probs.values()), result
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-3), result
    softmax = np.exp(result["logits"]) / np.exp(result["logits"]).sum()
    np.testing.assert_allclose(sorted(probs.values()), sorted(softmax), atol=1e-3)
    assert result["label"] == max(probs, key=probs.get)


@pytest.mark.server
def test_a_128_wide_4_head_bert_trains_quantises_serves_and_takes_a_hot_added_head(trained, tmp_path):
    from trunkserve.client import TrunkserveClient
    from trunkserve.export.cli import main
    from trunkserve.export.graph_tuning import GraphSizes, repository_sizes
    from trunkserve.export.hotswap import ServerControl, add_head
    from trunkserve.export.quantised import trunk_quantisation
    from trunkserve.export.repository import build_repository
    from trunkserve.server import TritonProcess

    bert, heads = trained
    built = build_repository([heads["reviews"]], tmp_path / "repo", backbone=bert, depths=[DEPTH]).repo
    q = tmp_path / "repo_int8"
    assert main(["quantise", "--repo", str(built), "--out", str(q)]) == 0  # the CLI, over ``quantised_copy``
    assert repository_sizes(q) == GraphSizes(hidden_size=HIDDEN, num_heads=HEADS, vocab_size=30522)
    assert trunk_quantisation(q) == "int8-matmul-per-channel"
    assert _int8_ops(q / "trunk/1/model.onnx") > 0 and _int8_ops(q / "head_reviews/1/model.onnx") > 0

    proc = TritonProcess(q, tmp_path / "tritonserver.log", extra_args=["--model-control-mode=explicit", "--load-model=*"]).start()
    control, client = ServerControl(proc.http_url), TrunkserveClient(proc.http_url)
    try:
        texts = ["what a great film", "a dull and boring plot", "it was fine, i suppose"]
        for result in client.infer("reviews", texts):
            _valid_probabilities(result, set(TASKS["reviews"]))
        added = add_head(heads["topic"], q, control)  # checked against the float32 trunk, then through the server
        assert added.canary_diff is not None and added.canary_diff <= 1e-3
        assert any("quantised (int8-matmul-per-channel)" in n for n in added.notes)
        assert set(client.tasks()) >= {"reviews", "topic", "multitask"}
        for result in client.infer("topic", ["the goalkeeper saved a penalty", "a bowl of noodles"]):
            _valid_probabilities(result, set(TASKS["topic"]))
        both = client.infer("multitask", ["a clever plot and a late goal"])[0]["results"]
        for task in TASKS:
            _valid_probabilities(both[task], set(TASKS[task]))
    finally:
        client.close()
        control.close()
        assert proc.stop() == 0, proc.log_tail()
