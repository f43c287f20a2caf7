"""Merging the requests of one dynamic batch into as few graph runs as possible.

Triton hands a Python model a list of requests. Requests whose inputs share the
same non-batch shape (same length bucket) are concatenated and run once; the
outputs are split back by each request's batch size.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Mapping, Sequence

import numpy as np

Feeds = Mapping[str, np.ndarray]


def group_by_shape(feeds: Sequence[Feeds]) -> dict[tuple, list[int]]:
    """Indices of requests grouped by the non-batch shapes of all their inputs."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(feeds):
        key = tuple((name, f[name].shape[1:]) for name in sorted(f))
        groups[key].append(i)
    return groups


def run_batched(
    feeds: Sequence[Feeds], run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """Call ``run`` once per shape group on concatenated inputs; return per-request outputs in order."""
    results: list[dict[str, np.ndarray] | None] = [None] * len(feeds)
    for indices in group_by_shape(feeds).values():
        for i, out in zip(indices, _run_group(feeds, indices, run)):
            results[i] = out
    return results  # type: ignore[return-value]


def run_isolated(
    feeds: Sequence[Feeds], run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray] | Exception]:
    """``run_batched``, but a request that makes ``run`` fail costs only itself its answer.

    Why: the dynamic batcher puts unrelated clients' requests into one
    execution. A group that fails is run again one request at a time, so the
    good requests in it still get their outputs and each bad one gets its own
    exception; a failure is rare, so the happy path is the batched one.
    """
    results: list[dict[str, np.ndarray] | Exception | None] = [None] * len(feeds)
    for indices in group_by_shape(feeds).values():
        try:
            outs: list = _run_group(feeds, indices, run)
        except Exception as exc:  # noqa: BLE001 - reported per request below
            outs = [exc] if len(indices) == 1 else [_run_one(feeds[i], run) for i in indices]
        for i, out in zip(indices, outs):
            results[i] = out
    return results  # type: ignore[return-value]


def _run_one(feed: Feeds, run) -> dict[str, np.ndarray] | Exception:
    try:
        return run(dict(feed))
    except Exception as exc:  # noqa: BLE001
        return exc


def _run_group(feeds: Sequence[Feeds], indices: list[int], run) -> list[dict[str, np.ndarray]]:
    names = list(feeds[indices[0]])
    merged = {n: np.concatenate([feeds[i][n] for i in indices], axis=0) for n in names}
    outputs = run(merged)
    offsets = np.cumsum([0, *(feeds[i][names[0]].shape[0] for i in indices)])
    return [{k: v[offsets[j] : offsets[j + 1]] for k, v in outputs.items()} for j in range(len(indices))]
