"""A graph's integer inputs checked before ONNX Runtime sees them, so a caller's bad ids get a plain 400.

Why: an out-of-range id makes ONNX Runtime's ``Gather`` fail with its internal
node name (a 500, as if the server were at fault), and a negative one is worse:
``Gather`` wraps it round and answers from the wrong embedding row. The bounds
come from the graph itself (each embedding table's row count), so any BERT
width or vocabulary is checked without configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

#: Inputs that hold 0/1 flags whatever the graph says (BERT's mask is turned into additive -inf terms).
FLAG_INPUTS = ("attention_mask",)
_PASS_THROUGH = ("Cast", "Identity", "DequantizeLinear")


class InputError(ValueError):
    """The request's own fault: answered as INVALID_ARGUMENT (HTTP 400), never run."""


def _initializer_rows(graph, name: str, producers: dict) -> int | None:
    """Rows of the table ``name`` is, tracing through casts and int8 dequantisation to an initializer."""
    inits = {i.name: i for i in graph.initializer}
    while name not in inits and name in producers and producers[name].op_type in _PASS_THROUGH:
        name = producers[name].input[0]
    return int(inits[name].dims[0]) if name in inits and inits[name].dims else None


def bounds_from_graph(path: str | Path) -> dict[str, int]:
    """``{input: n}``: the graph's inputs that index a table of ``n`` rows (ids must lie in ``[0, n)``)."""
    import onnx  # only the server's model processes need it, once at load

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name for i in graph.input}
    producers = {out: node for node in graph.node for out in node.output}
    bounds: dict[str, int] = {name: 2 for name in FLAG_INPUTS if name in inputs}
    for node in graph.node:
        if node.op_type == "Gather" and node.input[1] in inputs:
            rows = _initializer_rows(graph, node.input[0], producers)
            if rows is not None:
                bounds[node.input[1]] = min(rows, bounds.get(node.input[1], rows))
    return bounds


def check_feed(feed: Mapping[str, np.ndarray], bounds: Mapping[str, int]) -> None:
    """Raise ``InputError`` naming the input when ids leave their range or inputs disagree on (batch, sequence)."""
    shapes = {name: tuple(a.shape[:2]) for name, a in feed.items() if a.ndim >= 2}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
        raise InputError(f"inputs must share their batch and sequence dimensions; got {listed}")
    for name, n in bounds.items():
        values = feed.get(name)
        if values is None or values.size == 0:
            continue
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= n:
            bad = low if low < 0 else high
            allowed = "0 or 1" if name in FLAG_INPUTS else f"0 to {n - 1}"
            raise InputError(f"{name} holds {bad}; its values must be {allowed}")
