"""What int8 dynamic quantisation costs in accuracy, and what it buys in speed, on the GLUE dev sets.

    python -m trunkserve.loadtest.int8 --heads artifacts/report-heads5 --work /tmp/trunkserve-int8 --out reports

Why: int8 roughly halves the CPU per input of the merged graphs (``export/graph_tuning.py``),
but it changes outputs, so it may only become a default once its cost on the dev sets
is known. This builds a repository from trained heads (float32, as exported and
validated), makes one quantised copy per scheme (``export.quant_schemes.SCHEMES``: which
graphs, which operators, per-tensor or per-column scales; ONNX Runtime's dynamic int8;
the copy itself is ``python -m trunkserve.export quantise``), then scores
every variant with the same in-process pipeline the serving benchmark uses (bucketing
tokenizer -> trunk -> every head) on each task's dev set, and times each at the same
batch size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from trunkserve.export.cli import head_folders
from trunkserve.export.errors import ExportError
from trunkserve.export.quant_schemes import DEFAULT_SCHEME, SCHEMES, scheme_named

from .errors import LoadTestError


@dataclass
class Variant:
    name: str
    scores: dict[str, float]  # task -> GLUE dev score x 100 (headline split)
    metrics: dict[str, dict]
    inputs_per_s: float
    cpu_s_per_input: float
    model_mb: float
    multitask_scores: dict[str, float] = field(default_factory=dict)  # through the head groups (``multitask``'s path)


def served_outputs(pipeline, examples: Sequence, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Every head's outputs (logits, or the regression score) for ``examples``, in their order.

    Inputs are tokenized one at a time (as the server does per request) and run in
    batches of one length bucket, so a padded row never meets a longer bucket.
    """
    from trunkserve.specs import LOGITS, SCORE

    out: dict[str, np.ndarray] = {}
    pairs = [(ex.text, ex.text_pair or "") for ex in examples]
    for rows, ids in pipeline.indexed_batches(pairs, batch_size):
        for (entry, _), result in zip(pipeline.heads, pipeline.run(ids)):
            y = result[SCORE if entry.task_type == "regression" else LOGITS]
            if entry.task not in out:
                out[entry.task] = np.zeros((len(examples), y.shape[1]), np.float32)
            out[entry.task][rows] = y
    return out


def dev_scores(pipeline, glue_dir: Path | None, max_rows: int | None = None) -> tuple[dict, dict]:
    """GLUE dev scores of every head of ``pipeline`` (a ``MergedPipeline``) through the exported graphs (headline split)."""
    from trunkserve.training.data.glue import load_glue_task
    from trunkserve.training.metrics import compute_metrics, headline

    scores, metrics = {}, {}
    for entry, _ in pipeline.heads:
        data = load_glue_task(entry.task, glue_dir, splits=("dev",))
        split, rows = next(iter(data.dev.items()))
        rows = rows[:max_rows] if max_rows else rows
        outputs = served_outputs(_only(pipeline, entry.task), rows)[entry.task]
        labels = np.array([r.label for r in rows])
        metrics[entry.task] = compute_metrics(data.metric, outputs, labels)
        scores[entry.task] = round(headline(metrics[entry.task]), 2)
    return scores, metrics


def multitask_dev_scores(repo: Path, glue_dir: Path | None, max_rows: int | None = None) -> dict[str, float]:
    """Each task's GLUE dev score through the head groups, the graphs ``multitask`` serves; {} without groups.

    Why beside ``dev_scores``: a quantised repository quantises its groups on their own, and a
    group computes its members together, so the per-task ensembles' scores do not vouch for it.
    """
    from trunkserve.deployment.reader import read_heads
    from trunkserve.specs import LOGITS, SCORE
    from trunkserve.training.data.glue import load_glue_task
    from trunkserve.training.metrics import compute_metrics, headline

    from .inprocess import GroupBranch, MergedPipeline

    pipeline = MergedPipeline(repo, groups=True)
    if not all(isinstance(e, GroupBranch) for e, _ in pipeline.heads):
        return {}
    scores = {}
    for task, head in read_heads(repo).items():
        data = load_glue_task(task, glue_dir, splits=("dev",))
        rows = next(iter(data.dev.values()))
        rows = rows[:max_rows] if max_rows else rows
        key = f"{task}_{SCORE if head.entry.task_type == 'regression' else LOGITS}"
        outputs = None
        for idx, ids in pipeline.indexed_batches([(r.text, r.text_pair or "") for r in rows], 32):
            y = next(r[key] for r in pipeline.run(ids) if key in r)
            outputs = np.zeros((len(rows), y.shape[1]), np.float32) if outputs is None else outputs
            outputs[idx] = y
        scores[task] = round(headline(compute_metrics(data.metric, outputs, np.array([r.label for r in rows]))), 2)
    return scores


