"""Train the heads for a list of tasks: data -> trunk cache -> teacher(s) -> student -> head folders.

``train_heads`` is what the CLI (``python -m trunkserve.training train-heads``), the demo and
the report call. Per task:

1. read the data (GLUE or a custom CSV/JSONL task), optionally cap the training
   rows (seeded sample), and carve a seeded validation split from them. Every
   choice (checkpoint, branch depth, teacher layers) is made on that split; the
   GLUE dev set is only scored;
2. run the frozen trunk once over train/validation/dev and cache the hidden states
   at every candidate branch depth;
3. train partial fine-tuning teachers per candidate ``(k, n)`` (``--teachers`` of them with the
   default multi-teacher recipe, ``training.recipe``) and distil them into a student per candidate
   size ``m``, also on the transfer set if any; the candidate whose *student* validates best
   wins (the student is what is served), or, with a layer budget, the combination
   over all tasks with the best summed validation score that fits (``choose``).
   Later seeds train the winner only;
4. optionally train the full fine-tuning baseline on the same split;
5. write the best seed's student to ``out/<task>/`` and its teacher to
   ``teachers_out/<task>/`` (both loadable with ``trunkserve.artifacts.load_head``).

Every training in steps 3 and 4 is a job of ``training.jobs.TaskJobs``: run here when
asked (the default), or, with ``jobs`` > 1, shared with worker processes from the start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from trunkserve.artifacts import HeadMeta, save_head
from trunkserve.backbone import Backbone, load_backbone
from trunkserve.canary import make_canary
from trunkserve.defaults import DEFAULT_MAX_SEQ_LEN
from trunkserve.fingerprint import trunk_fingerprint
from trunkserve.modules import Head, Trunk
from trunkserve.tokenization import BucketTokenizer

from .data.glue import GLUE_TASKS
from .distill import train_student
from .jobs import TaskJobs
from .options import HeadOptions, PipelineError, RunOptions, check_run_options
from .prepare import Prepared, load_task
from .quality import Verdict
from .results import FullResult, Majority, MkdmResult, Score, SeedResult, TaskResult, as_json, results_json
from .search import TaskSearch, choose, merged_layers, search_task
from .trials import ScoredSeed, Trial, candidates, gate, dev_scores, seed_result
from .teacher import predict_head


def head_meta(bb: Backbone, prep: Prepared, head: Head, k: int, opts: HeadOptions, metrics: dict, training: dict) -> HeadMeta:
    """``head.json`` for ``head``; ``max_seq_len`` is the length it was trained at (``--max-length``)."""
    d = prep.data
    return HeadMeta(
        task=d.name, task_type=d.task_type, labels=list(d.labels), branch_layer=k, num_layers=head.num_layers,
        trunk_fingerprint=trunk_fingerprint(bb.state_dict, k, bb.tokenizer_files()),
        bert_config=bb.config.to_dict(), backbone=bb.name, max_seq_len=opts.max_length, pair=prep.pair,
        metrics=metrics, training=training,
    )


def write_head(folder: Path, bb: Backbone, head: Head, meta: HeadMeta) -> Path:
    head = head.cpu()  # trained on the training device; artefacts and their canary are CPU float32
    trunk = Trunk.from_state_dict(bb.config, bb.state_dict, (meta.branch_layer,)).freeze()
    tok = BucketTokenizer(bb.path, max_length=DEFAULT_MAX_SEQ_LEN)
    return save_head(folder, head, meta, canary=make_canary(trunk, head.eval(), meta.branch_layer, tok))


def seed_results(jobs: TaskJobs, search: TaskSearch, trial: Trial) -> list[ScoredSeed]:
    """The chosen trial scored on every seed: the search's own on seeds it trained, new training on the others."""
    opts, prep, task = search.opts, search.prep, search.task

    def full(seed: int) -> FullResult:
        return jobs.full(task, seed)

    seeds = [seed_result(jobs.bb, prep, opts, opts.seeds[0], trial, search.trials, jobs.log, full)]
    for seed in opts.seeds[1:]:
        if seed in search.later:  # already trained by the search
            tried, again = search.later[seed], search.on_seed(seed, trial)
        else:
            tried = jobs.trials(task, seed, [(trial.k, trial.n, trial.m)])
            again = tried[0]
        seeds.append(seed_result(jobs.bb, prep, opts, seed, again, tried, jobs.log, full))
    return seeds


