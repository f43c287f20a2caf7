"""The training's quality gate, as deployment sees it: one line to show, one refusal to make.

Why deployment looks at it: training records in ``head.json`` whether the head
beat the majority-class baseline and which model it shipped (``metrics["quality"]``,
``HeadMeta.failed_gate``). A head that failed would answer, but no better than
always predicting the most frequent class; serving it silently is how a broken
task reaches users. So ``build``, ``add-head`` and ``swap-head`` say the recorded
scores every time and refuse a failed head unless told ``force`` (``--force``).
"""

from __future__ import annotations

from trunkserve.artifacts import HeadMeta

from .errors import RepositoryError

FORCE_HINT = "--force (force=True) ships it anyway"
_SHIPPED = {"student": "shipped the student", "teacher": "shipped the teacher"}


class FailedQualityGate(RepositoryError):
    """The head's training recorded a failed quality gate; nothing was deployed."""


def _score(value) -> str | None:
    return f"{value:.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _gate(quality: dict) -> str:
    passed, decision = quality.get("passed"), quality.get("decision")
    if passed is False:  # training may still have written the student (--quality-gate warn): say which
        message = quality.get("message")
        shipped = f", {_SHIPPED[decision]}" if decision in _SHIPPED else ""
        return f"quality gate: FAILED{shipped}" + (f" ({message})" if message else "")
    shipped = _SHIPPED.get(decision, f"decision {decision!r}")
    return f"quality gate: {'passed' if passed else 'not decided'}, {shipped}"


def describe(meta: HeadMeta) -> str:
    """``head cola: validation 81.2 (majority class 69.1, teacher 82.0; quality gate: passed, shipped the student)``.

    Heads written before the gate existed (or untrained ones) say what is missing
    instead, so the line never suggests a check that did not happen.
    """
    score = _score(meta.metrics.get("validation_score"))
    text = f"head {meta.task}: " + (f"validation {score}" if score else "no validation score recorded")
    q = meta.quality
    if q is None:
        return text + " (no quality gate recorded)"
    scores = [f"{name} {_score(q.get(key))}" for name, key in (("majority class", "majority_val"), ("teacher", "teacher_val"))
              if _score(q.get(key))]
    return text + f" ({', '.join(scores)}{'; ' if scores else ''}{_gate(q)})"


def check_gate(meta: HeadMeta, force: bool = False) -> str | None:
    """Refuse a head whose gate failed (``FailedQualityGate``), unless ``force``; returns a note when forced."""
    if not meta.failed_gate:
        return None
    q = meta.quality or {}
    scores = ", ".join(f"{name} {_score(q.get(key))}" for name, key in
                       (("student", "student_val"), ("teacher", "teacher_val"), ("majority class", "majority_val"))
                       if _score(q.get(key)))
    why = f"head {meta.task!r} failed its training's quality gate" + (f" ({q['rule']})" if q.get("rule") else "")
    detail = f": validation scores {scores}" if scores else ""
    message = f"; {q['message']}" if q.get("message") else ""
    if not force:
        raise FailedQualityGate(f"{why}{detail}{message}; {FORCE_HINT}")
    return f"{why}{detail}; shipped anyway (force)"
