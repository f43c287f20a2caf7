"""``python -m trunkserve.export``: thin CLI over the library functions, same keywords.

    python -m trunkserve.export build --heads artifacts/heads --out model_repository [--backend onnxruntime]
    python -m trunkserve.export untrained-head --task sst2 --labels negative,positive --out artifacts/heads/sst2
    python -m trunkserve.export show --repo model_repository
    python -m trunkserve.export quantise --repo model_repository --out model_repository_int8

Each sub-command module (``hotswap_cli``, ``baseline_cli``, ``tensorrt_cli``, ``quantise_cli``)
has a ``register(subparsers)``; ``COMMANDS`` lists them here, explicitly, so
the CLI imports its sub-commands and never the other way round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_DEPTHS, DEFAULT_MAX_SEQ_LEN

from . import baseline_cli, hotswap_cli, quantise_cli, tensorrt_cli
from .cli_options import (  # noqa: F401  (add_serving_options, serving_options, head_folders: loadtest uses them from here)
    BACKBONE_HELP,
    BUCKETS_HELP,
    MAX_SEQ_LEN_HELP,
    add_serving_options,
    head_folders,
    ints,
    serving_options,
)
from .errors import ExportError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, written as it would be typed (``32,64``, not ``[32, 64]``).

    Why not argparse's own formatter alone: it prints ``None`` and Python reprs
    (``[PosixPath('artifacts/heads')]``); a help text that already says its
    default in words (``default: $TRUNKSERVE_ADMIN_KEY``) is left as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        return f"{text} (default: {shown_default(action.default)})"


def shown_default(value) -> str:
    """A default as the command line spells it (``%`` escaped: argparse %-formats help texts)."""
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, (list, tuple)):
        text = (" " if any(isinstance(v, Path) for v in value) else ",").join(map(str, value))
    else:
        text = "none" if value is None else str(value)
    return text.replace("%", "%%")


def _build(args) -> int:
    from .repository import build_repository

    heads = head_folders(args.heads)
    if not heads:
        raise ExportError(f"no head folders (with head.json) under {', '.join(map(str, args.heads))}")
    result = build_repository(
        heads=heads,
        out=args.out,
        backbone=args.backbone,
        depths=args.depths,
        options=serving_options(args),
        max_seq_len=args.max_seq_len,
        buckets=args.buckets,
        force=args.force,
    )
    for line in result.quality:
        print(line)
    for report in result.reports:
        print(report)
    print(f"wrote {result.repo} ({len(result.heads)} heads: {', '.join(e.task for e in result.heads)})")
    return 0


def _untrained(args) -> int:
    from trunkserve.backbone import load_backbone
    from trunkserve.synthetic import make_untrained_head

    path = make_untrained_head(
        load_backbone(args.backbone),
        args.out,
        task=args.task,
        labels=args.labels.split(","),
        task_type=args.task_type,
        branch_layer=args.branch_layer,
        num_layers=args.num_layers,
        seed=args.seed,
    )
    print(f"wrote untrained head {path}")
    return 0


def _show(args) -> int:
    from .repository import dumps, read_build_info

    print(dumps(read_build_info(args.repo)))
    return 0


def _register_core(sub) -> None:
    b = sub.add_parser("build", help="export trunk + heads and write the model repository")
    b.add_argument("--heads", type=Path, nargs="+", default=[Path("artifacts/heads")], help="head folders, or folders of them")
    b.add_argument("--out", type=Path, default=Path("model_repository"),
                   help="repository folder to write (replaced only once every graph has been validated)")
    b.add_argument("--backbone", type=Path, default=None, help=BACKBONE_HELP)
    b.add_argument("--depths", type=ints, default=None,
                   help=f"trunk branch depths, e.g. 3 or 2,4, within 0..the backbone's layer count (default: "
                        f"{','.join(map(str, DEFAULT_DEPTHS))} where the backbone is deeper, plus each head's depth)")
    b.add_argument("--max-seq-len", type=int, default=DEFAULT_MAX_SEQ_LEN, help=MAX_SEQ_LEN_HELP)
    b.add_argument("--buckets", type=ints, default=list(DEFAULT_BUCKETS), help=BUCKETS_HELP)
    b.add_argument("--force", action="store_true",
                   help="build even with heads whose training failed its quality gate (refused otherwise)")
    add_serving_options(b)
    b.set_defaults(func=_build)

    u = sub.add_parser("untrained-head", help="write an untrained head artefact (plumbing tests, synthetic tasks)")
    u.add_argument("--task", required=True, help="task name (lower-case letters, digits and _; becomes Triton model names)")
    u.add_argument("--labels", default="negative,positive", help="class labels, comma-separated (regression: ignored)")
    u.add_argument("--task-type", choices=("classification", "regression"), default="classification",
                   help="what the head predicts")
    u.add_argument("--branch-layer", type=int, default=DEFAULT_DEPTHS[0], help="trunk depth the head reads")
    u.add_argument("--num-layers", type=int, default=1, help="BERT layers in the head, copied from the backbone above the depth")
    u.add_argument("--seed", type=int, default=0, help="seed of the fresh classifier")
    u.add_argument("--backbone", type=Path, default=None, help=BACKBONE_HELP)
    u.add_argument("--out", type=Path, required=True, help="head folder to write")
    u.set_defaults(func=_untrained)

    s = sub.add_parser("show", help="print the trunk and heads of a repository folder")
    s.add_argument("--repo", type=Path, default=Path("model_repository"), help="repository folder")
    s.set_defaults(func=_show)


#: Every sub-command's ``register(subparsers)``, in the order ``--help`` lists them.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_core,
    hotswap_cli.register,
    baseline_cli.register,
    tensorrt_cli.register,
    quantise_cli.register,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trunkserve.export", description="trunkserve export and deployment tools")
    sub = p.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    for command in sub.choices.values():  # here, so no command's module can forget it
        command.formatter_class = HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
