"""Helpers for tests that talk to the real server with tritonclient."""

from __future__ import annotations

import re

import torch
import tritonclient.http as httpclient

from trunkserve.client.transport import text_inputs as _text_inputs

from trunkserve.artifacts import load_head


def text_inputs(texts, pairs=None):
    return _text_inputs(httpclient, texts, pairs)


def infer(client, model, texts, outputs, pairs=None):
    return client.infer(model, text_inputs(texts, pairs), outputs=[httpclient.InferRequestedOutput(o) for o in outputs])


def torch_reference(trunk, tokenizer, head_dir, texts, pairs=None):
    """Serving outputs of trunk + head in one PyTorch process."""
    head, meta = load_head(head_dir)
    enc = tokenizer.encode(texts, pairs)
    t = {k: torch.from_numpy(v) for k, v in enc.as_dict().items()}
    with torch.no_grad():
        hidden = trunk(t["input_ids"], t["attention_mask"], t["token_type_ids"])[trunk.depths.index(meta.branch_layer)]
        outs = head.serving_outputs(hidden, t["attention_mask"])
    names = ["score"] if meta.task_type == "regression" else ["logits", "probabilities"]
    return {n: o.numpy() for n, o in zip(names, outs)}


def execution_counts(client, models):
    stats = client.get_inference_statistics()["model_stats"]
    return {s["name"]: int(s["execution_count"]) for s in stats if s["name"] in models}


def load_count(log_text: str, model: str) -> int:
    return len(re.findall(rf"successfully loaded '{re.escape(model)}'", log_text))
