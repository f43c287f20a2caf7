"""The serving-cost report's online sections: targets, open-loop curves, the FLOP bound and the cache study.

Each function turns one part of ``compare.run_benchmark``'s JSON into markdown lines; the
targets table compares what was measured with the serving-cost issue's targets, met or not.
"""

from __future__ import annotations

from pathlib import Path

from .deployments import MERGED, SINGLE


def _best(run: dict | None) -> float:
    return run["best"]["inputs_per_s"] if run and run["best"] else 0.0


def _curve(run: dict | None) -> dict | None:
    return (run or {}).get("extra", {}).get("curve")


def flop_bound(result: dict, runs: dict) -> dict[int, float]:
    """Per N, the merged throughput N=1's would become if cost tracked the graphs' FLOPs: best(1) x F(1) / F(N)."""
    flops = {int(n): f for n, f in result.get("flops", {}).items()}
    base = _best(runs.get((MERGED, 1)))
    if 1 not in flops or not base:
        return {}
    return {n: round(base * flops[1] / f, 1) for n, f in sorted(flops.items())}


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def targets(result: dict, runs: dict) -> list[str]:
    """The issue's five targets, each with the figures measured in this run."""
    n = result["config"]["n_main"]
    rows = []
    served, local = (_curve(runs.get((MERGED, n))) or {}).get("concurrency_1"), result.get("inprocess_c1")
    if served and local:
        p50, p99 = served["p50_ms"] / local["p50_ms"], served["p99_ms"] / local["p99_ms"]
        rows.append((f"low load, N={n}: c=1 p50 <= 1.3x, p99 <= 2x in-process one at a time",
                     f"p50 {served['p50_ms']} vs {local['p50_ms']} ms = {p50:.2f}x; p99 {served['p99_ms']} vs {local['p99_ms']} ms = {p99:.2f}x",
                     p50 <= 1.3 and p99 <= 2.0))
    base, bound = _best(runs.get((MERGED, 1))), flop_bound(result, runs)
    for big, need in ((16, 0.75), (64, 0.5)):
        got = _best(runs.get((MERGED, big)))
        if base and got:
            fb = f"; FLOP bound {bound[big] / base:.2f}" if big in bound else ""
            rows.append((f"scaling: merged N={big} >= {need} of N=1", f"{got} / {base} = {got / base:.2f}{fb}", got / base >= need))
    m_cap = (_curve(runs.get((MERGED, n))) or {}).get("capacity")
    s_cap = (_curve(runs.get((SINGLE, n))) or {}).get("capacity")
    ip = max((x["inputs_per_s"] for x in result.get("inprocess", {}).get(str(n), [])), default=0.0)
    if m_cap and ip:
        rows.append((f"capacity (p99 < {result['config']['latency_bound_ms']:g} ms), N={n}: merged >= 70% of in-process saturation",
                     f"{m_cap} req/s vs {ip} inputs/s = {m_cap / ip:.2f}", m_cap / ip >= 0.7))
    if m_cap and s_cap:
        rows.append((f"capacity, N={n}: merged >= 5x single-task", f"{m_cap} vs {s_cap} req/s = {m_cap / s_cap:.1f}x", m_cap / s_cap >= 5))
    cpu = _cpu_ratio(result, runs, n)
    if cpu:
        rows.append((f"server vs in-process at saturation, N={n}: >= 0.85 in CPU s per input",
                     f"{cpu[0]} / {cpu[1]} = {cpu[0] / cpu[1]:.2f}", cpu[0] / cpu[1] >= 0.85))
    old, now = result.get("old_defaults"), _best(runs.get((MERGED, n)))
    if old:
        rows.append((f"no regression: N={n} saturation >= the 20 ms-window build's, same run",
                     f"{now} vs {_best(old)} inputs/s", now >= _best(old)))
    lines = ["## Targets", "", "| target | measured (this run) | |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {_verdict(ok)} |" for t, m, ok in rows]
    return lines + ["", f"Failed requests below saturation, every run: **{failures_below_saturation(result)}**.", ""]


def _cpu_ratio(result: dict, runs: dict, n: int) -> tuple[float, float] | None:
    ip = result.get("inprocess", {}).get(str(n), [])
    m = runs.get((MERGED, n))
    server = (m or {}).get("best", {}) or {}
    if not ip or not server.get("cpu_s_per_input"):
        return None
    return min(x["cpu_s_per_input"] for x in ip), server["cpu_s_per_input"]


def failures_below_saturation(result: dict) -> int:
    """Failures in closed-loop steps up to each run's best step and in open-loop points up to its capacity."""
    total = 0
    for r in result["runs"]:
        best = (r.get("best") or {}).get("users", 0)
        total += sum(s["failures"] for s in r["steps"] if s["users"] <= best)
        c = (r.get("extra") or {}).get("curve") or {}
        total += sum(p["failures"] for p in c.get("open_loop", []) if c.get("capacity") and p["rate"] <= c["capacity"])
    return total


