"""N heads as N separate ONNX sessions against one head-group session, single-threaded ONNX Runtime.

Why: before wiring head groups into the repository, know what one wide graph saves
in-process (no Triton step overheads counted: those come on top for separate heads).
Heads are random one-layer ``Head``s on the packaged MiniLM config (2-label, 3-label
and regression in turn); separate heads are their served graphs (``export_head``),
the group is ``export_head_group`` of the first N.

Usage: python reports/microbench/head_group.py [--ns 1,5,16,32,64] [--batches 1,8] [--seq 64]
Prints ms per input (one input = one sequence through all N heads) per batch size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from trunkserve.backbone import default_backbone_dir
from trunkserve.bert import BertConfig
from trunkserve.export.head_groups import export_head_group
from trunkserve.export.onnx_export import export_head
from trunkserve.head_group import HeadGroup
from trunkserve.modules import Head
from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN

KINDS = ((2, "classification"), (3, "classification"), (1, "regression"))


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def per_input_ms(sessions, feeds, batch: int, seconds: float) -> float:
    """Best of three timed spans of at least ``seconds`` each, after one warm-up run."""
    for s in sessions:
        s.run(None, feeds)
    best = float("inf")
    for _ in range(3):
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for s in sessions:
                s.run(None, feeds)
            runs += 1
        best = min(best, (time.perf_counter() - start) / runs)
    return best / batch * 1000


def feeds_for(batch: int, seq: int, hidden: int) -> dict[str, np.ndarray]:
    """Random hidden states; every other row half padded."""
    mask = np.ones((batch, seq), np.int64)
    mask[1::2, seq // 2 :] = 0
    states = np.random.default_rng(batch).standard_normal((batch, seq, hidden), dtype=np.float32)
    return {HEAD_HIDDEN: states, ATTENTION_MASK: mask}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ns", default="1,5,16,32,64", help="head counts, comma-separated")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--seconds", type=float, default=0.3, help="length of each timed span")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    ns = sorted({int(n) for n in a.ns.split(",")})
    batches = [int(b) for b in a.batches.split(",")]
    config = BertConfig.from_json_file(default_backbone_dir() / "config.json")
    torch.manual_seed(0)
    heads = {f"t{i}": Head(config, 1, *KINDS[i % len(KINDS)]).eval() for i in range(ns[-1])}
    print(f"ms per input, sequence {a.seq}, {a.threads} ORT thread(s); one-layer heads (2-, 3-label, regression)")
    print(f"{'N':>4} {'batch':>5} {'separate':>10} {'group':>10} {'group/sep':>10} {'sep/N':>9} {'group/N':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        root, separate = Path(tmp), []
        for n in ns:
            for task in list(heads)[len(separate):n]:
                export_head(heads[task], task, root / f"{task}.onnx")
                separate.append(session(root / f"{task}.onnx", a.threads))
            group_path = root / f"group_{n}.onnx"
            export_head_group(HeadGroup({t: heads[t] for t in list(heads)[:n]}), f"heads_n{n}", group_path)
            group = session(group_path, a.threads)
            for batch in batches:
                feeds = feeds_for(batch, a.seq, config.hidden_size)
                sep = per_input_ms(separate[:n], feeds, batch, a.seconds)
                grp = per_input_ms([group], feeds, batch, a.seconds)
                print(f"{n:>4} {batch:>5} {sep:>10.4f} {grp:>10.4f} {grp / sep:>10.3f} {sep / n:>9.4f} {grp / n:>9.4f}",
                      flush=True)
            del group
            group_path.unlink()


if __name__ == "__main__":
    main()