def task_summary(search: TaskSearch, trial: Trial, seeds: list[SeedResult], best: SeedResult) -> TaskResult:
    """What the summary JSON and the report keep of a task: data sizes, the choice, every seed, the dev means."""
    opts, prep, d = search.opts, search.prep, search.prep.data
    r = TaskResult(
        task=search.task, task_type=d.task_type, metric=d.metric, labels=d.labels, train_rows=len(prep.train),
        val_rows=len(prep.val), dev_rows={k_: len(v) for k_, v in prep.dev.items()}, truncated_train=prep.train.truncated,
        cache_bytes=prep.cache_bytes, cache_seconds=prep.cache_seconds, k=trial.k, n=trial.n, m=trial.m,
        headline_split=next(iter(prep.dev)), seeds=seeds, task_description=prep.describe(), best_seed=best.seed,
    )
    for role in ("teacher", "student") + (("full",) if opts.full_baseline else ()):
        scores = r.dev_scores(role)
        setattr(r, f"{role}_dev_mean", float(np.mean(scores)))
        setattr(r, f"{role}_dev_std", float(np.std(scores)))
    return r


def mkdm_result(search: TaskSearch, trial: Trial, seeds: list[ScoredSeed], log) -> MkdmResult:
    """One student from every seed's teacher (their averaged soft labels), scored on dev: reported only."""
    opts, prep, task, k = search.opts, search.prep, search.task, trial.k
    teachers = [s.trial.teacher for s in seeds]
    mk, mk_fit = train_student(
        teachers, prep.caches["train"], prep.caches["val"], k, prep.data.metric,
        opts.fit_config(opts.seeds[0], epochs=opts.student_epochs), num_layers=trial.m,
        temperature=opts.temperature, refit_steps=opts.refit_steps, refit=opts.refit, desc=f"{task} MKDM student ({len(teachers)} teachers)",
    )
    result = MkdmResult(len(teachers), mk_fit.best_score, dev_scores(lambda s: predict_head(mk, prep.caches[f"dev:{s}"], k), prep))
    log(f"  [{task}] MKDM student from {len(teachers)} teachers: dev {result.dev[next(iter(prep.dev))].score:.2f}")
    return result


def training_record(search: TaskSearch, trial: Trial, best: ScoredSeed) -> dict:
    """``head.json``'s ``training``: the recipe and the choice that produced the head."""
    opts, prep, seed = search.opts, search.prep, best.result.seed
    return {
        "teacher_layers": trial.n, "temperature": opts.temperature, "soft_weight": opts.soft_weight,
        "hard_weight": opts.hard_weight, "hidden_weight": opts.hidden_weight, "seed": seed,
        "seeds": list(opts.seeds), "max_train": opts.max_train, "train_rows": len(prep.train),
        "val_rows": len(prep.val), "max_length": opts.max_length, "search": opts.search, "search_every_seed": opts.search_every_seed,
        "candidates": [c.to_json() for c in best.result.candidates], "fit": opts.fit_config(seed).to_dict(),
        "student_epochs": opts.student_epochs or opts.epochs,
        "data": "glue" if search.task in GLUE_TASKS and not search.custom else "custom",
        "schedule": best.trial.schedules, "recipe": best.trial.recipe,
    }


