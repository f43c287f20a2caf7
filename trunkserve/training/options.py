"""What shapes a training run: task specs, per-task options, run options, and the checks made before any training.

Every option is declared once, here: its field, default, flag, type and help (``training.flags``).
The CLI is generated from these fields, and ``train_heads`` / ``run_report`` take the same
names as keywords (``RunOptions.split``), so no default is restated anywhere else.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from trunkserve.artifacts import check_task_name
from trunkserve.defaults import DEFAULT_DEPTHS, DEFAULT_MAX_SEQ_LEN, DEFAULT_MIN_STEPS, DEFAULT_REFIT_STEPS, default_glue_dir

from .cache import DEFAULT_CACHE_BYTES
from .flags import caps, flag, ints, words
from .loop import FitConfig
from .quality import DEFAULT_MIN_RATIO, ON_FAIL


REFIT = ("small", "always", "never")
RECIPES = ("multi-teacher", "single-teacher")
WEIGHTINGS = ("mean", "validation")
TRANSFER_SOURCES = ("augment", "other-tasks", "file")


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


CUSTOM_HELP = (
    "a task of your own: NAME=TRAIN[,DEV][:TYPE]. Files: .csv, .tsv or .jsonl with columns text, optional text_pair, "
    "label. TYPE is classification or regression; without it a task is a regression when every label is a number "
    "and one is not an integer (3.5), else a classification. Classes are the distinct labels, in numeric order when "
    "all are integers (so 1..5 is five classes: add :regression for a score), else sorted as strings; the log prints "
    "what was read. Without DEV, 10%% of TRAIN is held out as the dev set. Repeatable"
)
BACKBONE_HELP = "Hugging Face BERT folder (None: the packaged MiniLM-L6-H384)"
GLUE_DIR_HELP = "GLUE folder (None: $GLUE_DIR, else <repo>/../shared/glue)"
OUT_HELP = "head folders go to OUT/<task>/"


def _gb(n_bytes: int) -> float:
    return n_bytes / 2**30


def _bytes(gb: float) -> int:
    return int(gb * 2**30)


def _false(_value) -> bool:
    return False


def _custom(specs: list[str]) -> dict[str, CustomTask]:
    return dict(CustomTask.parse(s) for s in specs)


def _tasks(tasks: Sequence[str] | str) -> list[str]:
    return [t.strip() for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)


@dataclass
class HeadOptions:
    """Everything that shapes how one task's heads are trained (each flagged field is a ``train-heads`` / ``report`` flag)."""

    max_train: int | None = None  # this task's cap (the run's --max-train: ``RunOptions.max_train``)
    val_fraction: float = flag(0.1, name="--val-fraction", type=float, help=(
        "share of the training rows held out as the validation split (at most --max-val rows) on which "
        "checkpoints, (k, m) and the quality gate are decided; the dev set is only scored"))
    max_val: int = flag(500, name="--max-val", type=int, help="most rows in the validation split")
    max_dev: int | None = flag(None, name="--max-dev", type=int, help="cap on dev rows scored (None: all)")
    max_length: int = flag(DEFAULT_MAX_SEQ_LEN, name="--max-length", type=int,
                           help="tokens per training example (longer text is truncated)")
    depths: tuple[int, ...] = flag(DEFAULT_DEPTHS, name="--depths", type=ints, shown=None, to_value=tuple,
                                   help=f"trunk branch depths (None: {','.join(map(str, DEFAULT_DEPTHS))})")
    branch_layer: int | None = flag(None, name="--branch-layer", type=int,  # None: searched (search) or the deepest depth
                                    help="k: frozen layers, one of --depths (None: the deepest, or searched)")
    teacher_layers: int | None = flag(None, name="--teacher-layers", type=int,
                                      help="n: teacher task layers (None: every layer above k)")
    student_layers: int = flag(1, name="--student-layers", type=int, help="m: student layers")
    search: bool = flag(False, name="--search", action="store_true",
                        help="try every depth in --depths, keep the best on validation")
    search_teacher_layers: bool = flag(False, name="--search-teacher-layers", action="store_true", help="also try every n")
    temperature: float = flag(2.0, name="--temperature", type=float, help="distillation temperature T")
    soft_weight: float = 1.0
    hard_weight: float = 1.0
    hidden_weight: float = flag(0.0, name="--hidden-weight", type=float,
                                help="> 0 adds hidden-state distillation with this weight")
    epochs: float = flag(3.0, name="--epochs", type=float,
                         help="teacher epochs (raised on small data to reach --min-steps; 0: no training)")
    student_epochs: float | None = flag(None, name="--student-epochs", type=float, help="student epochs (None: --epochs)")
    min_steps: int = flag(DEFAULT_MIN_STEPS, name="--min-steps", type=int, help=(
        "every schedule (teacher, student, full fine-tuning) runs at least this many optimiser steps: "
        "epochs are raised on small data, at most 100, and early stopping then waits for them (0: epochs alone)"))
    refit: str = flag("small", name="--refit", choices=REFIT, help=(
        "refit the student's copied pooler and output layer to its own [CLS] states before distillation: "
        "small = where --min-steps raised the schedule (the copied layer cannot be recovered in so few "
        "steps), always, never"))
    refit_steps: int = flag(DEFAULT_REFIT_STEPS, name="--refit-steps", type=int, help="minibatch steps of that refit (0: off)")
    min_ratio: float = flag(DEFAULT_MIN_RATIO, name="--min-student-ratio", type=float, help=(
        "quality gate: a student passes when its validation score beats the majority-class baseline and "
        "keeps at least this share of its teacher's"))
    quality_gate: str = flag("fallback", name="--quality-gate", choices=ON_FAIL, shown=None, help=(
        "a student that fails the gate: fallback ships the teacher's layers as the head when the teacher "
        "passes; refuse (or a teacher at chance too) writes the head marked failed and exits 3; warn ships "
        "the student marked failed and exits 0 (None: fallback for train-heads, warn for report)"))
    lr: float = flag(1e-4, name="--lr", type=float, help="learning rate of teachers and students")
    full_lr: float | None = flag(None, name="--full-lr", type=float, help="learning rate of full fine-tuning (None: --lr)")
    batch_size: int = flag(32, name="--batch-size", type=int, help="training batch size")
    seeds: tuple[int, ...] = flag((0,), name="--seeds", type=ints, to_value=tuple,
                                  help="training seeds, e.g. 0,1,2 (the best on validation ships)")
    split_seed: int = 0
    full_baseline: bool = flag(False, name="--full-baseline", action="store_true", help="also train full fine-tuning per seed")
    bf16: bool | None = flag(None, name="--no-bf16", action="store_true", shown=False, to_value=_false,
                             help="train in float32 even where bfloat16 is native")
    cache_max_bytes: int = flag(DEFAULT_CACHE_BYTES, name="--cache-max-gb", type=float, from_field=_gb, to_value=_bytes,
                                help="bound on the trunk hidden-state cache")
    progress: bool = flag(True, name="--no-progress", action="store_true", shown=False, to_value=_false, help="no progress bars")
    search_student_layers: tuple[int, ...] = flag(  # several: each m is tried (chosen on validation, or under a layer budget)
        (), name="--search-student-layers", type=ints, to_value=tuple, help="try every m in this list, e.g. 1,2")
    search_every_seed: bool = flag(False, name="--search-every-seed", action="store_true", help=(
        "train every candidate on every seed and rank by the mean validation score (default: the first seed's)"))
    mkdm: bool = False  # single-teacher recipe, several seeds: also distil one student from all seeds' teachers (reported only)
    student_recipe: str = flag("multi-teacher", name="--student-recipe", choices=RECIPES, help=(
        "multi-teacher: every student (the shipped one and the (k, m) search's) learns the averaged soft labels of "
        "--teachers teachers trained on the same trunk cache with seeds s, s+1, ... (with --seeds 0,1,2 the seeds' own "
        "teachers are reused); the best of them on validation is the gate's teacher. single-teacher: its seed's teacher alone"))
    teachers: int = flag(3, name="--teachers", type=int, help="teachers per student with --student-recipe multi-teacher")
    teacher_weighting: str = flag("mean", name="--teacher-weighting", choices=WEIGHTINGS, help=(
        "mean: equal weights; validation: weights in proportion to each teacher's validation score above the "
        "majority-class baseline (equal if none is above it)"))
    transfer: tuple[str, ...] = flag(("augment",), name="--transfer", type=words, to_value=tuple, help=(
        "transfer set: extra text on which the student learns the teachers' soft labels (no labels), comma-separated: "
        "augment (the task's training sentences with words masked, dropped or swapped), other-tasks (the other GLUE "
        "tasks' training sentences in --glue-dir), file (--transfer-text), or none. Never a sentence of the "
        "validation split, dev or test files"))
    transfer_text: str | None = flag(None, name="--transfer-text", metavar="FILE", help=(
        "a transfer source: one text per line, a tab between the two texts of a pair (implies file in --transfer)"))
    transfer_max: int = flag(2000, name="--transfer-max", type=int, help=(
        "most transfer rows (and at most as many as the training rows); they are cached like the training rows"))

    def __post_init__(self):
        # lists (from JSON or a caller) become tuples: the options are compared and used as keys
        self.depths, self.seeds = tuple(self.depths), tuple(self.seeds)
        self.search_student_layers = tuple(self.search_student_layers)
        self.transfer = (self.transfer,) if isinstance(self.transfer, str) else tuple(self.transfer)

    @property
    def transfer_sources(self) -> tuple[str, ...]:
        """The transfer sources in use (``--transfer-text`` adds ``file``); empty: no transfer set."""
        used = tuple(x for x in self.transfer if x != "none")
        return used + ("file",) if self.transfer_text and "file" not in used else used

    def fit_config(self, seed: int, epochs: float | None = None, lr: float | None = None) -> FitConfig:
        return FitConfig(
            epochs=self.epochs if epochs is None else epochs, lr=lr or self.lr, min_steps=self.min_steps, batch_size=self.batch_size, seed=seed,
            bf16=self.bf16, progress=self.progress,
        )


