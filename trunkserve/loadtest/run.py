"""Run Locust headless against a served repository and summarise it (JSON, markdown, PNG).

    python -m trunkserve.loadtest.run --repo model_repository --out reports/loadtest --users 8 --duration 30
    python -m trunkserve.loadtest.run --url 127.0.0.1:8000 --stages ramp:5:4,hold:20:4 --out /tmp/lt

With ``--repo`` the runner starts ``tritonserver`` on free ports and stops it
afterwards; with ``--url`` it uses a server that is already running. Locust
runs in its own process (it monkey-patches with gevent), writing raw records
that this side turns into exact percentiles.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .corpus import load_corpus
from .errors import LoadTestError
from .plots import latency_over_time
from .records import Record, WindowStats, read_records, window_stats
from .shapes import parse_stages, stage_windows
from .traffic import Traffic, parse_mix

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = {"http": "TritonHttpUser", "grpc": "TritonGrpcUser"}


@dataclass
class LoadSpec:
    """One Locust run: shape (users/duration or stages) and traffic."""

    users: int = 8
    spawn_rate: float = 100.0
    duration_s: float = 30.0
    stages: str = ""
    protocol: str = "http"
    ensemble: str = "multitask"
    mix: str = ""
    batch_size: int = 1
    corpus: str = ""
    stop_failure_ratio: float = 0.0

    def __post_init__(self):
        """Fail here, before a server starts or Locust fires, on anything Locust would only trip over later."""
        if self.protocol not in USER_CLASSES:
            raise LoadTestError(f"protocol must be one of {sorted(USER_CLASSES)}")
        stages = parse_stages(self.stages)  # fail early on a bad spec
        if not stages and (self.users < 1 or self.duration_s <= 0):
            raise LoadTestError(f"need at least 1 user and a positive duration (got {self.users} users, {self.duration_s} s)")
        if self.spawn_rate <= 0:
            raise LoadTestError(f"spawn rate must be > 0, got {self.spawn_rate}")
        self.traffic()  # mix items, weights and request batch size

    def traffic(self) -> Traffic:
        return Traffic(self.ensemble or "multitask", parse_mix(self.mix), self.batch_size)

    @property
    def total_s(self) -> float:
        stages = parse_stages(self.stages)
        return sum(s.seconds for s in stages) if stages else self.duration_s


def locust_command(spec: LoadSpec, http_url: str, grpc_url: str, record_file: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", f"http://{http_url}", "--grpc-host", grpc_url,
        "-u", str(spec.users), "-r", str(spec.spawn_rate), "-t", f"{max(1, round(spec.total_s))}s",
        "--stop-timeout", "10", "--loglevel", "WARNING",
        "--ensemble", spec.ensemble, "--request-batch-size", str(spec.batch_size),
        "--record-file", str(record_file),
    ]
    for flag, value in (("--mix", spec.mix), ("--corpus", spec.corpus), ("--stages", spec.stages)):
        if value:
            cmd += [flag, value]
    if spec.stop_failure_ratio:
        cmd += ["--stop-failure-ratio", str(spec.stop_failure_ratio)]
    return cmd + [USER_CLASSES[spec.protocol]]


@dataclass
class LocustRun:
    records: list[Record]
    started: float
    returncode: int
    log: str


def preflight(spec: LoadSpec, http_url: str) -> None:
    """The corpus reads and every ensemble the traffic names is ready, before a single request is timed.

    Why: Locust runs in a child process, so a missing corpus only showed as "no
    requests were made", and an unknown ensemble as thousands of 404s.
    """
    import tritonclient.http as httpclient

    load_corpus(spec.corpus or None)
    client = httpclient.InferenceServerClient(http_url.split("://")[-1], connection_timeout=10.0, network_timeout=10.0)
    try:
        missing = [m for m in spec.traffic().models if not client.is_model_ready(m)]
    except Exception as exc:
        raise LoadTestError(f"cannot reach Triton at {http_url} ({exc})") from exc
    finally:
        client.close()
    if missing:
        raise LoadTestError(f"not served (or not ready) at {http_url}: {', '.join(missing)}; "
                            "pick a served task or multitask (python -m trunkserve.client tasks)")


def run_locust(spec: LoadSpec, http_url: str, grpc_url: str, out_dir: str | Path, check: bool = True) -> LocustRun:
    """Locust headless in a child process; ``check=False`` skips ``preflight`` (to test Locust's own failure handling)."""
    if check:
        preflight(spec, http_url)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_file = out / "records.jsonl"
    record_file.unlink(missing_ok=True)
    started = time.time()
    proc = subprocess.run(
        locust_command(spec, http_url, grpc_url, record_file),
        capture_output=True, text=True, timeout=spec.total_s + 120, cwd=LOCUSTFILE.parent.parent,
    )
    (out / "locust.log").write_text(proc.stdout + proc.stderr)
    if not record_file.exists():
        raise LoadTestError(f"locust wrote no records (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return LocustRun(read_records(record_file), started, proc.returncode, proc.stdout + proc.stderr)


@dataclass
class Summary:
    spec: dict
    overall: WindowStats
    stages: list[dict] = field(default_factory=list)
    per_model: dict[str, WindowStats] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "spec": self.spec,
            "overall": asdict(self.overall),
            "stages": self.stages,
            "per_model": {k: asdict(v) for k, v in self.per_model.items()},
            "errors": self.errors,
        }


def summarise(records: list[Record], spec: LoadSpec, t0: float | None = None, settle_s: float = 1.0) -> Summary:
    """Overall, per-stage (skipping ``settle_s`` after each stage starts) and per-model figures."""
    if not records:
        raise LoadTestError("no requests were made")
    t0 = min(r.start for r in records) if t0 is None else t0
    t1 = max(r.start for r in records) + 1e-6
    overall = window_stats(records, t0, t1)
    stages = []
    for start, end, st in stage_windows(parse_stages(spec.stages)):
        w = window_stats(records, t0 + start + min(settle_s, st.seconds / 2), t0 + end)
        stages.append({"kind": st.kind, "users": st.users, "stage_seconds": st.seconds, **asdict(w)})
    names = sorted({r.name for r in records})
    per_model = {n: window_stats([r for r in records if r.name == n], t0, t1) for n in names}
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
    return Summary(asdict(spec), overall, stages, per_model, errors)


def markdown(summary: Summary, title: str = "Load test") -> str:
    o = summary.overall
    s = summary.spec
    lines = [
        f"# {title}", "",
        f"{s['protocol']} -> `{s['mix'] or s['ensemble']}`, {s['batch_size']} input(s)/request, "
        + (f"stages `{s['stages']}`" if s["stages"] else f"{s['users']} users for {s['duration_s']:.0f} s"), "",
        "| requests | failures | inputs/s | requests/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
        f"| {o.requests} | {o.failures} | {o.inputs_per_s} | {o.requests_per_s} | {o.p50_ms} | {o.p95_ms} | {o.p99_ms} | {o.max_ms} |",
    ]
    if summary.stages:
        lines += ["", "| stage | users | inputs/s | p50 ms | p95 ms | p99 ms | failures |", "|---|---|---|---|---|---|---|"]
        lines += [
            f"| {st['kind']} {st['stage_seconds']:g}s | {st['users']} | {st['inputs_per_s']} | {st['p50_ms']} | {st['p95_ms']} | {st['p99_ms']} | {st['failures']} |"
            for st in summary.stages
        ]
    if len(summary.per_model) > 1:
        lines += ["", "| ensemble | requests | p50 ms | p99 ms | failures |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {w.requests} | {w.p50_ms} | {w.p99_ms} | {w.failures} |" for n, w in summary.per_model.items()]
    if summary.errors:
        lines += ["", "Errors:", ""] + [f"- {n} x `{e}`" for e, n in summary.errors.items()]
    return "\n".join(lines) + "\n"


def write_summary(summary: Summary, records: list[Record], out_dir: str | Path, title: str = "Load test") -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "summary.json", "md": out / "summary.md", "png": out / "latency.png"}
    paths["json"].write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    paths["md"].write_text(markdown(summary, title))
    latency_over_time(records, paths["png"], title)
    return paths


