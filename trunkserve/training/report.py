"""The one renderer of the GLUE study's report files: ``glue.md`` and ``glue.png`` from ``glue.json``.

Every fact in the text comes from the recorded run: the backbone's name, layers and width, the
machine (``hardware``, recorded by ``training.study`` when the run starts), the recipe, the
targets and every verdict. Older ``glue.json`` files that lack a fact say so ("unknown
machine") rather than print one that may be wrong. ``python -m trunkserve.training render``
re-renders a committed study; ``training.study`` and ``training.ablation`` write through here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .results import TaskResult

#: What the study is judged against (recorded in ``glue.json``; older files were judged against these).
DEFAULT_TARGETS = {"student_pct_of_full": 99.0, "cost_ratio": 0.35, "minutes": 60.0, "minutes_cpu_cores": 2}
#: The training recipe's fixed settings before ``glue.json`` recorded them (``training.loop.FitConfig``'s defaults then).
_OLDER_FIT = {"warmup_ratio": 0.1, "max_grad_norm": 1.0, "evals_per_epoch": 2, "patience": 4}
UNKNOWN_MACHINE = "unknown machine"


def describe_machine(hw: dict | None) -> str:
    """``hardware`` facts in words: the GPU, or the CPU with its cores and training threads."""
    if not hw:
        return UNKNOWN_MACHINE
    cpu = f"{hw.get('cores') or '?'}-core CPU ({hw.get('cpu') or 'unknown model'})"
    if hw.get("gpu"):
        return f"{hw['gpu']} (GPU; host {cpu})"
    return f"{cpu}, {hw.get('threads') or '?'} training threads"


def _machine(res: dict) -> str:
    """The recorded machine: from its facts, else the line an older run recorded, else unknown."""
    if res.get("hardware"):
        return describe_machine(res["hardware"])
    return res.get("machine") or UNKNOWN_MACHINE


def search_scores(r: dict, every_seed: bool) -> list[dict]:
    """A task's candidates as the choice saw them: the first seed's validation scores, or
    (``search_every_seed``) each candidate's mean over the seeds, which all trained it."""
    first = r["seeds"][0]["candidates"]
    if not every_seed:
        return first
    out = []
    for c in first:
        same = [x for s in r["seeds"] for x in s["candidates"] if (x["k"], x["n"], x["m"]) == (c["k"], c["n"], c["m"])]
        out.append({**c, "teacher_val": float(np.mean([x["teacher_val"] for x in same])),
                    "student_val": float(np.mean([x["student_val"] for x in same]))})
    return out


def _fmt(mean: float, std: float | None, n: int) -> str:
    return f"{mean:.1f} ± {std:.1f}" if n > 1 and std is not None else f"{mean:.1f}"


def pct_of(part: float, whole: float) -> float | None:
    """``part`` as a percentage of ``whole``; None where ``whole`` is not positive (an MCC or a
    correlation of 0 or below, as tiny or failed runs give), where a share means nothing."""
    return 100 * part / whole if whole > 0 else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _jobs_note(res: dict) -> str:
    jobs = res.get("options", {}).get("jobs") or 1
    return "" if jobs == 1 else f"; training jobs shared with {jobs - 1} worker process(es) (`--jobs {jobs}`)"


def _cap(res: dict, task: str) -> int | None:
    """The training-row cap the study used for ``task`` (None: the whole train file)."""
    caps = res["options"].get("max_train")
    return caps.get(task) if isinstance(caps, dict) else caps


def _tasks(res: dict) -> dict[str, TaskResult]:
    return {t: TaskResult.from_json(r) for t, r in res["tasks"].items()}


def _student_ms(res: dict) -> list[int]:
    return sorted({c["m"] for r in res["tasks"].values() for c in r["seeds"][0]["candidates"]})


def _header(res: dict) -> list[str]:
    return [
        "# GLUE study: full fine-tuning vs partial fine-tuning teacher vs distilled student",
        "",
        f"Backbone: {res['backbone']} ({res['num_layers']} layers, hidden {res['hidden_size']}); dev sets of "
        f"{', '.join(res['tasks'])} from `{res['glue_dir']}`. Produced by:",
        "",
        "```",
        res["command"],
        "```",
        "",
        f"Wall time {res['seconds'] / 60:.1f} min on {_machine(res)} ({res.get('precision', 'unknown precision')}){_jobs_note(res)}.",
        "",
        "Scores are GLUE dev scores x 100 (mean of the task's metrics: MCC for CoLA, accuracy for SST-2/RTE, "
        "mean of F1 and accuracy for MRPC, mean of Pearson and Spearman for STS-B), mean ± std over seeds. "
        "Every choice (best checkpoint, branch depth k) was made on a validation split carved from the "
        "training rows; the dev set was only scored.",
        "",
    ]


