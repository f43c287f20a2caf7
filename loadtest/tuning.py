"""Offline graph tuning of a built repository: ORT's BERT fusions and optional int8 dynamic quantisation.

Both rewrite every ``model.onnx`` of a repository in place (trunk, heads, and
the baseline's full models alike, so a comparison stays fair), and check each
rewritten graph against the original on real token ids before keeping it.
Fusion (fused Attention, SkipLayerNorm, BiasGelu) changes no result beyond
float rounding; int8 quantisation does, so it is never on by default.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import LoadTestError

FUSED_ATOL = 1e-3


@dataclass
class GraphChange:
    model: str
    fused: dict
    max_abs_diff: float
    bytes_before: int
    bytes_after: int


def _feeds(sess, seq: int = 24, batch: int = 3, hidden: int = 384) -> dict:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "hidden_states":
            feeds[i.name] = rng.standard_normal((batch, seq, hidden)).astype(np.float32)
        elif i.name == "attention_mask":
            m = np.ones((batch, seq), np.int64)
            m[1, seq // 2:] = 0
            feeds[i.name] = m
        elif i.name == "token_type_ids":
            feeds[i.name] = np.zeros((batch, seq), np.int64)
        else:
            feeds[i.name] = rng.integers(1000, 5000, (batch, seq)).astype(np.int64)
    return feeds


def _run(path: Path, feeds=None):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = feeds or _feeds(sess)
    return feeds, sess.run(None, feeds)


def tune_graph(path: Path, fuse: bool = True, quantize: bool = False, num_heads: int = 12, hidden_size: int = 384,
               atol: float | None = FUSED_ATOL, per_channel: bool = False,
               op_types: Sequence[str] | None = None) -> GraphChange:
    """Fuse and/or quantise one graph in place.

    ``per_channel``: one int8 scale per output column of each weight; ``op_types``: the
    operators to quantise (default: every type ``quantize_dynamic`` handles).
    """
    from onnxruntime.transformers import optimizer

    path = Path(path)
    before = path.stat().st_size
    original = path.with_suffix(".orig.onnx")
    shutil.copy2(path, original)
    try:
        feeds, ref = _run(original)
        fused: dict = {}
        if fuse:
            opt = optimizer.optimize_model(str(original), model_type="bert", num_heads=num_heads,
                                           hidden_size=hidden_size, opt_level=0)
            fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
            opt.save_model_to_file(str(path))
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = path.with_suffix(".q.onnx")
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=list(op_types) if op_types else None,
                             extra_options={"DefaultTensorType": 1})  # 1 = FLOAT
            tmp.replace(path)
        _, out = _run(path, feeds)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, out))
        if atol is not None and diff > atol:
            shutil.copy2(original, path)
            raise LoadTestError(f"{path}: tuned graph differs from the original by {diff:.2e} (> {atol})")
    finally:
        original.unlink(missing_ok=True)
    return GraphChange(path.parent.parent.name, fused, round(diff, 6), before, path.stat().st_size)


def tune_repository(repo: str | Path, fuse: bool = True, quantize: bool = False, per_channel: bool = False,
                    models: Sequence[str] | None = None, op_types: Sequence[str] | None = None) -> list[GraphChange]:
    """Tune the ONNX graphs of ``repo`` in place: every model's, or only those of ``models`` (folder names).

    ``quantize`` skips the parity bound (see the int8 report).
    """
    changes = []
    for path in sorted(Path(repo).glob("*/1/model.onnx")):
        if models is not None and path.parent.parent.name not in models:
            continue
        changes.append(tune_graph(path, fuse=fuse, quantize=quantize, atol=None if quantize else FUSED_ATOL,
                                  per_channel=per_channel, op_types=op_types))
    if not changes:
        raise LoadTestError(f"{repo}: no */1/model.onnx to tune")
    return changes
