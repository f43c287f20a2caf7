"""``python -m trunkserve.export add-head | swap-head | remove-head | list-heads``: thin CLI over ``export.hotswap``.

    python -m trunkserve.export add-head artifacts/heads/cola --repo model_repository --url localhost:8000
    python -m trunkserve.export swap-head artifacts/heads/cola --repo model_repository --url localhost:8000
    python -m trunkserve.export swap-head --rollback cola --repo model_repository --url localhost:8000
    python -m trunkserve.export remove-head cola --repo model_repository --url localhost:8000
    python -m trunkserve.export list-heads --repo model_repository [--url localhost:8000] [--json]

Without ``--url`` the repository folder alone is edited (same validation and
lock). The admin key for a server started with
``--http-restricted-api=model-repository:<header>=<key>`` comes from
``--admin-key`` or ``$TRUNKSERVE_ADMIN_KEY`` (header ``--admin-header`` /
``$TRUNKSERVE_ADMIN_HEADER``, default ``x-trunkserve-admin-key``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path



def _server(args):
    from .hotswap import ServerControl

    if not args.url:
        return None
    return ServerControl(args.url, args.protocol, args.admin_key, args.admin_header, wait_s=args.wait_s)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="the repository folder the server serves")
    p.add_argument("--url", default=None, help="Triton to change as well (explicit model-control mode), e.g. "
                   "localhost:8000 (default: none, only the repository folder is edited)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http", help="the protocol --url speaks")
    p.add_argument("--admin-key", default=None, help="model-repository API key (default: $TRUNKSERVE_ADMIN_KEY)")
    p.add_argument("--admin-header", default=None, help="its header name (default: $TRUNKSERVE_ADMIN_HEADER or x-trunkserve-admin-key)")
    p.add_argument("--lock-timeout", type=float, default=120.0, help="seconds to wait for another operation's lock")
    p.add_argument("--wait-s", type=float, default=60.0, help="seconds to wait for an unload to finish")


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="ship a head whose training failed its quality gate (no better than the majority class)")


def _run(fn):
    def run(args) -> int:
        server = _server(args)
        try:
            print(fn(args, server))
        finally:
            if server is not None:
                server.close()
        return 0

    return run


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
    from .hotswap import list_heads

    rows = list_heads(args.repo, server)
    if args.json:
        return json.dumps(rows, indent=2)
    cols = ["task", "task_type", "branch_layer", "versions", "serving_version", "in_multitask"]
    if server is not None:
        cols += ["head_state", "ensemble_state"]
    table = [cols] + [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table)


def register(sub) -> None:
    a = sub.add_parser("add-head", help="hot-add a new task head (validate, load, canary, then multitask)")
    a.add_argument("head_dir", type=Path, help="head artefact folder (head.json, weights.safetensors, canary.json)")
    _force(a)
    _common(a)
    a.set_defaults(func=_run(_add))

    s = sub.add_parser("swap-head", help="serve a new version of a deployed head (or --rollback TASK)")
    s.add_argument("target", help="head artefact folder; with --rollback: the task name")
    s.add_argument("--rollback", action="store_true", help="take the newest version out and serve the previous one")
    s.add_argument("--keep", type=int, default=3, help="versions kept on disk (at least 2)")
    _force(s)
    _common(s)
    s.set_defaults(func=_run(_swap))

    r = sub.add_parser("remove-head", help="take a task out of multitask, then unload its ensemble and head")
    r.add_argument("task", help="the task to take out")
    _common(r)
    r.set_defaults(func=_run(_remove))

    ls = sub.add_parser("list-heads", help="heads in the repository (and their state on the server with --url)")
    ls.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    _common(ls)
    ls.set_defaults(func=_run(_list))
