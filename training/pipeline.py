"""Train the heads for a list of tasks: data -> trunk cache -> teacher(s) -> student -> head folders.

``train_heads`` is what the CLI (``python -m training train-heads``), the demo and
the report call. Per task:

1. read the data (GLUE or a custom CSV/JSONL task), optionally cap the training
   rows (seeded sample), and carve a seeded validation split from them. Every
   choice (checkpoint, branch depth, teacher layers) is made on that split; the
   GLUE dev set is only scored;
2. run the frozen trunk once over train/validation/dev and cache the hidden states
   at every candidate branch depth;
3. train a partial fine-tuning teacher per candidate ``(k, n)`` and distil it into
   a student per candidate size ``m``; the candidate whose *student* validates best
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
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from trunkserve.artifacts import HeadMeta, check_task_name, save_head
from trunkserve.backbone import Backbone, load_backbone
from trunkserve.canary import make_canary
from trunkserve.defaults import DEFAULT_DEPTHS, DEFAULT_MAX_SEQ_LEN, DEFAULT_MIN_STEPS, DEFAULT_REFIT_STEPS
from trunkserve.fingerprint import trunk_fingerprint
from trunkserve.modules import Head, Trunk
from trunkserve.tokenization import BucketTokenizer

from .cache import DEFAULT_CACHE_BYTES, HiddenStateCache
from .data.custom import load_custom_task
from .data.encode import Encoded, encode_examples
from .data.glue import GLUE_TASKS, default_glue_dir, load_glue_task
from .data.types import DataError, Example, TaskData
from .distill import train_student
from .quality import DEFAULT_MIN_RATIO, ON_FAIL, judge, majority_score
from .loop import FitConfig, bf16_supported
from .teacher import evaluate_outputs, predict_full, predict_head, train_full, train_teacher


if TYPE_CHECKING:
    from .jobs import TaskJobs


class PipelineError(ValueError):
    """Inconsistent training options (branch depth outside the trunk, bad custom spec, ...)."""


@dataclass
class CustomTask:
    """A user task: ``train`` file, optional ``dev`` file, optional forced task type."""

    train: str
    dev: str | None = None
    task_type: str | None = None

    @classmethod
    def parse(cls, spec: str) -> tuple[str, "CustomTask"]:
        """``name=train.csv[,dev.csv][:regression|:classification]``."""
        if "=" not in spec:
            raise PipelineError(f"custom task {spec!r}: expected NAME=TRAIN[,DEV][:TYPE]")
        name, rest = spec.split("=", 1)
        task_type = None
        if rest.endswith((":regression", ":classification")):
            rest, task_type = rest.rsplit(":", 1)
        files = rest.split(",")
        return name.strip(), cls(files[0], files[1] if len(files) > 1 else None, task_type)


@dataclass
class HeadOptions:
    """Everything that shapes how one task's heads are trained."""

    max_train: int | None = None
    val_fraction: float = 0.1
    max_val: int = 500
    max_dev: int | None = None
    max_length: int = DEFAULT_MAX_SEQ_LEN
    depths: tuple[int, ...] = DEFAULT_DEPTHS
    branch_layer: int | None = None  # None: search over depths if search, else the deepest depth
    teacher_layers: int | None = None  # None: every layer above the branch
    student_layers: int = 1
    search: bool = False
    search_teacher_layers: bool = False
    temperature: float = 2.0
    soft_weight: float = 1.0
    hard_weight: float = 1.0
    hidden_weight: float = 0.0
    epochs: float = 3.0
    student_epochs: float | None = None
    min_steps: int = DEFAULT_MIN_STEPS  # every schedule (teacher, student, full) runs at least this many steps
    refit_steps: int = DEFAULT_REFIT_STEPS  # steps refitting the student's pooler + output layer to its own states (0: off)
    min_ratio: float = DEFAULT_MIN_RATIO  # quality gate: the student keeps at least this share of the teacher's validation score
    quality_gate: str = "fallback"  # a student that fails the gate: "fallback" ships the teacher, "refuse" marks it failed
    lr: float = 1e-4
    full_lr: float | None = None
    batch_size: int = 32
    seeds: tuple[int, ...] = (0,)
    split_seed: int = 0
    full_baseline: bool = False
    bf16: bool | None = None
    cache_max_bytes: int = DEFAULT_CACHE_BYTES
    progress: bool = True
    search_student_layers: tuple[int, ...] = ()  # several: try each m (chosen on validation, or under a layer budget)
    search_every_seed: bool = False  # rank candidates by their mean validation score over every seed, not the first alone
    mkdm: bool = False  # with several seeds, also distil one student from all seeds' teachers (reported only)

    def fit_config(self, seed: int, epochs: float | None = None, lr: float | None = None) -> FitConfig:
        return FitConfig(
            epochs=self.epochs if epochs is None else epochs, lr=lr or self.lr, min_steps=self.min_steps, batch_size=self.batch_size, seed=seed,
            bf16=self.bf16, progress=self.progress,
        )


