"""Latency against offered load with open-loop arrivals, and the capacity under a p99 bound.

Why open loop: an online service does not slow its users down when it is slow, so closed-loop
users (who wait for each answer) hide queueing. Here requests arrive at a constant rate whatever
the answers do, each latency counted from its planned arrival (``latency.open_loop``). The rates
are spread around the deployment's closed-loop saturation throughput when it is known (so each
curve has its points where they say something), else they grow geometrically from ``start``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Sequence

import numpy as np

from trunkserve.client.transport import text_inputs

from .latency import Latency, _client, capacity, closed_loop, open_loop

#: Offered rates as fractions of the closed-loop saturation throughput.
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def planned_rates(saturation: float | None, start: float = 5.0, factor: float = 1.6, points: int = 8) -> list[float]:
    """Rates to offer: ``FRACTIONS`` of ``saturation`` (requests/s), else ``start * factor**i``."""
    if saturation:
        return [round(max(0.5, f * saturation), 1) for f in FRACTIONS]
    return [round(start * factor**i, 1) for i in range(points)]


def curve(url: str, inputs: Sequence[tuple[str, str]], rates: Sequence[float], seconds: float, bound_ms: float,
          log=print, label: str = "") -> dict:
    """Concurrency-1 latency, then one open-loop point per rate; stops two points after p99 passes the bound."""
    c1 = closed_loop(url, inputs[: min(len(inputs), 150)])
    log(f"[{label}] concurrency 1: p50 {c1.p50_ms} ms, p99 {c1.p99_ms} ms")
    points: list[Latency] = []
    over = 0
    for r in rates:
        p = open_loop(url, inputs, r, seconds)
        points.append(p)
        log(f"[{label}] {r:g} req/s offered: {p.achieved} answered, p50 {p.p50_ms} ms, p99 {p.p99_ms} ms, "
            f"{p.failures} failed")
        over += p.p99_ms >= bound_ms or p.failures > 0
        if over >= 2:
            break
    return {"concurrency_1": asdict(c1), "open_loop": [asdict(p) for p in points],
            "capacity": capacity(points, bound_ms), "bound_ms": bound_ms}


def saturate(url: str, inputs: Sequence[tuple[str, str]], concurrency: int, seconds: float) -> dict:
    """Closed loop with ``concurrency`` client threads for ``seconds``: answered requests/s, p50/p99, failures."""
    stop, lock = time.perf_counter() + seconds, threading.Lock()
    ms: list[float] = []
    failures = [0]

    def worker(offset: int) -> None:
        mod, c = _client(url)
        i = offset
        while time.perf_counter() < stop:
            text, pair = inputs[i % len(inputs)]
            t = time.perf_counter()
            try:
                c.infer("multitask", text_inputs(mod, [text], [pair]))
                with lock:
                    ms.append((time.perf_counter() - t) * 1000)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                with lock:
                    failures[0] += 1
            i += concurrency
        c.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - t0
    a = np.asarray(ms or [float("nan")])
    return {"concurrency": concurrency, "requests": len(ms), "requests_per_s": round(len(ms) / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "failures": failures[0]}
