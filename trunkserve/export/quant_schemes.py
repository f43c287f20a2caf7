"""The int8 quantisation schemes ``export.quantise`` offers, by name.

Why a module of its own: the CLI lists the schemes in ``--help`` without
importing the quantiser (and torch behind it), and the load-test study
compares them by the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import QuantisationError


@dataclass(frozen=True)
class QuantScheme:
    """Which graphs and operators are quantised, and how.

    Why several: per-tensor int8 of every graph (ONNX Runtime's default) costs points on the
    GLUE dev sets (reports/int8-accuracy.md compares them all). ``matmul_only`` leaves the embedding tables (``Gather``) in float32: quantising
    them saves disk, not time. ``per_channel`` gives each weight column its own scale, so one
    large column no longer coarsens the rest. ``trunk_only`` keeps each task's own layers
    exact while the trunk, most of the work, still runs in int8.
    """

    name: str
    per_channel: bool = False
    trunk_only: bool = False
    matmul_only: bool = False

    @property
    def op_types(self) -> tuple[str, ...] | None:
        """The operators ``quantize_dynamic`` is given; None: every type it handles."""
        return ("MatMul",) if self.matmul_only else None

    def describe(self) -> str:
        graphs = "the trunk only (heads stay float32)" if self.trunk_only else "every graph (trunk and heads)"
        ops = "MatMul only (embedding tables stay float32)" if self.matmul_only else "every operator ORT quantises (embedding tables too)"
        scales = "one scale per weight column" if self.per_channel else "one scale per weight tensor"
        return f"{graphs}; {ops}; {scales}"


SCHEMES = {s.name: s for s in (
    QuantScheme("int8"),
    QuantScheme("int8-matmul", matmul_only=True),
    QuantScheme("int8-matmul-per-channel", matmul_only=True, per_channel=True),
    QuantScheme("int8-trunk-matmul-per-channel", matmul_only=True, per_channel=True, trunk_only=True),
)}
#: The default: the scheme that kept the study's dev scores (-0.11 on average, reports/int8-accuracy.md).
DEFAULT_SCHEME = "int8-matmul-per-channel"


def scheme_named(name: str) -> QuantScheme:
    if name not in SCHEMES:
        raise QuantisationError(f"unknown quantisation scheme {name!r}; known: {', '.join(SCHEMES)}")
    return SCHEMES[name]
