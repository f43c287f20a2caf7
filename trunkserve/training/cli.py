"""CLI: ``python -m trunkserve.training train-heads|demo|report`` (same keywords as ``training.pipeline.train_heads``)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from trunkserve.defaults import DEFAULT_DEPTHS, DEFAULT_MIN_STEPS, DEFAULT_REFIT_STEPS

from .cache import DEFAULT_CACHE_BYTES
from .data.types import DataError
from .quality import DEFAULT_MIN_RATIO, ON_FAIL

#: Exit code of ``train-heads`` when a head was written marked as failed by the quality gate.
EXIT_GATE_FAILED = 3

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


CUSTOM_HELP = (
    "a task of your own: NAME=TRAIN[,DEV][:TYPE]. Files: .csv, .tsv or .jsonl with columns text, optional text_pair, "
    "label. TYPE is classification or regression; without it a task is a regression when every label is a number "
    "and one is not an integer (3.5), else a classification. Classes are the distinct labels, in numeric order when "
    "all are integers (so 1..5 is five classes: add :regression for a score), else sorted as strings; the log prints "
    "what was read. Without DEV, 10%% of TRAIN is held out as the dev set. Repeatable"
)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", required=True, help="comma-separated task names (GLUE: cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte, or custom)")
    p.add_argument("--glue-dir", default=None, help="GLUE folder (None: $GLUE_DIR, else <repo>/../shared/glue)")
    p.add_argument("--custom", action="append", default=[], metavar="NAME=TRAIN[,DEV][:TYPE]", help=CUSTOM_HELP)
    p.add_argument("--max-train", type=_caps, default=None, help="cap on training rows: N, or task=N,task=N (None: every row)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training rows held out as the validation split (at most --max-val rows) on which "
                        "checkpoints, (k, m) and the quality gate are decided; the dev set is only scored")
    p.add_argument("--epochs", type=float, default=3.0, help="teacher epochs (raised on small data to reach --min-steps; 0: no training)")
    p.add_argument("--student-epochs", type=float, default=None, help="student epochs (None: --epochs)")
    p.add_argument("--min-steps", type=int, default=DEFAULT_MIN_STEPS,
                   help="every schedule (teacher, student, full fine-tuning) runs at least this many optimiser steps: "
                        "epochs are raised on small data, at most 100, and early stopping then waits for them (0: epochs alone)")
    p.add_argument("--refit", choices=("small", "always", "never"), default="small",
                   help="refit the student's copied pooler and output layer to its own [CLS] states before distillation: "
                        "small = where --min-steps raised the schedule (the copied layer cannot be recovered in so few "
                        "steps), always, never")
    p.add_argument("--refit-steps", type=int, default=DEFAULT_REFIT_STEPS,
                   help="minibatch steps of that refit (0: off)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate of teachers and students")
    p.add_argument("--full-lr", type=float, default=None, help="learning rate of full fine-tuning (None: --lr)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--seeds", type=_ints, default=(0,), help="training seeds, e.g. 0,1,2 (the best on validation ships)")
    p.add_argument("--depths", type=_ints, default=None, help=f"trunk branch depths (None: {','.join(map(str, DEFAULT_DEPTHS))})")
    p.add_argument("--branch-layer", type=int, default=None, help="k: frozen layers, one of --depths (None: the deepest, or searched)")
    p.add_argument("--teacher-layers", type=int, default=None, help="n: teacher task layers (None: every layer above k)")
    p.add_argument("--student-layers", type=int, default=1, help="m: student layers")
    p.add_argument("--search-student-layers", type=_ints, default=(), help="try every m in this list, e.g. 1,2")
    p.add_argument("--layer-budget", type=float, default=None,
                   help="choose every task's (k, m) jointly so the merged model costs at most this fraction of one full "
                        "model per task, e.g. 0.35 (None: each task on its own)")
    p.add_argument("--search", action="store_true", help="try every depth in --depths, keep the best on validation")
    p.add_argument("--search-teacher-layers", action="store_true", help="also try every n")
    p.add_argument("--search-every-seed", action="store_true",
                   help="train every candidate on every seed and rank by the mean validation score (default: the first seed's)")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature T")
    p.add_argument("--hidden-weight", type=float, default=0.0, help="> 0 adds hidden-state distillation with this weight")
    p.add_argument("--min-student-ratio", type=float, default=DEFAULT_MIN_RATIO,
                   help="quality gate: a student passes when its validation score beats the majority-class baseline and "
                        "keeps at least this share of its teacher's")
    p.add_argument("--quality-gate", choices=ON_FAIL, default=None,
                   help="a student that fails the gate: fallback ships the teacher's layers as the head when the teacher "
                        "passes; refuse (or a teacher at chance too) writes the head marked failed and exits 3; warn ships "
                        "the student marked failed and exits 0 (None: fallback for train-heads, warn for report)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per training example (longer text is truncated)")
    p.add_argument("--max-val", type=int, default=500, help="most rows in the validation split")
    p.add_argument("--max-dev", type=int, default=None, help="cap on dev rows scored (None: all)")
    p.add_argument("--full-baseline", action="store_true", help="also train full fine-tuning per seed")
    p.add_argument("--no-bf16", action="store_true", help="train in float32 even where bfloat16 is native")
    p.add_argument("--cache-max-gb", type=float, default=DEFAULT_CACHE_BYTES / 2**30, help="bound on the trunk hidden-state cache")
    p.add_argument("--backbone", default=None, help="Hugging Face BERT folder (None: the packaged MiniLM-L6-H384)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for training (None: torch's own default, one per physical core)")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes: with 2 or more, the training jobs (one per task, seed and branch depth, and the full "
                        "fine-tuning baselines) are shared with JOBS-1 workers (bit-identical results; a small gain on "
                        "2 cores, more with more cores and on a GPU: reports/jobs2)")


def options(a) -> dict:
    from .options import CustomTask

    if a.threads is not None:
        if a.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {a.threads}")
        import torch

        torch.set_num_threads(a.threads)

    opts = dict(
        glue_dir=a.glue_dir, max_train=a.max_train, epochs=a.epochs, student_epochs=a.student_epochs,
        lr=a.lr, full_lr=a.full_lr, batch_size=a.batch_size, seeds=a.seeds, branch_layer=a.branch_layer,
        teacher_layers=a.teacher_layers, student_layers=a.student_layers, search=a.search,
        search_teacher_layers=a.search_teacher_layers, search_student_layers=a.search_student_layers,
        search_every_seed=a.search_every_seed, temperature=a.temperature, hidden_weight=a.hidden_weight,
        max_length=a.max_length, max_val=a.max_val, val_fraction=a.val_fraction, min_steps=a.min_steps,
        refit_steps=a.refit_steps, refit=a.refit, min_ratio=a.min_student_ratio, max_dev=a.max_dev, full_baseline=a.full_baseline,
        bf16=False if a.no_bf16 else None, cache_max_bytes=int(a.cache_max_gb * 2**30), backbone=a.backbone,
        progress=not a.no_progress, custom=dict(CustomTask.parse(s) for s in a.custom), jobs=a.jobs,
    )
    if a.depths:
        opts["depths"] = a.depths
    if a.quality_gate:
        opts["quality_gate"] = a.quality_gate
    return opts


def _passive_threads_or_reexec(a, argv) -> None:
    """With ``--jobs`` > 1 every process's idle OpenMP threads must sleep (``training.parallel``).

    The OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when torch loads, and this
    package has loaded torch by now: so the command starts itself again with it set.
    """
    from .parallel import PASSIVE, passive_threads_in_this_process

    if getattr(a, "jobs", 1) > 1 and argv is None and not passive_threads_in_this_process():
        os.execve(sys.executable, [sys.executable, "-m", "trunkserve.training", *sys.argv[1:]], {**os.environ, **PASSIVE})


def parser() -> argparse.ArgumentParser:
    """Every subcommand's options (built here so a test can walk them)."""
    ap = argparse.ArgumentParser(prog="python -m trunkserve.training", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    fmt = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    th = sub.add_parser("train-heads", help="teacher + distilled student per task; students to OUT/<task>/", **fmt)
    add_common(th)
    th.add_argument("--out", default="artifacts/heads", help="head folders go to OUT/<task>/")
    th.add_argument("--teachers-out", default=None, help="teacher folders (None: OUT/../teachers/<OUT's name>/<task>)")
    th.add_argument("--summary", default=None, help="write the per-task summary JSON here")

    demo = sub.add_parser("demo", help=f"heads for {DEMO_TASKS} on capped subsets (a few minutes on 2 cores)", **fmt)
    demo.add_argument("--out", default="artifacts/heads", help="head folders go to OUT/<task>/")
    demo.add_argument("--glue-dir", default=None, help="GLUE folder (None: $GLUE_DIR, else <repo>/../shared/glue)")
    demo.add_argument("--tasks", default=DEMO_TASKS, help="GLUE tasks to train")

    rep = sub.add_parser("report", help="full study: baselines, teachers, students; writes reports/glue.{md,png,json}", **fmt)
    add_common(rep)
    rep.add_argument("--out", default="artifacts/heads", help="head folders go to OUT/<task>/")
    rep.add_argument("--report-dir", default="reports", help="where glue.md, glue.png and glue.json go")
    rep.add_argument("--small-seeds", type=_ints, default=(0, 1, 2), help="seeds for small tasks (cola, mrpc, stsb, rte)")
    rep.add_argument("--no-speedup", action="store_true", help="skip the cache speed-up measurement")
    rep.add_argument("--command", default=None, help=argparse.SUPPRESS)

    ab = sub.add_parser("hidden-ablation", help="does hidden-state distillation help? students with/without it from a report's teachers", **fmt)
    ab.add_argument("--report", default="reports/glue.json", help="glue.json written by `report` (updated in place, with glue.md)")
    ab.add_argument("--weight", type=float, default=1.0, help="hidden-state MSE weight to compare against 0")
    ab.add_argument("--glue-dir", default=None, help="GLUE folder (None: $GLUE_DIR, else <repo>/../shared/glue)")
    ab.add_argument("--backbone", default=None, help="Hugging Face BERT folder (None: the packaged MiniLM-L6-H384)")

    rd = sub.add_parser("render", help="rewrite glue.md and glue.png from a report's glue.json", **fmt)
    rd.add_argument("--report", default="reports/glue.json", help="the report's glue.json")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    _passive_threads_or_reexec(a, argv)
    try:
        if a.cmd == "train-heads":
            from .pipeline import train_heads

            o = options(a)
            results = train_heads(a.tasks, out=a.out, teachers_out=a.teachers_out, summary_path=a.summary,
                                  layer_budget=a.layer_budget, **o)
            failed = [t for t, r in results.items() if not r["quality"]["passed"] and r["quality_gate"] != "warn"]
            if failed:
                print(f"error: quality gate failed for {', '.join(failed)}: written marked as failed "
                      f"(see the log above; export add-head refuses such a head unless --force)", file=sys.stderr)
                return EXIT_GATE_FAILED
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
                       measure_speedup=not a.no_speedup, command=a.command or "python -m trunkserve.training " + " ".join(sys.argv[1:] if argv is None else argv), **o)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

