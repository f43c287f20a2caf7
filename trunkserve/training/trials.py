"""One candidate ``(k, n, m)`` on one seed: a teacher, its distilled student, their scores, and the gate.

Also the full fine-tuning baseline on the same split. Everything here runs on a task's
``Prepared`` data, in the main process or in a worker (``training.parallel``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from trunkserve.backbone import Backbone
from trunkserve.modules import Head

from .distill import train_student
from .options import HeadOptions, PipelineError
from .prepare import Prepared
from .quality import judge
from .recipe import recipe_record, task_teachers, teacher_weights, transfer_rows
from .results import Candidate, FullResult, HeadResult, Score, SeedResult
from .teacher import evaluate_outputs, predict_full, predict_head, train_full


def search_depths(opts: HeadOptions, bb: Backbone) -> list[int]:
    """The branch depths a task's candidates use: the depths its trunk cache holds."""
    return sorted({k for k, _, _ in candidates(opts, bb.config.num_hidden_layers)})


def student_choices(opts: HeadOptions) -> tuple[int, ...]:
    return tuple(sorted(set(opts.search_student_layers))) or (opts.student_layers,)


def candidates(opts: HeadOptions, num_hidden_layers: int) -> list[tuple[int, int, int]]:
    """``(branch depth k, teacher layers n, student layers m)`` to try, restricted to the trunk's depths."""
    depths = sorted(set(opts.depths))
    if opts.branch_layer is not None:
        if opts.branch_layer not in depths:
            raise PipelineError(f"branch layer {opts.branch_layer} is not a trunk depth {tuple(depths)} (see --depths)")
        ks = [opts.branch_layer]
    elif opts.search:
        ks = depths
    else:
        ks = [depths[-1]]
    ms = student_choices(opts)
    out = []
    for k in ks:
        if not 0 <= k < num_hidden_layers:
            raise PipelineError(f"branch depth {k} leaves no layer to fine-tune (backbone has {num_hidden_layers})")
        top = num_hidden_layers - k
        if opts.teacher_layers is not None:
            if not 1 <= opts.teacher_layers <= top:
                raise PipelineError(f"--teacher-layers {opts.teacher_layers}: above branch depth {k} the backbone has "
                                    f"{top} layer(s) to fine-tune")
            ns = [opts.teacher_layers]
        elif opts.search_teacher_layers:
            ns = list(range(max(1, min(ms)), top + 1))
        else:
            ns = [top]
        out.extend((k, n, m) for n in ns for m in ms if n >= m)
    if not out:
        raise PipelineError(f"no (k, n) leaves room for a {'/'.join(map(str, ms))}-layer student")
    return out


def dev_scores(outputs_fn: Callable[[str], np.ndarray], prep: Prepared) -> dict[str, Score]:
    """Every dev split scored from ``outputs_fn(split)`` (the dev sets are only scored, never chosen on)."""
    out = {}
    for split, enc in prep.dev.items():
        score, metrics = evaluate_outputs(outputs_fn(split), enc, prep.data.metric)
        out[split] = Score(score, metrics)
    return out


@dataclass
class Trial:
    """One candidate ``(k, n, m)`` trained on one seed: the teacher, its student, their validation scores."""

    k: int
    n: int
    m: int
    teacher: Head
    student: Head
    teacher_val: float
    student_val: float
    teacher_seconds: float
    student_seconds: float
    teacher_metrics: dict = field(default_factory=dict)  # validation metrics behind teacher_val
    student_metrics: dict = field(default_factory=dict)
    schedules: dict = field(default_factory=dict)  # "teacher" / "student" -> FitResult.schedule()
    recipe: dict | None = None  # training.recipe.recipe_record: the student's teachers, weights and transfer set

    def val_result(self, role: str) -> dict:
        """``{"score": ..., <metric>: ...}`` on validation for ``role`` ("teacher" or "student")."""
        return {"score": getattr(self, f"{role}_val"), **getattr(self, f"{role}_metrics")}

    def record(self) -> Candidate:
        return Candidate(self.k, self.n, self.m, self.teacher_val, self.student_val, self.teacher_seconds, self.student_seconds)

    def head_result(self, role: str, dev: dict[str, Score]) -> HeadResult:
        return HeadResult(getattr(self, f"{role}_val"), dev, getattr(self, f"{role}_seconds"))


@dataclass
class ScoredSeed:
    """A seed's result and, beside it, the live modules that produced it (never part of the result)."""

    result: SeedResult
    trial: Trial


