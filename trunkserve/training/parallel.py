"""The study's training jobs in worker processes (``--jobs``): searches, later seeds, baselines.

Why: every candidate ``(k, n, m)`` of a task's search, every later seed of the chosen
candidate and every full fine-tuning baseline is trained from its own seed on data
that nothing else changes, so they can run in any process, in any order, with the
same result. On 2 CPU cores the gain is small (``reports/jobs2``: each process ran
1.7 to 1.9 times slower beside the other); on a machine with many cores and a GPU,
where one small model leaves most of the device idle, it is what lets the whole
uncapped study fit in minutes: the critical path becomes one search job instead of
every job in turn.

How the work is shared (``JobPool``):

- jobs are planned up front (every search job and every baseline), and the later
  seeds as soon as the choice is made;
- a worker that falls idle takes the pending job with the highest priority: training
  jobs (searches, later seeds) before baselines, the largest first (estimated from
  the training rows, layers and epochs), so the longest chains start first;
- the main process asks for the results in the order the pipeline needs them. A job
  that no worker has taken runs in the main process; while the job it waits for runs
  in a worker, the main process runs the smallest pending job meanwhile instead of
  idling. Jobs are handed to workers only when one is idle, so "not taken" is exact.

Thread counts are kept and idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``:
spinning threads of two processes on two cores made each run 20 to 40 times slower),
so the results are bit for bit those of the sequential run. Workers load the backbone
and prepare a task's data themselves (spawned workers start clean, which CUDA also
requires) and keep the last task's preparation for the next job of the same task.
Trained heads come back as ``torch.save`` bytes.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from trunkserve.backbone import load_backbone

from .loop import train_device
from .prepare import build_caches, prepare
from .trials import full_result, search_depths, train_trials

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}

TRIALS, FULL = "trials", "full"


class ParallelError(RuntimeError):
    """A job failed (in a worker or in the main process); the message names its task and seed."""


def passive_threads_in_this_process() -> bool:
    """Whether this process's OpenMP threads sleep when idle (read by the runtime when torch loads)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


@dataclass(frozen=True)
class Job:
    """One unit of training: ``trials`` (a teacher per ``(k, n)`` of ``cands`` and a student per ``m``) or
    ``full`` (the full fine-tuning baseline) of ``task`` on ``seed``. ``cost`` only orders the work."""

    kind: str
    task: str
    seed: int
    cands: tuple[tuple[int, int, int], ...] = ()
    cost: float = field(default=0.0, compare=False)

    @property
    def key(self) -> tuple:
        return (self.kind, self.task, self.seed, self.cands)

    def describe(self) -> str:
        what = "full fine-tuning baseline" if self.kind == FULL else "candidates " + ", ".join(
            f"k={k} n={n} m={m}" for k, n, m in self.cands)
        return f"{what} of {self.task} (seed {self.seed})"


# ---- in the worker processes -------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(threads: int, glue_dir, custom, backbone: str) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(glue_dir=glue_dir, custom=custom, backbone=backbone, bb=None, prep=None)


def _worker_prep(task: str, opts, caches: bool):
    """The backbone and ``task``'s prepared data, kept for the next job of the same task (one task at a time)."""
    if _WORKER["bb"] is None:
        _WORKER["bb"] = load_backbone(_WORKER["backbone"])
    bb = _WORKER["bb"]
    key = (task, repr(opts))
    held = _WORKER["prep"]
    if held is None or held[0] != key:
        _WORKER["prep"] = None  # free the previous task's caches first
        held = _WORKER["prep"] = (key, prepare(task, bb, opts, _WORKER["glue_dir"], _WORKER["custom"]))
    prep = held[1]
    if caches and not prep.caches:
        build_caches(prep, bb, opts, search_depths(opts, bb))
    return bb, prep


def run_job(job: Job, opts) -> Any:
    """A job in a worker: trials come back with their heads as bytes (``pack_trials``)."""
    bb, prep = _worker_prep(job.task, opts, caches=job.kind == TRIALS)
    if job.kind == FULL:
        return full_result(bb, prep, opts, job.seed, log=lambda _msg: None)
    return pack_trials(train_trials(bb, prep, opts, job.seed, list(job.cands), log=lambda _msg: None))