@dataclass
class RunOptions:
    """What a ``train_heads`` run covers and where it writes: the keywords besides ``HeadOptions``'s."""

    tasks: Sequence[str] | str = flag(name="--tasks", required=True,
                                      help="comma-separated task names (GLUE: cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte, or custom)")
    glue_dir: str | Path | None = flag(None, name="--glue-dir", help=GLUE_DIR_HELP)
    custom: dict | None = flag(None, name="--custom", action="append", metavar="NAME=TRAIN[,DEV][:TYPE]", shown=[],
                               to_value=_custom, help=CUSTOM_HELP)
    max_train: int | dict | None = flag(None, name="--max-train", type=caps,
                                        help="cap on training rows: N, or task=N,task=N (None: every row)")
    layer_budget: float | None = flag(None, name="--layer-budget", type=float, help=(
        "choose every task's (k, m) jointly so the merged model costs at most this fraction of one full "
        "model per task, e.g. 0.35 (None: each task on its own)"))
    backbone: str | Path | None = flag(None, name="--backbone", help=BACKBONE_HELP)
    jobs: int = flag(1, name="--jobs", type=int, help=(
        "processes: with 2 or more, the training jobs (one per task, seed and branch depth, and the full "
        "fine-tuning baselines) are shared with JOBS-1 workers (bit-identical results; a small gain on "
        "2 cores, more with more cores and on a GPU: reports/jobs2)"))
    out: str | Path = flag("artifacts/heads", name="--out", help=OUT_HELP)
    teachers_out: str | Path | None = flag(None, name="--teachers-out",
                                           help="teacher folders (None: OUT/../teachers/<OUT's name>/<task>)")
    summary_path: str | Path | None = flag(None, name="--summary", help="write the per-task summary JSON here")

    def __post_init__(self):
        """The one normalisation of a run's keywords (``train_heads`` and ``run_report`` both start here)."""
        self.tasks = _tasks(self.tasks)
        self.out = Path(self.out)
        self.teachers_out = Path(self.teachers_out) if self.teachers_out else None
        self.glue_dir = Path(self.glue_dir) if self.glue_dir else default_glue_dir()
        self.custom = {k: (v if isinstance(v, CustomTask) else CustomTask(**v) if isinstance(v, dict) else CustomTask(v))
                       for k, v in (self.custom or {}).items()}

    @classmethod
    def split(cls, tasks, options: dict) -> tuple["RunOptions", dict]:
        """``(run options, HeadOptions keywords)`` from one set of keywords; unknown ones are refused."""
        own = {f.name for f in fields(cls)} - {"tasks"}
        head = {k: v for k, v in options.items() if k not in own}
        unknown = set(head) - {f.name for f in fields(HeadOptions)}
        if unknown:
            raise PipelineError(f"unknown options: {sorted(unknown)}")
        return cls(tasks, **{k: v for k, v in options.items() if k in own}), head

    def cap(self, task: str) -> int | None:
        return self.max_train.get(task) if isinstance(self.max_train, dict) else self.max_train

    def task_options(self, head: dict, **per_task) -> dict[str, HeadOptions]:
        """Every task's ``HeadOptions``: ``head``'s keywords, its own cap, and ``per_task[k](task)``."""
        return {t: HeadOptions(max_train=self.cap(t), **head, **{k: fn(t) for k, fn in per_task.items()}) for t in self.tasks}


