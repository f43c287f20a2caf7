"""``python -m export``: thin CLI over the library functions, same keywords.

    python -m export build --heads artifacts/heads --out model_repository [--backend onnxruntime]
    python -m export untrained-head --task sst2 --labels negative,positive --out artifacts/heads/sst2
    python -m export show --repo model_repository

Other modules add their sub-commands through ``COMMANDS`` (a list of
``register(subparsers)`` callables), so this file does not grow with them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_DEPTHS, DEFAULT_MAX_SEQ_LEN

from .configs import BACKENDS, PYTHON_ORT, ServingOptions
from .errors import ExportError

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


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


BACKBONE_HELP = "BERT folder in Hugging Face layout (default: $TRUNKSERVE_BACKBONE, else the packaged MiniLM-L6)"
MAX_SEQ_LEN_HELP = "longest token sequence the tokenizer emits; longer texts are truncated"
BUCKETS_HELP = "padding lengths the tokenizer pads to, comma-separated (requests of one bucket batch together)"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def head_folders(paths: list[Path]) -> list[Path]:
    """Each path is a head folder (has head.json) or a folder of head folders."""
    found: list[Path] = []
    for p in paths:
        if (p / "head.json").exists():
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if (d / "head.json").exists())
    return found


def add_serving_options(p: argparse.ArgumentParser) -> None:
    d = ServingOptions()
    p.add_argument("--backend", choices=BACKENDS, default=PYTHON_ORT,
                   help="how Triton runs the graphs: ONNX Runtime in the Python backend (CPU wheel server), "
                        "Triton's ONNX Runtime backend, or TensorRT plans (built later by build-plans)")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="largest batch a model takes")
    p.add_argument("--max-queue-delay-us", type=int, default=d.max_queue_delay_us,
                   help="how long the dynamic batcher waits to fill a batch, in microseconds")
    p.add_argument("--preferred-batch-sizes", type=_ints, default=list(d.preferred_batch_sizes),
                   help="batch sizes the dynamic batcher releases at once, comma-separated")
    p.add_argument("--tokenizer-instances", type=int, default=d.tokenizer_instances, help="tokenizer model instances")
    p.add_argument("--trunk-instances", type=int, default=d.trunk_instances, help="trunk model instances")
    p.add_argument("--head-instances", type=int, default=d.head_instances, help="instances of each head model")
    p.add_argument("--ort-intra-op-threads", type=int, default=d.ort_intra_op_threads,
                   help="ONNX Runtime threads within an operator, per instance (0: all cores)")
    p.add_argument("--ort-inter-op-threads", type=int, default=d.ort_inter_op_threads,
                   help="ONNX Runtime threads across operators, per instance")
    p.add_argument("--gpu", action="store_true", help="instances on the GPU (KIND_GPU)")


def serving_options(args) -> ServingOptions:
    return ServingOptions(
        backend=args.backend,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=args.preferred_batch_sizes,
        tokenizer_instances=args.tokenizer_instances,
        trunk_instances=args.trunk_instances,
        head_instances=args.head_instances,
        ort_intra_op_threads=args.ort_intra_op_threads,
        ort_inter_op_threads=args.ort_inter_op_threads,
        gpu=args.gpu,
    )


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
    b.add_argument("--depths", type=_ints, default=None,
                   help=f"trunk branch depths, e.g. 3 or 2,4, within 0..the backbone's layer count (default: "
                        f"{','.join(map(str, DEFAULT_DEPTHS))} where the backbone is deeper, plus each head's depth)")
    b.add_argument("--max-seq-len", type=int, default=DEFAULT_MAX_SEQ_LEN, help=MAX_SEQ_LEN_HELP)
    b.add_argument("--buckets", type=_ints, default=list(DEFAULT_BUCKETS), help=BUCKETS_HELP)
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


COMMANDS.append(_register_core)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description="trunkserve export and deployment tools")
    sub = p.add_subparsers(dest="command", required=True)
    _load_plugins()
    for register in COMMANDS:
        register(sub)
    for command in sub.choices.values():  # here, so no command's module can forget it
        command.formatter_class = HelpFormatter
    return p


def _load_plugins() -> None:
    """Import modules that append to ``COMMANDS`` (they may not exist yet in a partial install)."""
    import importlib

    for name in ("export.hotswap_cli", "export.baseline_cli", "export.tensorrt"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