def _module_bytes(module) -> bytes:
    buf = io.BytesIO()
    torch.save(module.cpu(), buf)
    return buf.getvalue()


def _module_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=False).to(train_device())


def pack_trials(trials: list) -> list:
    """Trials with their teacher and student as bytes, so that no tensor crosses processes by shared memory."""
    return [replace(t, teacher=_module_bytes(t.teacher), student=_module_bytes(t.student)) for t in trials]


def unpack_trials(trials: list) -> list:
    return [replace(t, teacher=_module_from_bytes(t.teacher), student=_module_from_bytes(t.student)) for t in trials]


# ---- in the main process ----------------------------------------------------------------------

def worker_pick(pending) -> Job:
    """What an idle worker takes: training jobs (searches, later seeds) before baselines, as they gate the
    choice and the finishing of their task; among them the largest, so that the longest chains start first."""
    return min(pending, key=lambda j: (j.kind != TRIALS, -j.cost))


def spare_pick(pending) -> Job:
    """What the main process runs while a worker has the job it waits for: the smallest, to be back soon."""
    return min(pending, key=lambda j: j.cost)


class JobPool:
    """``workers`` spawned processes and the main process sharing a set of planned jobs.

    ``local(job)`` runs a job in the main process on its own data (the pipeline's
    prepared tasks); ``result(job)`` returns a job's result wherever it ran, and says
    where (``ran_here`` lists the jobs the main process ran).
    """

    def __init__(self, workers: int, threads: int, opts_of: Callable[[str], Any], local: Callable[[Job], Any],
                 glue_dir, custom, backbone: str | Path):
        for k, v in PASSIVE.items():  # inherited by the spawned workers before they import torch
            os.environ.setdefault(k, v)
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            initargs=(threads, glue_dir, custom, str(backbone)),
        )
        self._opts_of, self._local = opts_of, local
        self._lock = threading.RLock()
        self._idle = workers
        self._pending: dict[tuple, Job] = {}
        self._futures: dict[tuple, Future] = {}
        self._here: dict[tuple, Any] = {}
        self.ran_here: list[Job] = []

    def plan(self, jobs) -> None:
        """Add jobs (any order: workers take them by priority)."""
        with self._lock:
            for job in jobs:
                if job.key not in self._pending and job.key not in self._futures and job.key not in self._here:
                    self._pending[job.key] = job
        self._dispatch()

    def _dispatch(self, _done: Future | None = None) -> None:
        with self._lock:
            if _done is not None:
                self._idle += 1
            while self._idle > 0 and self._pending and self._pool is not None:
                job = worker_pick(self._pending.values())
                del self._pending[job.key]
                self._idle -= 1
                future = self._pool.submit(run_job, job, self._opts_of(job.task))
                self._futures[job.key] = future
                future.add_done_callback(self._dispatch)

    def _run_here(self, job: Job) -> Any:
        self.ran_here.append(job)
        try:
            return self._local(job)
        except Exception as exc:
            raise ParallelError(f"{job.describe()} failed: {type(exc).__name__}: {exc}") from exc

    def result(self, job: Job) -> tuple[Any, bool]:
        """``(result, ran in a worker)``; runs the job here if no worker has taken it, and the smallest
        pending jobs while it waits for a worker's."""
        while True:
            with self._lock:
                if job.key in self._here:
                    return self._here.pop(job.key), False
                mine = self._pending.pop(job.key, None)
                future = self._futures.get(job.key)
                if mine is None and future is None:
                    mine = job  # never planned: run it here
                spare = None
                if mine is None and not future.done() and self._pending:
                    spare = self._pending.pop(spare_pick(self._pending.values()).key)
            if mine is not None:
                return self._run_here(mine), False
            if spare is not None:
                self._here[spare.key] = self._run_here(spare)
                continue
            try:
                value = future.result()
            except Exception as exc:
                raise ParallelError(f"{job.describe()} failed in a worker: {type(exc).__name__}: {exc}") from exc
            del self._futures[job.key]
            return (unpack_trials(value) if job.kind == TRIALS else value), True

    def close(self, failed: bool = False) -> None:
        """Wait for the workers; after a failure in the caller, stop them instead (their results are not wanted)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._pending.clear()
        if failed:
            for p in list((pool._processes or {}).values()):  # no public way to stop a running job
                p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "JobPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
