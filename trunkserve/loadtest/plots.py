"""PNG plots (matplotlib, Agg): latency over time of one run; throughput against N tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .records import Record


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_over_time(records: Sequence[Record], path: str | Path, title: str = "", bin_s: float = 1.0) -> Path:
    """p50/p95/p99 per time bin (by request start) and inputs/s on a second axis; failures in red."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if records:
        t0 = min(r.start for r in records)
        t = np.array([r.start - t0 for r in records])
        ms = np.array([r.ms for r in records])
        bins = np.arange(0, t.max() + bin_s, bin_s)
        idx = np.digitize(t, bins) - 1
        centers, pct, rate = [], [], []
        for b in range(len(bins)):
            sel = idx == b
            if sel.any():
                centers.append(bins[b] + bin_s / 2)
                pct.append(np.percentile(ms[sel], [50, 95, 99]))
                rate.append(sum(r.inputs for r, s in zip(records, sel) if s and r.ok) / bin_s)
        pct = np.array(pct)
        for i, label in enumerate(("p50", "p95", "p99")):
            ax.plot(centers, pct[:, i], label=label)
        bad = [(tt, m) for tt, m, r in zip(t, ms, records) if not r.ok]
        if bad:
            ax.scatter(*zip(*bad), color="red", s=8, label="failed")
        ax2 = ax.twinx()
        ax2.plot(centers, rate, color="grey", alpha=0.5, linestyle="--", label="inputs/s")
        ax2.set_ylabel("inputs/s")
        ax2.legend(loc="upper right")
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def throughput_vs_tasks(series: dict[str, tuple[Sequence[int], Sequence[float]]], path: str | Path, title: str) -> Path:
    """One line per deployment: best inputs/s (p99 under the bound) against the number of tasks."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (ns, values) in series.items():
        ax.plot(ns, values, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tasks served (N)")
    ax.set_ylabel("inputs/s, every task answered")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
