"""Readers for the eight GLUE tasks in the standard TSV layout (``GLUE_DIR/<Task>/<split>.tsv``; the task table is
``trunkserve.glue``).

GLUE files are not proper CSV: text contains unbalanced quotes, so lines are split
on tabs with no quoting. Columns are found by header name (robust to the extra
columns of STS-B and MNLI); CoLA has no header and uses fixed positions, MRPC's
header starts with a UTF-8 BOM (read as ``utf-8-sig``). Rows with too few columns
(a handful in QQP) are skipped and counted rather than crashing the run.
"""

from __future__ import annotations

from pathlib import Path

from trunkserve.defaults import default_glue_dir  # noqa: F401  (re-exported: training reads it from here)
from trunkserve.glue import GLUE_TASKS, GlueTask

from .types import DataError, Example, TaskData

ENV_GLUE_DIR = "GLUE_DIR"


def glue_file(glue_dir: str | Path | None, task: str, split: str) -> Path:
    """Path of ``split`` for ``task``; ``DataError`` naming the file if it is missing."""
    spec = _spec(task)
    path = Path(glue_dir or default_glue_dir()) / spec.folder / f"{split}.tsv"
    if not path.is_file():
        raise DataError(
            f"GLUE task {task!r}: missing file {path} "
            f"(expected the standard layout <glue_dir>/{spec.folder}/{split}.tsv; set --glue-dir or {ENV_GLUE_DIR})"
        )
    return path


def _spec(task: str) -> GlueTask:
    if task not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[task]


def _column(header: list[str] | None, key: str | int, path: Path) -> int:
    if isinstance(key, int):
        return key
    if header is None or key not in header:
        raise DataError(f"{path}: no column {key!r} in header {header}")
    return header.index(key)


def read_glue_split(path: str | Path, spec: GlueTask) -> list[Example]:
    """Read one GLUE TSV into ``Example`` rows (label as class index or float score)."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = f.read().split("\n")
    lines = [ln.rstrip("\r") for ln in lines if ln.strip()]
    header = lines[0].split("\t") if spec.header else None
    rows = lines[1:] if spec.header else lines
    ti = _column(header, spec.text, path)
    pi = _column(header, spec.text_pair, path) if spec.text_pair is not None else None
    li = _column(header, spec.label, path)
    need = max(i for i in (ti, pi, li) if i is not None)
    label_index = {r: i for i, r in enumerate(spec.raw_labels)} if spec.raw_labels else None
    out: list[Example] = []
    skipped = 0
    for n, line in enumerate(rows):
        cols = line.split("\t")
        if len(cols) <= need:
            skipped += 1
            continue
        raw = cols[li].strip()
        if label_index is not None:
            if raw not in label_index:
                if raw in ("-", ""):  # unlabeled rows (SNLI-style "-")
                    skipped += 1
                    continue
                raise DataError(f"{path}: line {n + 1 + spec.header}: unknown label {raw!r} (expected {list(label_index)})")
            label: int | float = label_index[raw]
        else:
            try:
                label = float(raw)
            except ValueError:
                raise DataError(f"{path}: line {n + 1 + spec.header}: score {raw!r} is not a number") from None
        out.append(Example(cols[ti], cols[pi] if pi is not None else None, label))
    if not out:
        raise DataError(f"{path}: no usable rows ({skipped} skipped)")
    return out


def load_glue_task(task: str, glue_dir: str | Path | None = None, splits: tuple[str, ...] = ("train", "dev")) -> TaskData:
    """Load a GLUE task's train and dev sets. ``splits`` may drop ``train`` (evaluation only)."""
    spec = _spec(task)
    train = read_glue_split(glue_file(glue_dir, task, "train"), spec) if "train" in splits else []
    dev = {}
    if "dev" in splits:
        for s in spec.dev_splits:
            dev[s] = read_glue_split(glue_file(glue_dir, task, s), spec)
    return TaskData(
        name=task,
        task_type=spec.task_type,
        labels=list(spec.labels),
        metric=task,
        train=train,
        dev=dev,
    )
