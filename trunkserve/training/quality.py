"""Is a trained head any good? The majority-class baseline and the quality gate.

A head that learnt nothing still trains, exports and serves: it answers the same
class for every input. So every validation and dev score is shown beside what a
model ignoring its input would score (``majority``), and before a head is written
the gate compares the student with its teacher and with that baseline:

* the student **passes** when it beats the majority baseline on validation (for
  regression also with a lower RMSE than predicting the training mean) and keeps at
  least ``min_ratio`` of its teacher's validation score;
* otherwise, with ``on_fail="fallback"`` (the default), the **teacher's layers ship
  as the head** when the teacher itself passes the baseline test: a deeper, slower
  head that works, said loudly;
* otherwise the head is written **marked failed** (``passed: false``), the CLI exits
  3, and ``export add-head`` / ``swap-head`` refuse it unless ``--force``;
* ``on_fail="warn"`` ships the student whatever the verdict, recorded as it is (a
  failed head is still refused at hot-add): what the GLUE study uses, since it
  measures students, and what a run that must not stop can ask for.

The decision, the rule and every score go to ``head.json`` (``metrics["quality"]``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .metrics import compute_metrics, headline, majority_outputs

if TYPE_CHECKING:
    from .data.encode import Encoded

DEFAULT_MIN_RATIO = 0.9
ON_FAIL = ("fallback", "refuse", "warn")


class QualityError(ValueError):
    """A gate setting that cannot be applied."""


def majority_score(train: "Encoded", enc: "Encoded", metric: str, num_labels: int, regression: bool) -> dict:
    """``enc`` scored as if every answer were the training set's majority class (or mean score)."""
    m = compute_metrics(metric, majority_outputs(train.labels, len(enc), num_labels, regression), enc.labels)
    return {"score": headline(m), **m}


@dataclass
class Verdict:
    """What the gate decided for one task, as written to ``head.json``."""

    rule: str
    student_val: float
    teacher_val: float
    majority_val: float
    decision: str  # "student" | "teacher" | "failed"
    passed: bool
    message: str
    student_rmse: float | None = None
    teacher_rmse: float | None = None
    majority_rmse: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def rule_text(min_ratio: float, regression: bool) -> str:
    extra = " and an RMSE below predicting the training mean" if regression else ""
    return (f"student validation score above the majority-class baseline{extra}, and at least "
            f"{min_ratio:.0%} of the teacher's")


def _beats_chance(score: float, rmse: float | None, majority: float, majority_rmse: float | None) -> bool:
    if not score > majority:
        return False
    return rmse is None or majority_rmse is None or rmse < majority_rmse


def judge(
    student_val: dict, teacher_val: dict, majority_val: dict, regression: bool,
    min_ratio: float = DEFAULT_MIN_RATIO, on_fail: str = "fallback",
) -> Verdict:
    """The gate for one task from three validation results (``{"score": ..., <metrics>}``)."""
    if on_fail not in ON_FAIL:
        raise QualityError(f"on_fail must be one of {ON_FAIL}, got {on_fail!r}")
    if not 0 <= min_ratio <= 1:
        raise QualityError(f"the student/teacher ratio must be in 0..1, got {min_ratio}")
    s, t, b = (float(x["score"]) for x in (student_val, teacher_val, majority_val))
    rm = {name: (x.get("rmse") if regression else None) for name, x in
          (("s", student_val), ("t", teacher_val), ("b", majority_val))}
    common = dict(rule=rule_text(min_ratio, regression), student_val=s, teacher_val=t, majority_val=b,
                  student_rmse=rm["s"], teacher_rmse=rm["t"], majority_rmse=rm["b"])
    student_ok = _beats_chance(s, rm["s"], b, rm["b"])
    keeps = s >= t - (1 - min_ratio) * abs(t)
    if student_ok and keeps:
        return Verdict(decision="student", passed=True, message=f"passed: student {s:.2f}, teacher {t:.2f}, "
                       f"majority class {b:.2f}", **common)
    if not student_ok:
        why = f"student validation {s:.2f} is not above the majority-class baseline {b:.2f}"
        if regression and rm["s"] is not None:
            why += f" (RMSE {rm['s']:.3f}, predicting the training mean: {rm['b']:.3f})"
    else:
        why = f"student validation {s:.2f} is below {min_ratio:.0%} of the teacher's {t:.2f}"
    teacher_ok = _beats_chance(t, rm["t"], b, rm["b"])
    if on_fail == "warn":
        return Verdict(decision="student", passed=False, message=f"{why}; shipping the student anyway (--quality-gate "
                       f"warn), marked as failed: export add-head/swap-head refuse it unless --force", **common)
    if on_fail == "fallback" and teacher_ok:
        return Verdict(decision="teacher", passed=True, message=f"{why}: shipping the teacher's layers as the head instead "
                       f"(validation {t:.2f}; more layers per request than a student)", **common)
    tail = ("the teacher is no better than the majority class either: the data may be too small or too noisy, "
            "or the labels unrelated to the text" if not teacher_ok else "the gate is set to refuse (--quality-gate refuse)")
    return Verdict(decision="failed", passed=False, message=f"{why}; {tail}. The head is written marked as failed: "
                   f"export add-head/swap-head refuse it unless --force", **common)
