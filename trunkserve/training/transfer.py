"""The transfer set: extra text on which the student learns its teachers' soft labels (it has no labels).

Why: a student distilled on the task's labelled rows alone sees few inputs, while its teachers can
label any text, and on the trunk cache a row costs one trunk pass. Sources (composable):

- ``augment``: the task's own training sentences with words masked (``[MASK]``), dropped or
  swapped with a neighbour, one operation per row, seeded;
- ``other-tasks``: sentences of the other GLUE tasks' training files in the same GLUE folder.
  A single-sentence task takes every sentence alone; a pair task takes the other pair tasks'
  pairs (or, with none there, single sentences each paired with another at random);
- ``file``: a text file, one example per line, a tab between the two texts of a pair (a pair
  task pairs a line without a tab with another line at random).

Honest selection: no row of which either text is a sentence (case and spacing aside) of the
task's validation split, its dev files or its test files; the bound is ``max_rows`` and the
number of training rows, shared evenly between the sources.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from .data.glue import GLUE_TASKS, default_glue_dir, glue_file, read_glue_split
from .data.types import DataError, Example, TaskData

MASK = "[MASK]"
WORD_RATE = 0.15  # share of a sentence's words an augmentation touches (at least one)


def normalise(text: str) -> str:
    """The form sentences are compared in: lower case, single spaces."""
    return " ".join(text.lower().split())


def sentences(rows: list[Example]) -> set[str]:
    return {normalise(t) for ex in rows for t in (ex.text, ex.text_pair) if t}


def glue_test_sentences(task: str, glue_dir) -> set[str]:
    """Every tab-separated field of a GLUE task's test files (``test*.tsv``), where the folder has them."""
    if task not in GLUE_TASKS:
        return set()
    folder = Path(glue_dir or default_glue_dir()) / GLUE_TASKS[task].folder
    out: set[str] = set()
    for path in sorted(folder.glob("test*.tsv")):
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            out.update(normalise(c) for c in line.split("\t") if c.strip())
    return out


def held_out(data: TaskData, val_rows: list[Example], glue_dir=None) -> set[str]:
    """The sentences a transfer row may not contain: validation split, every dev row (uncapped), test files."""
    return sentences(val_rows) | sentences([ex for rows in data.dev.values() for ex in rows]) | glue_test_sentences(data.name, glue_dir)


def perturb(text: str, rng: random.Random) -> str:
    """``text`` with one operation (mask, drop or swap) applied to ``WORD_RATE`` of its words."""
    words = text.split()
    if not words:
        return text
    op = rng.choice(("mask", "drop", "swap")) if len(words) > 1 else "mask"
    for _ in range(max(1, round(WORD_RATE * len(words)))):
        i = rng.randrange(len(words))
        if op == "mask":
            words[i] = MASK
        elif op == "drop" and len(words) > 1:
            del words[i]
        elif op == "swap" and len(words) > 1:
            j = i + 1 if i + 1 < len(words) else i - 1
            words[i], words[j] = words[j], words[i]
    return " ".join(words)


def augmented(train_rows: list[Example], n: int, rng: random.Random) -> list[Example]:
    picks = [train_rows[rng.randrange(len(train_rows))] for _ in range(n)]
    return [Example(perturb(ex.text, rng), perturb(ex.text_pair, rng) if ex.text_pair else None, 0) for ex in picks]


def paired(texts: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """Single texts as pairs, each with another at random."""
    return [(t, texts[rng.randrange(len(texts))]) for t in texts]


def other_task_rows(task: str, glue_dir, pair: bool) -> list[tuple[str, str | None]]:
    """Every other GLUE task's training sentences present in ``glue_dir``: pairs for a pair task, else singles."""
    pairs, singles = [], []
    for other, spec in GLUE_TASKS.items():
        if other == task:
            continue
        try:
            rows = read_glue_split(glue_file(glue_dir, other, "train"), spec)
        except DataError:  # that task's files are not there
            continue
        singles.extend(t for ex in rows for t in (ex.text, ex.text_pair) if t)
        pairs.extend((ex.text, ex.text_pair) for ex in rows if ex.text_pair)
    if not pair:
        return [(t, None) for t in singles]
    return pairs or paired(singles, random.Random(0))


def file_rows(path: str | Path, pair: bool, rng: random.Random) -> list[tuple[str, str | None]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--transfer-text {p}: no such file")
    lines = [ln.split("\t", 1) for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"--transfer-text {p}: no text in it")
    if not pair:
        return [(t, None) for parts in lines for t in parts if t.strip()]
    texts = [parts[0] for parts in lines]
    return [(a[0], a[1]) if len(a) > 1 else (a[0], texts[rng.randrange(len(texts))]) for a in lines]


@dataclass
class TransferSet:
    """The transfer rows (labels are placeholders, never trained on) and how many each source gave."""

    rows: list[Example]
    sources: dict[str, int] = field(default_factory=dict)
    excluded: int = 0  # candidate rows dropped for holding a held-out sentence

    def to_json(self) -> dict:
        return {"sources": dict(self.sources), "rows": len(self.rows), "excluded": self.excluded}


def build_transfer(data: TaskData, train_rows: list[Example], val_rows: list[Example], sources: tuple[str, ...],
                   max_rows: int, seed: int = 0, glue_dir=None, text_file=None) -> TransferSet:
    """At most ``min(max_rows, len(train_rows))`` transfer rows from ``sources``, none holding a held-out sentence."""
    bound = min(max_rows, len(train_rows))
    if not sources or bound == 0:
        return TransferSet([])
    rng = random.Random(seed + 104729)
    banned = held_out(data, val_rows, glue_dir)
    pair = any(ex.text_pair is not None for ex in train_rows)
    out = TransferSet([])
    for i, source in enumerate(sources):
        quota = bound // len(sources) + (i < bound % len(sources))
        if source == "augment":
            cands = augmented(train_rows, quota, rng)
        else:
            texts = other_task_rows(data.name, glue_dir, pair) if source == "other-tasks" else file_rows(text_file, pair, rng)
            cands = [Example(a, b, 0) for a, b in rng.sample(texts, min(quota, len(texts)))]
        kept = [ex for ex in cands if not ({normalise(ex.text), normalise(ex.text_pair or "")} & banned)]
        out.excluded += len(cands) - len(kept)
        out.sources[source] = len(kept)
        out.rows.extend(kept)
    if data.task_type == "regression":
        out.rows = [Example(ex.text, ex.text_pair, 0.0) for ex in out.rows]
    return out
