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
        names = list(feeds[indices[0]])
        merged = {n: np.concatenate([feeds[i][n] for i in indices], axis=0) for n in names}
        outputs = run(merged)
        sizes = [feeds[i][names[0]].shape[0] for i in indices]
        offsets = np.cumsum([0, *sizes])
        for j, i in enumerate(indices):
            results[i] = {k: v[offsets[j] : offsets[j + 1]] for k, v in outputs.items()}
    return results  # type: ignore[return-value]
