"""Where a study's training jobs run: in this process, or shared with worker processes.

``TaskJobs`` is what the pipeline asks for a task's prepared data, its trials (a
teacher per ``(k, n)`` and its students) and its full fine-tuning baseline. With no
workers every job runs here when it is asked for, in the order the pipeline asks:
the sequential study. With workers (``--jobs N``) every search job and baseline is
planned at the start and the later seeds as soon as the choice is made, so the
workers start at once (``training.parallel.JobPool`` decides who runs what). A
search is split into one job per branch depth ``k``, so a large task's search spreads
over as many processes as it has depths.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

import torch

from trunkserve.backbone import Backbone

from .parallel import FULL, TRIALS, Job, JobPool, passive_threads_in_this_process
from .options import HeadOptions
from .prepare import Prepared, build_caches, cap, load_task, prepare
from .results import FullResult
from .trials import Trial, candidates, full_result, search_depths, train_trials, trial_line


class TaskJobs:
    """A study's tasks: their data (prepared lazily, freed when a task is finished) and their training jobs."""

    def __init__(self, bb: Backbone, task_opts: dict[str, HeadOptions], glue_dir=None, custom=None, log=print,
                 workers: int = 0):
        self.bb, self.task_opts, self.glue_dir, self.custom, self.log = bb, task_opts, glue_dir, custom or {}, log
        self._preps: dict[str, Prepared] = {}
        self._row_counts: dict[str, int] = {}
        self.pool = None
        if workers > 0:
            self._start_pool(workers)

    # -- data -------------------------------------------------------------------------------------

    def is_custom(self, task: str) -> bool:
        return task in self.custom

    def prep(self, task: str) -> Prepared:
        """``task``'s split, tokenized data and trunk cache at every depth its candidates use (built once)."""
        if task not in self._preps:
            opts = self.task_opts[task]
            prep = prepare(task, self.bb, opts, self.glue_dir, self.custom)
            build_caches(prep, self.bb, opts, search_depths(opts, self.bb))
            self.log(f"[{task}] {len(prep.train)} train / {len(prep.val)} validation rows, "
                     f"dev {', '.join(f'{k}={len(v)}' for k, v in prep.dev.items())}; trunk cache "
                     f"{prep.cache_bytes / 2**20:.0f} MiB in {prep.cache_seconds:.1f}s")
            self.log(f"[{task}] {prep.describe()}")
            self._preps[task] = prep
        return self._preps[task]

    def free(self, task: str) -> None:
        self._preps.pop(task, None)

    # -- jobs -------------------------------------------------------------------------------------

    def _jobs(self, task: str, seed: int, cands) -> list:
        """One job per branch depth: its teacher(s) and their students (candidates come ordered by k)."""
        return [Job(TRIALS, task, seed, tuple(group), self._cost(task, tuple(group)))
                for _, group in groupby(cands, key=lambda c: c[0])]

    def trials(self, task: str, seed: int, cands) -> list[Trial]:
        """The trained candidates, in ``cands`` order, wherever they ran."""
        if self.pool is None:
            return train_trials(self.bb, self.prep(task), self.task_opts[task], seed, list(cands), self.log)
        out = []
        for job in self._jobs(task, seed, cands):
            trials, remote = self.pool.result(job)
            if remote:
                for t in trials:
                    self.log(trial_line(task, seed, t, self.prep(task).majority["val"]["score"]) + " (worker)")
            out.extend(trials)
        return out

    def full(self, task: str, seed: int) -> FullResult:
        """The full fine-tuning baseline of ``task`` on ``seed``, wherever it ran."""
        opts = self.task_opts[task]
        if self.pool is None:
            return full_result(self.bb, self.prep(task), opts, seed, self.log)
        result, remote = self.pool.result(Job(FULL, task, seed))
        self.log(f"  [{task} seed {seed}] full fine-tuning val {result.val:.2f}" + (" (worker)" if remote else ""))
        return result

    def plan_later(self, task: str, trial: Trial) -> None:
        """Once ``trial`` is chosen: its training on the task's remaining seeds can start in the workers."""
        opts = self.task_opts[task]
        if self.pool is not None and not opts.search_every_seed:
            self.pool.plan(j for seed in opts.seeds[1:] for j in self._jobs(task, seed, [(trial.k, trial.n, trial.m)]))

    def _local(self, job) -> Any:
        """A job run in this process, on this process's prepared data."""
        opts = self.task_opts[job.task]
        if job.kind == FULL:
            return full_result(self.bb, self.prep(job.task), opts, job.seed, log=lambda _msg: None)
        return train_trials(self.bb, self.prep(job.task), opts, job.seed, list(job.cands), self.log)

    # -- the pool -----------------------------------------------------------------------------------

    def _rows(self, task: str) -> int:
        """Training rows, for ordering the work only (the raw file, not tokenized)."""
        opts = self.task_opts[task]
        try:
            return len(cap(load_task(task, self.glue_dir, self.custom).train, opts.max_train, opts.split_seed))
        except Exception:  # the job itself will report it
            return 0

    def _cost(self, task: str, cands) -> float:
        """Relative work of a job: rows x layers trained x epochs (a full model also runs every frozen layer)."""
        opts = self.task_opts[task]
        rows = self._row_counts.get(task, 0)
        if not cands:  # the full fine-tuning baseline: every layer, from tokens
            return rows * opts.epochs * (self.bb.config.num_hidden_layers + 1) * 1.5
        teachers = {(k, n) for k, n, _ in cands}
        student_epochs = opts.student_epochs or opts.epochs
        per = 1 if opts.student_recipe == "single-teacher" else opts.teachers  # an upper bound: some are reused
        return rows * (sum(n for _, n in teachers) * opts.epochs * per + sum(m for _, _, m in cands) * student_epochs)

    def _start_pool(self, workers: int) -> None:
        if not passive_threads_in_this_process():
            self.log("note: OMP_WAIT_POLICY is not PASSIVE in this process; its idle threads may spin against the "
                     "workers' (python -m trunkserve.training sets it with --jobs)")
        self._row_counts = {t: self._rows(t) for t in self.task_opts}
        searched = []
        for task, opts in self.task_opts.items():
            cands = candidates(opts, self.bb.config.num_hidden_layers)
            for seed in (opts.seeds if opts.search_every_seed else opts.seeds[:1]):
                searched.extend(self._jobs(task, seed, cands))
        baselines = [Job(FULL, t, seed, (), self._cost(t, ())) for t, o in self.task_opts.items() if o.full_baseline
                     for seed in o.seeds]
        self.pool = JobPool(workers, torch.get_num_threads(), self.task_opts.__getitem__, self._local,
                            self.glue_dir, self.custom, self.bb.path)
        self.pool.plan(searched + baselines)

    def close(self, failed: bool = False) -> None:
        if self.pool is not None:
            self.pool.close(failed)
            self.pool = None

    def __enter__(self) -> "TaskJobs":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