def _only(pipeline, task: str):
    """A view of ``pipeline`` that runs one head (the others' dev sets are scored separately)."""
    import copy

    view = copy.copy(pipeline)
    view.heads = [(e, r) for e, r in pipeline.heads if e.task == task]
    return view


def trained_scores(folders: Sequence[Path]) -> dict[str, float]:
    """The dev score each head recorded at training time (PyTorch, float32): the float32 graphs must reproduce it."""
    out = {}
    for f in folders:
        meta = json.loads((Path(f) / "head.json").read_text())
        dev = meta.get("metrics", {}).get("dev", {})
        if dev:
            out[meta["task"]] = round(float(next(iter(dev.values()))["score"]), 2)
    return out


def measure_variant(name: str, repo: Path, glue_dir, max_rows, speed_s: float, batch_size: int) -> Variant:
    from .corpus import load_corpus
    from .inprocess import MergedPipeline, measure
    from .deployments import model_bytes

    pipeline = MergedPipeline(repo, groups=False)
    scores, metrics = dev_scores(pipeline, glue_dir, max_rows)
    speed = measure(pipeline, load_corpus(None), batch_size, speed_s)
    return Variant(name, scores, metrics, speed.inputs_per_s, speed.cpu_s_per_input, round(model_bytes(repo) / 1e6, 1),
                   multitask_dev_scores(repo, glue_dir, max_rows))


def int8_cost(heads: Sequence[Path], work: Path, glue_dir=None, max_rows: int | None = None, speed_s: float = 8.0,
              batch_size: int = 16, log=print, schemes: Sequence[str] = (DEFAULT_SCHEME,)) -> dict:
    """Build ``heads`` into a float32 repository under ``work``, quantise a copy per scheme, score and time every one."""
    from trunkserve.export.quantise import quantised_copy  # deferred with torch: ``--help`` stays light
    from trunkserve.export.repository import build_repository

    t0 = time.time()
    fp32 = work / "fp32"
    folders = head_folders([Path(h) for h in heads])
    if not folders:
        raise LoadTestError(f"no head folders (with head.json) under {', '.join(map(str, heads))}")
    build_repository(folders, fp32)
    repos = [("float32", fp32)] + [(name, quantised_copy(fp32, work / name, name)) for name in schemes]
    log(f"built and quantised in {time.time() - t0:.0f}s; scoring")
    variants = [measure_variant(n, r, glue_dir, max_rows, speed_s, batch_size) for n, r in repos]
    for v in variants:
        log(f"[{v.name}] {v.scores}; {v.inputs_per_s} inputs/s, {v.cpu_s_per_input} CPU s/input")
    return {"heads": [str(h) for h in heads], "max_rows": max_rows, "trained_scores": trained_scores(folders), "batch_size": batch_size,
            "command": "python -m trunkserve.loadtest.int8 " + " ".join(sys.argv[1:]), "variants": [asdict(v) for v in variants],
            "schemes": {n: SCHEMES[n].describe() for n in schemes},
            "seconds": round(time.time() - t0, 1)}


