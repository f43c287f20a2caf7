"""How long a hot-add takes on one server and on a local fleet of N replicas (target: the fleet under 2x the one).

Why measured, not argued: a fleet add validates and writes once but loads and
canaries on every replica in turn, so its cost over a single server is the
per-replica part; this times both on copies of one repository, on this machine.

    python -m trunkserve.export.fleet_bench --repo model_repository --head artifacts/heads/cola \\
        --replicas 3 --repeat 3 --out reports/fleet/add-time.json

Each add is followed by a remove-head of the same task (not timed), so every
add starts from the same repository. Lives in ``export`` (not ``fleet``)
because it drives the hot-swap operations, which sit above ``trunkserve.fleet``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from trunkserve.fleet.local import REPLICA_ARGS, FleetError, LocalFleet
from trunkserve.server import ServerStartError, TritonProcess

from .admin import ServerControl
from .errors import HotswapError
from .fleet_control import FleetControl
from .hotswap import add_head, remove_head

#: The issue's target: a fleet add on three replicas under twice the single server's.
TARGET_RATIO = 2.0


def time_adds(head: Path, repo: Path, server: ServerControl | FleetControl, repeat: int) -> list[float]:
    """``repeat`` timed add-heads of ``head`` on ``server``, each undone by an (untimed) remove-head."""
    times = []
    for _ in range(repeat):
        t0 = time.monotonic()
        result = add_head(head, repo, server)
        times.append(round(time.monotonic() - t0, 3))
        remove_head(result.task, repo, server)
    return times


def _summary(times: Sequence[float]) -> dict:
    return {"times_s": list(times), "median_s": round(statistics.median(times), 3), "min_s": min(times)}


def _copy(repo: Path, dst: Path) -> Path:
    shutil.copytree(repo, dst)
    return dst


def time_single(head: Path, repo: Path, workdir: Path, repeat: int) -> list[float]:
    """Adds on one tritonserver (explicit mode, as a replica) serving a copy of ``repo``."""
    copy = _copy(repo, workdir / "single" / "model_repository")
    with TritonProcess(copy, workdir / "single" / "tritonserver.log", list(REPLICA_ARGS)) as server:
        control = ServerControl(server.http_url)
        try:
            return time_adds(head, copy, control, repeat)
        finally:
            control.close()


def time_fleet(head: Path, repo: Path, workdir: Path, replicas: int, repeat: int) -> list[float]:
    """Adds over a ``LocalFleet`` of ``replicas`` (behind HAProxy, as in use) serving another copy of ``repo``."""
    copy = _copy(repo, workdir / "fleet" / "model_repository")
    with LocalFleet(copy, workdir / "fleet" / "run", replicas=replicas) as fleet:
        control = FleetControl([ServerControl(u) for u in fleet.replica_urls])
        try:
            return time_adds(head, copy, control, repeat)
        finally:
            control.close()


def bench_add(repo: str | Path, head: str | Path, replicas: int = 3, repeat: int = 3, out: str | Path | None = None,
              workdir: str | Path | None = None) -> dict:
    """Time the adds on one server, then on ``replicas``; the report (also written to ``out`` as JSON)."""
    if repeat < 1 or replicas < 1:
        raise HotswapError(f"--repeat and --replicas must be at least 1 (got {repeat}, {replicas})")
    repo, head = Path(repo).resolve(), Path(head).resolve()
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        single = _summary(time_single(head, repo, work, repeat))
        fleet = _summary(time_fleet(head, repo, work, replicas, repeat))
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = round(fleet["median_s"] / single["median_s"], 2)
    report = {"head": head.name, "replicas": replicas, "repeat": repeat, "single": single, "fleet": fleet,
              "ratio_median": ratio, "ratio_min": round(fleet["min_s"] / single["min_s"], 2),
              "target_ratio": TARGET_RATIO, "meets_target": ratio < TARGET_RATIO,
              "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trunkserve.export.fleet_bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repo", type=Path, required=True, help="the repository to copy (it is not changed)")
    p.add_argument("--head", type=Path, required=True, help="the head folder to add (a task the repository lacks)")
    p.add_argument("--replicas", type=int, default=3, help="replicas in the fleet")
    p.add_argument("--repeat", type=int, default=3, help="timed adds on each")
    p.add_argument("--out", type=Path, default=None, help="write the report here as JSON")
    p.add_argument("--workdir", type=Path, default=None, help="keep the copies and logs here (default: a temporary folder)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        report = bench_add(a.repo, a.head, a.replicas, a.repeat, a.out, a.workdir)
    except (HotswapError, ServerStartError, FleetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s, f = report["single"], report["fleet"]
    print(f"add-head {report['head']}: one server median {s['median_s']:.2f}s (min {s['min_s']:.2f}s); "
          f"{report['replicas']} replicas median {f['median_s']:.2f}s (min {f['min_s']:.2f}s); "
          f"ratio {report['ratio_median']:.2f} (target < {TARGET_RATIO:g}: {'met' if report['meets_target'] else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
