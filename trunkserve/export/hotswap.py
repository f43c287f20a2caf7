"""Hot-add, swap and remove task heads on a running Triton without touching the trunk.

Why heads are separate Triton models: a team can ship a new task, or a better
version of one, while every other task keeps answering and the trunk is never
reloaded. These functions make that one safe operation each, on a server in
explicit model-control mode (``server=ServerControl(url, ...)``) or offline on
the repository folder alone (``server=None``).

Every operation:

* starts with one preamble (``export.operation``): the server checked first,
  the head artefact read once (or the task name checked), then the repository
  lock (``trunkserve.deployment.lock``) from its first read to its last write,
  so two operations cannot interleave; the repository is read once, under it;
* validates the head artefact before anything touches the repository or the
  server (``export.inspection``): head.json (task name, labels), depth, hidden
  size and trunk fingerprint against the *deployed* trunk (``export.deployed``),
  the ONNX graph (checker, names, dtypes, dims incl. the hidden size, values
  against PyTorch on the deployed trunk's real outputs), and the artefact's
  canary run offline through the deployed trunk ONNX + the new head ONNX;
* exports into a staging folder *next to* the repository (a dot-folder inside
  it would be taken for a model by ``--load-model=*``) and moves folders in
  with ``rename``, so Triton never sees a half-written model;
* rebuilds the head group the head belongs to (``export.regroup``: one graph
  per depth and layer count, ``multitask``'s step) as a new version, loads it
  while the old one serves, and checks every member's canary through it
  before and after ``multitask`` routes to it;
* records an undo action for each step (``export.transaction``); on any
  failure the undo actions run in reverse (files moved back, models unloaded
  or reloaded, ``multitask`` restored) and the error says what failed and what
  was rolled back.

The server side (``ServerControl``: the admin key, typed refusals) is
``export.admin``; the errors are in ``export.errors``. This module re-exports
the public names, so callers import them all from here.

Triton facts this relies on (checked on 2.51, see tests/integration/test_hotswap_server.py):
loading an ensemble loads its composing models but reloads one only if its
folder changed (the pre-compiled shims keep the trunk's folder unchanged);
(re)loading ``head_<t>`` reloads the ensembles that depend on it, which keep
``model_version: -1`` and so pick up the newest version; with no
``version_policy`` in the config Triton serves ``latest { num_versions: 1 }``;
reloading a model whose config changed (a head group with other members) keeps
the loaded version serving until the new one is ready.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from trunkserve.artifacts import HeadArtifactError, read_canary, read_meta
from trunkserve.deployment.layout import head_model_name, versions_of
from trunkserve.deployment.lock import RepositoryLock, RepositoryLocked
from trunkserve.deployment.params import HeadEntry
from trunkserve.deployment.reader import DeployedHead, Deployment

from . import quality
from .admin import ADMIN_KEY_ENV, ServerControl
from .deployed import DeployedTrunk, deployed_options
from .ensembles import head_steps, write_task_ensemble
from .errors import (
    AccessDenied,
    AdminKeyMissing,
    AdminKeyRefused,
    CanaryFailed,
    HeadRejected,
    HotswapError,
    RepositoryError,
    ServerUnavailable,
)
from .inspection import InspectedHead, compare_canary, inspect_head
from .operation import Operation, Result, operation, routed_heads, served_canary
from .regroup import Regroup
from .transaction import move_in, move_out

KEEP_VERSIONS = 3


# ---------------------------------------------------------------- add-head


def add_head(
    head_dir: str | Path,
    repo: str | Path,
    server: ServerControl | None = None,
    lock_timeout_s: float = 120.0,
    force: bool = False,
) -> Result:
    """Ship a new task: validate, stage, move in, load head then ensemble, canary, then ``multitask``.

    On a failure at any step everything done so far is undone (files and
    loaded models), so the deployment is exactly as before. A head whose
    training failed its quality gate is refused unless ``force``.
    """
    with operation("add-head", repo, server, lock_timeout_s, head_dir=head_dir, force=force) as op:
        _check_new_task(op)
        insp = inspect_head(op.artefact, op.repo, op.staging, deployment=op.deployment)
        e = insp.entry
        write_task_ensemble(op.staging, e.task, e.task_type, insp.meta.labels, head_steps(e), insp.options)
        _add_into_service(op, insp)
    return op.result(1, insp.canary_diff, op.forced + insp.notes, quality.describe(insp.meta))


def _check_new_task(op: Operation) -> None:
    head_name = head_model_name(op.task)
    if (op.repo / head_name).exists() or (op.repo / op.task).exists():
        raise HeadRejected(f"task {op.task!r} is already deployed ({op.repo / head_name}); use swap-head for a new version")
    if op.server is not None:
        states = op.server.states()
        if head_name in states or op.task in states:
            raise HeadRejected(f"task {op.task!r}: the server already knows a model {head_name!r} or {op.task!r}")


def _add_into_service(op: Operation, insp: InspectedHead) -> None:
    """Move the staged head and ensemble in, rebuild and load its head group, load head and ensemble, canary
    them, then route ``multitask`` through the group and canary every member there."""
    task, head_name, server, tx = op.task, head_model_name(op.task), op.server, op.tx
    regroup = Regroup(op, *routed_heads(op.deployment, add=(insp.entry, insp.meta.labels)))
    with op.changing("moving the head into the repository"):
        move_in(op.staging, op.repo, head_name, tx)
        move_in(op.staging, op.repo, task, tx)
        regroup.load_gaining()
        if server is not None:
            op.step = f"loading {head_name}"
            tx.on_failure(f"unload {head_name}", lambda: server.unload(head_name))
            server.load(head_name)
            op.step = f"loading ensemble {task}"
            tx.on_failure(f"unload {task}", lambda: server.unload(task))
            server.load(task)
            op.step = f"canary through {task}"
            diff = served_canary(server, task, insp.canary)
            insp.canary_diff = diff if diff is not None else insp.canary_diff
        regroup.finish()
    regroup.prune()


# ---------------------------------------------------------------- swap-head and its rollback


def swap_head(
    head_dir: str | Path,
    repo: str | Path,
    server: ServerControl | None = None,
    lock_timeout_s: float = 120.0,
    keep: int = KEEP_VERSIONS,
    force: bool = False,
) -> Result:
    """A new version of a deployed task: ``head_<task>/<N+1>/``, canary, keep older versions for rollback.

    The artefact is checked offline on the deployed trunk (its canary included)
    before the version folder enters the repository; after Triton loads it
    (the version policy serves the newest; the dependent ensembles reload
    themselves) the canary runs through the served ``<task>`` ensemble, and a
    mismatch takes the new version out again. A version whose training failed
    its quality gate is refused unless ``force``.
    """
    with operation("swap-head", repo, server, lock_timeout_s, head_dir=head_dir, force=force) as op:
        if op.task not in op.deployment.heads:
            raise HeadRejected(f"task {op.task!r} is not deployed in {op.repo}; use add-head")
        deployed = op.deployment.heads[op.task]
        old = deployed.versions
        new = (old[-1] if old else 0) + 1
        insp = inspect_head(op.artefact, op.repo, op.staging, version=str(new), write_config=False, deployment=op.deployment)
        _check_same_interface(deployed, insp)
        regroup = _serve_new_version(op, insp, old[-1] if old else "?", new)
        pruned = _prune(op.repo, op.task, [*old, new], keep)
        if pruned:
            insp.notes.append(f"pruned old versions {pruned} (keeping {keep})")
        regroup.prune()
    return op.result(new, insp.canary_diff, op.forced + insp.notes, quality.describe(insp.meta))


def _check_same_interface(deployed: DeployedHead, insp: InspectedHead) -> None:
    """A new version must keep what the ensembles route to: task type, labels, depth, layer count (its head group), pair."""
    task, entry = insp.meta.task, deployed.entry
    mismatch = [
        f"{k} {getattr(entry, k)!r} -> {getattr(insp.entry, k)!r}"
        for k in ("task_type", "num_labels", "branch_layer", "num_layers")
        if getattr(entry, k) != getattr(insp.entry, k)
    ]
    if insp.meta.labels != deployed.labels:
        mismatch.append(f"labels {deployed.labels} -> {insp.meta.labels}")
    pair = entry.pair  # the config (kept on a swap) tells clients whether to send text pairs
    if None not in (pair, insp.meta.pair) and pair != insp.meta.pair:
        mismatch.append(f"pair {pair} -> {insp.meta.pair}")
    if mismatch:
        raise HeadRejected(
            f"task {task!r}: a new version must keep the interface the ensembles route to ({'; '.join(mismatch)}); "
            "remove-head then add-head to change it"
        )


def _serve_new_version(op: Operation, insp: InspectedHead, previous, new: int) -> Regroup:
    """Move version ``new`` in, reload the head (Triton serves the newest), canary through its ensemble, then
    rebuild its head group from the new version and canary every member through ``multitask``."""
    task, head_name, server = op.task, head_model_name(op.task), op.server
    with op.changing(f"moving version {new} into {head_name}"):
        src, dst = op.staging / head_name / str(new), op.repo / head_name / str(new)
        os.rename(src, dst)

        def undo_version():
            move_out(dst, src)
            if server is not None:
                server.load(head_name)  # back to the previous newest version

        op.tx.on_failure(f"remove {head_name}/{new} and reload version {previous}", undo_version)
        if server is not None:
            op.step = f"loading {head_name} version {new}"
            server.load(head_name)
            op.step = f"canary through {task}"
            if server.ready(task):
                server.load(task)  # reloaded by Triton with the head; loaded explicitly so it stays settled (regroup)
                diff = served_canary(server, task, insp.canary)
                insp.canary_diff = diff if diff is not None else insp.canary_diff
        return _regroup(op)


def _regroup(op: Operation, step: str = "rewriting multitask") -> Regroup:
    """The head group of ``op.task`` rebuilt from the head versions now on disk, ``multitask`` switched, canaried."""
    regroup = Regroup(op, *routed_heads(op.deployment))
    regroup.load_gaining()
    regroup.finish(step)
    return regroup


def _prune(repo: Path, task: str, versions: Sequence[int], keep: int) -> list[int]:
    """Delete all but the newest ``keep`` (at least 2) of ``versions``; the ones deleted."""
    drop = list(versions[: max(0, len(versions) - max(keep, 2))])
    for v in drop:
        shutil.rmtree(repo / head_model_name(task) / str(v), ignore_errors=True)
    return drop


def rollback_head(
    task: str, repo: str | Path, server: ServerControl | None = None, lock_timeout_s: float = 120.0
) -> Result:
    """Undo the last swap: take the newest version folder out, reload, canary the previous version."""
    with operation("swap-head --rollback", repo, server, lock_timeout_s, task=task) as op:
        vs = versions_of(op.repo, task)
        if len(vs) < 2:
            raise HotswapError(f"task {task!r} has versions {vs} on disk: nothing to roll back to")
        newest, previous = vs[-1], vs[-2]
        diff, regroup = _serve_previous_version(op, newest, previous)
        regroup.prune()
    return op.result(previous, diff, quality=_version_quality(op.repo / head_model_name(task) / str(previous)))


def _serve_previous_version(op: Operation, newest: int, previous: int) -> tuple[float | None, Regroup]:
    """Move the newest version aside, reload the head at ``previous``, canary it with that version's canary,
    then rebuild its head group from ``previous`` and canary every member through ``multitask``."""
    task, head_name, server = op.task, head_model_name(op.task), op.server
    canary = read_canary(op.repo / head_name / str(previous))
    diff = None
    with op.changing(f"moving version {newest} out of {head_name}"):
        src, aside = op.repo / head_name / str(newest), op.staging / str(newest)
        os.rename(src, aside)

        def undo_move():
            os.rename(aside, src)
            if server is not None:
                server.load(head_name)

        op.tx.on_failure(f"restore {head_name}/{newest} and reload it", undo_move)
        if server is not None:
            op.step = f"reloading {head_name} at version {previous}"
            server.load(head_name)
            op.step = f"canary through {task}"
            if server.ready(task):
                server.load(task)  # as in swap-head
                diff = served_canary(server, task, canary)
        regroup = _regroup(op)
    return diff, regroup


def _version_quality(version_dir: Path) -> str:
    """The recorded scores of a deployed version (its copied head.json), or "" where it cannot be read."""
    try:
        return quality.describe(read_meta(version_dir))
    except HeadArtifactError:
        return ""


# ---------------------------------------------------------------- remove-head and list-heads


def remove_head(
    task: str, repo: str | Path, server: ServerControl | None = None, lock_timeout_s: float = 120.0
) -> Result:
    """Take a task out: ``multitask`` first (so no request is routed to it), then its ensemble, then the head."""
    with operation("remove-head", repo, server, lock_timeout_s, task=task) as op:
        if task not in op.deployment.heads:
            raise HotswapError(f"task {task!r} is not deployed in {op.repo}")
        remaining, labels = routed_heads(op.deployment, drop=task)
        if not remaining:
            raise HotswapError(f"{task!r} is the last head: the multitask ensemble needs at least one")
        _take_out_of_service(op, remaining, labels)
    return op.result(None)


def _take_out_of_service(op: Operation, remaining: Sequence[HeadEntry], labels: dict[str, list[str]]) -> None:
    """``multitask`` without the task, its head group rebuilt without it (or gone with it), canaried; then unload
    its ensemble and head, then move both folders aside."""
    names, server, tx = (op.task, head_model_name(op.task)), op.server, op.tx
    regroup = Regroup(op, remaining, labels)
    with op.changing("rewriting multitask without it"):
        regroup.finish("rewriting multitask without it")
        for name in names:
            if server is not None and server.ready(name):
                op.step = f"unloading {name}"
                tx.on_failure(f"reload {name}", lambda n=name: server.load(n))
                server.unload(name)
        for name in names:
            if (op.repo / name).exists():
                op.step = f"moving {name}/ out of the repository"
                src, aside = op.repo / name, op.staging / name
                os.rename(src, aside)
                tx.on_failure(f"restore {name}/", lambda s=src, a=aside: os.rename(a, s))
    regroup.prune()


def list_heads(repo: str | Path, server: ServerControl | None = None) -> list[dict]:
    """Heads on disk (versions, the one served) and, with a server, each model's state there.

    It changes nothing, so it takes no lock and none of the operations' preamble.
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"no model repository at {repo}")
    states = server.states() if server is not None else {}
    dep, rows = Deployment.read(repo), []
    for h in dep.heads.values():
        e, vs = h.entry, h.versions
        row = {
            "task": e.task,
            "task_type": e.task_type,
            "num_labels": e.num_labels,
            "branch_layer": e.branch_layer,
            "versions": vs,
            "serving_version": vs[-1] if vs else None,
            "in_multitask": dep.in_multitask(e.task),
        }
        if server is not None:
            row["head_state"] = states.get(head_model_name(e.task), "not loaded")
            row["ensemble_state"] = states.get(e.task, "not loaded")
        rows.append(row)
    return rows


__all__ = [
    "ADMIN_KEY_ENV",
    "AccessDenied",
    "AdminKeyMissing",
    "AdminKeyRefused",
    "CanaryFailed",
    "DeployedTrunk",
    "HeadRejected",
    "HotswapError",
    "InspectedHead",
    "RepositoryError",
    "RepositoryLock",
    "RepositoryLocked",
    "Result",
    "ServerControl",
    "ServerUnavailable",
    "add_head",
    "compare_canary",
    "deployed_options",
    "inspect_head",
    "list_heads",
    "remove_head",
    "rollback_head",
    "swap_head",
]