def run_against_repository(repo: str | Path, spec: LoadSpec, out_dir: str | Path) -> Summary:
    """Start tritonserver on ``repo``, run ``spec``, stop the server; write and return the summary."""
    from trunkserve.server import TritonProcess

    out = Path(out_dir)
    server = TritonProcess(Path(repo).resolve(), out / "tritonserver.log")
    with server:
        run = run_locust(spec, server.http_url, server.grpc_url, out)
    summary = summarise(run.records, spec)
    write_summary(summary, run.records, out)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trunkserve.loadtest.run", description=__doc__.split("\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo", type=Path, help="model repository: start a server on it")
    where.add_argument("--url", help="HTTP host:port of a running server")
    p.add_argument("--grpc-url", default="", help="gRPC host:port of the running server (with --url)")
    p.add_argument("--out", type=Path, default=Path("reports/loadtest"))
    d = LoadSpec()
    p.add_argument("--users", type=int, default=d.users)
    p.add_argument("--spawn-rate", type=float, default=d.spawn_rate)
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds (ignored with --stages)")
    p.add_argument("--stages", default="")
    p.add_argument("--protocol", choices=sorted(USER_CLASSES), default=d.protocol)
    p.add_argument("--ensemble", default=d.ensemble)
    p.add_argument("--mix", default="")
    p.add_argument("--request-batch-size", type=int, default=d.batch_size)
    p.add_argument("--corpus", default="")
    p.add_argument("--stop-failure-ratio", type=float, default=0.0)
    args = p.parse_args(argv)
    from trunkserve.server import ServerStartError

    try:
        spec = LoadSpec(args.users, args.spawn_rate, args.duration, args.stages, args.protocol, args.ensemble,
                        args.mix, args.request_batch_size, args.corpus, args.stop_failure_ratio)
        if args.repo:
            summary = run_against_repository(args.repo, spec, args.out)
        else:
            run = run_locust(spec, args.url, args.grpc_url or args.url, args.out)
            summary = summarise(run.records, spec)
            write_summary(summary, run.records, args.out)
    except (LoadTestError, ServerStartError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(markdown(summary))
    print(f"wrote {args.out}/summary.json, summary.md, latency.png")
    return 1 if summary.overall.failures else 0


if __name__ == "__main__":
    sys.exit(main())
