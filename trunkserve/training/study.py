"""The GLUE study: full fine-tuning vs partial fine-tuning teacher vs distilled student, and the merged cost.

``python -m trunkserve.training report --tasks cola,sst2,mrpc,stsb,rte ...`` trains, per task and
seed, the full fine-tuning baseline, the teacher and the student on the same capped
training rows and validation split, then writes ``reports/glue.json`` (every number, and the
machine, recipe and targets the run had) and, through ``training.report``, ``glue.md`` and
``glue.png``. Small tasks (CoLA, MRPC, STS-B, RTE) use ``small_seeds`` (mean over seeds
reported); the others one seed.

Layer cost: one full model per task runs ``L`` layers per task; the merged model runs
the trunk once up to the deepest branch depth used, plus each task's student layers.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from trunkserve.backbone import load_backbone
from trunkserve.modules import Trunk

from .cache import HiddenStateCache
from .distill import train_student
from .loop import FitConfig, bf16_supported, train_device
from .options import HeadOptions, StudyOptions, check_run_options
from .pipeline import train_tasks
from .prepare import prepare
from .report import DEFAULT_TARGETS, describe_machine, pct_of, plot, write_markdown
from .results import TaskResult, results_json
from .search import merged_layers
from .teacher import train_teacher

SMALL_TASKS = ("cola", "mrpc", "stsb", "rte")


def _cpu_name() -> str:
    """The CPU's model name where the OS says it (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    """What the study ran on, recorded when it starts: the report's machine line and time verdict read it."""
    dev = train_device()
    facts = {"device": dev.type, "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
             "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "torch": torch.__version__}
    facts["precision"] = "bfloat16 autocast, float32 weights" if bf16_supported() else "float32"
    return facts


def measure_cache_speedup(bb, task: str, glue_dir, depth: int, n_rows: int = 800, epochs: float = 1.0) -> dict:
    """Time teacher and student training with cached trunk states vs the trunk recomputed at every step.

    A warm-up epoch runs first so that one-time kernel set-up (oneDNN primitives per
    new shape) is not charged to whichever variant happens to run first.
    """

    opts = HeadOptions(max_train=n_rows, max_val=50, progress=False, transfer=("none",))
    prep = prepare(task, bb, opts, glue_dir, cache_depths=(depth,))
    cached = prep.caches["train"]
    d = prep.data
    uncached = HiddenStateCache(Trunk.from_state_dict(bb.config, bb.state_dict, (depth,)), prep.train, max_bytes=0)
    cfg = FitConfig(epochs=epochs, progress=False, evals_per_epoch=1)
    n = bb.config.num_hidden_layers - depth
    val = prep.caches["val"]
    teacher, _ = train_teacher(bb, cached, val, depth, n, d.num_labels, d.task_type, d.metric, cfg)  # warm-up
    times = {}
    for name, cache in (("uncached", uncached), ("cached", cached)):
        t0 = time.perf_counter()
        train_teacher(bb, cache, val, depth, n, d.num_labels, d.task_type, d.metric, cfg)
        times[f"teacher_{name}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_student([teacher], cache, val, depth, d.metric, cfg)
        times[f"student_{name}"] = time.perf_counter() - t0
    return {
        "task": task, "rows": len(prep.train), "depth": depth, "teacher_layers": n, "epochs": epochs,
        "cache_build_seconds": cached.build_seconds, **{k: v / epochs for k, v in times.items()},
        "speedup_teacher": times["teacher_uncached"] / times["teacher_cached"],
        "speedup_student": times["student_uncached"] / times["student_cached"],
    }


def trainings_on_cache(results: dict[str, TaskResult]) -> int:
    """Teachers (one per distinct (k, n, teacher seed) of a task: a multi-teacher recipe reuses them across
    seeds) + students (one per candidate) + MKDM students."""
    n = 0
    for r in results.values():
        teachers = set()
        for s in r.seeds:
            seeds = s.recipe["teacher_seeds"] if s.recipe else [s.seed]
            teachers |= {(c.k, c.n, t) for c in s.candidates for t in seeds}
            n += len(s.candidates)
        n += len(teachers) + (r.mkdm is not None)
    return n


def merged_cost(results: dict[str, TaskResult], num_layers: int) -> dict:
    """The report's cost block; the layer count is ``search.merged_layers``, the rule the budget uses."""
    merged = merged_layers({t: (r.k, r.m) for t, r in results.items()})
    separate = num_layers * len(results)
    return {"deepest_branch": max(r.k for r in results.values()), "student_layers": sum(r.m for r in results.values()),
            "merged_layers": merged, "separate_layers": separate, "ratio": merged / separate}