@dataclass
class StudyOptions(RunOptions):
    """``run_report``'s keywords: a run's, plus where the study goes and its seeds."""

    report_dir: str | Path = flag("reports", name="--report-dir", help="where glue.md, glue.png and glue.json go")
    small_seeds: tuple[int, ...] = flag((0, 1, 2), name="--small-seeds", type=ints, to_value=tuple,
                                        help="seeds for small tasks (cola, mrpc, stsb, rte)")
    measure_speedup: bool = flag(True, name="--no-speedup", action="store_true", shown=False, to_value=_false,
                                 help="skip the cache speed-up measurement")
    command: str = flag("", name="--command", shown=None, help=argparse.SUPPRESS)

    def __post_init__(self):
        super().__post_init__()
        self.report_dir = Path(self.report_dir)
        self.small_seeds = tuple(self.small_seeds)


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
    if "depths" in options and not tuple(options["depths"]):
        raise PipelineError("no branch depths given (e.g. --depths 2,3)")
    if "refit" in options and options["refit"] not in REFIT:
        raise PipelineError(f"--refit must be small, always or never, got {options['refit']!r}")
    for key in ("min_steps", "refit_steps", "transfer_max"):
        if key in options and int(options[key]) < 0:
            raise PipelineError(f"{key} must be 0 or more, got {options[key]}")
    check_recipe_options(options)


def check_recipe_options(options: dict) -> None:
    """The student recipe's keywords (``--student-recipe``, ``--teachers``, ``--transfer``, ...)."""
    for key, allowed in (("student_recipe", RECIPES), ("teacher_weighting", WEIGHTINGS)):
        if key in options and options[key] not in allowed:
            raise PipelineError(f"{key} must be one of {', '.join(allowed)}, got {options[key]!r}")
    if "teachers" in options and int(options["teachers"]) < 1:
        raise PipelineError(f"teachers must be at least 1, got {options['teachers']}")
    transfer = options.get("transfer", ())
    transfer = (transfer,) if isinstance(transfer, str) else tuple(transfer)
    unknown = sorted(set(transfer) - set(TRANSFER_SOURCES) - {"none"})
    if unknown:
        raise PipelineError(f"--transfer: unknown source(s) {', '.join(unknown)} (known: {', '.join(TRANSFER_SOURCES)}, none)")
    if "none" in transfer and len(transfer) > 1:
        raise PipelineError("--transfer none cannot be combined with other sources")
    if "file" in transfer and not options.get("transfer_text"):
        raise PipelineError("--transfer file needs --transfer-text FILE")
