"""``python -m trunkserve.export baseline``: write the single-task-serving repository (one full model per task).

    python -m trunkserve.export baseline --heads artifacts/heads --out baseline_repository
    python -m trunkserve.export baseline --tasks sst2,mrpc,stsb:regression --out baseline_repository
"""

from __future__ import annotations

from pathlib import Path

from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_MAX_SEQ_LEN

from .cli_options import BACKBONE_HELP, BUCKETS_HELP, MAX_SEQ_LEN_HELP, add_serving_options, head_folders, ints, serving_options
from .errors import ExportError


def parse_tasks(text: str):
    """``name[:regression]`` comma-separated -> TaskSpec list (classification is binary)."""
    from .baseline import TaskSpec

    specs = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, kind = item.partition(":")
        specs.append(TaskSpec(name, "regression" if kind == "regression" else "classification"))
    return specs


def _baseline(args) -> int:
    from .baseline import build_baseline_repository

    tasks: list = parse_tasks(args.tasks) if args.tasks else head_folders(args.heads)
    if not tasks:
        raise ExportError("no tasks: give --tasks or --heads with head folders")
    result = build_baseline_repository(
        tasks, out=args.out, backbone=args.backbone, options=serving_options(args),
        max_seq_len=args.max_seq_len, buckets=args.buckets,
    )
    print(f"wrote {result.repo} ({len(result.tasks)} full models, {result.model_bytes / 1e6:.1f} MB of ONNX)")
    return 0


def register(sub) -> None:
    b = sub.add_parser("baseline", help="write the single-task repository: one full model per task (cost baseline)")
    b.add_argument("--heads", type=Path, nargs="+", default=[Path("artifacts/heads")], help="head folders (tasks, types, labels)")
    b.add_argument("--tasks", default=None,
                   help="instead of --heads: e.g. sst2,mrpc,stsb:regression (default: none, the tasks of --heads)")
    b.add_argument("--out", type=Path, default=Path("baseline_repository"), help="repository folder to write")
    b.add_argument("--backbone", type=Path, default=None, help=BACKBONE_HELP)
    b.add_argument("--max-seq-len", type=int, default=DEFAULT_MAX_SEQ_LEN, help=MAX_SEQ_LEN_HELP)
    b.add_argument("--buckets", type=ints, default=list(DEFAULT_BUCKETS), help=BUCKETS_HELP)
    add_serving_options(b)
    b.set_defaults(func=_baseline)
