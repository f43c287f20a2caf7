"""Does hidden-state distillation help? An ablation on the study's own teachers.

The study (``training.study``) distils students with the logit loss only
(T^2-scaled soft cross-entropy + hard labels). Here each task's written teacher
(the best seed's, ``teacher_dir`` in ``glue.json``) is distilled again into a
student of the same shape, on the same capped data and validation split, once
with and once without the hidden-state MSE term; the dev scores are added to
``glue.json`` and the markdown is re-rendered with a section that says whether
the term helps.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from trunkserve.artifacts import load_head
from trunkserve.backbone import load_backbone

from .distill import train_student
from .options import HeadOptions
from .prepare import prepare
from .report import write_markdown
from .trials import dev_scores
from .teacher import predict_head


def _head_options(options: dict, task: str) -> HeadOptions:
    fields = {f.name for f in dataclasses.fields(HeadOptions)}
    kept = {k: v for k, v in options.items() if k in fields and k != "max_train"}  # HeadOptions makes lists tuples
    caps = options.get("max_train")
    kept["max_train"] = caps.get(task) if isinstance(caps, dict) else caps
    kept["progress"] = False
    return HeadOptions(**kept)


def ablate_task(bb, task: str, teacher_dir: str | Path, num_layers: int, opts: HeadOptions, weights: Sequence[float] = (0.0, 1.0),
                seed: int = 0, glue_dir=None, log=print) -> dict:
    """One task: a student per hidden-state weight, distilled from the teacher in ``teacher_dir``; dev and validation scores."""
    teacher, meta = load_head(teacher_dir)
    k = meta.branch_layer
    prep = prepare(task, bb, dataclasses.replace(opts, transfer=("none",), transfer_text=None), glue_dir, cache_depths=[k])
    split = next(iter(prep.dev))
    out = {"k": k, "m": num_layers, "split": split, "runs": {}}
    for w in weights:
        student, fit = train_student(
            [teacher], prep.caches["train"], prep.caches["val"], k, prep.data.metric,
            opts.fit_config(seed, epochs=opts.student_epochs), num_layers=num_layers, temperature=opts.temperature,
            soft_weight=opts.soft_weight, hard_weight=opts.hard_weight, hidden_weight=w,
            desc=f"{task} student hidden_weight={w}",
        )
        dev = dev_scores(lambda s: predict_head(student, prep.caches[f"dev:{s}"], k), prep)
        out["runs"][str(w)] = {"val": fit.best_score, "dev": dev[split].score}
        log(f"  [{task}] hidden_weight={w}: val {fit.best_score:.2f}, dev {dev[split].score:.2f}")
    return out


def hidden_ablation(report_json: str | Path, weights: Sequence[float] = (0.0, 1.0), seed: int = 0,
                    glue_dir: str | Path | None = None, backbone: str | Path | None = None, log=print) -> dict:
    """Students with each hidden-state weight in ``weights``, per task; updates ``glue.json`` and ``glue.md``."""
    path = Path(report_json)
    res = json.loads(path.read_text())
    bb = load_backbone(backbone)
    glue_dir = glue_dir or res.get("glue_dir")
    t0 = time.perf_counter()
    out: dict[str, dict] = {}
    for task, r in res["tasks"].items():
        out[task] = ablate_task(bb, task, r["teacher_dir"], r["m"], _head_options(res["options"], task), weights, seed, glue_dir, log)
    means = {str(w): float(np.mean([t["runs"][str(w)]["dev"] for t in out.values()])) for w in weights}
    res["hidden_ablation"] = {"weights": list(weights), "seed": seed, "tasks": out, "dev_mean": means,
                              "seconds": time.perf_counter() - t0}
    path.write_text(json.dumps(res, indent=1, default=str) + "\n")
    write_markdown(path.with_name("glue.md"), res)
    return res["hidden_ablation"]