def train_trials(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, cands: Sequence[tuple[int, int, int]], log=print) -> list[Trial]:
    """Per ``(k, n)`` its teachers (``training.recipe``: one, or several reused across seeds) and per ``m`` a
    student distilled from them, all on cached trunk states. The trial's teacher is the best on validation;
    its seconds are every teacher's (the recipe's cost)."""
    d = prep.data
    transfer = transfer_rows(prep, opts)
    trials = []
    for k, n, m in cands:
        teachers = task_teachers(bb, prep, opts, seed, k, n)
        vals = [fit.best_score for _, _, fit in teachers]
        weights = teacher_weights(vals, prep.majority["val"]["score"], opts.teacher_weighting)
        best = max(range(len(teachers)), key=vals.__getitem__)
        _, teacher, t_fit = teachers[best]
        student, s_fit = train_student(
            [h for _, h, _ in teachers], prep.caches["train"], prep.caches["val"], k, d.metric,
            opts.fit_config(seed, epochs=opts.student_epochs), num_layers=m,
            temperature=opts.temperature, soft_weight=opts.soft_weight, hard_weight=opts.hard_weight,
            hidden_weight=opts.hidden_weight, refit_steps=opts.refit_steps, refit=opts.refit, desc=f"{d.name} student k={k} m={m} s={seed}",
            weights=weights if len(teachers) > 1 else None, transfer=transfer,
        )
        trials.append(Trial(k, n, m, teacher, student, t_fit.best_score, s_fit.best_score,
                            sum(f.seconds for _, _, f in teachers), s_fit.seconds, t_fit.best_metrics, s_fit.best_metrics,
                            {"teacher": t_fit.schedule(), "student": s_fit.schedule()},
                            recipe_record(opts, teachers, weights, best, prep, transfer)))
        log(trial_line(d.name, seed, trials[-1], prep.majority["val"]["score"]))
    return trials


def trial_line(task: str, seed: int, t: Trial, majority: float | None = None) -> str:
    base = "" if majority is None else f" (majority class {majority:.2f})"
    many = f" (best of {t.recipe['teachers']})" if t.recipe and t.recipe["teachers"] > 1 else ""
    rows = t.recipe["transfer"]["rows"] if t.recipe else 0
    base += f"; student also on {rows} transfer rows" if rows else ""
    return (f"  [{task} seed {seed}] k={t.k} n={t.n} m={t.m}: teacher val {t.teacher_val:.2f}{many}, "
            f"student val {t.student_val:.2f}{base}")


def full_result(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, log=print) -> FullResult:
    """The full fine-tuning baseline on ``prep``'s split: validation score, seconds, layers, dev scores."""
    d = prep.data
    model, f_fit = train_full(
        bb, prep.train, prep.val, d.num_labels, d.task_type, d.metric,
        opts.fit_config(seed, lr=opts.full_lr), desc=f"{d.name} full fine-tuning s={seed}",
    )
    log(f"  [{d.name} seed {seed}] full fine-tuning val {f_fit.best_score:.2f} (majority class {prep.majority['val']['score']:.2f})")
    return FullResult(f_fit.best_score, f_fit.seconds, model.num_layers, dev_scores(lambda s: predict_full(model, prep.dev[s]), prep))


def seed_result(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, trial: Trial, tried: list[Trial], log=print,
                full: Callable[[int], FullResult] | None = None) -> ScoredSeed:
    """Dev scores of the chosen trial (the dev set is only scored here) and the full baseline if asked
    (trained here, or ``full(seed)``'s, e.g. from ``training.jobs.TaskJobs``, which may run it elsewhere)."""
    k = trial.k

    def dev(head: Head) -> dict[str, Score]:
        return dev_scores(lambda s: predict_head(head, prep.caches[f"dev:{s}"], k), prep)

    result = SeedResult(seed, k, trial.n, trial.m, [t.record() for t in tried],
                        trial.head_result("teacher", dev(trial.teacher)), trial.head_result("student", dev(trial.student)),
                        recipe=trial.recipe)
    if opts.full_baseline:
        result.full = full_result(bb, prep, opts, seed, log) if full is None else full(seed)
    return ScoredSeed(result, trial)


def gate(prep: Prepared, opts: HeadOptions, trial: Trial):
    """The quality gate on the shipped seed's trial (``training.quality.judge``)."""
    return judge(trial.val_result("student"), trial.val_result("teacher"), prep.majority["val"],
                 prep.data.task_type == "regression", opts.min_ratio, opts.quality_gate)


def run_seed(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, cands: list[tuple[int, int, int]], log=print) -> ScoredSeed:
    """Every candidate on one seed; the best student by validation is scored (and the full baseline trained)."""
    trials = train_trials(bb, prep, opts, seed, cands, log)
    return seed_result(bb, prep, opts, seed, max(trials, key=lambda t: t.student_val), trials, log)
