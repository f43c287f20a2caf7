"""Does the student recipe matter? Single-teacher vs multi-teacher vs multi-teacher + transfer set, per task.

``python -m trunkserve.training recipe-ablation --tasks mrpc,rte --seeds 3 --out reports/recipe/`` prepares
each task once (the same split, trunk cache and transfer set for every recipe), then on every seed
trains one candidate ``(k, n, m)`` (``--branch-layer`` or the deepest of ``--depths``, every layer above
it for the teacher, ``--student-layers``) under each recipe, and scores the students on dev. Teachers
are shared between the recipes (``Prepared.teachers``): single-teacher's teacher on seed ``s`` is the
first of multi-teacher's. ``--full-baseline`` adds full fine-tuning per seed and the student/full ratio.
Writes ``recipe.json`` and ``recipe.md``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from trunkserve.backbone import load_backbone

from .options import HeadOptions, RunOptions, check_run_options
from .prepare import build_caches, prepare
from .trials import dev_scores, full_result, train_trials
from .teacher import predict_head

#: The recipes compared: the keywords each sets on the run's options (the third keeps the run's transfer sources).
RECIPE_RUNS = {
    "single-teacher": {"student_recipe": "single-teacher", "transfer": ("none",), "transfer_text": None},
    "multi-teacher": {"student_recipe": "multi-teacher", "transfer": ("none",), "transfer_text": None},
    "multi-teacher+transfer": {"student_recipe": "multi-teacher"},
}


def _mean_std(xs: list[float]) -> dict:
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs))}


def ablate_task_recipes(bb, task: str, base: HeadOptions, seeds: int, glue_dir=None, custom=None, log=print) -> dict:
    """One task, every recipe of ``RECIPE_RUNS`` on seeds ``0 .. seeds-1``: dev scores, seconds, the recipe records."""
    if not base.transfer_sources:
        base = dataclasses.replace(base, transfer=("augment",))
    prep = prepare(task, bb, base, glue_dir, custom)
    L = bb.config.num_hidden_layers
    k = base.branch_layer if base.branch_layer is not None else max(base.depths)
    n, m = base.teacher_layers or L - k, base.student_layers
    build_caches(prep, bb, base, [k])
    split = next(iter(prep.dev))

    def dev(head) -> float:
        return dev_scores(lambda s: predict_head(head, prep.caches[f"dev:{s}"], k), prep)[split].score

    out = {"k": k, "n": n, "m": m, "split": split, "train_rows": len(prep.train), "val_rows": len(prep.val),
           "transfer": prep.transfer_info.to_json() if prep.transfer_info else None, "runs": {}}
    runs = {name: [] for name in RECIPE_RUNS}
    fulls = []
    for seed in range(seeds):
        for name, over in RECIPE_RUNS.items():
            opts = dataclasses.replace(base, **over)
            (trial,) = train_trials(bb, prep, opts, seed, [(k, n, m)], log=lambda line, name=name: log(f"{line} [{name}]"))
            runs[name].append({"seed": seed, "student_val": trial.student_val, "student_dev": dev(trial.student),
                               "teacher_val": trial.teacher_val, "teacher_dev": dev(trial.teacher),
                               "teacher_seconds": trial.teacher_seconds, "student_seconds": trial.student_seconds,
                               "recipe": trial.recipe})
        if base.full_baseline:
            f = full_result(bb, prep, base, seed, log)
            fulls.append({"seed": seed, "val": f.val, "dev": f.dev[split].score, "seconds": f.seconds})
    full_mean = float(np.mean([f["dev"] for f in fulls])) if fulls else None
    if fulls:
        out["full"] = {"dev": _mean_std([f["dev"] for f in fulls]), "seeds": fulls}
    for name, rows in runs.items():
        student = _mean_std([r["student_dev"] for r in rows])
        out["runs"][name] = {
            "student_dev": student, "teacher_dev": _mean_std([r["teacher_dev"] for r in rows]),
            "student_val": _mean_std([r["student_val"] for r in rows]),
            "teacher_seconds": float(np.mean([r["teacher_seconds"] for r in rows])),
            "student_seconds": float(np.mean([r["student_seconds"] for r in rows])),
            "student_pct_of_full": 100 * student["mean"] / full_mean if full_mean else None, "seeds": rows,
        }
        log(f"[{task}] {name}: student dev {student['mean']:.2f} ± {student['std']:.2f} over {seeds} seed(s)")
    return out


def recipe_markdown(res: dict) -> str:
    """The ablation's table: per task and recipe, the dev means over seeds and what each cost."""
    lines = ["# Student recipe ablation", "", f"`{res['command']}`" if res.get("command") else "", "",
             f"{res['seeds']} seed(s); per seed every recipe trains the same candidate on the same split and trunk "
             "cache. Teacher seconds: every teacher a student learns from (shared between recipes, counted in each).", "",
             "| task | recipe | student dev | teacher dev | student / full | teacher s | student s | transfer rows |",
             "|---|---|---|---|---|---|---|---|"]
    for task, t in res["tasks"].items():
        for name, r in t["runs"].items():
            pct = "n/a" if r["student_pct_of_full"] is None else f"{r['student_pct_of_full']:.1f}%"
            rows = r["seeds"][0]["recipe"]["transfer"]["rows"]
            lines.append(f"| {task} | {name} | {r['student_dev']['mean']:.1f} ± {r['student_dev']['std']:.1f} | "
                         f"{r['teacher_dev']['mean']:.1f} | {pct} | {r['teacher_seconds']:.0f} | {r['student_seconds']:.0f} | {rows} |")
        if "full" in t:
            lines.append(f"| {task} | full fine-tuning | {t['full']['dev']['mean']:.1f} ± {t['full']['dev']['std']:.1f} | | | | | |")
    shapes = ", ".join(f"{task} ({t['k']}, {t['n']}, {t['m']})" for task, t in res["tasks"].items())
    lines += ["", f"(k, n, m) per task: {shapes}; {res['seconds'] / 60:.1f} min in all.", ""]
    return "\n".join(lines)


def recipe_ablation(tasks, seeds: int = 3, out: str | Path = "reports/recipe", log=print, command: str = "", **options) -> dict:
    """Every task of ``tasks`` under every recipe (keywords: ``RunOptions``'s and ``HeadOptions``'s, as ``train_heads``,
    but for ``seeds``, a count here); writes ``out/recipe.json`` and ``out/recipe.md``."""
    t0 = time.perf_counter()
    run, head = RunOptions.split(tasks, options)
    check_run_options(run.tasks, run.max_train, head)
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    head.setdefault("progress", False)
    bb = load_backbone(run.backbone)
    res = {"command": command, "seeds": seeds, "backbone": bb.name, "max_train": run.max_train, "tasks": {}}
    for task in run.tasks:
        opts = HeadOptions(max_train=run.cap(task), **head)
        res["tasks"][task] = ablate_task_recipes(bb, task, opts, seeds, run.glue_dir, run.custom, log)
    res["options"] = {k: v for k, v in dataclasses.asdict(HeadOptions(**head)).items() if k != "max_train"}
    res["seconds"] = time.perf_counter() - t0
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (folder / "recipe.md").write_text(recipe_markdown(res))
    log(f"recipe ablation: {folder / 'recipe.md'} ({res['seconds'] / 60:.1f} min)")
    return res
