"""``python -m trunkserve.export add-head | swap-head | remove-head | list-heads``: thin CLI over ``export.hotswap``.

    python -m trunkserve.export add-head artifacts/heads/cola --repo model_repository --url localhost:8000
    python -m trunkserve.export swap-head artifacts/heads/cola --repo model_repository --url localhost:8000
    python -m trunkserve.export swap-head --rollback cola --repo model_repository --url localhost:8000
    python -m trunkserve.export remove-head cola --repo model_repository --url localhost:8000
    python -m trunkserve.export list-heads --repo model_repository [--url localhost:8000] [--json]

A fleet (replicas on one shared repository): ``--url`` repeated, ``--urls-file``
(one per line) or ``--url dns://trunkserve-replicas:8000`` (every address behind
the name). The head is validated and the repository written once; every replica
loads and canaries it before any switches ``multitask``; a failure anywhere
undoes it on all. The per-replica report follows the result (``--json``: both).

Without ``--url`` the repository folder alone is edited (same validation and
lock). The admin key for a server started with
``--http-restricted-api=model-repository:<header>=<key>`` comes from
``--admin-key`` or ``$TRUNKSERVE_ADMIN_KEY`` (header ``--admin-header`` /
``$TRUNKSERVE_ADMIN_HEADER``, default ``x-trunkserve-admin-key``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _server(args):
    from .fleet_control import connect

    return connect(args.url or (), args.urls_file, args.protocol, args.admin_key, args.admin_header,
                   wait_s=args.wait_s, skip_unreachable=args.skip_unreachable)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="the repository folder the server serves")
    p.add_argument("--url", action="append", default=None,
                   help="Triton to change as well (explicit model-control mode), e.g. localhost:8000; repeat it for "
                        "every replica of a fleet on this repository, or dns://NAME:PORT for every address NAME "
                        "resolves to (a Kubernetes headless Service) (default: none, only the repository folder is edited)")
    p.add_argument("--urls-file", type=Path, default=None,
                   help="a file of replica URLs, one per line (host:port or dns://NAME:PORT; # comments)")
    p.add_argument("--skip-unreachable", action="store_true",
                   help="go on without replicas that cannot be reached at the start (reported; they load the "
                        "repository's state when they start) instead of refusing")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http", help="the protocol --url speaks")
    p.add_argument("--admin-key", default=None, help="model-repository API key (default: $TRUNKSERVE_ADMIN_KEY)")
    p.add_argument("--admin-header", default=None, help="its header name (default: $TRUNKSERVE_ADMIN_HEADER or x-trunkserve-admin-key)")
    p.add_argument("--lock-timeout", type=float, default=120.0, help="seconds to wait for another operation's lock")
    p.add_argument("--wait-s", type=float, default=60.0, help="seconds to wait for an unload to finish")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result (and a fleet's per-replica report) as JSON")


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="ship a head whose training failed its quality gate (no better than the majority class)")


def _run(fn, report: bool = True):
    """``fn(args, server)`` printed; for an operation on a fleet (``report``) with the per-replica report, also
    when it fails (then the error follows, from ``export.cli``)."""
    def run(args) -> int:
        server = _server(args)
        fleet = report and hasattr(server, "report")
        try:
            out = fn(args, server)
            print(_shown(args, server, out) if fleet or not isinstance(out, str) else out)
        except Exception as exc:
            if fleet:
                print(_shown(args, server, None, exc), file=sys.stdout if args.json else sys.stderr)
            raise
        finally:
            if server is not None:
                server.close()
        return 0

    return run


def _shown(args, server, out, error: BaseException | None = None) -> str:
    """The result (text or ``--json``), followed for a fleet by its per-replica report."""
    from .fleet_ops import report_table

    fleet = hasattr(server, "report")
    if not args.json:
        text = "" if out is None else str(out)
        return f"{text}\n{report_table(server, error)}".strip() if fleet else text
    doc = {"result": dataclasses.asdict(out) if out is not None else None}
    if error is not None:
        doc["error"] = f"{type(error).__name__}: {error}"
    if fleet:
        doc["replicas"] = server.report(error)
        doc["summary"] = server.summary(error)
    return json.dumps(doc, indent=2)


def _add(args, server):
    from .hotswap import add_head

    return add_head(args.head_dir, args.repo, server, args.lock_timeout, force=args.force)


def _swap(args, server):
    from .hotswap import rollback_head, swap_head

    if args.rollback:
        return rollback_head(args.target, args.repo, server, args.lock_timeout)
    return swap_head(args.target, args.repo, server, args.lock_timeout, keep=args.keep, force=args.force)


def _remove(args, server):
    from .hotswap import remove_head

    return remove_head(args.task, args.repo, server, args.lock_timeout)


def _list(args, server):
    from .fleet_ops import list_fleet_heads
    from .hotswap import list_heads

    fleet = hasattr(server, "replica_states")
    rows = list_fleet_heads(args.repo, server) if fleet else list_heads(args.repo, server)
    if args.json:
        return json.dumps(rows, indent=2)
    cols = ["task", "task_type", "branch_layer", "versions", "serving_version", "in_multitask"]
    if fleet:
        cols = [c for c in cols if c not in ("task_type", "branch_layer")] + ["ready", "drift"]
        rows = [r | {"drift": "; ".join(r["drift"]) or "-"} for r in rows]
    elif server is not None:
        cols += ["head_state", "ensemble_state"]
    table = [cols] + [[str(r.get(c, "-")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table)


def register(sub) -> None:
    a = sub.add_parser("add-head", help="hot-add a new task head (validate, load, canary, then multitask)")
    a.add_argument("head_dir", type=Path, help="head artefact folder (head.json, weights.safetensors, canary.json)")
    _force(a)
    _json(a)
    _common(a)
    a.set_defaults(func=_run(_add))

    s = sub.add_parser("swap-head", help="serve a new version of a deployed head (or --rollback TASK)")
    s.add_argument("target", help="head artefact folder; with --rollback: the task name")
    s.add_argument("--rollback", action="store_true", help="take the newest version out and serve the previous one")
    s.add_argument("--keep", type=int, default=3, help="versions kept on disk (at least 2)")
    _force(s)
    _json(s)
    _common(s)
    s.set_defaults(func=_run(_swap))

    r = sub.add_parser("remove-head", help="take a task out of multitask, then unload its ensemble and head")
    r.add_argument("task", help="the task to take out")
    _json(r)
    _common(r)
    r.set_defaults(func=_run(_remove))

    ls = sub.add_parser("list-heads", help="heads in the repository (and their state on the server with --url; over a "
                        "fleet: on how many replicas each version is ready, and drift)")
    ls.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    _common(ls)
    ls.set_defaults(func=_run(_list, report=False))
