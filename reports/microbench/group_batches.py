"""A head group's graph alone, at batch 1, 8 and 32: where its time per input goes as the group grows.

    python reports/microbench/group_batches.py --repo /tmp/cost20/merged-64 [--length 48]

Same session settings as the served group (one intra-op thread, no spinning: ``make_session``).
At batch 1 every execution reads every member's float32 weights (about 7.7 MB per one-layer
MiniLM head), so a large group is bound by memory bandwidth there; at large batches that read
is shared and the time per input approaches the arithmetic (``trunkserve.loadtest.flops``).
"""
import argparse
import time
from pathlib import Path

import numpy as np

from trunkserve.deployment.files import read_model_config
from trunkserve.deployment.layout import group_model_folders
from trunkserve.serving.onnx_runtime import make_session

p = argparse.ArgumentParser()
p.add_argument("--repo", type=Path, required=True)
p.add_argument("--length", type=int, default=48)
p.add_argument("--runs", type=int, default=10)
a = p.parse_args()
for folder in group_model_folders(a.repo):
    version = max((d for d in folder.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    hidden = int(read_model_config(folder)["input"][0]["dims"][-1])
    s = make_session(version / "model.onnx", 1, 1)
    members = len(read_model_config(folder)["parameters"]["tasks"]["string_value"].split(","))
    for b in (1, 8, 32):
        feed = {"hidden_states": np.random.randn(b, a.length, hidden).astype(np.float32),
                "attention_mask": np.ones((b, a.length), np.int64)}
        for _ in range(3):
            s.run(None, feed)
        t = time.perf_counter()
        for _ in range(a.runs):
            s.run(None, feed)
        ms = (time.perf_counter() - t) / a.runs * 1000
        print(f"{folder.name} ({members} heads), batch {b}, length {a.length}: {ms:.2f} ms per execution, {ms / b:.3f} ms per input")
