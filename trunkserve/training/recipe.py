"""The student recipe: which teachers a student learns from, with what weights, and on which rows.

``multi-teacher`` (the default): the student of a candidate ``(k, n, m)`` on seed ``s`` learns the
averaged soft labels of ``teachers`` teachers of shape ``(k, n)``, trained on the same trunk cache
with seeds ``s, s+1, ..., s+T-1``. A teacher depends only on ``(k, n, seed)`` and the schedule, so
each is trained once per task and reused (``Prepared.teachers``): with seeds 0, 1, 2 and T = 3 the
seeds' own teachers are the first seed's three, and five are trained in all, not nine. On the trunk
cache a teacher costs its own layers only; the search's candidates train T teachers per ``(k, n)``
instead of one. ``single-teacher``: seed ``s``'s teacher alone (the recipe before).

Either way the trial's teacher, which the quality gate compares the student with and which ships
in its place on a fallback, is the best of them on validation. Weights: ``mean`` (equal) or
``validation`` (each teacher's validation score above the majority-class baseline). With a transfer
set (``training.transfer``), the student also learns the targets on those rows.
"""

from __future__ import annotations

import math

from trunkserve.backbone import Backbone
from trunkserve.modules import Head

from .loop import FitResult
from .options import RECIPES, WEIGHTINGS, HeadOptions, PipelineError
from .prepare import Prepared
from .teacher import train_teacher


def teacher_seeds(opts: HeadOptions, seed: int) -> tuple[int, ...]:
    """The seeds of the teachers a student on ``seed`` learns from."""
    if opts.student_recipe not in RECIPES:
        raise PipelineError(f"student recipe must be one of {', '.join(RECIPES)}, got {opts.student_recipe!r}")
    if opts.student_recipe == "single-teacher":
        return (seed,)
    if opts.teachers < 1:
        raise PipelineError(f"teachers must be at least 1, got {opts.teachers}")
    return tuple(seed + j for j in range(opts.teachers))


def teacher_weights(vals: list[float], majority: float, weighting: str = "mean") -> list[float]:
    """Weights summing to 1: equal (``mean``), or in proportion to each validation score above ``majority``
    (``validation``; a teacher at chance or below gets 0, and equal weights when none is above it)."""
    if weighting not in WEIGHTINGS:
        raise PipelineError(f"teacher weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    equal = [1.0 / len(vals)] * len(vals)
    if weighting == "mean":
        return equal
    base = majority if math.isfinite(majority) else 0.0  # a constant's correlation is undefined: chance is 0 there
    gains = [max(0.0, v - base) if math.isfinite(v) else 0.0 for v in vals]
    total = sum(gains)
    return [g / total for g in gains] if total > 0 else equal


def task_teachers(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, k: int, n: int) -> list[tuple[int, Head, FitResult]]:
    """``(seed, teacher, fit)`` for every teacher of a ``(k, n)`` student on ``seed``, trained once per task."""
    d = prep.data
    out = []
    for s in teacher_seeds(opts, seed):
        cfg = opts.fit_config(s)
        key = (k, n, s, repr(cfg))
        if key not in prep.teachers:
            prep.teachers[key] = train_teacher(bb, prep.caches["train"], prep.caches["val"], k, n, d.num_labels, d.task_type,
                                               d.metric, cfg, desc=f"{d.name} teacher k={k} n={n} s={s}")
        out.append((s, *prep.teachers[key]))
    return out


def transfer_rows(prep: Prepared, opts: HeadOptions):
    """The cached transfer rows the student learns on (None: no transfer set asked for, or none built)."""
    return prep.caches.get("transfer") if opts.transfer_sources else None


def recipe_record(opts: HeadOptions, teachers: list[tuple[int, Head, FitResult]], weights: list[float], best: int,
                  prep: Prepared, transfer) -> dict:
    """What ``head.json`` and the results say of a student's recipe: its teachers, weights and transfer set."""
    info = prep.transfer_info
    return {
        "name": opts.student_recipe, "teachers": len(teachers), "weighting": opts.teacher_weighting,
        "teacher_seeds": [s for s, _, _ in teachers], "teacher_val": [f.best_score for _, _, f in teachers],
        "teacher_seconds": [f.seconds for _, _, f in teachers], "weights": weights, "best_teacher_seed": teachers[best][0],
        "transfer": {"sources": list(opts.transfer_sources), "rows": 0 if transfer is None else len(transfer),
                     "max": opts.transfer_max, **({"by_source": info.sources, "excluded": info.excluded}
                                                  if transfer is not None and info is not None else {})},
    }
