"""What a fleet adds to the hot-swap operations' output: ``list-heads`` counted over replicas, the per-replica report.

Why apart from ``export.hotswap``: the operations themselves run unchanged
on a ``FleetControl`` (``export.fleet_control``); only reading back what every
replica serves, and saying it per replica, is fleet-specific.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from trunkserve.deployment.layout import head_model_name, head_task

from .fleet_control import FleetControl
from .hotswap import list_heads


def list_fleet_heads(repo: str | Path, fleet: FleetControl) -> list[dict]:
    """``list_heads`` over every replica: per head, on how many it is ready at each version, and any drift.

    A head whose newest version on disk is not ready everywhere, an older
    version still served somewhere, or a head served that the repository no
    longer holds is drift: the fleet should serve the repository, all of it.
    """
    fleet.reach()
    rows = list_heads(repo, fleet)
    index = fleet.replica_states()
    urls, ready_on = list(index), defaultdict(list)  # (model, version) -> the replicas where it is READY
    for url, models in index.items():
        for m in models:
            if m.get("state") == "READY":
                ready_on[(m["name"], str(m.get("version", "")))].append(url)
    for row in rows:
        _count(row, ready_on, urls)
    known = {head_model_name(r["task"]) for r in rows}
    for name in sorted({n for n, _ in ready_on if head_task(n) and n not in known}):
        where = sorted({u for (n, _), us in ready_on.items() if n == name for u in us})
        rows.append({"task": head_task(name), "versions": [], "serving_version": None, "in_multitask": False,
                     "replicas": len(urls), "replicas_ready": {}, "ready": "-",
                     "drift": [f"{name} is served on {', '.join(where)} but not in the repository"]})
    return rows


def _count(row: dict, ready_on: dict, urls: list[str]) -> None:
    """Add ``replicas_ready`` (version -> count), ``ready`` (``v2 ready 3/3``) and ``drift`` to one head's row."""
    head, task, n, newest = head_model_name(row["task"]), row["task"], len(urls), row["serving_version"]
    served = {int(v): us for (name, v), us in ready_on.items() if name == head and v.isdigit()}
    if newest is not None:
        served.setdefault(newest, [])
    row["replicas"] = n
    row["replicas_ready"] = {str(v): len(us) for v, us in sorted(served.items())}
    row["ready"] = "; ".join(f"v{v} ready {len(us)}/{n}" for v, us in sorted(served.items(), reverse=True))
    drift = []
    if newest is not None and len(served[newest]) < n:
        drift.append(f"v{newest} not ready on {', '.join(u for u in urls if u not in served[newest])}")
    drift += [f"v{v} still served on {', '.join(us)}" for v, us in sorted(served.items()) if v != newest and us]
    ensemble = sorted({u for (name, _), us in ready_on.items() if name == task for u in us})
    if len(ensemble) < n:
        drift.append(f"ensemble {task} not ready on {', '.join(u for u in urls if u not in ensemble)}")
    row["drift"] = drift


def report_table(fleet: FleetControl, error: BaseException | None = None) -> str:
    """The per-replica report as text: status, models loaded, canaries answered, switched, what was undone."""
    cols = ["replica", "status", "loaded", "canary", "switched", "rolled_back"]
    rows = fleet.report(error)
    shown = [[_cell(r[c]) for c in cols] for r in rows]
    table = [cols] + shown
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table]
    lines += [f"  {r['replica']}: {e}" for r in rows for e in r["errors"]]
    return "\n".join([*lines, fleet.summary(error)])


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    return str(value)
