"""What shapes a training run: task specs, per-task options, and the checks made before any training.

Light on purpose (no torch): the CLI and the report build and check options from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from trunkserve.artifacts import check_task_name
from trunkserve.defaults import DEFAULT_DEPTHS, DEFAULT_MAX_SEQ_LEN, DEFAULT_MIN_STEPS, DEFAULT_REFIT_STEPS

from .cache import DEFAULT_CACHE_BYTES
from .loop import FitConfig
from .quality import DEFAULT_MIN_RATIO, ON_FAIL


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
    refit: str = "small"  # refit the student's output layer: "small" (where min_steps raised the schedule), "always", "never"
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
    if "refit" in options and options["refit"] not in ("small", "always", "never"):
        raise PipelineError(f"--refit must be small, always or never, got {options['refit']!r}")
    for key in ("min_steps", "refit_steps"):
        if key in options and int(options[key]) < 0:
            raise PipelineError(f"{key} must be 0 or more, got {options[key]}")
