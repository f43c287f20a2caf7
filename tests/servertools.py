"""Helpers for tests that talk to the real server with tritonclient."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import torch
import tritonclient.http as httpclient

from trunkserve.client.transport import text_inputs as _text_inputs

from trunkserve.artifacts import load_head


def text_inputs(texts, pairs=None):
    return _text_inputs(httpclient, texts, pairs)


def infer(client, model, texts, outputs, pairs=None):
    return client.infer(model, text_inputs(texts, pairs), outputs=[httpclient.InferRequestedOutput(o) for o in outputs])


def torch_reference(trunk, tokenizer, head_dir, texts, pairs=None):
    """Serving outputs of trunk + head in one PyTorch process."""
    head, meta = load_head(head_dir)
    enc = tokenizer.encode(texts, pairs)
    t = {k: torch.from_numpy(v) for k, v in enc.as_dict().items()}
    with torch.no_grad():
        hidden = trunk(t["input_ids"], t["attention_mask"], t["token_type_ids"])[trunk.depths.index(meta.branch_layer)]
        outs = head.serving_outputs(hidden, t["attention_mask"])
    names = ["score"] if meta.task_type == "regression" else ["logits", "probabilities"]
    return {n: o.numpy() for n, o in zip(names, outs)}


def execution_counts(client, models):
    stats = client.get_inference_statistics()["model_stats"]
    return {s["name"]: int(s["execution_count"]) for s in stats if s["name"] in models}


def load_count(log_text: str, model: str) -> int:
    return len(re.findall(rf"successfully loaded '{re.escape(model)}'", log_text))


class Load:
    """Client threads asking ``traffic`` (model -> outputs) until stopped; every exception or changed answer counts.

    ``atol=None`` holds answers bit for bit to the first ones (one server); a tolerance allows replicas' last bits.
    """

    def __init__(self, url: str, traffic: dict, texts, pairs, threads: int = 3, atol: float | None = None):
        self.url, self.traffic, self.texts, self.pairs, self.atol, self.threads = url, traffic, texts, pairs, atol, threads
        c = httpclient.InferenceServerClient(url)
        self.baseline = {m: self._ask(c, m) for m in traffic}
        c.close()
        self.ok, self.failures, self.failed_at = 0, [], []  # failed_at: time.monotonic() when each failure came
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _ask(self, c, model):
        r = infer(c, model, self.texts, self.traffic[model], self.pairs)
        return {o: r.as_numpy(o) for o in self.traffic[model]}

    def _same(self, got, want) -> bool:
        if self.atol is None:
            return all(np.array_equal(got[o], want[o]) for o in got)
        return all(np.allclose(got[o], want[o], atol=self.atol) for o in got)

    def _run(self, n: int) -> None:
        c, models = httpclient.InferenceServerClient(self.url, network_timeout=60), list(self.traffic)
        while not self.stop.is_set():
            model = models[n % len(models)]
            n += 1
            try:
                same = self._same(self._ask(c, model), self.baseline[model])
                with self.lock:
                    if same:
                        self.ok += 1
                    else:
                        self.failures.append(f"{model}: outputs changed")
                        self.failed_at.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                with self.lock:
                    self.failures.append(f"{model}: {exc}")
                    self.failed_at.append(time.monotonic())
        c.close()

    def __enter__(self):
        for w in self.workers:
            w.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        time.sleep(0.5)
        self.stop.set()
        for w in self.workers:
            w.join(timeout=60)
