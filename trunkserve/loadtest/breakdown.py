"""Where the server's CPU goes: per model process, per input, beside the same graph run in-process.

    python -m trunkserve.loadtest.breakdown --repo /tmp/trunkserve-cost5/merged-5 --users 64 --seconds 20

The serving-cost report gives one CPU-per-input figure for the whole server.
Tuning needs it split: Triton itself (HTTP, ensemble scheduling), the
tokenizer, the trunk and each head (each a Python-backend stub process). Each
figure is set beside what the same work costs in one process with the same
ONNX Runtime thread settings (``MergedPipeline`` with the repository's
``intra_op_threads``). The difference is what serving that model through the
Python backend adds per input. Triton's own statistics give the requests per
execution, which is what those per-request costs are spread over.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import psutil

from .errors import LoadTestError
from .resources import process_tree

SERVER = "triton"


def model_of(cmdline: Sequence[str]) -> str | None:
    """The model a Python-backend stub process serves (``<repo>/<model>/<version>/model.py`` in its arguments)."""
    for arg in cmdline:
        if arg.endswith("/model.py"):
            return Path(arg).parent.parent.name
    return None


def cpu_by_model(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server process (``triton``) and of its stubs, summed per model."""
    out: dict[str, float] = {}
    procs = process_tree(server_pid)
    if not procs:
        raise LoadTestError(f"no server process {server_pid}")
    for proc in procs:
        try:
            name = SERVER if proc.pid == server_pid else model_of(proc.cmdline()) or "other"
            t = proc.cpu_times()
            out[name] = out.get(name, 0.0) + t.user + t.system
        except psutil.Error:  # a stub that exited between the listing and the read
            pass
    return out


