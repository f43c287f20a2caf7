"""A staged load shape: ``ramp``, ``hold`` and ``step`` stages from one option string.

``--stages "ramp:10:8,hold:30:8,step:20:16"``: each stage is
``kind:seconds:users``. ``ramp`` moves linearly from the previous user count to
``users`` over the stage; ``hold`` and ``step`` jump to ``users`` at the start
of the stage and keep it. With no stages the shape falls back to Locust's own
``-u/-r/-t`` (hence ``use_common_options``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import LoadTestError

KINDS = ("ramp", "hold", "step")
JUMP_RATE = 1000.0  # users/s: "at once"


@dataclass(frozen=True)
class Stage:
    kind: str
    seconds: float
    users: int


def parse_stages(text: str | None) -> list[Stage]:
    stages = []
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in KINDS:
            raise LoadTestError(f"stage {item!r}: expected kind:seconds:users with kind in {KINDS}")
        try:
            seconds, users = float(parts[1]), int(parts[2])
        except ValueError as exc:
            raise LoadTestError(f"stage {item!r}: seconds and users must be numbers") from exc
        if seconds <= 0 or users < 0:
            raise LoadTestError(f"stage {item!r}: seconds must be > 0 and users >= 0")
        stages.append(Stage(parts[0], seconds, users))
    return stages


def stage_windows(stages: Sequence[Stage]) -> list[tuple[float, float, Stage]]:
    """(start, end, stage) in seconds from the start of the test."""
    t, out = 0.0, []
    for s in stages:
        out.append((t, t + s.seconds, s))
        t += s.seconds
    return out


def shape_at(stages: Sequence[Stage], t: float) -> tuple[int, float] | None:
    """(users, spawn rate) at ``t`` seconds; None once every stage is over."""
    previous = 0
    for start, end, s in stage_windows(stages):
        if t < end:
            if s.kind == "ramp":
                rate = max(abs(s.users - previous) / s.seconds, 0.1)
                return s.users, rate
            return s.users, JUMP_RATE
        previous = s.users
    return None