def markdown(res: dict) -> str:
    """The report: per task, the float32 graphs' score and each quantised variant's change from it."""
    f, quantised = res["variants"][0], res["variants"][1:]
    tasks = list(f["scores"])
    avg = {v["name"]: float(np.mean([v["scores"][t] for t in tasks])) for v in res["variants"]}
    schemes = res.get("schemes") or {"int8": SCHEMES["int8"].describe()}
    lines = [
        "# Int8 dynamic quantisation: accuracy cost on the GLUE dev sets", "",
        f"Generated by `{res['command']}` (`loadtest/int8.py`); heads: {', '.join(f'`{h}`' for h in res['heads'])}.",
        "Every variant is the same exported repository: float32 as exported (validated against PyTorch), and copies "
        "quantised with ONNX Runtime's `quantize_dynamic` (int8 weights, activations quantised per batch at run time):",
        "", *(f"- `{name}`: {text}" for name, text in schemes.items()), "",
        "Scores are computed through the graphs, in-process, with the server's tokenizer and length buckets"
        + (f", on the first {res['max_rows']} dev rows" if res["max_rows"] else "")
        + "; speed is the in-process pipeline at batch " + f"{res['batch_size']} on the GLUE dev corpus.", "",
        "`trained` is the dev score the head recorded in `head.json` at training time (PyTorch); on the whole dev set the "
        "float32 graphs should reproduce it, which checks the scoring path itself.", "",
        "| task | trained (PyTorch) | float32 graphs | " + " | ".join(f"{v['name']} (change)" for v in quantised) + " |",
        "|---|---|---|" + "---|" * len(quantised),
    ]
    trained = res.get("trained_scores", {})
    for t in tasks:
        tr = f"{trained[t]:.2f}" if t in trained else "-"
        cells = " | ".join(f"{v['scores'][t]:.2f} ({v['scores'][t] - f['scores'][t]:+.2f})" for v in quantised)
        lines.append(f"| {t} | {tr} | {f['scores'][t]:.2f} | {cells} |")
    cells = " | ".join(f"**{avg[v['name']]:.2f} ({avg[v['name']] - avg[f['name']]:+.2f})**" for v in quantised)
    lines += [
        f"| **average** | | **{avg[f['name']]:.2f}** | {cells} |", "",
        *_multitask_table(res["variants"], tasks),
        "| variant | inputs/s | CPU s / input | model MB on disk |", "|---|---|---|---|",
        *(f"| {v['name']} | {v['inputs_per_s']} | {v['cpu_s_per_input']} | {v['model_mb']} |" for v in res["variants"]), "",
    ]
    return "\n".join(lines)


def _multitask_table(variants: Sequence[dict], tasks: Sequence[str]) -> list[str]:
    """Scores through the head groups (``multitask``), where the run recorded them: each variant's change from float32."""
    if not all(v.get("multitask_scores") for v in variants):
        return []
    f = variants[0]["multitask_scores"]
    lines = ["Through the head groups (`multitask`'s graphs; each group quantised on its own):", "",
             "| task | float32 | " + " | ".join(f"{v['name']} (change)" for v in variants[1:]) + " |",
             "|---|---|" + "---|" * (len(variants) - 1)]
    for t in tasks:
        lines.append(f"| {t} | {f[t]:.2f} | "
                     + " | ".join(f"{v['multitask_scores'][t]:.2f} ({v['multitask_scores'][t] - f[t]:+.2f})" for v in variants[1:]) + " |")
    means = [float(np.mean([v["multitask_scores"][t] for t in tasks])) for v in variants]
    lines.append(f"| **average** | **{means[0]:.2f}** | "
                 + " | ".join(f"**{m:.2f} ({m - means[0]:+.2f})**" for m in means[1:]) + " |")
    return lines + [""]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trunkserve.loadtest.int8", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="A quantised copy of one repository: python -m trunkserve.export quantise --repo REPO --out OUT")
    p.add_argument("--heads", type=Path, nargs="+", required=True, help="trained head folders, or folders of them")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated schemes to compare with float32")
    p.add_argument("--work", type=Path, default=Path("/tmp/trunkserve-int8"),
                   help="where the float32 repository and its quantised copies are built")
    p.add_argument("--glue-dir", type=Path, default=None, help="GLUE folder; None: $GLUE_DIR, else ../shared/glue")
    p.add_argument("--max-rows", type=int, default=None, help="score only the first N dev rows per task; None: all")
    p.add_argument("--speed-s", type=float, default=8.0, help="seconds of in-process timing per variant")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the timing")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder for int8-accuracy.json and .md")
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a run can fail with that is the caller's to fix: said in one line, exit 2, no traceback."""
    return (LoadTestError, ExportError, OSError, ValueError)


def _study(a) -> int:
    try:
        schemes = [scheme_named(n.strip()).name for n in a.schemes.split(",") if n.strip()]
        res = int8_cost(a.heads, a.work, a.glue_dir, a.max_rows, a.speed_s, a.batch_size, schemes=schemes)
    except _expected_errors() as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "int8-accuracy.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "int8-accuracy.md").write_text(markdown(res))
    print(f"wrote {a.out / 'int8-accuracy.md'}")
    return 0


def main(argv=None) -> int:
    return _study(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