@dataclass
class Prepared:
    """A task's data, split, tokenized and cached: shared by every seed and candidate."""

    data: TaskData
    train: Encoded
    val: Encoded
    dev: dict[str, Encoded]
    caches: dict[str, HiddenStateCache] = field(default_factory=dict)  # "train", "val", "dev:<split>"
    cache_seconds: float = 0.0
    cache_bytes: int = 0
    majority: dict = field(default_factory=dict)  # "val" / "dev:<split>" -> the majority-class baseline's scores

    def __post_init__(self):
        d, reg = self.data, self.data.task_type == "regression"
        sets = {"val": self.val, **{f"dev:{k}": v for k, v in self.dev.items()}}
        self.majority = {name: majority_score(self.train, enc, d.metric, d.num_labels, reg) for name, enc in sets.items()}

    @property
    def pair(self) -> bool:
        """Trained on text pairs: every served call should send ``text_pair`` too."""
        return any(ex.text_pair is not None for ex in self.data.train)

    def describe(self) -> str:
        """The task type and labels as read from the data, so a surprise (1-5 read as 5 classes) is seen at once."""
        d = self.data
        kind = (f"regression (score {min(self.train.labels):g}..{max(self.train.labels):g})" if d.task_type == "regression"
                else f"classification, {d.num_labels} classes {d.labels}")
        return (f"{kind}, {'text pairs' if self.pair else 'single texts'}; majority-class validation score "
                f"{self.majority['val']['score']:.2f}")


