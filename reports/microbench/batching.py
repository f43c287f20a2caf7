"""Single-threaded ONNX Runtime timings behind two notes in reports/serving-cost.md.

1. A one-layer head's cost per run against its batch (the fixed cost of a run).
2. Requests of mixed length buckets: one run per bucket (what the shim does) against
   one run padded to the longest, for the trunk and for a head.

Usage: python reports/microbench/batching.py --repo /tmp/trunkserve-cost8/merged-5
(a merged repository built by ``python -m trunkserve.loadtest.compare``). Prints ms per input.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from trunkserve.loadtest.corpus import Sampler, load_corpus
from trunkserve.loadtest.inprocess import MergedPipeline
from trunkserve.serving.batching import run_batched
from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN, TOKEN_INPUTS


def per_input_ms(fn, batches, rows: int) -> float:
    t = time.perf_counter()
    for b in batches:
        fn(b)
    return round((time.perf_counter() - t) / rows * 1000, 4)


def pad_to_longest(feeds):
    """One batch of every request, right-padded with zeros to the longest sequence."""
    longest = max(f[ATTENTION_MASK].shape[1] for f in feeds)
    merged = {}
    for name in feeds[0]:
        first = feeds[0][name]
        out = np.zeros((len(feeds), longest, *first.shape[2:]), dtype=first.dtype)
        for i, f in enumerate(feeds):
            out[i, : f[name].shape[1]] = f[name][0]
        merged[name] = out
    return merged


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True)
    p.add_argument("--requests", type=int, default=18, help="requests per execution")
    p.add_argument("--executions", type=int, default=30)
    a = p.parse_args()
    pipe = MergedPipeline(a.repo, intra_op_threads=1)
    entry, head = pipe.heads[0]
    rng = np.random.default_rng(0)

    print(f"1. {entry.task} head, ms per run / per input, by batch (bucket 64, random hidden states)")
    for b in (1, 2, 5, 10, 19, 32, 64):
        feeds = {HEAD_HIDDEN: rng.standard_normal((b, 64, 384), dtype=np.float32), ATTENTION_MASK: np.ones((b, 64), np.int64)}
        n = max(20, 1000 // b)
        ms = per_input_ms(head, [feeds] * n, n * b)
        print(f"   batch {b:3d}: {ms * b:.3f} ms per run, {ms:.4f} ms per input")

    sampler = Sampler(load_corpus(), 0)
    executions = []
    for _ in range(a.executions):
        texts, pairs = sampler.batch(a.requests)
        executions.append([pipe.tokenizer.encode([t], [q]).as_dict() for t, q in zip(texts, pairs)])
    rows = a.executions * a.requests
    trunk_feeds = [[{n: r[n] for n in TOKEN_INPUTS} for r in e] for e in executions]
    hidden = [[pipe.head_feeds(entry, pipe.trunk(f), f) for f in e] for e in trunk_feeds]
    print(f"2. {a.executions} executions of {a.requests} GLUE dev inputs, ms per input (alternating, 3 times)")
    for _ in range(3):
        print("   trunk grouped", per_input_ms(lambda e: run_batched(e, pipe.trunk), trunk_feeds, rows),
              "padded", per_input_ms(lambda e: pipe.trunk(pad_to_longest(e)), trunk_feeds, rows),
              "| head grouped", per_input_ms(lambda e: run_batched(e, head), hidden, rows),
              "padded", per_input_ms(lambda e: head(pad_to_longest(e)), hidden, rows))


if __name__ == "__main__":
    main()
