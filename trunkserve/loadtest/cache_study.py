"""What Triton's response cache buys on a stream where utterances repeat (Zipf-distributed), and that it changes no answer.

Why Zipf: an assistant hears a few utterances very often and most rarely; the share a cache can
serve depends on that skew. The stream draws from ``distinct`` corpus inputs with probability
proportional to ``1 / rank**s``. The same stream goes to a plain build and to a build with
``--response-cache`` (tokenizer, trunk and heads cached; the server started with
``--cache-config local,size=...``); hits and misses come from Triton's own metrics.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence
from urllib.request import urlopen

import numpy as np

from trunkserve.client.transport import text_inputs
from trunkserve.deployment.params import ServingOptions
from trunkserve.server import TritonProcess

from .corpus import Pair, load_corpus
from .deployments import MERGED, build
from .latency import _client, closed_loop
from .online import saturate



def zipf_stream(corpus: Sequence[Pair], distinct: int, length: int, s: float = 1.1, seed: int = 0) -> list[Pair]:
    """``length`` draws from ``distinct`` different inputs of ``corpus``, rank r drawn with weight ``r**-s``."""
    rng = np.random.default_rng(seed)
    unique = list(dict.fromkeys(corpus))
    pool = [unique[i] for i in rng.permutation(len(unique))[:distinct]]
    weights = 1.0 / np.arange(1, len(pool) + 1) ** s
    picks = rng.choice(len(pool), size=length, p=weights / weights.sum())
    return [pool[i] for i in picks]


def cache_counts(metrics_port: int) -> dict[str, dict[str, float]]:
    """Per model, Triton's ``nv_cache_num_hits_per_model`` and ``..._misses_...`` (summed over versions)."""
    text = urlopen(f"http://localhost:{metrics_port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[str, float]] = {}
    for kind in ("hits", "misses"):
        for model, value in re.findall(rf'^nv_cache_num_{kind}_per_model{{model="([^"]+)",version="\d+"}} (\S+)', text, re.M):
            out.setdefault(model, {"hits": 0.0, "misses": 0.0})[kind] += float(value)
    return out


def answers(url: str, inputs: Sequence[Pair]) -> dict[str, np.ndarray]:
    """Every ``multitask`` output for each input, one request each."""
    mod, c = _client(url)
    got: dict[str, list[np.ndarray]] = {}
    for text, pair in inputs:
        r = c.infer("multitask", text_inputs(mod, [text], [pair]))
        for o in r.get_response()["outputs"]:
            got.setdefault(o["name"], []).append(r.as_numpy(o["name"]))
    c.close()
    return {k: np.concatenate(v) for k, v in got.items()}


def _serve(repo: Path, args: Sequence[str], stream: list[Pair], check: list[Pair], concurrency: int, seconds: float) -> dict:
    with TritonProcess(repo, repo.parent / f"{repo.name}.log", ["--model-control-mode=explicit", "--load-model=*", *args]) as srv:
        c1 = closed_loop(srv.http_url, stream[:300], warmup=0)  # the stream's start, cache cold
        sat = saturate(srv.http_url, stream, concurrency, seconds)
        first = answers(srv.http_url, check)  # the stream's most common inputs: cache hits where cached
        again = answers(srv.http_url, check)
        counts = cache_counts(srv.metrics_port) if args else {}
    return {"concurrency_1": c1.__dict__, "saturated": sat, "cache": counts, "first": first, "again": again}


def run_cache_study(work: Path, options: ServingOptions, n: int = 5, distinct: int = 2000, length: int = 20000,
                    s: float = 1.1, concurrency: int = 16, seconds: float = 15.0, cache_mb: int = 256, log=print) -> dict:
    """The plain and the cached build on one Zipf stream: latency, throughput, hit ratio, and answers compared."""
    stream = zipf_stream(load_corpus(), distinct, length, s)
    check = list(dict.fromkeys(stream))[:64]
    runs = {}
    for name, opts, args in (("plain", options, []),
                             ("cached", replace(options, response_cache=True), [f"--cache-config=local,size={cache_mb << 20}"])):
        repo = build(MERGED, n, work / f"cache-{name}", opts)
        runs[name] = _serve(repo, args, stream, check, concurrency, seconds)
        log(f"[cache {name}] concurrency 1 p50 {runs[name]['concurrency_1']['p50_ms']} ms; "
            f"{concurrency} threads: {runs[name]['saturated']['requests_per_s']} req/s, p99 {runs[name]['saturated']['p99_ms']} ms")
    plain, cached = runs["plain"], runs["cached"]
    identical = all(np.array_equal(plain["first"][k], cached[w][k]) for k in plain["first"] for w in ("first", "again"))
    hits = {m: round(c["hits"] / (c["hits"] + c["misses"]), 3) for m, c in cached["cache"].items() if c["hits"] + c["misses"]}
    log(f"[cache] hit ratio {hits}; answers identical to the plain build: {identical}")
    for r in runs.values():
        del r["first"], r["again"]
    return {"n": n, "distinct": distinct, "stream": length, "zipf_s": s, "unique_in_stream": len(set(stream)),
            "cache_mb": cache_mb, "runs": runs, "hit_ratio": hits, "identical": identical}
