"""Options and argument types shared by ``python -m trunkserve.export``'s sub-commands (and ``loadtest``'s CLIs).

Why a module of its own: each sub-command module (``hotswap_cli``,
``baseline_cli``, ``tensorrt_cli``) and ``export.cli``, which registers
them, need these; kept here, the sub-commands never import the CLI that
imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .configs import BACKENDS, PYTHON_ORT, ServingOptions

BACKBONE_HELP = "BERT folder in Hugging Face layout (default: $TRUNKSERVE_BACKBONE, else the packaged MiniLM-L6)"
MAX_SEQ_LEN_HELP = "longest token sequence the tokenizer emits; longer texts are truncated"
BUCKETS_HELP = "padding lengths the tokenizer pads to, comma-separated (requests of one bucket batch together)"


def ints(text: str) -> list[int]:
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
                   help="how long the trunk's dynamic batcher waits to fill a batch, in microseconds")
    p.add_argument("--preferred-batch-sizes", type=ints, default=list(d.preferred_batch_sizes),
                   help="batch sizes the trunk's batcher releases at once, comma-separated (used with a window)")
    p.add_argument("--tokenizer-queue-delay-us", type=int, default=d.tokenizer_queue_delay_us,
                   help="the tokenizer's batching window, in microseconds")
    p.add_argument("--head-queue-delay-us", type=int, default=d.head_queue_delay_us,
                   help="each head's batching window, in microseconds")
    p.add_argument("--response-cache", action="store_true",
                   help="Triton's response cache on the tokenizer, trunk and heads (start the server with "
                        "--cache-config local,size=BYTES)")
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
        tokenizer_queue_delay_us=args.tokenizer_queue_delay_us,
        head_queue_delay_us=args.head_queue_delay_us,
        response_cache=args.response_cache,
        tokenizer_instances=args.tokenizer_instances,
        trunk_instances=args.trunk_instances,
        head_instances=args.head_instances,
        ort_intra_op_threads=args.ort_intra_op_threads,
        ort_inter_op_threads=args.ort_inter_op_threads,
        gpu=args.gpu,
    )
