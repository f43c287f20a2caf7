"""Hot-add, swap and remove task heads on a running Triton without touching the trunk.

Why heads are separate Triton models: a team can ship a new task, or a better
version of one, while every other task keeps answering and the trunk is never
reloaded. These functions make that one safe operation each, on a server in
explicit model-control mode (``server=ServerControl(url, ...)``) or offline on
the repository folder alone (``server=None``).

Every operation:

* starts with one preamble (``_operation``): the server checked first, the
  head artefact read once (or the task name checked), then the repository
  lock (``export.repo_lock``) from its first read to its last write, so two
  operations cannot interleave;
* validates the head artefact before anything touches the repository or the
  server (``export.inspection``): head.json (task name, labels), depth, hidden
  size and trunk fingerprint against the *deployed* trunk (``export.deployed``),
  the ONNX graph (checker, names, dtypes, dims incl. the hidden size, values
  against PyTorch on the deployed trunk's real outputs), and the artefact's
  canary run offline through the deployed trunk ONNX + the new head ONNX;
* exports into a staging folder *next to* the repository (a dot-folder inside
  it would be taken for a model by ``--load-model=*``) and moves folders in
  with ``rename``, so Triton never sees a half-written model;
* records an undo action for each step (``export.transaction``); on any
  failure the undo actions run in reverse (files moved back, models unloaded
  or reloaded, ``multitask`` restored) and the error says what failed and what
  was rolled back.

The server side (``ServerControl``: the admin key, typed refusals) is
``export.admin``; the errors are in ``export.errors``. This module re-exports
the public names, so callers import them all from here.

Triton facts this relies on (checked on 2.51, see tests/test_hotswap_server.py):
loading an ensemble loads its composing models but reloads one only if its
folder changed (the pre-compiled shims keep the trunk's folder unchanged);
(re)loading ``head_<t>`` reloads the ensembles that depend on it, which keep
``model_version: -1`` and so pick up the newest version; with no
``version_policy`` in the config Triton serves ``latest { num_versions: 1 }``.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from trunkserve.artifacts import HeadArtifactError, check_task_name, read_canary, read_meta

from . import quality
from .admin import ADMIN_KEY_ENV, ServerControl
from .configs import LABELS_FILE, ServingOptions
from .deployed import DeployedTrunk, deployed_options, in_multitask, versions_of
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
from .inspection import Artefact, InspectedHead, check_gate, compare_canary, inspect_head, read_artefact
from .names import MULTITASK, head_model_name
from .repo_lock import RepositoryLock, RepositoryLocked
from .repository import HeadEntry, labels_of, read_head_entry, read_head_pair, scan_heads, write_multitask_ensemble, write_task_ensemble
from .transaction import Transaction, move_in, move_out, restore, rolled_back, snapshot, staging_dir

KEEP_VERSIONS = 3


@dataclass
class Result:
    """What an operation did, for the CLI and the tests."""

    action: str
    task: str
    version: int | None = None
    online: bool = False
    canary_diff: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    quality: str = ""  # the head's recorded scores and quality gate (``export.quality.describe``)

    def __str__(self) -> str:
        where = "on the server and in the repository" if self.online else "in the repository (offline)"
        v = f" version {self.version}" if self.version is not None else ""
        c = f"; canary max abs diff {self.canary_diff:.2e}" if self.canary_diff is not None else ""
        q = f"\n{self.quality}" if self.quality else ""
        n = "".join(f"\nnote: {x}" for x in self.notes)
        return f"{self.action} {self.task}{v}: done {where} in {self.seconds:.1f}s{c}{q}{n}"


# ---------------------------------------------------------------- the shared preamble


@dataclass
class _Operation:
    """One operation under way: the locked repository, its staging folder, undo log and the step it is at."""

    action: str
    task: str
    repo: Path
    server: ServerControl | None
    staging: Path
    artefact: Artefact | None  # the head folder, read once (add-head, swap-head)
    forced: list[str]  # the note for a head shipped despite its failed quality gate
    t0: float
    tx: Transaction = field(default_factory=Transaction)
    step: str = ""

    @contextmanager
    def changing(self, step: str) -> Iterator[None]:
        """The steps that change things (``self.step`` says which runs): on a failure, undo all and say so."""
        self.step = step
        try:
            yield
        except Exception as exc:
            raise rolled_back(exc, self.tx, self.step) from exc

    def result(self, version: int | None, canary_diff: float | None = None, notes: Sequence[str] = (),
               quality: str = "") -> Result:
        return Result(self.action, self.task, version, self.server is not None, canary_diff,
                      time.monotonic() - self.t0, list(notes), quality)


@contextmanager
def _operation(action: str, repo: str | Path, server: ServerControl | None, lock_timeout_s: float, *,
               head_dir: str | Path | None = None, task: str | None = None, force: bool = False) -> Iterator[_Operation]:
    """What every operation does first: the server (reachable, key accepted), the artefact read once
    (its quality gate) or the task name checked, then the lock and a staging folder (removed at the end)."""
    t0 = time.monotonic()
    repo = Path(repo).resolve()
    if server is not None:
        server.check()  # unreachable or wrong key: fail before touching anything
    artefact, forced = None, []
    if head_dir is not None:
        artefact = read_artefact(head_dir)
        forced = check_gate(artefact, force)
        task = artefact.meta.task
    else:
        _check_name(task)
    with RepositoryLock(repo, f"{action} {task}", lock_timeout_s):
        staging = staging_dir(repo)
        try:
            yield _Operation(action, task, repo, server, staging, artefact, forced, t0)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _check_name(task: str) -> str:
    try:
        return check_task_name(task)
    except HeadArtifactError as exc:
        raise HotswapError(str(exc)) from exc


def _served_canary(server: ServerControl, model: str, canary: dict | None, prefix: str = "") -> float | None:
    if canary is None:
        return None
    outputs = [prefix + n for n in canary["outputs"]]
    return compare_canary(server.infer(model, canary["texts"], outputs), canary, prefix)


def _multitask_canary(server: ServerControl, entry: HeadEntry, canary: dict | None) -> float | None:
    # only when the multitask ensemble is actually loaded
    return _served_canary(server, MULTITASK, canary, f"{entry.task}_") if server.ready(MULTITASK) else None


def _rewrite_multitask(repo: Path, opts: ServingOptions, server: ServerControl | None, tx: Transaction,
                       entries: Sequence[HeadEntry] | None = None) -> None:
    """Regenerate ``multitask`` (atomic config write) and reload it; undo restores and reloads the old one."""
    folder = repo / MULTITASK
    snap = snapshot(folder)

    def undo():
        restore(folder, snap)
        if server is not None:
            server.load(MULTITASK)

    tx.on_failure("restore multitask", undo)
    entries = scan_heads(repo) if entries is None else list(entries)
    write_multitask_ensemble(repo, opts, entries)
    keep = {f"{e.task}_{LABELS_FILE}" for e in entries}
    for stale in folder.glob(f"*_{LABELS_FILE}"):  # a removed task's label file
        if stale.name not in keep:
            stale.unlink()
    if server is not None:
        server.load(MULTITASK)


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
    with _operation("add-head", repo, server, lock_timeout_s, head_dir=head_dir, force=force) as op:
        _check_new_task(op)
        insp = inspect_head(op.artefact, op.repo, op.staging)
        write_task_ensemble(op.staging, insp.entry, insp.meta.labels, insp.options)
        _add_into_service(op, insp)
    return op.result(1, insp.canary_diff, op.forced + insp.notes, quality.describe(insp.meta))


def _check_new_task(op: _Operation) -> None:
    head_name = head_model_name(op.task)
    if (op.repo / head_name).exists() or (op.repo / op.task).exists():
        raise HeadRejected(f"task {op.task!r} is already deployed ({op.repo / head_name}); use swap-head for a new version")
    if op.server is not None:
        states = op.server.states()
        if head_name in states or op.task in states:
            raise HeadRejected(f"task {op.task!r}: the server already knows a model {head_name!r} or {op.task!r}")


def _add_into_service(op: _Operation, insp: InspectedHead) -> None:
    """Move the staged head and ensemble in, load them, canary them, then route ``multitask`` to the head."""
    task, head_name, server, tx = op.task, head_model_name(op.task), op.server, op.tx
    with op.changing("moving the head into the repository"):
        move_in(op.staging, op.repo, head_name, tx)
        move_in(op.staging, op.repo, task, tx)
        if server is not None:
            op.step = f"loading {head_name}"
            tx.on_failure(f"unload {head_name}", lambda: server.unload(head_name))
            server.load(head_name)
            op.step = f"loading ensemble {task}"
            tx.on_failure(f"unload {task}", lambda: server.unload(task))
            server.load(task)
            op.step = f"canary through {task}"
            diff = _served_canary(server, task, insp.canary)
            insp.canary_diff = diff if diff is not None else insp.canary_diff
        op.step = "rewriting multitask"
        _rewrite_multitask(op.repo, insp.options, server, tx)
        if server is not None:
            op.step = "canary through multitask"
            _multitask_canary(server, insp.entry, insp.canary)


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
    with _operation("swap-head", repo, server, lock_timeout_s, head_dir=head_dir, force=force) as op:
        if not (op.repo / head_model_name(op.task) / "config.pbtxt").exists():
            raise HeadRejected(f"task {op.task!r} is not deployed in {op.repo}; use add-head")
        old = versions_of(op.repo, op.task)
        new = (old[-1] if old else 0) + 1
        insp = inspect_head(op.artefact, op.repo, op.staging, version=str(new), write_config=False)
        _check_same_interface(op.repo, insp)
        _serve_new_version(op, insp, old[-1] if old else "?", new)
        pruned = _prune(op.repo, op.task, keep)
        if pruned:
            insp.notes.append(f"pruned old versions {pruned} (keeping {keep})")
    return op.result(new, insp.canary_diff, op.forced + insp.notes, quality.describe(insp.meta))


def _check_same_interface(repo: Path, insp: InspectedHead) -> None:
    """A new version must keep what the ensembles route to: task type, labels, depth, pair."""
    task = insp.meta.task
    deployed = read_head_entry(repo, task)
    mismatch = [
        f"{k} {getattr(deployed, k)!r} -> {getattr(insp.entry, k)!r}"
        for k in ("task_type", "num_labels", "branch_layer")
        if getattr(deployed, k) != getattr(insp.entry, k)
    ]
    if insp.meta.labels != labels_of(repo, task):
        mismatch.append(f"labels {labels_of(repo, task)} -> {insp.meta.labels}")
    pair = read_head_pair(repo, task)  # the config (kept on a swap) tells clients whether to send text pairs
    if None not in (pair, insp.meta.pair) and pair != insp.meta.pair:
        mismatch.append(f"pair {pair} -> {insp.meta.pair}")
    if mismatch:
        raise HeadRejected(
            f"task {task!r}: a new version must keep the interface the ensembles route to ({'; '.join(mismatch)}); "
            "remove-head then add-head to change it"
        )


def _serve_new_version(op: _Operation, insp: InspectedHead, previous, new: int) -> None:
    """Move version ``new`` in, reload the head (Triton serves the newest), canary through the ensembles."""
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
                diff = _served_canary(server, task, insp.canary)
                insp.canary_diff = diff if diff is not None else insp.canary_diff
            _multitask_canary(server, insp.entry, insp.canary)


def _prune(repo: Path, task: str, keep: int) -> list[int]:
    vs = versions_of(repo, task)
    drop = vs[: max(0, len(vs) - max(keep, 2))]
    for v in drop:
        shutil.rmtree(repo / head_model_name(task) / str(v), ignore_errors=True)
    return drop


def rollback_head(
    task: str, repo: str | Path, server: ServerControl | None = None, lock_timeout_s: float = 120.0
) -> Result:
    """Undo the last swap: take the newest version folder out, reload, canary the previous version."""
    with _operation("swap-head --rollback", repo, server, lock_timeout_s, task=task) as op:
        vs = versions_of(op.repo, task)
        if len(vs) < 2:
            raise HotswapError(f"task {task!r} has versions {vs} on disk: nothing to roll back to")
        newest, previous = vs[-1], vs[-2]
        diff = _serve_previous_version(op, newest, previous)
    return op.result(previous, diff, quality=_version_quality(op.repo / head_model_name(task) / str(previous)))


def _serve_previous_version(op: _Operation, newest: int, previous: int) -> float | None:
    """Move the newest version aside, reload the head at ``previous``, canary it with that version's canary."""
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
                diff = _served_canary(server, task, canary)
    return diff


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
    with _operation("remove-head", repo, server, lock_timeout_s, task=task) as op:
        if not (op.repo / head_model_name(task) / "config.pbtxt").exists():
            raise HotswapError(f"task {task!r} is not deployed in {op.repo}")
        remaining = [e for e in scan_heads(op.repo) if e.task != task]
        if not remaining:
            raise HotswapError(f"{task!r} is the last head: the multitask ensemble needs at least one")
        _take_out_of_service(op, deployed_options(op.repo), remaining)
    return op.result(None)


def _take_out_of_service(op: _Operation, opts: ServingOptions, remaining: Sequence[HeadEntry]) -> None:
    """``multitask`` without the task, then unload its ensemble and head, then move both folders aside."""
    names, server, tx = (op.task, head_model_name(op.task)), op.server, op.tx
    with op.changing("rewriting multitask without it"):
        _rewrite_multitask(op.repo, opts, server, tx, remaining)
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


def list_heads(repo: str | Path, server: ServerControl | None = None) -> list[dict]:
    """Heads on disk (versions, the one served) and, with a server, each model's state there.

    It changes nothing, so it takes no lock and none of the operations' preamble.
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"no model repository at {repo}")
    states = server.states() if server is not None else {}
    rows = []
    for e in scan_heads(repo):
        vs = versions_of(repo, e.task)
        row = {
            "task": e.task,
            "task_type": e.task_type,
            "num_labels": e.num_labels,
            "branch_layer": e.branch_layer,
            "versions": vs,
            "serving_version": vs[-1] if vs else None,
            "in_multitask": in_multitask(repo, e.task),
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