def _study_options(head: dict, study: StudyOptions) -> dict[str, HeadOptions]:
    """Every task's options for the study: it always compares against full fine-tuning and searches k."""
    head.update(search=True, full_baseline=True)
    head.setdefault("mkdm", True)
    # The study measures students against full fine-tuning: the gate's verdict is recorded, never acted on.
    if head.get("quality_gate") is None:
        head["quality_gate"] = "warn"
    head.pop("seeds", None)
    return study.task_options(head, seeds=lambda t: study.small_seeds if t in SMALL_TASKS else (0,))


def _summarise(res: dict, results: dict[str, TaskResult], num_layers: int) -> None:
    res["average"] = {role: float(np.mean([r.dev_mean(role) for r in results.values()])) for role in ("full", "teacher", "student")}
    res["average"]["student_pct_of_full"] = pct_of(res["average"]["student"], res["average"]["full"])
    res["average"]["teacher_pct_of_full"] = pct_of(res["average"]["teacher"], res["average"]["full"])
    res["cost"] = merged_cost(results, num_layers)
    res["trainings_on_cache"] = trainings_on_cache(results)


def run_report(tasks, log=print, **options) -> dict:
    """The study (keywords: ``StudyOptions``'s and ``HeadOptions``'s, as ``train_heads``); writes glue.{json,md,png}."""
    t0 = time.perf_counter()
    study, head = StudyOptions.split(tasks, options)
    check_run_options(study.tasks, study.max_train, {**head, "seeds": study.small_seeds})
    hardware = machine_facts()
    bb = load_backbone(study.backbone)
    study.report_dir.mkdir(parents=True, exist_ok=True)
    task_opts = _study_options(head, study)
    partial = study.report_dir / "glue.partial.json"
    results = train_tasks(
        bb, task_opts, study.out, study.teachers_out or study.out.parent / "teachers", study.glue_dir, study.custom, log,
        study.layer_budget, on_task_done=lambda r: partial.write_text(json.dumps(results_json(r), indent=1, default=str)),
        jobs=study.jobs,
    )
    opts = HeadOptions(**head)
    res = {
        "command": study.command, "backbone": bb.name, "num_layers": bb.config.num_hidden_layers,
        "hidden_size": bb.config.hidden_size, "glue_dir": str(study.glue_dir), "tasks": results_json(results),
        "depths": tuple(sorted(set(opts.depths))),
        "options": {**opts.__dict__, "max_train": study.max_train, "small_seeds": list(study.small_seeds),
                    "layer_budget": study.layer_budget, "jobs": study.jobs},
        "hardware": hardware, "machine": describe_machine(hardware),
        "precision": hardware["precision"] if opts.bf16 is not False else "float32",
        "fit": {k: v for k, v in asdict(FitConfig()).items() if k not in ("epochs", "lr", "batch_size", "min_steps", "seed", "bf16", "progress")},
        "targets": dict(DEFAULT_TARGETS),
        "cache_mib": sum(r.cache_bytes for r in results.values()) / 2**20,
    }
    _summarise(res, results, bb.config.num_hidden_layers)
    if study.measure_speedup:
        k = max(r.k for r in results.values())
        res["speedup"] = measure_cache_speedup(bb, "sst2" if "sst2" in study.tasks else study.tasks[0], study.glue_dir, depth=k)
        log(f"cache speed-up per epoch: teacher {res['speedup']['speedup_teacher']:.1f}x, student {res['speedup']['speedup_student']:.1f}x")
    res["seconds"] = time.perf_counter() - t0
    (study.report_dir / "glue.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    write_markdown(study.report_dir / "glue.md", res)
    plot(study.report_dir / "glue.png", res)
    partial.unlink(missing_ok=True)
    avg = res["average"]["student_pct_of_full"]
    log(f"report: {study.report_dir / 'glue.md'} (student {'n/a' if avg is None else f'{avg:.1f}%'} of full, "
        f"merged cost {100 * res['cost']['ratio']:.1f}%, {res['seconds'] / 60:.1f} min)")
    return res
