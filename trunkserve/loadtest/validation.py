"""Is a response right? Output names and shapes from the model's metadata, probabilities sum to 1.

Checks go beyond "no error status": a response missing an output, with the
wrong batch size, or whose probabilities are not the softmax of its logits is
a failed request in the load test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ResponseInvalid

PROB_ATOL = 1e-3


@dataclass(frozen=True)
class ExpectedOutputs:
    """Output name -> dims after the batch axis (-1: any)."""

    dims: dict[str, tuple[int, ...]]

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ExpectedOutputs":
        """From Triton model metadata (JSON form): shapes include the batch axis first."""
        return cls({o["name"]: tuple(int(d) for d in o["shape"][1:]) for o in metadata["outputs"]})

    @cached_property
    def names(self) -> list[str]:
        return sorted(self.dims)

    @cached_property
    def probability_names(self) -> list[str]:
        return [n for n in self.names if n.endswith("probabilities")]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_response(outputs: dict[str, np.ndarray | None], expected: ExpectedOutputs, batch: int) -> None:
    """Raise ``ResponseInvalid`` saying what is wrong; return None if the response is right.

    Runs in the load generator for every response, on the same cores as the
    server under test, so it sticks to a few whole-array reductions with an
    absolute tolerance (``np.allclose`` on these tiny arrays was about half of
    a Locust user's CPU time per request).
    """
    missing = [n for n in expected.names if outputs.get(n) is None]
    if missing:
        raise ResponseInvalid(f"missing outputs {missing}")
    for name, dims in expected.dims.items():
        arr = outputs[name]
        if arr.shape[0] != batch or len(arr.shape) != 1 + len(dims) or any(
            d != -1 and d != s for d, s in zip(dims, arr.shape[1:])
        ):
            raise ResponseInvalid(f"{name}: shape {arr.shape}, expected ({batch}, {', '.join(map(str, dims))})")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ResponseInvalid(f"{name}: non-finite values")
    for name in expected.probability_names:
        p = outputs[name].astype(np.float64)
        sums = p.sum(axis=-1)
        if p.min() < -PROB_ATOL or np.abs(sums - 1.0).max() > PROB_ATOL:
            raise ResponseInvalid(f"{name}: rows sum to {sums.round(4).tolist()}, not 1")
        logits = outputs.get(name[: -len("probabilities")] + "logits")
        if logits is not None and np.abs(_softmax(logits.astype(np.float64)) - p).max() > PROB_ATOL:
            raise ResponseInvalid(f"{name}: not the softmax of the logits")
