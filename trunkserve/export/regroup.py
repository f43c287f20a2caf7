"""The head groups an operation touches, rebuilt as new versions, loaded, canaried, and ``multitask`` switched.

Why apart from the operations: add, swap, rollback and remove each change one head,
and the head group holding it (``heads_d<k>``: every head of one depth and layer
count as one graph, ``multitask``'s step) must follow: rebuilt from its members'
deployed head version folders as version N+1 (N kept for undo), loaded while
Triton keeps serving N, every member's canary checked offline through the new graph
and then through the served ``multitask``. The trunk is never touched.

Order matters to requests in flight: a group that only gains outputs (a head added,
or a member's new version) loads *before* ``multitask`` is rewritten, so the old
``multitask`` still finds what it routes; one that loses a member loads *after*,
and one left without members is unloaded after. Each step records its undo.

``multitask`` is loaded explicitly after the last group load: Triton reloads an
ensemble by itself when a model it uses reloads, but one reloaded only that way is
reloaded again at every later load or unload request (seen on 2.51), which would
count as a reload where an operation changed nothing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

from trunkserve.artifacts import HeadArtifactError, read_canary
from trunkserve.deployment.layout import CONFIG_FILE, MODEL_FILES, MULTITASK, PYTHON_ORT, head_model_name, versions_of
from trunkserve.deployment.params import GroupParams, HeadEntry
from trunkserve.head_group import HeadGroupError

from .deployed import DeployedTrunk
from .errors import RepositoryError
from .head_groups import group_outputs, multitask_groups, write_group_model
from .inspection import compare_canary
from .operation import Operation, rewrite_multitask, served_canary
from .quantised import quantise_group, served_reference
from .transaction import move_in, move_out, restore, snapshot

#: Group versions kept on disk after an operation: the served one and the one before it.
KEEP_GROUP_VERSIONS = 2


@dataclass
class GroupChange:
    """One head group an operation changes: its members before and after (output order) and its versions on disk."""

    name: str
    depth: int
    num_layers: int
    before: list[str]  # [] : a new group
    after: list[str]  # [] : the group goes
    versions: list[int]

    @property
    def version(self) -> int:
        return (self.versions[-1] if self.versions else 0) + 1

    @property
    def loses(self) -> bool:
        return bool(set(self.before) - set(self.after))


def plan_groups(op: Operation, entries: Sequence[HeadEntry]) -> list[GroupChange]:
    """The groups whose graph differs once ``entries`` are the deployed heads and ``op.task``'s head changed."""
    dep = op.deployment
    want = multitask_groups(entries, dep.options)
    if want is None:  # TensorRT: multitask keeps one step per head
        return []
    by_task = {e.task: e for e in entries}
    changes = []
    for name in sorted(set(want) | set(dep.groups)):
        old = dep.groups.get(name)
        before, after = list(old.params.tasks) if old else [], want.get(name, [])
        if before == after and op.task not in after:
            continue
        key = (by_task[after[0]].branch_layer, by_task[after[0]].num_layers) if after else \
            (old.params.branch_layer, old.params.num_layers)
        changes.append(GroupChange(name, *key, before, after, list(old.versions) if old else []))
    return changes


def member_folder(repo: Path, task: str) -> Path:
    """The served version folder of ``head_<task>`` (a full head artefact: head.json, weights, canary)."""
    versions = versions_of(repo, task)
    if not versions:
        raise RepositoryError(f"{head_model_name(task)}: no version folder to build its head group from")
    return repo / head_model_name(task) / str(versions[-1])


