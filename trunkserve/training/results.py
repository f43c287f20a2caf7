"""What a training run returns, typed: per task its scores, seeds, choice and timings (no live modules).

Why: results used to travel as nested untyped dicts with the trained modules under private
keys (``result["_teacher"]``). Here every record is a dataclass; ``to_json()`` gives exactly
the JSON the summary files and ``reports/*.json`` hold (same keys, same order) and
``from_json()`` reads it back, also from older files that lack the later keys. Each record is
also a read-only ``Mapping`` over its JSON, so ``r["seeds"][0]["student"]["val"]`` still reads.
The trained modules of a seed stay beside its result (``training.trials.ScoredSeed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

from .quality import Verdict

_OMIT_NONE = {"omit_none": True}  # field metadata: left out of the JSON when None (as the dicts did)


def as_json(value: Any) -> Any:
    """``value`` with every record, verdict and tuple in it as plain JSON (dicts, lists)."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, Verdict):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    return value


class Record(Mapping):
    """A dataclass whose ``to_json`` is its fields in order (nested records converted), read as a mapping too."""

    def to_json(self) -> dict:
        return {f.name: as_json(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not (f.metadata.get("omit_none") and getattr(self, f.name) is None)}

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


@dataclass
class Score(Record):
    """One split's result: the headline ``score`` (x 100) and the task's metrics (0..1)."""

    score: float
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"score": self.score, **self.metrics}

    @classmethod
    def from_json(cls, d: dict) -> "Score":
        return cls(d["score"], {k: v for k, v in d.items() if k != "score"})


def _splits(d: dict) -> dict[str, Score]:
    return {split: Score.from_json(s) for split, s in d.items()}


@dataclass
class HeadResult(Record):
    """A teacher or student on one seed: validation score, dev scores per split, training seconds."""

    val: float
    dev: dict[str, Score]
    seconds: float

    @classmethod
    def from_json(cls, d: dict) -> "HeadResult":
        return cls(d["val"], _splits(d["dev"]), d["seconds"])


@dataclass
class FullResult(Record):
    """The full fine-tuning baseline on one seed (``layers``: every layer of the backbone)."""

    val: float
    seconds: float
    layers: int
    dev: dict[str, Score]

    @classmethod
    def from_json(cls, d: dict) -> "FullResult":
        return cls(d["val"], d["seconds"], d["layers"], _splits(d["dev"]))


@dataclass
class Candidate(Record):
    """One searched ``(k, n, m)`` on one seed: its teacher's and student's validation scores and seconds."""

    k: int
    n: int
    m: int
    teacher_val: float
    student_val: float
    teacher_seconds: float
    student_seconds: float

    @classmethod
    def from_json(cls, d: dict) -> "Candidate":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


@dataclass
class SeedResult(Record):
    """The chosen ``(k, n, m)`` on one seed, every candidate that seed trained, and the baseline if asked."""

    seed: int
    k: int
    n: int
    m: int
    candidates: list[Candidate]
    teacher: HeadResult
    student: HeadResult
    full: FullResult | None = field(default=None, metadata=_OMIT_NONE)
    recipe: dict | None = field(default=None, metadata=_OMIT_NONE)  # training.recipe.recipe_record (absent from older files)

    def role(self, name: str) -> HeadResult | FullResult:
        """``teacher``, ``student`` or ``full``."""
        return getattr(self, name)

    @classmethod
    def from_json(cls, d: dict) -> "SeedResult":
        return cls(d["seed"], d["k"], d["n"], d["m"], [Candidate.from_json(c) for c in d["candidates"]],
                   HeadResult.from_json(d["teacher"]), HeadResult.from_json(d["student"]),
                   FullResult.from_json(d["full"]) if "full" in d else None, d.get("recipe"))


@dataclass
class MkdmResult(Record):
    """One student distilled from every seed's teacher (reported only; single-teacher recipe)."""

    teachers: int
    val: float
    dev: dict[str, Score]

    @classmethod
    def from_json(cls, d: dict) -> "MkdmResult":
        return cls(d["teachers"], d["val"], _splits(d["dev"]))


@dataclass
class Majority(Record):
    """The majority-class baseline: what a model ignoring its input scores on validation and each dev split."""

    validation: Score
    dev: dict[str, Score]

    @classmethod
    def from_json(cls, d: dict) -> "Majority":
        return cls(Score.from_json(d["validation"]), _splits(d["dev"]))


@dataclass
class TaskResult(Record):
    """What ``train_heads`` returns per task (and ``--summary`` / ``glue.json`` hold)."""

    task: str
    task_type: str
    metric: str
    labels: list[str]
    train_rows: int
    val_rows: int
    dev_rows: dict[str, int]
    truncated_train: int
    cache_bytes: int
    cache_seconds: float
    k: int
    n: int
    m: int
    headline_split: str
    seeds: list[SeedResult]
    task_description: str | None = field(default=None, metadata=_OMIT_NONE)  # absent from older files
    best_seed: int = 0
    teacher_dev_mean: float = 0.0
    teacher_dev_std: float = 0.0
    student_dev_mean: float = 0.0
    student_dev_std: float = 0.0
    full_dev_mean: float | None = field(default=None, metadata=_OMIT_NONE)
    full_dev_std: float | None = field(default=None, metadata=_OMIT_NONE)
    mkdm: MkdmResult | None = field(default=None, metadata=_OMIT_NONE)
    quality: Verdict | None = field(default=None, metadata=_OMIT_NONE)
    quality_gate: str | None = field(default=None, metadata=_OMIT_NONE)
    shipped: str | None = field(default=None, metadata=_OMIT_NONE)
    majority: Majority | None = field(default=None, metadata=_OMIT_NONE)
    student_dir: str | None = field(default=None, metadata=_OMIT_NONE)
    teacher_dir: str | None = field(default=None, metadata=_OMIT_NONE)
    seconds: float = 0.0
    layer_budget: float | None = None

    def dev_scores(self, role: str) -> list[float]:
        """``role``'s headline dev score on every seed."""
        return [s.role(role).dev[self.headline_split].score for s in self.seeds]

    def dev_mean(self, role: str) -> float | None:
        return getattr(self, f"{role}_dev_mean")

    @classmethod
    def from_json(cls, d: dict) -> "TaskResult":
        nested = {
            "seeds": [SeedResult.from_json(s) for s in d["seeds"]],
            "mkdm": MkdmResult.from_json(d["mkdm"]) if "mkdm" in d else None,
            "quality": Verdict(**d["quality"]) if "quality" in d else None,
            "majority": Majority.from_json(d["majority"]) if "majority" in d else None,
        }
        plain = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d and f.name not in nested}
        return cls(**plain, **nested)


def results_json(results: dict[str, TaskResult]) -> dict[str, dict]:
    """A run's results as the summary file holds them."""
    return {task: r.to_json() for task, r in results.items()}
