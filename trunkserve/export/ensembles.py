"""The ensembles: each task's ``<task>`` and the ``multitask`` fan-out, for the merged and the baseline repositories.

Why one writer for both: a task's ensemble is the tokenizer followed by the
steps to the model that answers (the trunk and ``head_<task>``, or the
baseline's full ``model_<task>``), with the same outputs and label files, so
clients and load tests cannot tell the two repositories apart by their names.
The multitask ensemble is always regenerated from the heads given, so adding
or removing a head folder and rewriting it is all it takes to change the set.
It runs one step per head group (``head_groups``: every head of one depth and
layer count in one graph) where ``groups`` are given, else one step per head
(TensorRT repositories, whose plans are per head for now).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

from trunkserve.deployment.layout import LABELS_FILE, MULTITASK, TOKENIZER, TRUNK, VERSION, head_model_name
from trunkserve.deployment.params import HeadEntry
from trunkserve.modules import REGRESSION
from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN, TOKEN_INPUTS, TRUNCATED, TensorSpec, head_output_specs, hidden_name, tokenizer_spec

from . import configs
from .configs import ServingOptions, Step
from .errors import RepositoryError


def tokenizer_step() -> Step:
    tok = tokenizer_spec()
    return Step(TOKENIZER, {t.name: t.name for t in tok.inputs}, {t.name: t.name for t in tok.outputs})


def trunk_step(head_depths: Iterable[int]) -> Step:
    return Step(TRUNK, {n: n for n in TOKEN_INPUTS}, {hidden_name(d): hidden_name(d) for d in sorted(set(head_depths))})


def head_step(entry: HeadEntry, prefix: str = "") -> Step:
    return Step(
        head_model_name(entry.task),
        {HEAD_HIDDEN: hidden_name(entry.branch_layer), ATTENTION_MASK: ATTENTION_MASK},
        {o.name: f"{prefix}{o.name}" for o in entry.outputs},
    )


def group_step(name: str, members: Sequence[HeadEntry]) -> Step:
    """A head group's step in ``multitask``: the hidden states of the members' depth in, every member's outputs out."""
    return Step(
        name,
        {HEAD_HIDDEN: hidden_name(members[0].branch_layer), ATTENTION_MASK: ATTENTION_MASK},
        {f"{e.task}_{o.name}": f"{e.task}_{o.name}" for e in members for o in e.outputs},
    )


def head_steps(entry: HeadEntry) -> list[Step]:
    """What ``<task>`` runs after the tokenizer in the merged repository: the trunk to the head's depth, then the head."""
    return [trunk_step([entry.branch_layer]), head_step(entry)]


def task_outputs(task_type: str, num_labels: int, prefix: str, label_file: str | None) -> list[tuple[TensorSpec, str | None]]:
    """An ensemble's outputs for one task (``<prefix><output>``); regression scores get no label file."""
    return [
        (TensorSpec(f"{prefix}{o.name}", o.dtype, o.axes), None if task_type == REGRESSION else label_file)
        for o in head_output_specs(task_type, num_labels)
    ]


def truncated_output() -> tuple[TensorSpec, None]:
    return (tokenizer_spec().tensor(TRUNCATED), None)


def write_task_ensemble(repo: Path, task: str, task_type: str, labels: Sequence[str], steps: Sequence[Step],
                        opts: ServingOptions) -> Path:
    """``<task>``: the tokenizer, then ``steps`` (``head_steps``, or the baseline's full model), with its label file."""
    folder = repo / task
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    if task_type != REGRESSION:
        (folder / LABELS_FILE).write_text("\n".join(labels) + "\n")
    cfg = configs.ensemble_config(
        task,
        tokenizer_spec().inputs,
        [*task_outputs(task_type, len(labels), "", LABELS_FILE), truncated_output()],
        [tokenizer_step(), *steps],
        opts.max_batch_size,
    )
    configs.write_config(folder, cfg)
    return folder


def multitask_config(entries: Sequence[HeadEntry], opts: ServingOptions, groups: Mapping[str, Sequence[str]] | None = None):
    """The ``multitask`` ensemble over ``entries``: outputs ``<task>_<output>`` for each head; with ``groups``
    (group model -> member tasks, covering ``entries``) one step per group, else one per head."""
    outputs = [truncated_output()]
    for e in entries:
        outputs += task_outputs(e.task_type, e.num_labels, f"{e.task}_", f"{e.task}_{LABELS_FILE}")
    if groups is None:
        routed = [head_step(e, f"{e.task}_") for e in entries]
    else:
        by_task = {e.task: e for e in entries}
        missing = sorted(set(by_task) - {t for tasks in groups.values() for t in tasks})
        if missing:
            raise RepositoryError(f"multitask: tasks {missing} are in no head group")
        routed = [group_step(name, [by_task[t] for t in tasks]) for name, tasks in groups.items()]
    steps = [tokenizer_step(), trunk_step(e.branch_layer for e in entries), *routed]
    return configs.ensemble_config(MULTITASK, tokenizer_spec().inputs, outputs, steps, opts.max_batch_size)


def write_multitask_ensemble(repo: Path, opts: ServingOptions, entries: Sequence[HeadEntry],
                             labels: Mapping[str, Sequence[str]], groups: Mapping[str, Sequence[str]] | None = None) -> Path:
    """(Re)write ``multitask`` over ``entries`` (``labels`` by task; ``groups`` as ``multitask_config``); label
    files first, config last, each atomically, and each only where it changes (a swap leaves the folder as it was)."""
    if not entries:
        raise RepositoryError("no heads: the multitask ensemble needs at least one")
    folder = Path(repo) / MULTITASK
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    for e in entries:
        if e.task_type != REGRESSION:
            atomic_write(folder / f"{e.task}_{LABELS_FILE}", "\n".join(labels[e.task]) + "\n")
    atomic_write(folder / "config.pbtxt", configs.to_pbtxt(multitask_config(entries, opts, groups)))
    return folder


def atomic_write(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and ``rename``, so Triton never reads half a file; a file that
    already says ``text`` is left alone."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