def write_heads(jobs: TaskJobs, search: TaskSearch, trial: Trial, best: ScoredSeed, summary: TaskResult, out: Path,
                teachers_out: Path | None) -> tuple[Path, Verdict]:
    """Judge the best seed (``gate``), write what ships to ``out/<task>`` and its teacher to ``teachers_out``."""
    opts, prep, task, k, bb = search.opts, search.prep, search.task, trial.k, jobs.bb
    verdict = gate(prep, opts, best.trial)
    shipped = "teacher" if verdict.decision == "teacher" else "student"
    majority = Majority(Score.from_json(prep.majority["val"]),
                        {sp: Score.from_json(prep.majority[f"dev:{sp}"]) for sp in prep.dev})
    summary.quality, summary.quality_gate, summary.shipped, summary.majority = verdict, opts.quality_gate, shipped, majority
    training = training_record(search, trial, best)
    scored, teacher = best.result.role(shipped), best.result.teacher
    metrics = {"dev": as_json(scored.dev), "validation_score": scored.val, "majority": majority.to_json(),
               "quality": verdict.to_dict(), "teacher_dev": as_json(teacher.dev), "dev_mean_over_seeds": summary.dev_mean(shipped)}
    head = getattr(best.trial, shipped)
    head_dir = write_head(out / task, bb, head, head_meta(
        bb, prep, head, k, opts, metrics, {**training, "role": shipped, "student_layers": trial.m}))
    summary.student_dir = str(head_dir)
    if teachers_out is not None:
        t_metrics = {"dev": as_json(teacher.dev), "validation_score": teacher.val, "majority": majority.to_json()}
        summary.teacher_dir = str(write_head(teachers_out / task, bb, best.trial.teacher, head_meta(
            bb, prep, best.trial.teacher, k, opts, t_metrics, {**training, "role": "teacher"})))
    return head_dir, verdict


def finish_task(jobs: TaskJobs, search: TaskSearch, trial: Trial, out: Path, teachers_out: Path | None) -> TaskResult:
    """Score the chosen trial, train it on the remaining seeds, and write the best seed's head(s)."""
    opts, prep, task = search.opts, search.prep, search.task
    scored = seed_results(jobs, search, trial)
    best = max(scored, key=lambda s: s.result.student.val)
    summary = task_summary(search, trial, [s.result for s in scored], best.result)
    if opts.mkdm and len(scored) > 1 and opts.student_recipe == "single-teacher":  # multi-teacher already is MKDM
        summary.mkdm = mkdm_result(search, trial, scored, jobs.log)
    head_dir, verdict = write_heads(jobs, search, trial, best, summary, out, teachers_out)
    summary.seconds = time.perf_counter() - search.started
    split = summary.headline_split
    jobs.log(f"[{task}] k={trial.k} n={trial.n} m={trial.m}: dev ({split}) teacher "
             f"{summary.teacher_dev_mean:.2f}, student {summary.student_dev_mean:.2f}"
             + (f", full {summary.full_dev_mean:.2f}" if opts.full_baseline else "")
             + f", majority class {prep.majority[f'dev:{split}']['score']:.2f}"
             + f" (mean of {len(scored)} seed(s)); {summary.seconds:.0f}s -> {head_dir}")
    jobs.log(f"[{task}] quality gate: {verdict.message}"
             + (f" -> {head_dir} holds the {summary.shipped}" if summary.shipped != "student" else ""))
    return summary


def train_tasks(bb: Backbone, task_opts: dict[str, HeadOptions], out: Path, teachers_out: Path | None, glue_dir=None,
                custom=None, log=print, layer_budget: float | None = None,
                on_task_done: Callable[[dict[str, TaskResult]], None] | None = None, jobs: int = 1) -> dict[str, TaskResult]:
    """Search every task's candidates on its first seed, choose, then finish each task.

    Without a budget each task is chosen alone, so it is finished (and its trunk cache
    freed) before the next is searched. A budget couples the tasks: every search, with
    its cache, is kept until the joint choice is made. With ``jobs`` > 1 the training
    jobs (search candidates, later seeds, full fine-tuning baselines) are shared between
    this process and ``jobs - 1`` worker processes (``training.jobs``,
    ``training.parallel``); the results are the same.
    """
    if jobs < 1:
        raise PipelineError(f"jobs must be at least 1, got {jobs}")
    with TaskJobs(bb, task_opts, glue_dir, custom, log, workers=jobs - 1) as runner:
        return _train_tasks(runner, out, teachers_out, layer_budget, on_task_done)