def curves(result: dict, runs: dict, png_name: str | None) -> list[str]:
    """Per deployment and N: concurrency-1 latency, p50/p99 at each offered rate, and the capacity."""
    have = [(k, r) for k, r in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])) if _curve(r)]
    if not have:
        return []
    bound = result["config"]["latency_bound_ms"]
    lines = ["", "## Latency against offered load (open loop)", "",
             f"Requests arrive at a constant rate, one input each, whatever the answers do; latency counts from the "
             f"planned arrival; {result['config']['curve_s']:g} s per rate. Capacity = the highest offered rate with "
             f"p99 < {bound:g} ms and no failure.", ""]
    if png_name:
        lines += [f"![p99 against offered load]({png_name})", ""]
    lines += ["| deployment | N | c=1 p50 / p99 ms | offered req/s: p50 / p99 ms | capacity req/s |", "|---|---|---|---|---|"]
    for (d, n), r in have:
        c = _curve(r)
        pts = "; ".join(f"{p['rate']:g}: {p['p50_ms']} / {p['p99_ms']}" + (f" ({p['failures']} failed)" if p["failures"] else "")
                        for p in c["open_loop"])
        c1 = c["concurrency_1"]
        lines.append(f"| {d} | {n} | {c1['p50_ms']} / {c1['p99_ms']} | {pts} | {c['capacity'] or '-'} |")
    return lines


def flops_table(result: dict, runs: dict) -> list[str]:
    """Merged throughput against N beside the graphs' FLOPs per input and the bound they set."""
    bound, base = flop_bound(result, runs), _best(runs.get((MERGED, 1)))
    if not bound:
        return []
    lines = ["", "### Against the FLOP bound", "",
             "FLOPs: the matrix products of the trunk and every head group in one profiled ONNX Runtime run per "
             "padded length, averaged over the benchmark's inputs (`loadtest/flops.py`). Bound = N=1's measured "
             "throughput scaled by FLOPs(1) / FLOPs(N): what serving would give if every input cost only its arithmetic.",
             "", "| N | MFLOP / input | merged inputs/s | of N=1 | FLOP bound inputs/s | bound of N=1 |", "|---|---|---|---|---|---|"]
    for n, b in bound.items():
        got = _best(runs.get((MERGED, n)))
        lines.append(f"| {n} | {result['flops'][str(n)] / 1e6:.1f} | {got} | {got / base:.2f} | {b} | {b / base:.2f} |")
    return lines


def cache(result: dict) -> list[str]:
    c = result.get("cache")
    if not c:
        return []
    lines = ["", "## Response cache on a Zipf stream", "",
             f"N = {c['n']}; a stream of {c['stream']} requests drawn from {c['distinct']} distinct GLUE dev inputs with "
             f"weight rank^-{c['zipf_s']:g} ({c['unique_in_stream']} distinct in the stream); the same stream to a plain build "
             f"and to one built with `--response-cache` (server `--cache-config local,size={c['cache_mb'] << 20}`).", "",
             "| build | c=1 p50 / p99 ms (first 300) | closed loop: threads, req/s, p50 / p99 ms | failures |", "|---|---|---|---|"]
    for name, r in c["runs"].items():
        s, c1 = r["saturated"], r["concurrency_1"]
        lines.append(f"| {name} | {c1['p50_ms']} / {c1['p99_ms']} | {s['concurrency']}, {s['requests_per_s']}, "
                     f"{s['p50_ms']} / {s['p99_ms']} | {s['failures']} |")
    hits = ", ".join(f"{m} {v:.0%}" for m, v in sorted(c["hit_ratio"].items()))
    plain, cached = (c["runs"][k]["saturated"]["requests_per_s"] for k in ("plain", "cached"))
    lines += ["", f"Hit ratio (Triton's `nv_cache_num_hits_per_model` / lookups): {hits}. Throughput cached / plain: "
              f"**{cached / plain:.2f}x**. Answers of the cached build (first and repeated requests) equal the plain "
              f"build's bit for bit: **{c['identical']}**."]
    return lines


def curves_plot(runs: dict, path: Path) -> Path | None:
    """p99 against offered rate, one line per (deployment, N)."""
    from .plots import _plt

    have = [(k, _curve(r)) for k, r in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])) if _curve(r)]
    if not have:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for (d, n), c in have:
        pts = c["open_loop"]
        ax.plot([p["rate"] for p in pts], [min(p["p99_ms"], 5000) for p in pts], marker="o",
                linestyle="-" if d == MERGED else "--", label=f"{d} N={n}")
    ax.axhline(100, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered requests/s (open loop)")
    ax.set_ylabel("p99 ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
