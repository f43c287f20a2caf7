"""Texts to send: the GLUE dev sets by default (typical GLUE lengths), or a file.

A corpus is a list of ``(text, text_pair)``; ``text_pair`` is ``""`` for single
sentences. A corpus *file* holds one input per line, with an optional tab
separating text and pair (blank lines are skipped).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Sequence

from trunkserve.defaults import default_glue_dir
from trunkserve.glue import GLUE_FOLDERS, GLUE_TASKS

from .errors import CorpusError

Pair = tuple[str, str]

#: GLUE dev sets read by default, by folder name (their columns and dev files: ``trunkserve.glue``).
DEFAULT_GLUE_TASKS = tuple(GLUE_TASKS[t].folder for t in ("sst2", "cola", "mrpc", "stsb", "rte"))
#: folder -> (text column, pair column or None); columns are header names, or ints for header-less files (CoLA).
GLUE_DEV = {t.folder: (t.text, t.text_pair) for t in GLUE_FOLDERS.values()}


def glue_dir() -> Path:
    """``$GLUE_DIR``, else ``<checkout>/../shared/glue``."""
    return default_glue_dir()


def _read_tsv(path: Path, text_col, pair_col) -> list[Pair]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        return []
    if isinstance(text_col, int):
        header, body = None, rows
    else:
        header, body = rows[0], rows[1:]
    def col(c):
        return c if isinstance(c, int) else header.index(c)
    try:
        ti = col(text_col)
        pi = None if pair_col is None else col(pair_col)
    except ValueError as exc:
        raise CorpusError(f"{path}: expected column missing ({exc})") from exc
    out = []
    for r in body:
        if len(r) > ti and r[ti].strip() and (pi is None or len(r) > pi):
            out.append((r[ti], "" if pi is None else r[pi]))
    return out


def read_glue_dev(folder: str | Path | None = None, tasks: Sequence[str] = DEFAULT_GLUE_TASKS) -> list[Pair]:
    """Inputs of the GLUE dev sets of ``tasks`` that exist under ``folder``."""
    folder = Path(folder) if folder else glue_dir()
    out: list[Pair] = []
    for task in tasks:
        spec = GLUE_FOLDERS.get(task)
        for name in spec.dev_files if spec else ():
            path = folder / task / name
            if path.exists():
                out += _read_tsv(path, *GLUE_DEV[task])
    if not out:
        raise CorpusError(f"no GLUE dev sets under {folder} (set GLUE_DIR or pass a corpus file)")
    return out


def read_corpus_file(path: str | Path) -> list[Pair]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text, _, pair = line.partition("\t")
        if text.strip():
            out.append((text, pair))
    if not out:
        raise CorpusError(f"{path}: no non-empty lines")
    return out


def load_corpus(path: str | Path | None = None) -> list[Pair]:
    """A corpus file if ``path`` is given (a folder is read as GLUE), else the GLUE dev sets."""
    if path and Path(path).is_file():
        return read_corpus_file(path)
    if path and not Path(path).exists():
        raise CorpusError(f"corpus {path} does not exist")
    return read_glue_dev(path)


class Sampler:
    """Random batches of inputs, seeded; pairs stay pairs."""

    def __init__(self, corpus: Sequence[Pair], seed: int = 0):
        if not corpus:
            raise CorpusError("empty corpus")
        self.corpus = list(corpus)
        self.rng = random.Random(seed)

    def batch(self, size: int) -> tuple[list[str], list[str]]:
        rows = [self.corpus[self.rng.randrange(len(self.corpus))] for _ in range(size)]
        return [r[0] for r in rows], [r[1] for r in rows]
