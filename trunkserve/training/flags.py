"""Command-line flags declared on the dataclass fields they set; the CLI is generated from them.

Why: an option's flag, help, type and default used to be written four times (the options
dataclass, the CLI, the library's keyword defaults and a hand mapping between them), and
drifted. Now a field carries its ``Flag`` (``flag(...)``), ``add_flags`` builds the argparse
arguments from it, and ``keywords`` turns parsed arguments back into the library's keywords,
passing only what the command line set: every default lives on the field alone.
Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable

_FIELD = object()  # "the CLI shows the field's own default"


@dataclass(frozen=True)
class Flag:
    """How a field appears on the command line.

    ``shown``: the default the CLI parses to and shows (``_FIELD``: the field's default, through
    ``from_field``; otherwise e.g. None for "None: decided by the library"). ``to_value``: the
    parsed value as the keyword the library takes (``--cache-max-gb`` in GiB -> bytes).
    """

    name: str
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    action: str | None = None  # "store_true" | "append"
    metavar: str | None = None
    required: bool = False
    shown: Any = _FIELD
    from_field: Callable[[Any], Any] | None = None
    to_value: Callable[[Any], Any] | None = None

    def default(self, f: dataclasses.Field) -> Any:
        if self.shown is not _FIELD:
            return self.shown
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        return self.from_field(value) if self.from_field else value


def flag(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **spec) -> Any:
    """A dataclass field with its command-line ``Flag`` (``name`` = the flag, ``help``, ...)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"flag": Flag(**spec)})


def flagged(cls, skip: Iterable[str] = ()) -> list[tuple[dataclasses.Field, Flag]]:
    """``cls``'s fields that have a flag, in declaration order (``skip``: field names left out)."""
    skip = set(skip)
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(cls) if "flag" in f.metadata and f.name not in skip]


def add_flags(parser: argparse.ArgumentParser, cls, skip: Iterable[str] = ()) -> None:
    """One argument per flagged field of ``cls``; ``dest`` is the field's name."""
    for f, fl in flagged(cls, skip):
        kw: dict[str, Any] = {"dest": f.name, "help": fl.help}
        if fl.action:
            kw["action"] = fl.action
        if fl.required:
            kw["required"] = True
        else:
            kw["default"] = fl.default(f)
        kw.update({k: v for k, v in (("type", fl.type), ("choices", fl.choices), ("metavar", fl.metavar)) if v is not None})
        parser.add_argument(fl.name, **kw)


def keywords(ns: argparse.Namespace, *classes) -> dict[str, Any]:
    """The library keywords the command line set: flagged fields whose parsed value differs from the
    shown default (converted by ``to_value``); the rest are left to the fields' own defaults."""
    out: dict[str, Any] = {}
    for cls in classes:
        for f, fl in flagged(cls):
            if not hasattr(ns, f.name):
                continue
            value = getattr(ns, f.name)
            if fl.required or value != fl.default(f):
                out[f.name] = fl.to_value(value) if fl.to_value else value
    return out


def ints(s: str) -> tuple[int, ...]:
    """``0,1,2`` -> ``(0, 1, 2)``."""
    return tuple(int(x) for x in s.split(",") if x.strip())


def words(s: str) -> tuple[str, ...]:
    """``augment,other-tasks`` -> ``("augment", "other-tasks")``."""
    return tuple(x.strip() for x in s.split(",") if x.strip())


def caps(s: str | None) -> int | dict[str, int] | None:
    """``N`` for every task, or ``task=N,task=N`` (checked against the tasks by ``options.check_run_options``)."""
    if s is None:
        return None
    try:
        if "=" in s:
            return {k.strip(): int(v) for k, v in (p.split("=") for p in s.split(",") if p.strip())}
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-train takes N or task=N,task=N, got {s!r}") from None