def _score_table(res: dict, tasks: dict[str, TaskResult]) -> list[str]:
    L = res["num_layers"]
    lines = ["| task | train rows | seeds | full FT (layers) | teacher (k frozen + n) | student (k frozen + m) | student / full | detail (student) |",
             "|---|---|---|---|---|---|---|---|"]
    for t, r in tasks.items():
        n_seeds, split = len(r.seeds), r.headline_split
        detail = ", ".join(f"{m} {100 * np.mean([s.student.dev[split].metrics[m] for s in r.seeds]):.1f}"
                           for m in r.seeds[0].student.dev[split].metrics)
        lines.append(
            f"| {t} | {r.train_rows} | {n_seeds} | {_fmt(r.full_dev_mean, r.full_dev_std, n_seeds)} ({L}) "
            f"| {_fmt(r.teacher_dev_mean, r.teacher_dev_std, n_seeds)} ({r.k}+{r.n}) "
            f"| {_fmt(r.student_dev_mean, r.student_dev_std, n_seeds)} ({r.k}+{r.m}) "
            f"| {_pct(pct_of(r.student_dev_mean, r.full_dev_mean))} | {detail} |")
    avg = res["average"]
    lines.append(f"| **average** | | | **{avg['full']:.1f}** | **{avg['teacher']:.1f}** | **{avg['student']:.1f}** "
                 f"| **{_pct(avg['student_pct_of_full'])}** | |")
    return lines


def _time_verdict(res: dict, target: dict) -> str:
    """Met / not met only where the run's machine is the one the time target is set for."""
    hw, cores = res.get("hardware"), target["minutes_cpu_cores"]
    if not hw:
        return f"not judged ({UNKNOWN_MACHINE})"
    if hw.get("device") != "cpu" or hw.get("cores") != cores:
        return f"not comparable (this run: {describe_machine(hw)})"
    return _met(res["seconds"] < 60 * target["minutes"])


def _cost_and_targets(res: dict, n_tasks: int) -> list[str]:
    c, avg, L = res["cost"], res["average"], res["num_layers"]
    target = {**DEFAULT_TARGETS, **res.get("targets", {})}
    pct = avg["student_pct_of_full"]
    return [
        "",
        f"**Layer cost.** One full model per task: {L} x {n_tasks} = {c['separate_layers']} layers per request set. "
        f"Merged model: trunk to depth {c['deepest_branch']} once + {c['student_layers']} student layer(s) = "
        f"{c['merged_layers']} layers, **{100 * c['ratio']:.1f}%** of the separate models.",
        "",
        f"**Targets.** Student average {_pct(pct)} of full fine-tuning (target >= {target['student_pct_of_full']:g}%): "
        f"{_met((pct or 0) >= target['student_pct_of_full'])}. Merged cost {100 * c['ratio']:.1f}% "
        f"(target <= {100 * target['cost_ratio']:g}%): {_met(c['ratio'] <= target['cost_ratio'])}. Wall time "
        f"{res['seconds'] / 60:.1f} min (target < {target['minutes']:g} min on {target['minutes_cpu_cores']} CPU cores): "
        f"{_time_verdict(res, target)}.",
        "",
        "![scores](glue.png)",
    ]


def _search_intro(res: dict) -> str:
    budget = res["options"].get("layer_budget")
    parts = ["Every candidate was trained on each of the task's seeds and is ranked by its mean validation score "
             "(`--search-every-seed`): one seed's few hundred validation rows rank noisily."] if res["options"].get("search_every_seed") else []
    if not budget:
        parts.append("Each task keeps the (k, m) whose student validates best.")
    else:
        parts.append(f"The merged cost couples the tasks (the trunk runs to the deepest k any head uses; every head adds m layers), so (k, m) "
                     f"is chosen jointly: the highest summed student validation score whose cost fits {100 * budget:.0f}% of one full model "
                     "per task (`training.search.choose`). Teacher score first, then the students by m.")
    return " ".join(parts)


def _search_section(res: dict) -> list[str]:
    every_seed, ms = bool(res["options"].get("search_every_seed")), _student_ms(res)
    lines = ["", "## Search over branch depth k and student layers m (validation scores, "
             + ("mean over each task's seeds)" if every_seed else "seed 0)"), "", _search_intro(res), "",
             "| task | " + " | ".join(f"k={k}: teacher" + "".join(f" / m={m}" for m in ms) for k in res["depths"]) + " | chosen |",
             "|---|" + "---|" * (len(res["depths"]) + 1)]
    for t, r in res["tasks"].items():
        cands, cells = search_scores(r, every_seed), []
        for k in res["depths"]:
            at_k = {c["m"]: c for c in cands if c["k"] == k}
            if not at_k:
                cells.append("-")
                continue
            teacher = next(iter(at_k.values()))["teacher_val"]
            cells.append(f"{teacher:.1f}" + "".join(f" / {at_k[m]['student_val']:.1f}" if m in at_k else " / -" for m in ms))
        lines.append(f"| {t} | " + " | ".join(cells) + f" | k={r['k']}, m={r['m']} |")
    return lines