def requests_per_execution(http_url: str) -> dict[str, float]:
    """Triton's statistics since load: inferences / executions for each model that ran."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url.split("://")[-1])
    try:
        stats = client.get_inference_statistics()["model_stats"]
    finally:
        client.close()
    return {
        m["name"]: round(int(m["inference_count"]) / int(m["execution_count"]), 1)
        for m in stats
        if int(m.get("execution_count", 0) or 0)
    }


@dataclass
class ServerBreakdown:
    users: int
    seconds: float
    inputs: int
    inputs_per_s: float
    failures: int
    cpu_ms_per_input: dict[str, float]
    total_ms_per_input: float
    requests_per_execution: dict[str, float] = field(default_factory=dict)


def measure_server(server, users: int, seconds: float, warm_s: float, out_dir: str | Path,
                   ensemble: str = "multitask", protocol: str = "http") -> ServerBreakdown:
    """Drive a running ``TritonProcess`` with closed-loop Locust users; split CPU by model over a window.

    The window starts ``warm_s`` after Locust does (spawn, first batches) and
    lasts ``seconds``; inputs are counted by completion inside it.
    """
    from .run import LoadSpec, run_locust

    marks: dict[str, tuple[float, dict[str, float]]] = {}

    def snapshots():
        time.sleep(warm_s)
        marks["a"] = (time.time(), cpu_by_model(server.proc.pid))
        time.sleep(seconds)
        marks["b"] = (time.time(), cpu_by_model(server.proc.pid))

    spec = LoadSpec(users=users, duration_s=warm_s + seconds + 2.0, ensemble=ensemble, protocol=protocol)
    thread = threading.Thread(target=snapshots, daemon=True)
    thread.start()
    run = run_locust(spec, server.http_url, server.grpc_url, out_dir)
    thread.join()
    if "b" not in marks:
        raise LoadTestError("the load run ended before the measurement window closed")
    (ta, a), (tb, b) = marks["a"], marks["b"]
    done = [r for r in run.records if ta <= r.start + r.ms / 1000.0 <= tb]
    inputs = sum(r.inputs for r in done if r.ok)
    if not inputs:
        raise LoadTestError(f"no input completed in the window; locust said:\n{run.log[-2000:]}")
    per = {k: round((b[k] - a.get(k, 0.0)) / inputs * 1000.0, 3) for k in b}
    return ServerBreakdown(
        users, round(tb - ta, 2), inputs, round(inputs / (tb - ta), 1), sum(not r.ok for r in done),
        dict(sorted(per.items(), key=lambda kv: -kv[1])), round(sum(per.values()), 3),
        requests_per_execution(server.http_url),
    )


def inprocess_parts(repo: str | Path, inputs: int = 1024, batch_size: int = 16, seed: int = 0,
                    corpus: str | None = None) -> dict[str, float]:
    """CPU ms per input of each stage run in this process with the repository's thread settings.

    Keys are the server's model names (``tokenizer``, ``trunk``, ``head_<task>``)
    so the two sides line up row by row.
    """
    from trunkserve.export.repository import TOKENIZER, TRUNK, head_model_name

    from .corpus import Sampler, load_corpus
    from .inprocess import GroupBranch, MergedPipeline

    pipeline = MergedPipeline(repo, intra_op_threads=None)
    texts, pairs = Sampler(load_corpus(corpus), seed).batch(inputs)
    t = time.process_time()
    batches = list(pipeline.batches(list(zip(texts, pairs)), batch_size))
    parts = {TOKENIZER: time.process_time() - t}
    pipeline.run(batches[0])  # warm-up: first runs allocate
    t = time.process_time()
    hidden = [pipeline.trunk(ids) for ids in batches]
    parts[TRUNK] = time.process_time() - t
    for entry, run in pipeline.heads:
        t = time.process_time()
        for ids, h in zip(batches, hidden):
            run(pipeline.head_feeds(entry, h, ids))
        parts[entry.model if isinstance(entry, GroupBranch) else head_model_name(entry.task)] = time.process_time() - t
    return {k: round(v / inputs * 1000.0, 3) for k, v in parts.items()}


def ceilings(served: dict[str, float], inproc: dict[str, float], keep: Sequence[str] = ("trunk",)) -> dict[str, float]:
    """Triton / in-process CPU ratios the server could reach if serving stopped adding cost, step by step.

    Why: the 85% target needs to know whether any backend change could meet
    it. ``measured`` is the ratio as served; ``steps_in_process_but_<keep>``
    prices every model except ``keep`` at its in-process CPU (what a native
    backend with zero per-request cost would give the small steps);
    ``every_step_in_process`` prices every model so, leaving only Triton's own
    HTTP and scheduling CPU. Models missing from ``inproc`` (Triton itself)
    keep their served cost. CPU per input stands for throughput when both
    sides are CPU-bound on the same cores.
    """
    base = sum(inproc.values())

    def ratio(priced: dict[str, float]) -> float:
        return round(base / sum(priced.values()), 3)

    served_keep = {k: (v if k in keep or k not in inproc else inproc[k]) for k, v in served.items()}
    all_in = {k: inproc.get(k, v) for k, v in served.items()}
    return {
        "measured": ratio(served),
        f"steps_in_process_but_{'_'.join(keep)}": ratio(served_keep),
        "every_step_in_process": ratio(all_in),
    }


def render(server: ServerBreakdown, inproc: dict[str, float]) -> str:
    """Markdown: one row per model, server CPU against in-process CPU per input."""
    rows = [
        f"Server: {server.users} closed-loop users, {server.seconds} s window, {server.inputs_per_s} inputs/s, "
        f"{server.failures} failed; in-process: same graphs and thread settings, batch of one length bucket.",
        "",
        "| process | server CPU ms / input | in-process CPU ms / input | added by serving | requests / execution |",
        "|---|---|---|---|---|",
    ]
    for name, ms in server.cpu_ms_per_input.items():
        base = inproc.get(name)
        added = "" if base is None else f"{ms - base:+.3f}"
        rows.append(f"| {name} | {ms:.3f} | {'' if base is None else f'{base:.3f}'} | {added} | "
                    f"{server.requests_per_execution.get(name, '')} |")
    total_in = sum(inproc.values())
    rows.append(f"| **total** | **{server.total_ms_per_input:.3f}** | **{total_in:.3f}** | "
                f"**{server.total_ms_per_input - total_in:+.3f}** | |")
    c = ceilings(server.cpu_ms_per_input, inproc)
    rows += [
        "",
        f"In-process / server CPU per input: {c['measured']:.3f} as served; {c['steps_in_process_but_trunk']:.3f} "
        f"if every step but the trunk cost only its in-process CPU; {c['every_step_in_process']:.3f} if every "
        "step did (Triton's own CPU still added).",
    ]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trunkserve.loadtest.breakdown", description=__doc__.split("\n")[0])
    p.add_argument("--repo", type=Path, required=True, help="a built merged repository")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    p.add_argument("--warm-s", type=float, default=8.0, help="load before the window opens")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--inputs", type=int, default=1024, help="inputs for the in-process side")
    p.add_argument("--out", type=Path, default=Path("/tmp/trunkserve-breakdown"))
    args = p.parse_args(argv)
    from trunkserve.server import ServerStartError, TritonProcess

    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with TritonProcess(args.repo, args.out / "tritonserver.log") as server:
            srv = measure_server(server, args.users, args.seconds, args.warm_s, args.out, protocol=args.protocol)
        inproc = inprocess_parts(args.repo, args.inputs)
    except (LoadTestError, ServerStartError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    record = {"server": asdict(srv), "inprocess": inproc, "ceilings": ceilings(srv.cpu_ms_per_input, inproc)}
    (args.out / "breakdown.json").write_text(json.dumps(record, indent=2) + "\n")
    print(render(srv, inproc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
