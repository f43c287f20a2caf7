"""CLI: ``python -m training train-heads|demo|report`` (same keywords as ``training.pipeline.train_heads``)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .cache import DEFAULT_CACHE_BYTES
from .data.types import DataError

DEMO_TASKS = "sst2,mrpc,stsb"
# Measured on the 2-core machine (k = 3, one-layer students): 116 s; dev sst2 79.2, mrpc 75.6, stsb 80.8 (student).
DEMO_CAPS = {"sst2": 3000, "mrpc": 2000, "stsb": 2000}


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def _caps(s: str | None):
    """``N`` for every task, or ``task=N,task=N`` (checked against --tasks by ``check_run_options``)."""
    if s is None:
        return None
    try:
        if "=" in s:
            return {k.strip(): int(v) for k, v in (p.split("=") for p in s.split(",") if p.strip())}
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-train takes N or task=N,task=N, got {s!r}") from None


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", required=True, help="comma-separated task names (GLUE: cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte, or custom)")
    p.add_argument("--glue-dir", default=None, help="GLUE folder (default: $GLUE_DIR, else <repo>/../shared/glue)")
    p.add_argument("--custom", action="append", default=[], metavar="NAME=TRAIN[,DEV][:TYPE]",
                   help="a custom task from CSV/JSONL (columns text, text_pair, label); repeatable")
    p.add_argument("--max-train", type=_caps, default=None, help="cap on training rows: N, or task=N,task=N")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--student-epochs", type=float, default=None)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--full-lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=_ints, default=(0,))
    p.add_argument("--depths", type=_ints, default=None, help="trunk branch depths (default trunkserve.defaults.DEFAULT_DEPTHS)")
    p.add_argument("--branch-layer", type=int, default=None, help="k: frozen layers (must be one of --depths)")
    p.add_argument("--teacher-layers", type=int, default=None, help="n: teacher task layers (default: all above k)")
    p.add_argument("--student-layers", type=int, default=1)
    p.add_argument("--search-student-layers", type=_ints, default=(), help="try every m in this list, e.g. 1,2")
    p.add_argument("--layer-budget", type=float, default=None,
                   help="choose every task's (k, m) jointly so the merged model costs at most this fraction of one full model per task (e.g. 0.35)")
    p.add_argument("--search", action="store_true", help="try every depth in --depths, keep the best on validation")
    p.add_argument("--search-teacher-layers", action="store_true", help="also try every n")
    p.add_argument("--search-every-seed", action="store_true",
                   help="train every candidate on every seed and rank by the mean validation score (default: the first seed's)")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--hidden-weight", type=float, default=0.0, help="> 0 adds hidden-state distillation")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-val", type=int, default=500)
    p.add_argument("--max-dev", type=int, default=None)
    p.add_argument("--full-baseline", action="store_true", help="also train full fine-tuning per seed")
    p.add_argument("--no-bf16", action="store_true", help="train in float32 even where bfloat16 is native")
    p.add_argument("--cache-max-gb", type=float, default=DEFAULT_CACHE_BYTES / 2**30)
    p.add_argument("--backbone", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes: with 2 or more, the training jobs (one per task, seed and branch depth, and the full "
                        "fine-tuning baselines) are shared with JOBS-1 workers (bit-identical results; a small gain on "
                        "2 cores, more with more cores and on a GPU: reports/jobs2)")


def options(a) -> dict:
    from .pipeline import CustomTask

    opts = dict(
        glue_dir=a.glue_dir, max_train=a.max_train, epochs=a.epochs, student_epochs=a.student_epochs,
        lr=a.lr, full_lr=a.full_lr, batch_size=a.batch_size, seeds=a.seeds, branch_layer=a.branch_layer,
        teacher_layers=a.teacher_layers, student_layers=a.student_layers, search=a.search,
        search_teacher_layers=a.search_teacher_layers, search_student_layers=a.search_student_layers,
        search_every_seed=a.search_every_seed, temperature=a.temperature, hidden_weight=a.hidden_weight,
        max_length=a.max_length, max_val=a.max_val, max_dev=a.max_dev, full_baseline=a.full_baseline,
        bf16=False if a.no_bf16 else None, cache_max_bytes=int(a.cache_max_gb * 2**30), backbone=a.backbone,
        progress=not a.no_progress, custom=dict(CustomTask.parse(s) for s in a.custom), jobs=a.jobs,
    )
    if a.depths:
        opts["depths"] = a.depths
    return opts


def _passive_threads_or_reexec(a, argv) -> None:
    """With ``--jobs`` > 1 every process's idle OpenMP threads must sleep (``training.parallel``).

    The OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when torch loads, and this
    package has loaded torch by now: so the command starts itself again with it set.
    """
    from .parallel import PASSIVE, passive_threads_in_this_process

    if getattr(a, "jobs", 1) > 1 and argv is None and not passive_threads_in_this_process():
        os.execve(sys.executable, [sys.executable, "-m", "training", *sys.argv[1:]], {**os.environ, **PASSIVE})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    th = sub.add_parser("train-heads", help="teacher + distilled student per task; students to OUT/<task>/")
    add_common(th)
    th.add_argument("--out", default="artifacts/heads")
    th.add_argument("--teachers-out", default=None, help="default: OUT/../teachers")
    th.add_argument("--summary", default=None, help="write the per-task summary JSON here")

    demo = sub.add_parser("demo", help=f"heads for {DEMO_TASKS} on capped subsets (a few minutes on 2 cores)")
    demo.add_argument("--out", default="artifacts/heads")
    demo.add_argument("--glue-dir", default=None)
    demo.add_argument("--tasks", default=DEMO_TASKS)

    rep = sub.add_parser("report", help="full study: baselines, teachers, students; writes reports/glue.{md,png,json}")
    add_common(rep)
    rep.add_argument("--out", default="artifacts/heads")
    rep.add_argument("--report-dir", default="reports")
    rep.add_argument("--small-seeds", type=_ints, default=(0, 1, 2), help="seeds for small tasks (cola, mrpc, stsb, rte)")
    rep.add_argument("--no-speedup", action="store_true", help="skip the cache speed-up measurement")
    rep.add_argument("--command", default=None, help=argparse.SUPPRESS)

    ab = sub.add_parser("hidden-ablation", help="does hidden-state distillation help? students with/without it from a report's teachers")
    ab.add_argument("--report", default="reports/glue.json", help="glue.json written by `report` (updated in place, with glue.md)")
    ab.add_argument("--weight", type=float, default=1.0, help="hidden-state MSE weight to compare against 0")
    ab.add_argument("--glue-dir", default=None)
    ab.add_argument("--backbone", default=None)

    rd = sub.add_parser("render", help="rewrite glue.md and glue.png from a report's glue.json")
    rd.add_argument("--report", default="reports/glue.json")

    a = ap.parse_args(argv)
    _passive_threads_or_reexec(a, argv)
    try:
        if a.cmd == "train-heads":
            from .pipeline import train_heads

            o = options(a)
            train_heads(a.tasks, out=a.out, teachers_out=a.teachers_out, summary_path=a.summary, layer_budget=a.layer_budget, **o)
        elif a.cmd == "demo":
            from .pipeline import train_heads

            t0 = time.time()
            train_heads(a.tasks, glue_dir=a.glue_dir, out=a.out, max_train=DEMO_CAPS, epochs=4, student_epochs=5, lr=3e-4, max_dev=500,
                        max_val=200, progress=sys.stderr.isatty())
            print(f"demo heads written to {a.out}/ in {time.time() - t0:.0f}s")
        elif a.cmd == "render":
            from .report import render

            print(f"wrote {render(a.report)}")
        elif a.cmd == "hidden-ablation":
            from .ablation import hidden_ablation

            hidden_ablation(a.report, weights=(0.0, a.weight), glue_dir=a.glue_dir, backbone=a.backbone)
        elif a.cmd == "report":
            from .report import run_report

            o = options(a)
            run_report(a.tasks, out=a.out, report_dir=a.report_dir, small_seeds=a.small_seeds, layer_budget=a.layer_budget,
                       measure_speedup=not a.no_speedup, command=a.command or "python -m training " + " ".join(sys.argv[1:] if argv is None else argv), **o)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
