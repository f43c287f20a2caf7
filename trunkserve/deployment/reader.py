"""A deployed repository read once: every model's config, typed, and each head's labels.

Why one read: an operation (add-head, swap-head, remove-head, list-heads)
used to read the trunk's config three times and each head's twice, through
separate parsers; a ``Deployment`` holds what they all need, read under the
operation's lock, and later steps use it instead of the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import RepositoryError
from .files import read_model_config
from .layout import (CONFIG_FILE, LABELS_FILE, MULTITASK, TOKENIZER, group_model_folders, head_model_folders, head_task,
                     model_versions, versions_of)
from .params import GroupParams, HeadEntry, ServingOptions, TokenizerParams, TrunkInfo, read_trunk_config


@dataclass
class DeployedHead:
    """One ``head_<task>`` model as deployed: its entry, labels (``labels.txt``), instance count and versions."""

    entry: HeadEntry
    labels: list[str]
    config: dict = field(repr=False)  # the JSON form, for the counts ``ServingOptions`` reads
    versions: list[int] = field(default_factory=list)


def read_labels(folder: Path) -> list[str]:
    path = folder / LABELS_FILE
    return path.read_text().splitlines() if path.exists() else []


def read_heads(repo: str | Path) -> dict[str, DeployedHead]:
    """The head models on disk by task (sorted by name): config, labels and version folders."""
    heads = {}
    for folder in head_model_folders(repo):
        config = read_model_config(folder)
        entry = HeadEntry.from_config(config)
        heads[entry.task] = DeployedHead(entry, read_labels(folder), config, versions_of(repo, entry.task))
    return heads


@dataclass
class DeployedGroup:
    """One head group model (``heads_d<k>``) as deployed: its members and its version folders."""

    params: GroupParams
    versions: list[int] = field(default_factory=list)


def read_groups(repo: str | Path) -> dict[str, DeployedGroup]:
    """The head group models on disk by name (sorted): members (the ``tasks`` parameter) and version folders."""
    groups = {}
    for folder in group_model_folders(repo):
        params = GroupParams.from_config(read_model_config(folder))
        groups[params.name] = DeployedGroup(params, model_versions(folder))
    return groups


def read_routes(repo: str | Path) -> frozenset[str]:
    """The models the deployed ``multitask`` ensemble routes to (none where it has no config)."""
    folder = Path(repo) / MULTITASK
    if not (folder / CONFIG_FILE).exists():
        return frozenset()
    steps = (read_model_config(folder).get("ensemble_scheduling") or {}).get("step") or []
    return frozenset(s.get("model_name", "") for s in steps)


def routed_tasks(routes: frozenset[str], groups: dict[str, DeployedGroup]) -> frozenset[str]:
    """The tasks ``multitask`` answers: those of its ``head_<task>`` steps and the members of its group steps."""
    tasks = {head_task(m) for m in routes} - {None}
    for name in routes & set(groups):
        tasks |= set(groups[name].params.tasks)
    return frozenset(tasks)  # type: ignore[arg-type]


@dataclass
class Deployment:
    """Everything the repository's configs say, typed: trunk, tokenizer, serving options, heads, ``multitask``'s routes
    and the head groups."""

    repo: Path
    trunk: TrunkInfo
    tokenizer: TokenizerParams
    options: ServingOptions
    heads: dict[str, DeployedHead]
    routes: frozenset[str]
    groups: dict[str, DeployedGroup] = field(default_factory=dict)

    @classmethod
    def read(cls, repo: str | Path) -> "Deployment":
        repo = Path(repo)
        trunk_config = read_trunk_config(repo)  # a missing trunk says "build the repository first"
        tokenizer_config = read_model_config(repo / TOKENIZER)
        heads = read_heads(repo)
        first = next(iter(heads.values()), None)
        options = ServingOptions.from_configs(trunk_config, first.config if first else None, tokenizer_config)
        return cls(repo, TrunkInfo.from_config(trunk_config), TokenizerParams.from_config(tokenizer_config), options, heads,
                   read_routes(repo), read_groups(repo))

    @property
    def entries(self) -> list[HeadEntry]:
        """The heads' entries, sorted by task (what ``multitask`` is written from)."""
        return [self.heads[t].entry for t in sorted(self.heads)]

    def in_multitask(self, task: str) -> bool:
        """Whether ``multitask`` answers ``task`` (through its head group, or its head model directly)."""
        return task in routed_tasks(self.routes, self.groups)

    def head(self, task: str) -> DeployedHead:
        if task not in self.heads:
            raise RepositoryError(f"task {task!r} is not deployed in {self.repo}")
        return self.heads[task]
