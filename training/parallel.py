"""Full fine-tuning baselines in worker processes, beside the search (``--jobs``).

Why: the full fine-tuning baseline is about half of the GLUE study's time on 2 CPU
cores and depends on nothing the search produces (its own data split, its own seed).
Small-model training does not use two cores well from one process: in short runs, two
processes of two threads each trained 1.35 to 1.6 times as much per second as one,
as long as idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``;
spinning threads of two processes on two cores made each run 20 to 40 times slower).
Over the whole study the gain was smaller (each stage ran 1.7 to 1.9 times slower
beside the other process: 54.9 min against 57.0 sequential, ``reports/jobs2``); the
option is meant as much for machines with more cores. The thread count is kept, so
the results are bit for bit those of the sequential run (``train_full`` seeds
everything it uses).

Each job reloads the backbone and re-reads and re-tokenizes its task (seconds) rather
than receiving tensors: spawned workers start clean, which CUDA also requires.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Callable

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


class ParallelError(RuntimeError):
    """A baseline job failed in its worker; the message names the task and seed."""


def passive_threads_in_this_process() -> bool:
    """Whether this process's OpenMP threads sleep when idle (read by the runtime when torch loads)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def full_baseline_job(task: str, opts, seed: int, glue_dir, custom, backbone: str) -> dict:
    """Train and score one full fine-tuning baseline; the same dict ``pipeline.full_result`` returns."""
    from trunkserve.backbone import load_backbone

    from .pipeline import full_result, prepare

    bb = load_backbone(backbone)
    prep = prepare(task, bb, opts, glue_dir, custom)  # no trunk cache: full fine-tuning runs every layer
    return full_result(bb, prep, opts, seed, log=lambda _msg: None)


class FullBaselines:
    """A pool of ``workers`` processes training every ``(task, seed)`` baseline submitted to it.

    The workers take the jobs from the last submitted backwards, while the search
    asks for them from the first: a job that no worker has started by the time it is
    asked for runs in the asking process instead (which would otherwise wait idle), so
    both ends meet in the middle and neither side sits idle while the other has work.
    """

    def __init__(self, workers: int, threads: int, glue_dir, custom, backbone: str | Path, log=print):
        for k, v in PASSIVE.items():  # inherited by the spawned workers before they import torch
            os.environ.setdefault(k, v)
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(threads,),
        )
        self._args = (glue_dir, custom, str(backbone))
        self._jobs: dict[tuple[str, int], tuple[Future, object]] = {}
        self.ran_here: list[tuple[str, int]] = []
        self._log = log

    def submit(self, jobs) -> None:
        """``jobs``: ``(task, opts, seed)`` in the order the caller will ask for them."""
        for task, opts, seed in reversed(list(jobs)):
            self._jobs[task, seed] = (self._pool.submit(full_baseline_job, task, opts, seed, *self._args), opts)

    def result(self, task: str, seed: int, run_here: Callable[[], dict] | None = None) -> dict:
        """The job's result; ``run_here`` computes it in this process if no worker has started it
        (the caller's own data, not reloaded; default: the worker's function)."""
        future, opts = self._jobs[task, seed]
        try:
            if future.cancel():  # not started by any worker: run it here
                self.ran_here.append((task, seed))
                self._log(f"  [{task} seed {seed}] full fine-tuning baseline: no worker had started it, running it here")
                return run_here() if run_here else full_baseline_job(task, opts, seed, *self._args)
            return future.result()
        except Exception as exc:
            raise ParallelError(f"full fine-tuning baseline of {task} (seed {seed}) failed: "
                                f"{type(exc).__name__}: {exc}") from exc

    def close(self, failed: bool = False) -> None:
        """Wait for the workers; after a failure in the caller, stop them instead (their results are not wanted)."""
        if failed:
            for p in list((self._pool._processes or {}).values()):  # no public way to stop a running job
                p.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "FullBaselines":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