def carve_validation(examples: list[Example], fraction: float, max_val: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded hold-out of ``fraction`` of the rows (at most ``max_val``, at least 1) for every selection."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = min(max_val, max(1, int(round(len(order) * fraction))))
    if n_val >= len(order):
        raise DataError(f"too few training rows ({len(order)}) to hold out a validation split")
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def cap(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    order = list(range(len(examples)))
    random.Random(seed + 7919).shuffle(order)
    return [examples[i] for i in sorted(order[:n])]


def load_task(task: str, glue_dir=None, custom: dict[str, CustomTask] | None = None) -> TaskData:
    if custom and task in custom:
        c = custom[task]
        return load_custom_task(task, c.train, c.dev, c.task_type)
    if task not in GLUE_TASKS:
        raise DataError(f"unknown task {task!r}: not a GLUE task ({', '.join(GLUE_TASKS)}) and no custom file given")
    return load_glue_task(task, glue_dir)


def prepare(task: str, bb: Backbone, opts: HeadOptions, glue_dir=None, custom=None, cache_depths: Sequence[int] = ()) -> Prepared:
    data = load_task(task, glue_dir, custom)
    rows = cap(data.train, opts.max_train, opts.split_seed)
    train_rows, val_rows = carve_validation(rows, opts.val_fraction, opts.max_val, opts.split_seed)
    tok = BucketTokenizer(bb.path, max_length=opts.max_length)
    reg = data.task_type == "regression"
    dev = {k: encode_examples(cap(v, opts.max_dev, opts.split_seed), tok, reg) for k, v in data.dev.items()}
    prep = Prepared(data, encode_examples(train_rows, tok, reg), encode_examples(val_rows, tok, reg), dev)
    if cache_depths:
        build_caches(prep, bb, opts, cache_depths)
    return prep


def build_caches(prep: Prepared, bb: Backbone, opts: HeadOptions, depths: Sequence[int]) -> Prepared:
    """Run the frozen trunk once over train, validation and dev, keeping the states at ``depths``."""
    task = prep.data.name
    trunk = Trunk.from_state_dict(bb.config, bb.state_dict, sorted(set(depths))).freeze()
    t0 = time.perf_counter()
    for name, enc in [("train", prep.train), ("val", prep.val)] + [(f"dev:{k}", v) for k, v in prep.dev.items()]:
        c = HiddenStateCache(trunk, enc, max_bytes=opts.cache_max_bytes, progress=opts.progress, desc=f"{task} trunk cache ({name})")
        prep.caches[name] = c
        prep.cache_bytes += c.nbytes
    prep.cache_seconds = time.perf_counter() - t0
    return prep


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


def dev_scores(outputs_fn: Callable[[str], np.ndarray], prep: Prepared) -> dict[str, dict]:
    out = {}
    for split, enc in prep.dev.items():
        score, metrics = evaluate_outputs(outputs_fn(split), enc, prep.data.metric)
        out[split] = {"score": score, **metrics}
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

    def val_result(self, role: str) -> dict:
        """``{"score": ..., <metric>: ...}`` on validation for ``role`` ("teacher" or "student")."""
        return {"score": getattr(self, f"{role}_val"), **getattr(self, f"{role}_metrics")}

    def record(self) -> dict:
        return {"k": self.k, "n": self.n, "m": self.m, "teacher_val": self.teacher_val, "student_val": self.student_val,
                "teacher_seconds": self.teacher_seconds, "student_seconds": self.student_seconds}


def train_trials(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, cands: Sequence[tuple[int, int, int]], log=print) -> list[Trial]:
    """A teacher per ``(k, n)`` and a student per ``m`` distilled from it, all on cached trunk states."""
    d = prep.data
    teachers: dict[tuple[int, int], tuple[Head, object]] = {}
    trials = []
    for k, n, m in cands:
        if (k, n) not in teachers:
            teachers[k, n] = train_teacher(
                bb, prep.caches["train"], prep.caches["val"], k, n, d.num_labels, d.task_type, d.metric,
                opts.fit_config(seed), desc=f"{d.name} teacher k={k} n={n} s={seed}",
            )
        teacher, t_fit = teachers[k, n]
        student, s_fit = train_student(
            [teacher], prep.caches["train"], prep.caches["val"], k, d.metric,
            opts.fit_config(seed, epochs=opts.student_epochs), num_layers=m,
            temperature=opts.temperature, soft_weight=opts.soft_weight, hard_weight=opts.hard_weight,
            hidden_weight=opts.hidden_weight, refit_steps=opts.refit_steps, desc=f"{d.name} student k={k} m={m} s={seed}",
        )
        trials.append(Trial(k, n, m, teacher, student, t_fit.best_score, s_fit.best_score, t_fit.seconds, s_fit.seconds,
                            t_fit.best_metrics, s_fit.best_metrics, {"teacher": t_fit.schedule(), "student": s_fit.schedule()}))
        log(trial_line(d.name, seed, trials[-1], prep.majority["val"]["score"]))
    return trials


def trial_line(task: str, seed: int, t: Trial, majority: float | None = None) -> str:
    base = "" if majority is None else f" (majority class {majority:.2f})"
    return (f"  [{task} seed {seed}] k={t.k} n={t.n} m={t.m}: teacher val {t.teacher_val:.2f}, "
            f"student val {t.student_val:.2f}{base}")


def full_result(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, log=print) -> dict:
    """The full fine-tuning baseline on ``prep``'s split: validation score, seconds, layers, dev scores."""
    d = prep.data
    model, f_fit = train_full(
        bb, prep.train, prep.val, d.num_labels, d.task_type, d.metric,
        opts.fit_config(seed, lr=opts.full_lr), desc=f"{d.name} full fine-tuning s={seed}",
    )
    log(f"  [{d.name} seed {seed}] full fine-tuning val {f_fit.best_score:.2f} (majority class {prep.majority['val']['score']:.2f})")
    return {"val": f_fit.best_score, "seconds": f_fit.seconds, "layers": model.num_layers,
            "dev": dev_scores(lambda s: predict_full(model, prep.dev[s]), prep)}


def seed_result(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, trial: Trial, tried: list[Trial], log=print,
                full: Callable[[int], dict] | None = None) -> dict:
    """Dev scores of the chosen trial (the dev set is only scored here) and the full baseline if asked
    (trained here, or ``full(seed)``'s, e.g. from ``training.jobs.TaskJobs``, which may run it elsewhere)."""
    k = trial.k
    result = {
        "seed": seed, "k": k, "n": trial.n, "m": trial.m, "candidates": [t.record() for t in tried],
        "teacher": {"val": trial.teacher_val, "dev": dev_scores(lambda s: predict_head(trial.teacher, prep.caches[f"dev:{s}"], k), prep),
                    "seconds": trial.teacher_seconds},
        "student": {"val": trial.student_val, "dev": dev_scores(lambda s: predict_head(trial.student, prep.caches[f"dev:{s}"], k), prep),
                    "seconds": trial.student_seconds},
    }
    result["_trial"] = trial
    if opts.full_baseline:
        result["full"] = full_result(bb, prep, opts, seed, log) if full is None else full(seed)
    result["_teacher"], result["_student"] = trial.teacher, trial.student
    return result


def gate(prep: Prepared, opts: HeadOptions, trial: Trial):
    """The quality gate on the shipped seed's trial (``training.quality.judge``)."""
    return judge(trial.val_result("student"), trial.val_result("teacher"), prep.majority["val"],
                 prep.data.task_type == "regression", opts.min_ratio, opts.quality_gate)


def run_seed(bb: Backbone, prep: Prepared, opts: HeadOptions, seed: int, cands: list[tuple[int, int, int]], log=print) -> dict:
    """Every candidate on one seed; the best student by validation is scored (and the full baseline trained)."""
    trials = train_trials(bb, prep, opts, seed, cands, log)
    return seed_result(bb, prep, opts, seed, max(trials, key=lambda t: t.student_val), trials, log)


@dataclass
class TaskSearch:
    """A task's data and the candidates trained on its first seed (on every seed with
    ``search_every_seed``), before the (budgeted) choice."""

    task: str
    opts: HeadOptions
    prep: Prepared
    trials: list[Trial]
    started: float
    custom: bool = False
    later: dict[int, list[Trial]] = field(default_factory=dict)  # seed -> every candidate, with search_every_seed

    def val(self, trial: Trial) -> float:
        """What the choice ranks ``trial`` by: its student's validation score, averaged over every searched seed.

        A few hundred validation rows make one seed's ranking noisy (on the capped
        study's 150 RTE rows a second student layer was worth 2, 18 and 2 points on
        seeds 0, 1, 2); the mean over seeds is steadier.
        """
        same = [t.student_val for t in (trial, *(self.on_seed(s, trial) for s in self.later))]
        return float(np.mean(same))

    def on_seed(self, seed: int, trial: Trial) -> Trial:
        """The candidate with ``trial``'s (k, n, m) as trained on a later searched ``seed``."""
        return next(t for t in self.later[seed] if (t.k, t.n, t.m) == (trial.k, trial.n, trial.m))


def search_task(jobs: "TaskJobs", task: str) -> TaskSearch:
    """Every candidate of ``task`` on its first seed (every seed with ``search_every_seed``), wherever ``jobs`` runs them."""
    t0 = time.perf_counter()
    opts = jobs.task_opts[task]
    prep = jobs.prep(task)
    cands = candidates(opts, jobs.bb.config.num_hidden_layers)
    trials = jobs.trials(task, opts.seeds[0], cands)
    later = {seed: jobs.trials(task, seed, cands) for seed in opts.seeds[1:]} if opts.search_every_seed else {}
    return TaskSearch(task, opts, prep, trials, t0, custom=jobs.is_custom(task), later=later)


def merged_layers(choice: dict[str, tuple[int, int]]) -> int:
    """Layers one input passes through in the merged model: the trunk to its deepest branch once, plus every head."""
    return max(k for k, _ in choice.values()) + sum(m for _, m in choice.values()) if choice else 0


def choose(searches: dict[str, TaskSearch], num_layers: int, layer_budget: float | None = None) -> dict[str, Trial]:
    """Per task the trial to serve: the best student on validation (``TaskSearch.val``), or, with ``layer_budget``
    (a fraction of one full model per task), the combination with the highest summed
    validation score whose merged layer cost fits the budget.

    The cost couples the tasks (the trunk runs to the deepest branch any head uses, and
    every head adds its layers), so the choice is made jointly: a dynamic programme
    over tasks whose state is (deepest branch, head layers so far).
    """
    if layer_budget is None:
        return {t: max(s.trials, key=s.val) for t, s in searches.items()}
    limit = layer_budget * num_layers * len(searches)
    states: dict[tuple[int, int], tuple[float, dict[str, Trial]]] = {(0, 0): (0.0, {})}
    for task, search in searches.items():
        nxt: dict[tuple[int, int], tuple[float, dict[str, Trial]]] = {}
        for (deep, heads), (score, picked) in states.items():
            for trial in search.trials:
                key = (max(deep, trial.k), heads + trial.m)
                if key[0] + key[1] > limit:
                    continue
                cand = (score + search.val(trial), {**picked, task: trial})
                if key not in nxt or cand[0] > nxt[key][0]:
                    nxt[key] = cand
        states = nxt
    if not states:
        cheapest = {t: min(s.trials, key=lambda x: (x.k, x.m)) for t, s in searches.items()}
        cost = merged_layers({t: (x.k, x.m) for t, x in cheapest.items()})
        raise PipelineError(
            f"no choice of heads fits the layer budget {layer_budget:.0%} ({limit:.1f} layers): the cheapest needs "
            f"{cost} of {num_layers * len(searches)}")
    return max(states.values(), key=lambda v: v[0])[1]


def head_meta(bb: Backbone, prep: Prepared, head: Head, k: int, metrics: dict, training: dict) -> HeadMeta:
    d = prep.data
    return HeadMeta(
        task=d.name, task_type=d.task_type, labels=list(d.labels), branch_layer=k, num_layers=head.num_layers,
        trunk_fingerprint=trunk_fingerprint(bb.state_dict, k, bb.tokenizer_files()),
        bert_config=bb.config.to_dict(), backbone=bb.name, max_seq_len=DEFAULT_MAX_SEQ_LEN, pair=prep.pair,
        metrics=metrics, training=training,
    )


def write_head(folder: Path, bb: Backbone, head: Head, meta: HeadMeta) -> Path:
    head = head.cpu()  # trained on the training device; artefacts and their canary are CPU float32
    trunk = Trunk.from_state_dict(bb.config, bb.state_dict, (meta.branch_layer,)).freeze()
    tok = BucketTokenizer(bb.path, max_length=DEFAULT_MAX_SEQ_LEN)
    return save_head(folder, head, meta, canary=make_canary(trunk, head.eval(), meta.branch_layer, tok))


def _mean_dev(results: list[dict], role: str, split: str) -> float:
    return float(np.mean([r[role]["dev"][split]["score"] for r in results]))


def finish_task(jobs: "TaskJobs", search: TaskSearch, trial: Trial, out: Path, teachers_out: Path | None) -> dict:
    """Score the chosen trial, train it on the remaining seeds, and write the best seed's head(s)."""
    opts, prep, task = search.opts, search.prep, search.task
    bb, log = jobs.bb, jobs.log
    d, k = prep.data, trial.k

    def full(seed: int) -> dict:
        return jobs.full(task, seed)

    seeds = [seed_result(bb, prep, opts, opts.seeds[0], trial, search.trials, log, full)]
    for seed in opts.seeds[1:]:
        if seed in search.later:  # already trained by the search
            tried, again = search.later[seed], search.on_seed(seed, trial)
        else:
            tried = jobs.trials(task, seed, [(trial.k, trial.n, trial.m)])
            again = tried[0]
        seeds.append(seed_result(bb, prep, opts, seed, again, tried, log, full))
    best = max(seeds, key=lambda r: r["student"]["val"])
    headline_split = next(iter(prep.dev))
    summary = {
        "task": task, "task_type": d.task_type, "metric": d.metric, "labels": d.labels,
        "train_rows": len(prep.train), "val_rows": len(prep.val), "dev_rows": {k_: len(v) for k_, v in prep.dev.items()},
        "truncated_train": prep.train.truncated, "cache_bytes": prep.cache_bytes, "cache_seconds": prep.cache_seconds,
        "k": k, "n": trial.n, "m": trial.m, "headline_split": headline_split,
        "seeds": [{kk: vv for kk, vv in r.items() if not kk.startswith("_")} for r in seeds],
        "task_description": prep.describe(),
        "best_seed": best["seed"],
    }
    for role in ("teacher", "student") + (("full",) if opts.full_baseline else ()):
        summary[f"{role}_dev_mean"] = _mean_dev(seeds, role, headline_split)
        summary[f"{role}_dev_std"] = float(np.std([r[role]["dev"][headline_split]["score"] for r in seeds]))
    if opts.mkdm and len(seeds) > 1:
        teachers = [r["_teacher"] for r in seeds]
        mk, mk_fit = train_student(
            teachers, prep.caches["train"], prep.caches["val"], k, d.metric,
            opts.fit_config(opts.seeds[0], epochs=opts.student_epochs), num_layers=trial.m,
            temperature=opts.temperature, refit_steps=opts.refit_steps, desc=f"{task} MKDM student ({len(teachers)} teachers)",
        )
        summary["mkdm"] = {"teachers": len(teachers), "val": mk_fit.best_score,
                           "dev": dev_scores(lambda s: predict_head(mk, prep.caches[f"dev:{s}"], k), prep)}
        log(f"  [{task}] MKDM student from {len(teachers)} teachers: dev {summary['mkdm']['dev'][headline_split]['score']:.2f}")
    training = {
        "teacher_layers": trial.n, "temperature": opts.temperature, "soft_weight": opts.soft_weight,
        "hard_weight": opts.hard_weight, "hidden_weight": opts.hidden_weight, "seed": best["seed"],
        "seeds": list(opts.seeds), "max_train": opts.max_train, "train_rows": len(prep.train),
        "val_rows": len(prep.val), "max_length": opts.max_length, "search": opts.search, "search_every_seed": opts.search_every_seed,
        "candidates": best["candidates"], "fit": opts.fit_config(best["seed"]).to_dict(),
        "student_epochs": opts.student_epochs or opts.epochs,
        "data": "glue" if task in GLUE_TASKS and not search.custom else "custom",
    }
    verdict = gate(prep, opts, best["_trial"])
    shipped = "teacher" if verdict.decision == "teacher" else "student"
    majority = {"validation": prep.majority["val"], "dev": {sp: prep.majority[f"dev:{sp}"] for sp in prep.dev}}
    summary.update(quality=verdict.to_dict(), quality_gate=opts.quality_gate, shipped=shipped, majority=majority)
    s_metrics = {"dev": best[shipped]["dev"], "validation_score": best[shipped]["val"], "majority": majority,
                 "quality": verdict.to_dict(), "teacher_dev": best["teacher"]["dev"],
                 "dev_mean_over_seeds": summary[f"{shipped}_dev_mean"]}
    schedules = best["_trial"].schedules
    head = best[f"_{shipped}"]
    student_dir = write_head(out / task, bb, head, head_meta(
        bb, prep, head, k, s_metrics, {**training, "role": shipped, "student_layers": trial.m, "schedule": schedules}))
    summary["student_dir"] = str(student_dir)
    if teachers_out is not None:
        t_metrics = {"dev": best["teacher"]["dev"], "validation_score": best["teacher"]["val"], "majority": majority}
        summary["teacher_dir"] = str(write_head(teachers_out / task, bb, best["_teacher"], head_meta(
            bb, prep, best["_teacher"], k, t_metrics, {**training, "role": "teacher", "schedule": schedules})))
    summary["seconds"] = time.perf_counter() - search.started
    log(f"[{task}] k={k} n={trial.n} m={trial.m}: dev ({headline_split}) teacher "
        f"{summary['teacher_dev_mean']:.2f}, student {summary['student_dev_mean']:.2f}"
        + (f", full {summary['full_dev_mean']:.2f}" if opts.full_baseline else "")
        + f", majority class {prep.majority[f'dev:{headline_split}']['score']:.2f}"
        + f" (mean of {len(seeds)} seed(s)); {summary['seconds']:.0f}s -> {student_dir}")
    log(f"[{task}] quality gate: {verdict.message}" + (f" -> {student_dir} holds the {shipped}" if shipped != "student" else ""))
    return summary


def train_tasks(bb: Backbone, task_opts: dict[str, HeadOptions], out: Path, teachers_out: Path | None, glue_dir=None,
                custom=None, log=print, layer_budget: float | None = None,
                on_task_done: Callable[[dict], None] | None = None, jobs: int = 1) -> dict[str, dict]:
    """Search every task's candidates on its first seed, choose, then finish each task.

    Without a budget each task is chosen alone, so it is finished (and its trunk cache
    freed) before the next is searched. A budget couples the tasks: every search, with
    its cache, is kept until the joint choice is made. With ``jobs`` > 1 the training
    jobs (search candidates, later seeds, full fine-tuning baselines) are shared between
    this process and ``jobs - 1`` worker processes (``training.jobs``,
    ``training.parallel``); the results are the same.
    """
    from .jobs import TaskJobs

    if jobs < 1:
        raise PipelineError(f"jobs must be at least 1, got {jobs}")
    with TaskJobs(bb, task_opts, glue_dir, custom, log, workers=jobs - 1) as runner:
        return _train_tasks(runner, out, teachers_out, layer_budget, on_task_done)


def _train_tasks(jobs: "TaskJobs", out, teachers_out, layer_budget, on_task_done) -> dict[str, dict]:
    results: dict[str, dict] = {}
    num_layers = jobs.bb.config.num_hidden_layers

    def finish(task: str, search: TaskSearch, trial: Trial) -> None:
        results[task] = finish_task(jobs, search, trial, out, teachers_out)
        results[task]["layer_budget"] = layer_budget
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


def check_run_options(tasks: Sequence[str], max_train, options: dict) -> None:
    """Refuse, before any training, what would otherwise train nothing, the wrong rows or crash later.

    Why here and not in the CLI: the library is what the CLI, the report and
    the tests call, so a bad value gets the same clear error from all of them.
    """
    if not tasks:
        raise PipelineError("no tasks given (e.g. --tasks sst2,mrpc)")
    caps = max_train if isinstance(max_train, dict) else {t: max_train for t in tasks}
    stray = sorted(set(caps) - set(tasks))
    if stray:
        raise PipelineError(f"--max-train names task(s) {', '.join(stray)} that are not in --tasks ({', '.join(tasks)})")
    for task, n in caps.items():
        if n is not None and (not isinstance(n, int) or n < 1):
            raise PipelineError(f"--max-train for {task} must be a positive number of rows, got {n!r}")
    if "seeds" in options and not tuple(options["seeds"]):
        raise PipelineError("no seeds given (e.g. --seeds 0,1,2)")
    for key in ("batch_size", "max_length", "student_layers"):
        if key in options and options[key] is not None and int(options[key]) < 1:
            raise PipelineError(f"{key} must be at least 1, got {options[key]}")
    for task in tasks:
        try:
            check_task_name(task)
        except ValueError as exc:
            raise PipelineError(f"--tasks: {exc}") from None
    if "quality_gate" in options and options["quality_gate"] not in ON_FAIL:
        raise PipelineError(f"--quality-gate must be one of {', '.join(ON_FAIL)}, got {options['quality_gate']!r}")
    if "min_ratio" in options and not 0 <= float(options["min_ratio"]) <= 1:
        raise PipelineError(f"--min-student-ratio must be in 0..1, got {options['min_ratio']}")
    for key in ("min_steps", "refit_steps"):
        if key in options and int(options[key]) < 0:
            raise PipelineError(f"{key} must be 0 or more, got {options[key]}")


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


def train_heads(
    tasks: Sequence[str] | str,
    glue_dir: str | Path | None = None,
    out: str | Path = "artifacts/heads",
    max_train: int | dict | None = None,
    epochs: float = 3.0,
    teachers_out: str | Path | None = None,
    backbone: str | Path | None = None,
    custom: dict | None = None,
    log: Callable[[str], None] = print,
    summary_path: str | Path | None = None,
    layer_budget: float | None = None,
    jobs: int = 1,
    **options,
) -> dict[str, dict]:
    """Train teacher + distilled student per task; student head folders go to ``out/<task>/``.

    ``max_train`` may be one cap for all tasks or ``{task: cap}``; any ``HeadOptions``
    field can be passed as a keyword (``seeds``, ``search``, ``branch_layer``,
    ``student_layers``, ``search_student_layers``, ``temperature``, ``full_baseline``, ...).
    ``layer_budget`` (e.g. 0.35) chooses every task's ``(k, m)`` jointly so that the
    merged model costs at most that fraction of one full model per task. ``jobs`` > 1
    shares the training between this process and ``jobs - 1`` workers (``train_tasks``). Teachers
    go to ``teachers_out`` (default ``out/../teachers/<out's name>``). Returns per-task summaries.
    """
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2 if not torch.cuda.is_available() else 8)))
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    out = Path(out)
    teachers_out = Path(teachers_out) if teachers_out else default_teachers_out(out)
    glue_dir = Path(glue_dir) if glue_dir else default_glue_dir()
    custom = {k: (v if isinstance(v, CustomTask) else CustomTask(**v) if isinstance(v, dict) else CustomTask(v)) for k, v in (custom or {}).items()}
    check_run_options(tasks, max_train, options)
    bb = load_backbone(backbone)
    unknown = set(options) - set(HeadOptions.__dataclass_fields__)
    if unknown:
        raise PipelineError(f"unknown options: {sorted(unknown)}")
    if "seeds" in options:
        options["seeds"] = tuple(options["seeds"])
    for key in ("depths", "search_student_layers"):
        if key in options:
            options[key] = tuple(options[key])
    task_opts = {
        task: HeadOptions(max_train=max_train.get(task) if isinstance(max_train, dict) else max_train, epochs=epochs, **options)
        for task in tasks
    }
    check_data_and_candidates(bb, task_opts, glue_dir, custom)
    results = train_tasks(bb, task_opts, out, teachers_out, glue_dir, custom, log, layer_budget, jobs=jobs)
    if summary_path:
        Path(summary_path).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return results


def bf16_note() -> str:
    return "bfloat16 autocast" if bf16_supported() else "float32"
