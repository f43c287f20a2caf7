"""User tasks from CSV or JSONL, with no code: columns ``text``, optional ``text_pair``, ``label``.

Labels come from the data. A task is a regression when asked for, or when every
label parses as a number and at least one is not an integer (``3.5``); otherwise
it is a classification whose classes are the distinct label strings, in sorted
order (numeric order when they are all integers), so the same file always gives
the same label indices.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Callable

from .types import DataError, Example, TaskData


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"custom task file missing: {path}")
    try:
        rows = _parse_rows(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "text" not in row or "label" not in row:
            raise DataError(f"{path}: row {n + 1} lacks 'text' or 'label' (columns: text, optional text_pair, label)")
        check_row(row, f"{path}: row {n + 1}")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _parse_rows(path: Path) -> list:
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {n + 1}: invalid JSON ({exc})") from None
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raise DataError(f"{path}: custom tasks must be .csv, .tsv or .jsonl")
    return rows


def check_row(row: dict, where: str) -> None:
    """Refuse what would otherwise be trained on silently: a missing label, a non-string or empty text.

    Why: ``str(None)`` would make a class ``'None'`` and a text ``'None'``; a
    number or object where text belongs is a broken export, not a sentence.
    """
    label = row["label"]
    if label is None or (isinstance(label, str) and not label.strip()) or isinstance(label, (dict, list)):
        raise DataError(f"{where}: label is {label!r}; every row needs a label (a class name or a number)")
    if _is_number(label) and not math.isfinite(float(label)):
        raise DataError(f"{where}: label is {label!r}; labels must be finite")
    for key in ("text", "text_pair"):
        value = row.get(key)
        if key == "text_pair" and value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"{where}: {key} is {type(value).__name__} {value!r}, not a string")
        if key == "text" and not value.strip():
            raise DataError(f"{where}: text is empty")


def _is_number(v) -> bool:
    if isinstance(v, bool):
        return False
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _is_integral(v) -> bool:
    return _is_number(v) and float(v) == int(float(v))


def infer_task_type(raw_labels: list) -> str:
    if all(_is_number(v) for v in raw_labels) and not all(_is_integral(v) for v in raw_labels):
        return "regression"
    return "classification"


def class_key(raw_labels: list) -> Callable[[object], str]:
    """Label value -> class name: ``1``, ``1.0`` and ``"1"`` are one class ``"1"`` when every label is an integer."""
    if all(_is_integral(v) for v in raw_labels):
        return lambda v: str(int(float(v)))
    return lambda v: str(v).strip()


def label_names(raw_labels: list) -> list[str]:
    """Class names in a stable order: numeric when every label is an integer, else sorted strings."""
    names = {class_key(raw_labels)(v) for v in raw_labels}
    return sorted(names, key=int) if all(_is_integral(v) for v in raw_labels) else sorted(names)


def load_custom_task(
    name: str,
    train: str | Path,
    dev: str | Path | None = None,
    task_type: str | None = None,
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> TaskData:
    """Build a ``TaskData`` from files; without a dev file, a seeded ``dev_fraction`` of train is held out."""
    train_rows = read_rows(train)
    dev_rows = read_rows(dev) if dev else []
    raw = [r["label"] for r in train_rows + dev_rows]
    task_type = task_type or infer_task_type(raw)
    if task_type == "regression":
        if not all(_is_number(v) for v in raw):
            raise DataError(f"custom task {name!r}: regression needs numeric labels")
        labels = ["score"]
        conv = lambda v: float(v)  # noqa: E731
    elif task_type == "classification":
        labels = label_names(raw)
        if len(labels) < 2:
            raise DataError(f"custom task {name!r}: a classification needs at least 2 distinct labels, got {labels}")
        index, key = {v: i for i, v in enumerate(labels)}, class_key(raw)
        conv = lambda v: index[key(v)]  # noqa: E731
    else:
        raise DataError(f"custom task {name!r}: task_type must be classification or regression")

    def examples(rows):
        return [Example(str(r["text"]), (str(r["text_pair"]) if r.get("text_pair") not in (None, "") else None), conv(r["label"])) for r in rows]

    train_ex = examples(train_rows)
    if dev_rows:
        dev_ex = examples(dev_rows)
    else:
        order = list(range(len(train_ex)))
        random.Random(seed).shuffle(order)
        n_dev = max(1, int(len(order) * dev_fraction))
        dev_ex = [train_ex[i] for i in order[:n_dev]]
        train_ex = [train_ex[i] for i in order[n_dev:]]
    metric = "regression" if task_type == "regression" else ("binary" if len(labels) == 2 else "multiclass")
    return TaskData(name=name, task_type=task_type, labels=labels, metric=metric, train=train_ex, dev={"dev": dev_ex})
