"""The serving-cost benchmark: merged (trunk + heads) against one full model per task.

    python -m trunkserve.loadtest.compare                 # N=5, the sweep N=1..64, curves, cache (~45 min on 2 cores)
    python -m trunkserve.loadtest.compare --quick         # N=5 only, shorter stages (~3 min)

For each deployment and N, on the same machine in one run: build the
repository, start ``tritonserver``, drive ``multitask`` (every input answered
for all N tasks) with closed-loop Locust users stepped through ``--users``, and
read per step the throughput, exact p50/p95/p99, failures and the server's CPU
seconds per input (Triton and all its backend processes). The best step is
the highest inputs/s with p99 under ``--p99-bound-ms`` and no failure. Also:
resident memory of the server tree, model bytes on disk, and the merged
graphs in-process with ONNX Runtime (no server), and their matrix-product FLOPs
per input (``flops``). For ``--curves`` N values, the same server then gets
open-loop arrivals around its best step (``online``): p50/p99 against offered
load and the capacity under ``--latency-bound-ms``. Last, the response cache on
a Zipf stream (``cache_study``). Writes JSON, markdown and plots.

Triton / in-process from one server step and one in-process run is a single
draw on a machine whose speed drifts by 5 to 10% from minute to minute, so the
main N is also measured in ``--ratio-repeats`` alternating pairs (the server
held at its best user count, then in-process at its best batch); the report
quotes their median and range.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from trunkserve.export.cli import add_serving_options, serving_options
from trunkserve.export.configs import ServingOptions
from trunkserve.backbone import load_backbone
from trunkserve.defaults import DEFAULT_DEPTHS

from .corpus import load_corpus
from .deployments import DEPLOYMENTS, MERGED, SINGLE, build, model_bytes
from .errors import LoadTestError
from .records import window_stats
from .resources import CpuSampler, tree_memory
from .run import LoadSpec, run_locust
from .shapes import stage_windows, parse_stages

DEFAULT_STEPS = (1, 2, 4, 8, 16, 32)
DEFAULT_SWEEP = (1, 2, 4, 8, 16, 32, 64)
#: Single-task N above this is not built: N full models' memory (2.3 GB at N=5 here) would not fit 24 GiB at 64.
SINGLE_MAX_N = 16
DEFAULT_CURVES = (1, 5, 16, 64)


@dataclass
class BenchConfig:
    n_main: int = 5
    sweep: Sequence[int] = DEFAULT_SWEEP
    users: Sequence[int] = DEFAULT_STEPS
    step_s: float = 8.0
    settle_s: float = 2.0
    p99_bound_ms: float = 500.0
    batch_size: int = 1
    protocol: str = "http"
    corpus: str = ""
    inprocess_s: float = 4.0
    inprocess_batches: Sequence[int] = (1, 4, 8, 16, 32, 64)  # up to the server's max_batch_size: the ceiling is the best of these
    ratio_repeats: int = 3
    ratio_hold_s: float = 12.0
    single_max_n: int = SINGLE_MAX_N
    curves: Sequence[int] = DEFAULT_CURVES  # N values that also get open-loop latency curves
    curve_s: float = 5.0
    latency_bound_ms: float = 100.0  # the online bound of the capacity
    cache_study: bool = True
    compare_old: bool = True  # the main N also built with the 20 ms windows this build replaced

    @property
    def stages(self) -> str:
        return ",".join(f"step:{self.step_s:g}:{u}" for u in self.users)


@dataclass
class Step:
    users: int
    inputs_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    failures: int
    cpu_s_per_input: float
    cpu_util: float  # server CPU seconds per wall second (2.0 = both cores)


@dataclass
class Measurement:
    deployment: str
    n: int
    steps: list[Step]
    best: Step | None
    failures: int
    memory_idle: dict
    memory_peak: dict
    model_mb: float
    startup_s: float
    locust_cpu_s: float
    wall_s: float
    errors: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # open-loop curve (``online.curve``) where measured


def _best_of(run: dict) -> float:
    return run["best"]["inputs_per_s"] if run.get("best") else 0.0


def best_step(steps: Sequence[Step], bound_ms: float) -> Step | None:
    ok = [s for s in steps if s.failures == 0 and s.p99_ms <= bound_ms and s.requests > 0]
    return max(ok, key=lambda s: s.inputs_per_s) if ok else None


def measure(repo: Path, kind: str, n: int, cfg: BenchConfig, out: Path, after=None) -> Measurement:
    """``after(server, best_step)``: more measurements on the same running server (its result goes in ``extra``)."""
    from trunkserve.server import TritonProcess

    run_dir = out / f"{kind}-{n}"
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = LoadSpec(users=max(cfg.users), stages=cfg.stages, protocol=cfg.protocol, ensemble="multitask",
                    batch_size=cfg.batch_size, corpus=cfg.corpus)
    t0 = time.time()
    server = TritonProcess(repo, run_dir / "tritonserver.log")
    with server:
        startup = time.time() - t0
        idle = tree_memory(server.proc.pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with CpuSampler(server.proc.pid) as sampler:
            run = run_locust(spec, server.http_url, server.grpc_url, run_dir)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = sampler.peak or tree_memory(server.proc.pid)
        steps = _steps(run.records, sampler, cfg, kind, n)
        extra = after(server, best_step(steps, cfg.p99_bound_ms)) if after else {}
    records = run.records
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
    (run_dir / "steps.json").write_text(json.dumps([asdict(s) for s in steps], indent=2))
    return Measurement(
        kind, n, steps, best_step(steps, cfg.p99_bound_ms), sum(not r.ok for r in records),
        asdict(idle), asdict(peak), round(model_bytes(repo) / 1e6, 1), round(startup, 1),
        round((usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime), 1),
        round(time.time() - t0, 1), errors, extra,
    )


def _steps(records, sampler, cfg: BenchConfig, kind: str, n: int) -> list[Step]:
    if not records:
        raise LoadTestError(f"{kind}-{n}: no requests recorded")
    start = min(r.start for r in records)
    steps = []
    for s0, s1, st in stage_windows(parse_stages(cfg.stages)):
        a, b = start + s0 + cfg.settle_s, start + s1
        w = window_stats(records, a, b)
        cpu = sampler.cpu_between(a, b)
        steps.append(Step(st.users, w.inputs_per_s, w.p50_ms, w.p95_ms, w.p99_ms, w.requests, w.failures,
                          round(cpu / w.inputs, 5) if w.inputs else 0.0, round(cpu / (b - a), 2)))
    return steps


def inprocess(repo: Path, cfg: BenchConfig, batches: Sequence[int], pipeline=None) -> list[dict]:
    """The merged graphs in this process at each batch size; ``pipeline``: one already loaded from ``repo``."""
    from .inprocess import MergedPipeline, measure as measure_inprocess

    pipeline = pipeline or MergedPipeline(repo)
    corpus = load_corpus(cfg.corpus or None)
    return [asdict(measure_inprocess(pipeline, corpus, b, cfg.inprocess_s)) for b in batches]


def ratio_pairs(repo: Path, cfg: BenchConfig, users: int, batch: int, out: Path, log=print) -> list[dict]:
    """``cfg.ratio_repeats`` alternating pairs: merged server at ``users``, then in-process at ``batch``, ``ratio_hold_s`` each."""
    from .inprocess import MergedPipeline

    hold = replace(cfg, users=(users,), step_s=cfg.ratio_hold_s, inprocess_s=cfg.ratio_hold_s)
    pipeline = MergedPipeline(repo)  # loaded once; idle (no CPU) while the server is measured
    pairs = []
    for i in range(cfg.ratio_repeats):
        step = measure(repo, MERGED, cfg.n_main, hold, out / f"ratio-{i}").steps[0]
        local = inprocess(repo, hold, (batch,), pipeline)[0]["inputs_per_s"]
        pairs.append({"users": users, "server_inputs_per_s": step.inputs_per_s, "server_p99_ms": step.p99_ms,
                      "server_failures": step.failures, "batch_size": batch, "inprocess_inputs_per_s": local,
                      "ratio": round(step.inputs_per_s / local, 3) if local else 0.0})
        log(f"[ratio {i + 1}/{cfg.ratio_repeats}] server {step.inputs_per_s} (p99 {step.p99_ms} ms) / "
            f"in-process {local} = {pairs[-1]['ratio']}")
    return pairs


def load_snapshot() -> dict:
    """What else ran on the machine (another engineer's training shares these cores)."""
    import psutil

    busy = []
    me = {os.getpid(), *[c.pid for c in psutil.Process().children(recursive=True)]}
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if p.pid not in me:
                c = p.cpu_percent(interval=None)
                busy.append(p)
        except psutil.Error:
            pass
    time.sleep(1.0)
    hot = []
    for p in busy:
        try:
            c = p.cpu_percent(interval=None)
            if c > 20:
                hot.append({"pid": p.pid, "cpu_percent": c, "cmd": " ".join(p.info["cmdline"] or [p.info["name"]])[:120]})
        except psutil.Error:
            pass
    return {"loadavg": os.getloadavg(), "cpus": os.cpu_count(), "other_busy_processes": hot}


def backbone_facts() -> dict:
    """Which BERT the deployments were built from, for the report's labels (the packaged one unless given)."""
    b = load_backbone()
    return {"name": b.name, "layers": b.config.num_hidden_layers, "hidden_size": b.config.hidden_size}


def _inputs(cfg: BenchConfig, count: int = 400) -> list[tuple[str, str]]:
    """The open-loop curves' inputs: a fixed sample of the corpus (one input per request)."""
    from .corpus import Sampler

    return [tuple(x) for x in zip(*Sampler(load_corpus(cfg.corpus or None), 0).batch(count))]


def _curve_after(cfg: BenchConfig, inputs, label: str, log):
    """Open-loop curve on the server the closed-loop steps just measured, rates around its best step."""
    from .online import curve, planned_rates

    def after(server, best: Step | None) -> dict:
        rates = planned_rates(best.inputs_per_s / cfg.batch_size if best else None)
        return {"curve": curve(server.http_url, inputs, rates, cfg.curve_s, cfg.latency_bound_ms, log, label)}

    return after


def _merged_extras(result: dict, repo: Path, n: int, m: Measurement, cfg: BenchConfig, options: ServingOptions,
                   work: Path, inputs, log) -> None:
    """In-process throughput of the same graphs, FLOPs per input, and (main N) the alternating ratio pairs."""
    from .flops import mean_flops
    from .inprocess import repository_tokenizer

    batches = cfg.inprocess_batches if n == cfg.n_main else (8, 32)
    result["inprocess"][str(n)] = inprocess(repo, cfg, batches)
    log(f"[in-process N={n}] {[r['inputs_per_s'] for r in result['inprocess'][str(n)]]} inputs/s")
    tok = repository_tokenizer(repo)  # the lengths only: no graph sessions
    lengths = [tok.encode([t], [p]).as_dict()["input_ids"].shape[1] for t, p in inputs]
    result["flops"][str(n)] = round(mean_flops(repo, lengths))
    log(f"[flops N={n}] {result['flops'][str(n)] / 1e6:.1f} MFLOP per input")
    if n == cfg.n_main:
        from .latency import in_process

        result["inprocess_c1"] = asdict(in_process(repo, inputs[:150], options.ort_intra_op_threads))
        log(f"[in-process N={n}] one input at a time: p50 {result['inprocess_c1']['p50_ms']} ms")
    if n == cfg.n_main and cfg.ratio_repeats and m.best:
        top = max(result["inprocess"][str(n)], key=lambda r: r["inputs_per_s"])
        result["ratio_pairs"] = ratio_pairs(repo, cfg, m.best.users, top["batch_size"], work / "runs", log)


def run_benchmark(cfg: BenchConfig, options: ServingOptions, work: Path, json_path: Path, log=print) -> dict:
    """Measure every (N, deployment); raw runs go under ``work/runs``, the result to ``json_path``."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    ns = sorted({cfg.n_main, *cfg.sweep})
    result: dict = {
        "config": {**asdict(cfg), "stages": cfg.stages, "depths": list(DEFAULT_DEPTHS)},
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()},
        "command": "python -m trunkserve.loadtest.compare " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine_before": load_snapshot(),
        "backbone": backbone_facts(),
        "runs": [],
        "inprocess": {},
        "flops": {},
        "skipped": [],
    }
    inputs = _inputs(cfg)
    for n in ns:
        for kind in DEPLOYMENTS:
            if kind == SINGLE and n > cfg.single_max_n:
                result["skipped"].append({"deployment": kind, "n": n, "why": f"N > --single-max-n {cfg.single_max_n}"})
                continue
            t = time.time()
            repo = build(kind, n, work, options, quantise=cfg.quantise)
            log(f"[{kind} N={n}] built in {time.time() - t:.0f}s; measuring")
            after = _curve_after(cfg, inputs, f"{kind} N={n}", log) if n in cfg.curves else None
            m = measure(repo, kind, n, cfg, work / "runs", after)
            b = m.best
            log(f"[{kind} N={n}] best {b.inputs_per_s if b else 0} inputs/s (users {b.users if b else '-'}, "
                f"p99 {b.p99_ms if b else '-'} ms), failures {m.failures}, rss {m.memory_peak['rss_mb']} MB")
            result["runs"].append(asdict(m))
            if kind == MERGED:
                _merged_extras(result, repo, n, m, cfg, options, work, inputs, log)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
    if cfg.compare_old:
        from .latency import OLD_DEFAULTS

        repo = build(MERGED, cfg.n_main, work / "old-defaults", replace(options, **OLD_DEFAULTS), quantise=cfg.quantise)
        result["old_defaults"] = asdict(measure(repo, MERGED, cfg.n_main, cfg, work / "runs-old"))
        log(f"[old 20 ms windows N={cfg.n_main}] best {_best_of(result['old_defaults'])} inputs/s")
    if cfg.cache_study:
        from .cache_study import run_cache_study

        result["cache"] = run_cache_study(work / "cache", options, n=cfg.n_main, log=log)
    result["machine_after"] = load_snapshot()
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trunkserve.loadtest.compare", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N=5 only, 5 s steps")
    p.add_argument("--n", type=int, default=5, help="tasks in the main comparison")
    p.add_argument("--sweep", default=",".join(map(str, DEFAULT_SWEEP)), help="N values of the sweep ('' for none)")
    p.add_argument("--single-max-n", type=int, default=SINGLE_MAX_N, help="largest N built as one full model per task")
    p.add_argument("--curves", default=",".join(map(str, DEFAULT_CURVES)),
                   help="N values that also get open-loop latency curves ('' for none)")
    p.add_argument("--curve-s", type=float, default=5.0, help="seconds per open-loop rate")
    p.add_argument("--latency-bound-ms", type=float, default=100.0, help="p99 bound of the open-loop capacity")
    p.add_argument("--no-cache-study", action="store_true", help="skip the response cache on a Zipf stream")
    p.add_argument("--no-compare-old", action="store_true", help="skip the main N built with the old 20 ms windows")
    p.add_argument("--quantise", default="", metavar="SCHEME", help=(
        "build every repository int8 with this scheme (export quantise --scheme; merged: trunk, heads and head "
        "groups; single-task: its full models); default float32"))
    p.add_argument("--users", default=",".join(map(str, DEFAULT_STEPS)), help="closed-loop user steps")
    p.add_argument("--step-s", type=float, default=8.0)
    p.add_argument("--p99-bound-ms", type=float, default=500.0)
    p.add_argument("--request-batch-size", type=int, default=1)
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--corpus", default="")
    p.add_argument("--work", type=Path, default=Path("/tmp/trunkserve-cost"), help="where repositories are built")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--no-report", action="store_true", help="JSON only")
    p.add_argument("--ratio-repeats", type=int, default=None,
                   help="alternating server / in-process pairs at N (default 3; 0 with --quick)")
    add_serving_options(p)
    args = p.parse_args(argv)
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    cfg = BenchConfig(
        n_main=args.n, sweep=[] if args.quick else ints(args.sweep), users=ints(args.users),
        step_s=5.0 if args.quick and args.step_s == 8.0 else args.step_s, p99_bound_ms=args.p99_bound_ms,
        batch_size=args.request_batch_size, protocol=args.protocol, corpus=args.corpus,
        ratio_repeats=(0 if args.quick else 3) if args.ratio_repeats is None else args.ratio_repeats,
        single_max_n=args.single_max_n, curves=[] if args.quick else ints(args.curves), curve_s=args.curve_s,
        latency_bound_ms=args.latency_bound_ms, cache_study=not (args.quick or args.no_cache_study),
        compare_old=not (args.quick or args.no_compare_old), quantise=args.quantise,
    )
    try:
        result = run_benchmark(cfg, serving_options(args), args.work, args.out / "serving-cost.json")
    except (LoadTestError, OSError, ValueError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if not args.no_report:
        from .report import write_report

        path = write_report(result, args.out)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