def _mkdm_section(tasks: dict[str, TaskResult]) -> list[str]:
    if not any(r.mkdm for r in tasks.values()):
        return []
    lines = ["", "## Multi-teacher distillation (MKDM: one student from the average of the seeds' teachers' soft labels)", "",
             "| task | teachers | MKDM student | single-teacher students (mean) |", "|---|---|---|---|"]
    for t, r in tasks.items():
        if r.mkdm:
            lines.append(f"| {t} | {r.mkdm.teachers} | {r.mkdm.dev[r.headline_split].score:.1f} | {r.student_dev_mean:.1f} |")
    return lines


def _speedup_section(res: dict) -> list[str]:
    sp = res.get("speedup")
    if not sp:
        return []
    return [
        "", "## Trunk cache speed-up", "",
        f"One epoch on {sp['task']} ({sp['rows']} rows, branch depth k={sp['depth']}): teacher (n={sp['teacher_layers']}) "
        f"{sp['teacher_uncached']:.1f} s recomputing the frozen trunk vs {sp['teacher_cached']:.1f} s on cached states "
        f"(**{sp['speedup_teacher']:.1f}x**); 1-layer student {sp['student_uncached']:.1f} s vs {sp['student_cached']:.1f} s "
        f"(**{sp['speedup_student']:.1f}x**). Building the cache took {sp['cache_build_seconds']:.1f} s, once, and is shared by every "
        "epoch, seed, search candidate, teacher and student of the task (this study trains "
        f"{res['trainings_on_cache']} teachers/students on cached states). Cache size for this study: {res['cache_mib']:.0f} MiB in total "
        f"(float16, no padding; bounded by --cache-max-gb, here {res['options']['cache_max_bytes'] / 2**30:g} GiB; "
        "rows beyond the bound are recomputed).",
    ]


def _settings_section(res: dict, tasks: dict[str, TaskResult]) -> list[str]:
    o, fit, ms = res["options"], {**_OLDER_FIT, **res.get("fit", {})}, _student_ms(res)
    budget = o.get("layer_budget")
    return [
        "", "## Settings", "",
        f"- Training rows per task (train + validation; {100 * o['val_fraction']:g}% of them, at most {o['max_val']}, held out "
        "for validation): " + ", ".join(f"{t} {r.train_rows + r.val_rows}" + (" (seeded sample, capped)" if _cap(res, t) else " (whole train file)")
                                        for t, r in tasks.items()) + ".",
        f"- Same recipe for all three models: AdamW, lr {o['lr']} (full FT {o['full_lr'] or o['lr']}), batch {o['batch_size']}, "
        f"{100 * fit['warmup_ratio']:g}% warm-up then linear decay, grad-norm clip {fit['max_grad_norm']}, "
        f"{o['epochs']} epochs (student {o['student_epochs'] or o['epochs']}), validation {_times(fit['evals_per_epoch'])} per epoch, "
        f"best checkpoint kept, early stopping after {fit['patience']} evaluations without improvement, max length {o['max_length']}.",
        f"- Student: m = {'/'.join(map(str, ms))} layer(s) initialised from the teacher's lowest task layer(s), pooler and output layer; "
        f"loss T^2 * soft CE (T={o['temperature']}) + hard CE"
        + (f" + {o['hidden_weight']:g} x hidden-state MSE" if o.get("hidden_weight") else "")
        + "; regression: MSE to teacher score + MSE to label.",
        f"- Teacher: backbone layers k..L-1 fine-tuned on top of the frozen trunk; k searched over the trunk's branch depths "
        f"{tuple(res['depths'])}; (k, m) chosen by the students' validation scores"
        + (f", jointly under the layer budget ({100 * budget:.0f}% of one full model per task)." if budget else "."),
        "",
    ]


def write_markdown(path: Path, res: dict) -> None:
    """``glue.md`` from a study's ``glue.json`` contents, section by section."""
    tasks = _tasks(res)
    lines = _header(res) + _score_table(res, tasks) + _cost_and_targets(res, len(tasks)) + _search_section(res)
    lines += _mkdm_section(tasks)
    if "hidden_ablation" in res:
        lines += ablation_markdown(res["hidden_ablation"], res)
    lines += _speedup_section(res) + _settings_section(res, tasks)
    capped = [t for t in tasks if _cap(res, t)]
    if capped:
        lines += [f"Caveat: capped training sets ({', '.join(capped)}); scores on the full training sets are higher for every column.", ""]
    path.write_text("\n".join(lines))


