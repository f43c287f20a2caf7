"""``python -m trunkserve.export build-plans``: thin CLI over ``export.tensorrt`` (run in the serving container, on the GPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .tensorrt import build_plans


def _run(args) -> int:
    build_plans(args.repo, args.max_seq_len, fp16=not args.fp32, dry_run=args.dry_run)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-plans", help="build TensorRT plans for a --backend tensorrt repository (on the GPU)")
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="repository built with --backend tensorrt")
    p.add_argument("--max-seq-len", type=int, default=128, help="longest sequence the plans' optimisation profile takes")
    p.add_argument("--fp32", action="store_true", help="no --fp16")
    p.add_argument("--dry-run", action="store_true", help="print the trtexec commands only")
    p.set_defaults(func=_run)
