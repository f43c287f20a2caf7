"""What each simulated user sends: which ensemble, how many inputs per request.

``--ensemble multitask`` (default) or a task name sends every request there;
``--mix sst2:3,mrpc:1`` picks a per-task ensemble per request with those weights.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import LoadTestError


def parse_mix(text: str | None) -> dict[str, float]:
    """``"sst2:3,mrpc:1"`` -> ``{"sst2": 3.0, "mrpc": 1.0}`` (weight defaults to 1)."""
    mix: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        if "=" in item:  # a common slip; the name would otherwise be taken as 'sst2=3' and 404 on every request
            raise LoadTestError(f"mix items are name:weight (e.g. sst2:3,mrpc:1), got {item!r}")
        name, _, w = item.partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError as exc:
            raise LoadTestError(f"bad weight in mix item {item!r}") from exc
        if weight <= 0:
            raise LoadTestError(f"mix weight for {name!r} must be > 0")
        mix[name.strip()] = weight
    return mix


@dataclass
class Traffic:
    ensemble: str = "multitask"
    mix: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1

    def __post_init__(self):
        if self.batch_size < 1:
            raise LoadTestError("request batch size must be >= 1")

    @property
    def models(self) -> list[str]:
        return list(self.mix) if self.mix else [self.ensemble]

    def pick(self, rng: random.Random) -> str:
        if not self.mix:
            return self.ensemble
        names = list(self.mix)
        return rng.choices(names, weights=[self.mix[n] for n in names])[0]

    @classmethod
    def from_options(cls, opts) -> "Traffic":
        return cls(
            ensemble=getattr(opts, "ensemble", None) or "multitask",
            mix=parse_mix(getattr(opts, "mix", None)),
            batch_size=int(getattr(opts, "request_batch_size", 1) or 1),
        )
