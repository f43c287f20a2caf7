"""Latency at low load and capacity under a latency bound: the served ``multitask`` against the same graphs in-process.

    python -m trunkserve.loadtest.latency                       # N=5, this build's defaults vs the old 20 ms windows
    python -m trunkserve.loadtest.latency --n 5 --rates 20,40,60,80,100,120 --p99-bound-ms 100

Closed loop, one request at a time (concurrency 1): p50/p99 of ``multitask`` with one input, against the same
graphs run in this process one input at a time (tokenizer included, the server's thread settings). Open loop:
requests arrive at a constant rate whatever the answers do (latency counted from the planned arrival), and the
capacity is the highest rate whose p99 stays under the bound with no failure.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from trunkserve.client.transport import text_inputs
from trunkserve.deployment.params import ServingOptions
from trunkserve.export.cli_options import add_serving_options, serving_options
from trunkserve.server import TritonProcess

from .corpus import Sampler, load_corpus
from .deployments import MERGED, build
from .inprocess import MergedPipeline

#: The batching this build replaced: a 20 ms window with preferred sizes 32/64 at every step.
OLD_DEFAULTS = dict(max_queue_delay_us=20000, preferred_batch_sizes=(32, 64), tokenizer_queue_delay_us=20000,
                    head_queue_delay_us=20000)


@dataclass
class Latency:
    requests: int
    p50_ms: float
    p99_ms: float
    failures: int = 0
    rate: float | None = None  # offered requests/s (open loop)
    achieved: float | None = None  # answered requests/s


def _summary(ms: Sequence[float], failures: int = 0, rate=None, wall=None) -> Latency:
    a = np.asarray(ms, dtype=float)
    return Latency(len(a), round(float(np.percentile(a, 50)), 2), round(float(np.percentile(a, 99)), 2), failures,
                   rate, None if wall is None else round(len(a) / wall, 1))


def _client(url: str):
    import tritonclient.http as httpclient

    return httpclient, httpclient.InferenceServerClient(url, network_timeout=120)


def closed_loop(url: str, inputs: Sequence[tuple[str, str]], warmup: int = 20) -> Latency:
    mod, c = _client(url)
    ms = []
    for i, (text, pair) in enumerate([*inputs[:warmup], *inputs]):
        t = time.perf_counter()
        c.infer("multitask", text_inputs(mod, [text], [pair]))
        if i >= warmup:
            ms.append((time.perf_counter() - t) * 1000)
    c.close()
    return _summary(ms)


def open_loop(url: str, inputs: Sequence[tuple[str, str]], rate: float, seconds: float, workers: int = 64) -> Latency:
    """Requests planned at ``1/rate`` intervals; each one's latency counts from its planned arrival."""
    local, ms, failures, lock = threading.local(), [], [0], threading.Lock()

    def one(planned: float, text: str, pair: str) -> None:
        if not hasattr(local, "c"):
            local.mod, local.c = _client(url)
        try:
            local.c.infer("multitask", text_inputs(local.mod, [text], [pair]))
            with lock:
                ms.append((time.perf_counter() - planned) * 1000)
        except Exception:  # noqa: BLE001 - counted, the run goes on
            with lock:
                failures[0] += 1

    n, t0 = int(rate * seconds), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for i in range(n):
            planned = t0 + i / rate
            time.sleep(max(0.0, planned - time.perf_counter()))
            pool.submit(one, planned, *inputs[i % len(inputs)])
    return _summary(ms or [float("inf")], failures[0], rate, time.perf_counter() - t0)


def in_process(repo: Path, inputs: Sequence[tuple[str, str]], threads: int, warmup: int = 20) -> Latency:
    """The same graphs one input at a time in this process, tokenizer included."""
    pipe = MergedPipeline(repo, intra_op_threads=threads)
    ms = []
    for i, pair in enumerate([*inputs[:warmup], *inputs]):
        t = time.perf_counter()
        for ids in pipe.batches([pair], 1):
            pipe.run(ids)
        if i >= warmup:
            ms.append((time.perf_counter() - t) * 1000)
    return _summary(ms)


def capacity(points: Sequence[Latency], bound_ms: float) -> float | None:
    """The highest offered rate whose p99 is under ``bound_ms`` with no failure."""
    ok = [p.rate for p in points if p.p99_ms < bound_ms and not p.failures]
    return max(ok) if ok else None


def measure_build(name: str, repo: Path, inputs, rates, seconds: float, bound_ms: float, log) -> dict:
    with TritonProcess(repo, repo.parent / f"{name}.log", ["--model-control-mode=explicit", "--load-model=*"]) as srv:
        c1 = closed_loop(srv.http_url, inputs)
        log(f"[{name}] concurrency 1: p50 {c1.p50_ms} ms, p99 {c1.p99_ms} ms")
        points = []
        for r in rates:
            points.append(open_loop(srv.http_url, inputs, r, seconds))
            p = points[-1]
            log(f"[{name}] {r:g} req/s offered: {p.achieved} answered, p50 {p.p50_ms} ms, p99 {p.p99_ms} ms, "
                f"{p.failures} failed")
    return {"concurrency_1": asdict(c1), "open_loop": [asdict(p) for p in points], "capacity": capacity(points, bound_ms)}


def run(n: int, work: Path, options: ServingOptions, rates: Sequence[float], seconds: float, bound_ms: float,
        requests: int, compare_old: bool, log=print) -> dict:
    inputs = [tuple(x) for x in zip(*Sampler(load_corpus(), 0).batch(requests))]
    builds = {"defaults": options, **({"old 20 ms windows": replace(options, **OLD_DEFAULTS)} if compare_old else {})}
    out: dict = {"n": n, "requests": requests, "bound_ms": bound_ms, "builds": {}}
    for name, opts in builds.items():
        repo = build(MERGED, n, work / name.replace(" ", "-"), opts)
        out["builds"][name] = {"options": asdict(opts), **measure_build(name, repo, inputs, rates, seconds, bound_ms, log)}
        if name == "defaults":
            out["in_process"] = asdict(in_process(repo, inputs, opts.ort_intra_op_threads))
            log(f"[in-process] one input at a time: p50 {out['in_process']['p50_ms']} ms, p99 {out['in_process']['p99_ms']} ms")
    served, local = out["builds"]["defaults"]["concurrency_1"], out["in_process"]
    out["ratios"] = {"p50": round(served["p50_ms"] / local["p50_ms"], 2), "p99": round(served["p99_ms"] / local["p99_ms"], 2)}
    log(f"served / in-process at concurrency 1: p50 {out['ratios']['p50']}x, p99 {out['ratios']['p99']}x")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trunkserve.loadtest.latency", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=5, help="tasks (heads) in the merged deployment")
    p.add_argument("--rates", default="10,20,40,60,80,100", help="open-loop request rates, requests/s")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per open-loop rate")
    p.add_argument("--requests", type=int, default=200, help="closed-loop requests (and distinct inputs)")
    p.add_argument("--p99-bound-ms", type=float, default=100.0, help="the latency bound of the capacity")
    p.add_argument("--no-compare-old", action="store_true", help="skip the build with the old 20 ms windows")
    p.add_argument("--work", type=Path, default=Path("/tmp/trunkserve-latency"), help="where repositories are built")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    add_serving_options(p)
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    res = run(a.n, a.work, serving_options(a), [float(r) for r in a.rates.split(",") if r], a.seconds, a.p99_bound_ms,
              a.requests, not a.no_compare_old)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
