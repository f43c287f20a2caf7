"""What every hot-swap operation shares: its preamble (server, artefact, lock), its result, canaries, ``multitask``.

Why apart from the operations (``hotswap``): each of add, swap, rollback and
remove starts the same way and ends the same way; only the steps between
differ. The preamble (``operation``) checks the server first, reads the head
artefact once (or checks the task name), then holds the repository lock from
the first read to the last write; the repository itself is read once, under
the lock, into a ``Deployment`` (``trunkserve.deployment.reader``).
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from trunkserve.artifacts import HeadArtifactError, check_task_name
from trunkserve.deployment.layout import LABELS_FILE, MULTITASK
from trunkserve.deployment.lock import RepositoryLock
from trunkserve.deployment.params import HeadEntry, ServingOptions
from trunkserve.deployment.reader import Deployment

from .admin import ServerControl
from .ensembles import write_multitask_ensemble
from .errors import HotswapError
from .inspection import Artefact, check_gate, compare_canary, read_artefact
from .transaction import Transaction, restore, rolled_back, snapshot, staging_dir


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


@dataclass
class Operation:
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

    @cached_property
    def deployment(self) -> Deployment:
        """The repository's configs and labels, read once under the lock (on first use)."""
        return Deployment.read(self.repo)

    @contextmanager
    def changing(self, step: str) -> Iterator[None]:
        """The steps that change things (``self.step`` says which runs): on a failure, undo all and say so."""
        self.step = step
        try:
            yield
        except Exception as exc:
            notify = getattr(self.server, "rolling_back", None)
            if notify is not None:  # a fleet (``export.fleet_control``) logs what follows as undo, per replica
                notify(self.step, exc)
            raise rolled_back(exc, self.tx, self.step) from exc

    def result(self, version: int | None, canary_diff: float | None = None, notes: Sequence[str] = (),
               quality: str = "") -> Result:
        return Result(self.action, self.task, version, self.server is not None, canary_diff,
                      time.monotonic() - self.t0, list(notes), quality)


@contextmanager
def operation(action: str, repo: str | Path, server: ServerControl | None, lock_timeout_s: float, *,
              head_dir: str | Path | None = None, task: str | None = None, force: bool = False) -> Iterator[Operation]:
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
        check_name(task)
    with RepositoryLock(repo, f"{action} {task}", lock_timeout_s):
        staging = staging_dir(repo)
        try:
            yield Operation(action, task, repo, server, staging, artefact, forced, t0)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def check_name(task: str) -> str:
    try:
        return check_task_name(task)
    except HeadArtifactError as exc:
        raise HotswapError(str(exc)) from exc


def served_canary(server: ServerControl, model: str, canary: dict | None, prefix: str = "") -> float | None:
    if canary is None:
        return None
    outputs = [prefix + n for n in canary["outputs"]]
    return compare_canary(server.infer(model, canary["texts"], outputs), canary, prefix)


def routed_heads(dep: Deployment, add: tuple[HeadEntry, Sequence[str]] | None = None,
                 drop: str | None = None) -> tuple[list[HeadEntry], dict[str, list[str]]]:
    """The heads ``multitask`` routes to after the change (sorted by task), and their labels: the deployed ones,
    plus ``add`` (an entry and its labels), less task ``drop``."""
    labels = {t: list(h.labels) for t, h in dep.heads.items() if t != drop}
    entries = {e.task: e for e in dep.entries if e.task != drop}
    if add is not None:
        entries[add[0].task], labels[add[0].task] = add[0], list(add[1])
    return [entries[t] for t in sorted(entries)], labels


def rewrite_multitask(op: Operation, opts: ServingOptions, entries: Sequence[HeadEntry],
                      labels: Mapping[str, Sequence[str]], groups: Mapping[str, Sequence[str]] | None = None) -> bool:
    """Regenerate ``multitask`` (atomic config write; ``groups`` as ``ensembles.multitask_config``) and reload it;
    undo restores and reloads the old one. Where nothing changed (a swap), nothing is written or reloaded.
    True when the server reloaded it."""
    folder, server = op.repo / MULTITASK, op.server
    snap = snapshot(folder)

    def undo():
        restore(folder, snap)
        if server is not None:
            server.load(MULTITASK)

    try:
        write_multitask_ensemble(op.repo, opts, entries, labels, groups)
        keep = {f"{e.task}_{LABELS_FILE}" for e in entries}
        for stale in folder.glob(f"*_{LABELS_FILE}"):  # a removed task's label file
            if stale.name not in keep:
                stale.unlink()
    except BaseException:
        restore(folder, snap)
        raise
    if snapshot(folder) == snap:
        return False
    op.tx.on_failure("restore multitask", undo)
    if server is not None:
        server.load(MULTITASK)
    return server is not None