def render(report: str | Path) -> Path:
    """Rewrite ``glue.md`` and ``glue.png`` beside a ``glue.json`` (after editing wording, or for a run made elsewhere)."""
    report = Path(report)
    res = json.loads(report.read_text())
    write_markdown(report.with_suffix(".md"), res)
    plot(report.with_suffix(".png"), res)
    return report.with_suffix(".md")


def plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(res["tasks"])
    x = np.arange(len(tasks) + 1)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    for i, (role, label) in enumerate((("full", "full fine-tuning"), ("teacher", "teacher"), ("student", "student (served)"))):
        vals = [res["tasks"][t][f"{role}_dev_mean"] for t in tasks] + [res["average"][role]]
        errs = [res["tasks"][t][f"{role}_dev_std"] for t in tasks] + [0]
        ax.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=errs, label=label, capsize=2)
    ax.set_xticks(x, tasks + ["average"])
    ax.set_ylabel("GLUE dev score")
    ax.set_title(f"{res['backbone']} ({res['num_layers']} layers): dev scores (mean over seeds)")
    ax.legend(fontsize=8)
    c = res["cost"]
    ax2.bar(["one model\nper task", "merged"], [c["separate_layers"], c["merged_layers"]], color=["gray", "tab:green"])
    ax2.set_ylabel("transformer layers run per request set")
    ax2.set_title(f"layer cost ({100 * c['ratio']:.0f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _seed_noise(res: dict) -> str:
    """How much the study's own students moved between seeds: what a one-seed change must beat."""
    spread = {t: r["student_dev_std"] for t, r in res["tasks"].items() if len(r["seeds"]) > 1}
    if not spread:
        return "one seed; the study has no second seed to show how far a dev score moves between seeds"
    noisy = sorted(spread, key=spread.get, reverse=True)[:2]
    return ("one seed; across the study's seeds its students' dev scores move by a standard deviation of up to "
            + ", ".join(f"{spread[t]:.1f} ({t})" for t in noisy) + " points")


def _ablation_verdict(ab: dict, res: dict, dv: float, dd: float) -> str:
    """The section's conclusion from the numbers: a change counts only when validation and dev agree."""
    base, extra = ab["weights"][:2]
    if dv >= 0.5 and dd >= 0.5:
        return f"Hidden-state distillation **helps** on validation and dev: consider `--hidden-weight {extra}`."
    keep = f"`--hidden-weight {base:g}`" + (" (the logit loss only)" if not base else "")
    if dv <= -0.5 and dd <= -0.5:
        return f"Hidden-state distillation **hurts** on validation and dev: keep {keep}."
    studied = res.get("options", {}).get("hidden_weight")
    setting = "" if studied is None else f" (the study's students used `--hidden-weight {studied:g}`)"
    return (f"Validation ({dv:+.1f}) and dev ({dd:+.1f}) **disagree or barely move**, so hidden-state distillation shows no "
            f"reliable gain here ({_seed_noise(res)}). Choices are made on validation, which "
            f"{'favours' if dv > 0 else 'does not favour'} the extra term: keep {keep}{setting}.")


def ablation_markdown(ab: dict, res: dict | None = None) -> list[str]:
    """The ablation as a report section. The verdict needs validation *and* dev to agree:
    choices are made on validation, and one seed of a small dev set moves by points."""
    res = res or {"tasks": {}}
    w0, w1 = (str(w) for w in ab["weights"][:2])
    lines = ["", "## Hidden-state distillation (ablation)", "",
             f"Each task's written teacher distilled again into the same student shape (seed {ab['seed']}, same data and "
             f"validation split), with the logit loss only and with an added hidden-state MSE (weight {w1}) between each "
             "student layer and its teacher layer. Produced by `python -m trunkserve.training hidden-ablation --report reports/glue.json`.", "",
             "| task | k + m | logit loss only: validation / dev | + hidden-state MSE: validation / dev | change (validation / dev) |",
             "|---|---|---|---|---|"]
    for task, t in ab["tasks"].items():
        a, b = t["runs"][w0], t["runs"][w1]
        lines.append(f"| {task} | {t['k']} + {t['m']} | {a['val']:.1f} / {a['dev']:.1f} | {b['val']:.1f} / {b['dev']:.1f} "
                     f"| {b['val'] - a['val']:+.1f} / {b['dev'] - a['dev']:+.1f} |")
    d0, d1 = ab["dev_mean"][w0], ab["dev_mean"][w1]
    v0, v1 = (float(np.mean([t["runs"][w]["val"] for t in ab["tasks"].values()])) for w in (w0, w1))
    lines.append(f"| **average** | | **{v0:.1f} / {d0:.1f}** | **{v1:.1f} / {d1:.1f}** | **{v1 - v0:+.1f} / {d1 - d0:+.1f}** |")
    return lines + ["", _ablation_verdict(ab, res, v1 - v0, d1 - d0)]
