"""CPU time and memory of a process and all its descendants (Triton + its Python-backend stubs).

``CpuSampler`` polls the tree's CPU seconds on a thread so that the CPU used
in any time window (a load stage) can be read afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants, root first; empty if it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class Memory:
    processes: int
    rss_mb: float  # sum of resident sets (shared pages counted in each process)
    pss_mb: float  # proportional set size: shared pages split between processes


def tree_memory(pid: int) -> Memory:
    rss = pss = 0.0
    n = 0
    for p in process_tree(pid):
        try:
            m = p.memory_full_info()
            rss += m.rss
            pss += getattr(m, "pss", m.rss)
            n += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return Memory(n, round(rss / 2**20, 1), round(pss / 2**20, 1))


class CpuSampler:
    """Samples (wall time, tree CPU seconds) every ``interval_s`` until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, float]] = []
        self.peak: Memory | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_cpu_seconds(self.pid)))
            if i % 10 == 0:  # memory is slower to read: every ~5 s
                m = tree_memory(self.pid)
                if self.peak is None or m.rss_mb > self.peak.rss_mb:
                    self.peak = m
            i += 1
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), tree_cpu_seconds(self.pid)))

    def cpu_between(self, t0: float, t1: float) -> float:
        """CPU seconds used between two wall times (linear between samples)."""
        import numpy as np

        if len(self.samples) < 2:
            return 0.0
        ts, cs = zip(*self.samples)
        return float(np.interp(t1, ts, cs) - np.interp(t0, ts, cs))
