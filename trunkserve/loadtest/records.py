"""Raw per-request records (start time, latency, inputs, ok) and what they summarise to.

Locust's own CSVs round latencies and aggregate over its windows; the runner and
the benchmark need exact percentiles per stage and a latency-over-time plot, so
the locustfile writes every request as one JSON line (``--record-file``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


@dataclass
class Record:
    start: float  # wall clock, seconds
    ms: float
    inputs: int
    ok: bool
    name: str
    error: str = ""


def write_records(path: str | Path, records: Iterable[Record]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")


def read_records(path: str | Path) -> list[Record]:
    text = Path(path).read_text() if Path(path).exists() else ""
    return [Record(**json.loads(line)) for line in text.splitlines() if line.strip()]


@dataclass
class WindowStats:
    """What happened between two wall-clock times (requests counted by start time)."""

    seconds: float
    requests: int
    failures: int
    inputs: int
    requests_per_s: float
    inputs_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


def window_stats(records: Sequence[Record], t0: float, t1: float) -> WindowStats:
    sel = [r for r in records if t0 <= r.start < t1]
    seconds = max(t1 - t0, 1e-9)
    ok = [r for r in sel if r.ok]
    ms = np.array([r.ms for r in sel]) if sel else np.zeros(1)
    q = np.percentile(ms, [50, 95, 99])
    inputs = sum(r.inputs for r in ok)
    return WindowStats(
        seconds=round(seconds, 3),
        requests=len(sel),
        failures=len(sel) - len(ok),
        inputs=inputs,
        requests_per_s=round(len(ok) / seconds, 2),
        inputs_per_s=round(inputs / seconds, 2),
        p50_ms=round(float(q[0]), 2),
        p95_ms=round(float(q[1]), 2),
        p99_ms=round(float(q[2]), 2),
        mean_ms=round(float(ms.mean()), 2),
        max_ms=round(float(ms.max()), 2),
    )