def _train_tasks(jobs: TaskJobs, out, teachers_out, layer_budget, on_task_done) -> dict[str, TaskResult]:
    results: dict[str, TaskResult] = {}
    num_layers = jobs.bb.config.num_hidden_layers

    def finish(task: str, search: TaskSearch, trial: Trial) -> None:
        results[task] = finish_task(jobs, search, trial, out, teachers_out)
        results[task].layer_budget = layer_budget
        jobs.free(task)
        if on_task_done:
            on_task_done(results)

    if layer_budget is None:
        for task in jobs.task_opts:
            search = search_task(jobs, task)
            trial = choose({task: search}, num_layers)[task]
            jobs.plan_later(task, trial)
            finish(task, search, trial)
        return results
    searches = {t: search_task(jobs, t) for t in jobs.task_opts}
    chosen = choose(searches, num_layers, layer_budget)
    jobs.log(f"layer budget {layer_budget:.0%}: " + ", ".join(f"{t} k={x.k} m={x.m}" for t, x in chosen.items())
             + f" -> {merged_layers({t: (x.k, x.m) for t, x in chosen.items()})} of {num_layers * len(chosen)} layers")
    for task, trial in chosen.items():
        jobs.plan_later(task, trial)
    for task, search in searches.items():
        finish(task, search, chosen[task])
    return results


def check_data_and_candidates(bb: Backbone, task_opts: dict[str, HeadOptions], glue_dir, custom: dict) -> None:
    """Read every task's files and plan its candidates before the first training step.

    Why: a missing file, a bad row or a depth the backbone lacks would otherwise surface
    only when that task's turn comes, after the earlier tasks' training.
    """
    stray = sorted(set(custom) - set(task_opts))
    if stray:
        raise PipelineError(f"--custom names task(s) {', '.join(stray)} that are not in --tasks ({', '.join(task_opts)})")
    for task, opts in task_opts.items():
        load_task(task, glue_dir, custom)
        candidates(opts, bb.config.num_hidden_layers)


def default_teachers_out(out: Path) -> Path:
    """``OUT/../teachers/<OUT's name>``: runs into sibling folders keep their own teachers."""
    return out.parent / "teachers" / out.name


def train_heads(tasks: Sequence[str] | str, log: Callable[[str], None] = print, **options) -> dict[str, TaskResult]:
    """Train teacher + distilled student per task; student head folders go to ``out/<task>/``.

    Keywords: every ``RunOptions`` field (``glue_dir``, ``out``, ``teachers_out``, ``max_train`` as one
    cap or ``{task: cap}``, ``custom``, ``backbone``, ``layer_budget``, ``jobs``, ``summary_path``) and
    every ``HeadOptions`` field (``epochs``, ``seeds``, ``search``, ``branch_layer``, ``student_layers``,
    ``search_student_layers``, ``temperature``, ``full_baseline``, ...), with the defaults declared there
    (the CLI's flags are generated from the same fields). ``layer_budget`` (e.g. 0.35) chooses every
    task's ``(k, m)`` jointly so that the merged model costs at most that fraction of one full model per
    task; ``jobs`` > 1 shares the training with ``jobs - 1`` workers (``train_tasks``). Teachers go to
    ``teachers_out`` (default ``out/../teachers/<out's name>``). Returns the per-task results.
    """
    run, head = RunOptions.split(tasks, options)
    check_run_options(run.tasks, run.max_train, head)
    bb = load_backbone(run.backbone)
    task_opts = run.task_options(head)
    check_data_and_candidates(bb, task_opts, run.glue_dir, run.custom)
    results = train_tasks(bb, task_opts, run.out, run.teachers_out or default_teachers_out(run.out), run.glue_dir, run.custom,
                          log, run.layer_budget, jobs=run.jobs)
    if run.summary_path:
        Path(run.summary_path).write_text(json.dumps(results_json(results), indent=1, default=str) + "\n")
    return results
