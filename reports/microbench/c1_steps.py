"""One request at a time to ``multitask``: the client's latency beside Triton's own time per step.

    PATH=.venv/bin:$PATH python reports/microbench/c1_steps.py --repo /tmp/cost20/merged-64 [--requests 120]

Starts the repository's server, sends GLUE dev inputs one by one, and prints per model the mean
request time Triton's statistics give (queue, input, graph, output), so a slow step shows itself.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import tritonclient.http as h

from trunkserve.client.transport import text_inputs
from trunkserve.loadtest.corpus import Sampler, load_corpus
from trunkserve.server import TritonProcess

p = argparse.ArgumentParser()
p.add_argument("--repo", type=Path, required=True)
p.add_argument("--requests", type=int, default=120)
a = p.parse_args()
inputs = list(zip(*Sampler(load_corpus(), 0).batch(a.requests)))
KEYS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def stats(c):
    return {m["name"]: (int(m["inference_stats"]["success"]["count"]), {k: int(m["inference_stats"][k]["ns"]) for k in KEYS})
            for m in c.get_inference_statistics()["model_stats"]}


with TritonProcess(a.repo, a.repo.parent / f"{a.repo.name}-c1.log", ["--model-control-mode=explicit", "--load-model=*"]) as s:
    c = h.InferenceServerClient(s.http_url)
    for t, q in inputs[:10]:
        c.infer("multitask", text_inputs(h, [t], [q]))
    before, ms = stats(c), []
    for t, q in inputs:
        start = time.perf_counter()
        c.infer("multitask", text_inputs(h, [t], [q]))
        ms.append((time.perf_counter() - start) * 1000)
    after = stats(c)
    print(f"client: p50 {np.median(ms):.2f} ms, mean {np.mean(ms):.2f} ms over {len(ms)} requests")
    for name in sorted(after):
        n = after[name][0] - before[name][0]
        if n:
            d = {k: (after[name][1][k] - before[name][1][k]) / n / 1e6 for k in KEYS}
            print(f"  {name}: {d['success']:.2f} ms (queue {d['queue']:.2f}, input {d['compute_input']:.2f}, "
                  f"graph {d['compute_infer']:.2f}, output {d['compute_output']:.2f})")
