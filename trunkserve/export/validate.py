"""Check an exported ONNX graph against its spec and against PyTorch.

Run on real tokenized sentences (not random ids) so attention masks, padding
and pair segments are exercised. Raises ``GraphMismatchError`` naming what
differs; ``VALIDATION_ATOL`` is the stated tolerance on max abs difference.

Per-token outputs (hidden states) are compared at real tokens only: padded
positions are never read downstream (every attention and the pooler mask them)
and their values are numerically ill-conditioned (ORT's fused kernels differ
there by ~1e-4 while real tokens agree to ~3e-6 on MiniLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import torch

from trunkserve.specs import ATTENTION_MASK, SEQUENCE, GraphSpec

from .errors import GraphMismatchError

VALIDATION_ATOL = 1e-4
VALIDATION_SENTENCES = (
    ("The movie was a delight from start to finish.", ""),
    ("I would not recommend this restaurant to anyone.", ""),
    ("He said the meeting was moved.", "The meeting was rescheduled, he said."),
    ("Short.", ""),
)

_ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.INT64: np.dtype(np.int64),
    onnx.TensorProto.INT32: np.dtype(np.int32),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
}


@dataclass
class ValidationReport:
    graph: str
    max_abs_diff: dict[str, float]
    atol: float

    def __str__(self) -> str:
        diffs = ", ".join(f"{k}={v:.2e}" for k, v in self.max_abs_diff.items())
        return f"{self.graph}: OK (max abs diff {diffs}; atol {self.atol:g})"


def check_interface(path: str | Path, spec: GraphSpec) -> onnx.ModelProto:
    """ONNX checker + names, dtypes and ranks of the graph's inputs/outputs against ``spec``."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for corrupt files
        raise GraphMismatchError(f"{path}: not a valid ONNX model ({exc})") from exc
    for kind, values, specs in (
        ("input", model.graph.input, spec.inputs),
        ("output", model.graph.output, spec.outputs),
    ):
        got = [v.name for v in values]
        want = [s.name for s in specs]
        if got != want:
            raise GraphMismatchError(f"{spec.name}: {kind} names {got} != expected {want}")
        for value, ts in zip(values, specs):
            ttype = value.type.tensor_type
            dtype = _ONNX_TO_NP.get(ttype.elem_type)
            if dtype != ts.dtype:
                raise GraphMismatchError(f"{spec.name}: {kind} {ts.name} has dtype {dtype}, expected {ts.dtype}")
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in ttype.shape.dim]
            if len(dims) != len(ts.axes):
                raise GraphMismatchError(f"{spec.name}: {kind} {ts.name} has rank {len(dims)}, expected {len(ts.axes)}")
            for got_dim, want_dim in zip(dims, ts.axes):
                if isinstance(want_dim, int) and got_dim != want_dim:
                    raise GraphMismatchError(f"{spec.name}: {kind} {ts.name} dims {dims} != {list(ts.axes)}")
    return model


def compare_with_torch(
    path: str | Path,
    spec: GraphSpec,
    torch_fn,
    feeds: Mapping[str, np.ndarray],
    atol: float = VALIDATION_ATOL,
) -> ValidationReport:
    """Run the graph in ONNX Runtime and ``torch_fn(**feeds)``; shapes must match and values agree within ``atol``."""
    import onnxruntime as ort

    check_interface(path, spec)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(spec.output_names, dict(feeds))
    with torch.no_grad():
        want = torch_fn(*[torch.from_numpy(feeds[n]) for n in spec.input_names])
    if isinstance(want, torch.Tensor):
        want = (want,)
    diffs: dict[str, float] = {}
    for name, g, w in zip(spec.output_names, got, want):
        w = w.numpy()
        if g.shape != w.shape:
            raise GraphMismatchError(f"{spec.name}: output {name} shape {g.shape} != PyTorch {w.shape}")
        axes = spec.tensor(name).axes
        if len(axes) > 1 and axes[1] == SEQUENCE and ATTENTION_MASK in feeds:
            real = np.asarray(feeds[ATTENTION_MASK]).astype(bool)
            g, w = g[real], w[real]
        diff = float(np.max(np.abs(g - w))) if g.size else 0.0
        if not np.isfinite(diff) or diff > atol:
            raise GraphMismatchError(f"{spec.name}: output {name} differs from PyTorch by {diff:.3e} > {atol:g}")
        diffs[name] = diff
    return ValidationReport(spec.name, diffs, atol)


def sentence_feeds(tokenizer, sentences: Sequence[tuple[str, str]] = VALIDATION_SENTENCES) -> dict[str, np.ndarray]:
    enc = tokenizer.encode([a for a, _ in sentences], [b for _, b in sentences])
    return enc.as_dict()