class Regroup:
    """The group side of one operation: ``load_gaining`` (before ``multitask``), then ``finish``, then ``prune``."""

    def __init__(self, op: Operation, entries: Sequence[HeadEntry], labels: Mapping[str, Sequence[str]]):
        self.op, self.entries, self.labels = op, list(entries), labels
        self.groups = multitask_groups(self.entries, op.deployment.options)
        self.changes = plan_groups(op, self.entries)
        self.canary_diffs: dict[str, float] = {}
        self.references: dict[str, dict] = {}  # on a quantised trunk: each member's canary through its group
        self._multitask_stale = False  # a group was loaded since multitask was last loaded explicitly

    @cached_property
    def trunk(self) -> DeployedTrunk:
        return DeployedTrunk(self.op.repo, self.op.deployment)

    def load_gaining(self) -> None:
        """New groups and those that keep or gain members: rebuilt and loaded while ``multitask`` still routes the old."""
        for change in self.changes:
            if change.after and not change.loses:
                self._serve(change)

    def finish(self, step: str = "rewriting multitask") -> None:
        """``multitask`` over the groups after the change, then the groups that lose or lose all members,
        then every rebuilt group's members' canaries through ``multitask``."""
        op = self.op
        op.step = step
        if rewrite_multitask(op, op.deployment.options, self.entries, self.labels, self.groups):
            self._multitask_stale = False
        for change in self.changes:
            if change.after and change.loses:
                self._serve(change)
        for change in self.changes:
            if not change.after:
                self._drop(change)
        if self._multitask_stale and op.server is not None and op.server.ready(MULTITASK):
            op.step = "reloading multitask"
            op.server.load(MULTITASK)
        self._served_canaries()

    def prune(self) -> list[str]:
        """After success: all but the newest ``KEEP_GROUP_VERSIONS`` versions of each rebuilt group deleted."""
        dropped = []
        for change in self.changes:
            versions = [*change.versions, change.version] if change.after else []
            for v in versions[: max(0, len(versions) - KEEP_GROUP_VERSIONS)]:
                shutil.rmtree(self.op.repo / change.name / str(v), ignore_errors=True)
                dropped.append(f"{change.name}/{v}")
        return dropped

    # ------------------------------------------------------------ steps

    def _serve(self, change: GroupChange) -> None:
        """Rebuild ``change``'s group as its next version, check it offline, move it in, load it."""
        op, v = self.op, change.version
        op.step = f"rebuilding {change.name} version {v} ({', '.join(change.after)})"
        staged = op.staging / "groups"
        self._build(change, staged)
        folder, server = op.repo / change.name, op.server
        if folder.exists():
            snap = snapshot(folder)
            src, dst = staged / change.name / str(v), folder / str(v)
            os.rename(src, dst)

            def undo():
                move_out(dst, src)
                restore(folder, snap)
                if server is not None:
                    server.load(change.name)  # back to the previous version and members

            op.tx.on_failure(f"remove {change.name}/{v} and reload {change.name}", undo)
            (staged / change.name / CONFIG_FILE).replace(folder / CONFIG_FILE)  # the new members' outputs
        else:
            move_in(staged, op.repo, change.name, op.tx)
            if server is not None:
                op.tx.on_failure(f"unload {change.name}", lambda: server.unload(change.name))
        if server is not None:
            op.step = f"loading {change.name} version {v}"
            server.load(change.name)
            self._multitask_stale = True

    def _build(self, change: GroupChange, staged: Path) -> None:
        """Export and validate the group's graph into ``staged``, then every member's canary through it offline."""
        folders = [member_folder(self.op.repo, t) for t in change.after]
        try:
            group = GroupParams(tuple(change.after), change.depth, change.num_layers)
            write_group_model(staged, group, folders, self.op.deployment.options, self.trunk.validation_feeds(change.depth),
                              version=str(change.version))
        except (HeadArtifactError, HeadGroupError) as exc:
            raise RepositoryError(f"{change.name}: cannot be rebuilt from the deployed head versions ({exc}); "
                                  "a repository built before head groups needs rebuilding (export build)") from exc
        path = staged / change.name / str(change.version) / MODEL_FILES[PYTHON_ORT]
        scheme = self.trunk.quantisation
        if scheme:
            quantise_group(path, scheme, self.op.repo)
        for task, folder in zip(change.after, folders):
            canary = read_canary(folder)
            if canary is None:
                continue
            got = group_outputs(path, self.trunk.texts_feeds(canary["texts"], change.depth, served=bool(scheme)))
            if scheme:
                # a quantised repository's head canaries are its int8 head graphs' own outputs; the group, held to
                # the heads at 1e-4 in float32 before it was quantised, gets its own reference from its served graphs likewise
                self.references[task] = served_reference(canary, {n: got[f"{task}_{n}"] for n in canary["outputs"]},
                                                         scheme)
            else:
                compare_canary(got, canary, f"{task}_")

    def _drop(self, change: GroupChange) -> None:
        """A group left without members (``multitask`` no longer routes to it): unloaded, its folder moved aside."""
        op, server, name = self.op, self.op.server, change.name
        if server is not None and server.ready(name):
            op.step = f"unloading {name}"
            op.tx.on_failure(f"reload {name}", lambda: server.load(name))
            server.unload(name)
        op.step = f"moving {name}/ out of the repository"
        src, aside = op.repo / name, op.staging / name
        os.rename(src, aside)
        op.tx.on_failure(f"restore {name}/", lambda: os.rename(aside, src))

    def _served_canaries(self) -> None:
        """Every member of every rebuilt group answers its canary through the served ``multitask``."""
        server = self.op.server
        if server is None or not server.ready(MULTITASK):
            return
        for change in self.changes:
            for task in change.after:
                self.op.step = f"canary of {task} through {change.name} (multitask)"
                canary = self.references.get(task) or read_canary(member_folder(self.op.repo, task))
                diff = served_canary(server, MULTITASK, canary, f"{task}_")
                if diff is not None:
                    self.canary_diffs[task] = diff


__all__ = ["KEEP_GROUP_VERSIONS", "GroupChange", "Regroup", "member_folder", "plan_groups"]
