"""Arithmetic per input of a merged repository's graphs, counted from ONNX Runtime's own record of each run.

Why: the report sets the measured throughput against N beside what the graphs' arithmetic alone
would allow (the "FLOP bound"), so the cost of serving, not of computing, shows. Counting from a
profiled run, not from the model's formulas, keeps it true for any backbone and any head shape:
ONNX Runtime records every matrix product's input and output shapes as executed (after its own
fusions), and a product's FLOPs are 2 x (output elements) x (inner dimension). Element-wise
operations, softmax and layer norms are left out (under 2% of a BERT layer's arithmetic).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from trunkserve.deployment.files import read_model_config
from trunkserve.deployment.layout import group_model_folders
from trunkserve.specs import HEAD_HIDDEN

#: Matrix products as ONNX Runtime's CPU provider names them after fusion.
PRODUCTS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulNBits")


def _shape(entry: dict) -> list[int]:
    return next(iter(entry.values()))


def product_flops(inputs: Sequence[dict], outputs: Sequence[dict]) -> int:
    """2 x output elements x inner dimension: the first input's last axis (no ``transA`` in exported BERTs)."""
    out, a = _shape(outputs[0]), _shape(inputs[0])
    return 2 * math.prod(out) * (a[-1] if a else 1)


def profiled_flops(path: str | Path, feeds: Mapping[str, np.ndarray]) -> int:
    """FLOPs of the matrix products in one run of the graph at ``path`` on ``feeds``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "flops")
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        sess.run(None, dict(feeds))
        events = json.loads(Path(sess.end_profiling()).read_text())
    return sum(
        product_flops(e["args"]["input_type_shape"], e["args"]["output_type_shape"])
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["args"].get("op_name") in PRODUCTS
    )


@dataclass
class InputFlops:
    """Per input of one sequence length: the trunk's FLOPs and each head group's (or head's)."""

    length: int
    trunk: int
    heads: dict[str, int]

    @property
    def total(self) -> int:
        return self.trunk + sum(self.heads.values())


def _trunk_feeds(session_inputs, length: int) -> dict[str, np.ndarray]:
    ids = np.full((1, length), 1000, dtype=np.int64)
    make = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i.name: make[i.name] for i in session_inputs}


def repository_flops(repo: str | Path, length: int) -> InputFlops:
    """One input of ``length`` tokens through ``multitask``'s graphs: the trunk, then every head group."""
    import onnxruntime as ort

    repo = Path(repo)
    trunk = _latest(repo / "trunk") / "model.onnx"
    inputs = ort.InferenceSession(str(trunk), providers=["CPUExecutionProvider"]).get_inputs()
    heads = {}
    for group in group_model_folders(repo):
        graph = _latest(group) / "model.onnx"
        hidden = int(read_model_config(group)["input"][0]["dims"][-1])
        names = [i.name for i in ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).get_inputs()]
        feeds = {n: (np.zeros((1, length, hidden), np.float32) if n == HEAD_HIDDEN else np.ones((1, length), np.int64))
                 for n in names}
        heads[group.name] = profiled_flops(graph, feeds)
    return InputFlops(length, profiled_flops(trunk, _trunk_feeds(inputs, length)), heads)


def _latest(model_dir: Path) -> Path:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


def mean_flops(repo: str | Path, lengths: Sequence[int]) -> float:
    """FLOPs per input averaged over the inputs' padded lengths (``lengths``: one per input)."""
    counts = {L: lengths.count(L) for L in set(lengths)}
    per = {L: repository_flops(repo, L).total for L in counts}
    return sum(per[L] * c for L, c in counts.items()) / len(lengths)
