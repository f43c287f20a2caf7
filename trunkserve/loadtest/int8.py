"""What int8 dynamic quantisation costs in accuracy, and what it buys in speed, on the GLUE dev sets.

    python -m trunkserve.loadtest.int8 --heads artifacts/report-heads5 --work /tmp/trunkserve-int8 --out reports
    python -m trunkserve.loadtest.int8 --quantise model_repository --into model_repository_int8 [--scheme NAME]   # opt in

Why: int8 roughly halves the CPU per input of the merged graphs (``loadtest/tuning.py``),
but it changes outputs, so it may only become a default once its cost on the dev sets
is known. This builds a repository from trained heads (float32, as exported and
validated), makes one quantised copy per scheme (``SCHEMES``: which graphs, which
operators, per-tensor or per-column scales; ONNX Runtime's dynamic int8), then scores
every variant with the same in-process pipeline the serving benchmark uses (bucketing
tokenizer -> trunk -> every head) on each task's dev set, and times each at the same
batch size.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import LoadTestError


@dataclass(frozen=True)
class QuantScheme:
    """Which graphs and operators are quantised, and how.

    Why several: per-tensor int8 of every graph (ONNX Runtime's default) costs points on the
    GLUE dev sets (reports/int8-accuracy.md compares them all). ``matmul_only`` leaves the embedding tables (``Gather``) in float32: quantising
    them saves disk, not time. ``per_channel`` gives each weight column its own scale, so one
    large column no longer coarsens the rest. ``trunk_only`` keeps each task's own layers
    exact while the trunk, most of the work, still runs in int8.
    """

    name: str
    per_channel: bool = False
    trunk_only: bool = False
    matmul_only: bool = False

    def describe(self) -> str:
        graphs = "the trunk only (heads stay float32)" if self.trunk_only else "every graph (trunk and heads)"
        ops = "MatMul only (embedding tables stay float32)" if self.matmul_only else "every operator ORT quantises (embedding tables too)"
        scales = "one scale per weight column" if self.per_channel else "one scale per weight tensor"
        return f"{graphs}; {ops}; {scales}"


SCHEMES = {s.name: s for s in (
    QuantScheme("int8"),
    QuantScheme("int8-matmul", matmul_only=True),
    QuantScheme("int8-matmul-per-channel", matmul_only=True, per_channel=True),
    QuantScheme("int8-trunk-matmul-per-channel", matmul_only=True, per_channel=True, trunk_only=True),
)}
#: For ``--quantise``: the scheme that kept the study's dev scores (-0.11 on average, reports/int8-accuracy.md).
DEFAULT_SCHEME = "int8-matmul-per-channel"


@dataclass
class Variant:
    name: str
    scores: dict[str, float]  # task -> GLUE dev score x 100 (headline split)
    metrics: dict[str, dict]
    inputs_per_s: float
    cpu_s_per_input: float
    model_mb: float


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


def _only(pipeline, task: str):
    """A view of ``pipeline`` that runs one head (the others' dev sets are scored separately)."""
    import copy

    view = copy.copy(pipeline)
    view.heads = [(e, r) for e, r in pipeline.heads if e.task == task]
    return view


def scheme_named(name: str) -> QuantScheme:
    if name not in SCHEMES:
        raise LoadTestError(f"unknown quantisation scheme {name!r}; known: {', '.join(SCHEMES)}")
    return SCHEMES[name]


class TargetNotEmpty(LoadTestError):
    """``--into`` holds something this command did not write: replacing it would lose it (``--overwrite`` to insist)."""


def earlier_output(dest: Path) -> str:
    """The scheme recorded by an earlier ``--quantise`` run at ``dest``, or ``""``.

    Why the trunk's config and no marker file of our own: ``mark_quantised`` records the
    scheme there, only this command writes it, and hot-add or swap on the copy keep it.
    """
    from trunkserve.export.errors import ExportError
    from trunkserve.export.quantised import trunk_quantisation

    try:
        return trunk_quantisation(dest)
    except (ExportError, OSError, ValueError):  # no trunk, or not a repository at all
        return ""


def check_target(repo: Path, dest: Path, overwrite: bool = False) -> None:
    """Refuse a ``dest`` whose replacement would lose data, before anything is written.

    An empty or missing folder, or an earlier output of this command, is replaced; any other
    content only with ``overwrite``. A target inside the source, or the source inside the
    target, is refused even then: the copy would recurse, or the swap would delete the source.
    """
    repo, dest = repo.resolve(), dest.resolve()
    if dest == repo:
        raise LoadTestError(f"--into {dest} is the repository itself: it must differ (the float32 graphs are kept)")
    if repo in dest.parents:
        raise LoadTestError(f"--into {dest} is inside the repository {repo}: the copy would contain itself")
    if dest in repo.parents:
        raise LoadTestError(f"--into {dest} holds the repository {repo}: replacing it would delete the source")
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        raise TargetNotEmpty(f"--into {dest} exists and is not a folder: refusing to replace it")
    if overwrite or not any(dest.iterdir()) or earlier_output(dest):
        return
    raise TargetNotEmpty(
        f"--into {dest} is not empty and is not an earlier output of --quantise (its trunk records no "
        "quantisation scheme): refusing to replace it; choose another folder, or pass --overwrite to replace it"
    )


def _copy_source(repo: Path, staging: Path) -> None:
    """Copy ``repo`` into the (empty) staging folder, under the source's lock so no hot-add is copied halfway.

    A read-only source cannot take the lock file, nor a hot-add: it is copied without.
    """
    from trunkserve.export.repo_lock import LOCK_FILE, RepositoryLock

    lock = RepositoryLock(repo, "quantise (copying)")
    try:
        lock.acquire()
    except PermissionError:
        lock = None
    try:
        shutil.copytree(repo, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK_FILE))
    finally:
        if lock is not None:
            lock.release()


def _quantise_in_place(repo: Path, how: QuantScheme) -> None:
    """Keep the float32 trunk, quantise the graphs, record the scheme, rederive the canaries."""
    from trunkserve.export import quantised
    from trunkserve.export.repository import TRUNK

    from . import tuning

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns once per graph about optional pre-processing
    try:
        quantised.keep_float32_trunk(repo)
        tuning.tune_repository(repo, fuse=False, quantize=True, per_channel=how.per_channel,
                               models=(TRUNK,) if how.trunk_only else None, op_types=("MatMul",) if how.matmul_only else None)
    finally:
        root.setLevel(level)
    quantised.mark_quantised(repo, how.name)
    quantised.rederive_canaries(repo, how.name)


def _move_into_place(staging: Path, dest: Path) -> None:
    """Replace ``dest`` by the finished ``staging`` folder; if that fails, put the old ``dest`` back."""
    old = None
    if dest.exists():
        old = dest.with_name(f"{staging.name.replace('.staging-', '.old-', 1)}")
        dest.rename(old)
    try:
        staging.rename(dest)
    except BaseException:
        if old is not None:
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def quantised_copy(repo: Path, dest: Path, scheme: str = DEFAULT_SCHEME, overwrite: bool = False) -> Path:
    """A copy of ``repo`` at ``dest`` whose graphs are quantised by ``scheme`` (see ``SCHEMES``).

    The copy stays open to hot-add and swap (``export.quantised``): it keeps the float32 trunk
    for checking new heads, records the scheme, and its canaries come from its own graphs.
    It is built in a staging folder beside ``dest`` and moved into place only when complete,
    so a failed run leaves no servable half-copy and ``dest`` as it was. What ``dest`` may
    already hold: see ``check_target``.
    """
    from trunkserve.export.quantised import trunk_quantisation

    how = scheme_named(scheme)  # before anything is written
    repo, dest = Path(repo).resolve(), Path(dest).resolve()
    check_target(repo, dest, overwrite)
    already = trunk_quantisation(repo)
    if already:  # its trunk is no float32 reference any more
        raise LoadTestError(f"{repo} is already quantised ({already}): quantise its float32 source instead")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        _copy_source(repo, staging)
        _quantise_in_place(staging, how)
        _move_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


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

    pipeline = MergedPipeline(repo)
    scores, metrics = dev_scores(pipeline, glue_dir, max_rows)
    speed = measure(pipeline, load_corpus(None), batch_size, speed_s)
    return Variant(name, scores, metrics, speed.inputs_per_s, speed.cpu_s_per_input, round(model_bytes(repo) / 1e6, 1))


def int8_cost(heads: Sequence[Path], work: Path, glue_dir=None, max_rows: int | None = None, speed_s: float = 8.0,
              batch_size: int = 16, log=print, schemes: Sequence[str] = (DEFAULT_SCHEME,)) -> dict:
    from trunkserve.export.cli import head_folders
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
        "| variant | inputs/s | CPU s / input | model MB on disk |", "|---|---|---|---|",
        *(f"| {v['name']} | {v['inputs_per_s']} | {v['cpu_s_per_input']} | {v['model_mb']} |" for v in res["variants"]), "",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trunkserve.loadtest.int8", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--heads", type=Path, nargs="+", default=None,
                   help="the study: trained head folders, or folders of them")
    p.add_argument("--quantise", type=Path, default=None, metavar="REPO",
                   help="instead of the study: write an int8 copy of this built repository to --into")
    p.add_argument("--into", type=Path, default=None, metavar="DIR",
                   help="with --quantise: where the copy goes (empty, missing, or an earlier --quantise output)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --quantise: replace --into even if it holds something other than an earlier int8 copy")
    p.add_argument("--scheme", default=DEFAULT_SCHEME, choices=list(SCHEMES), help="with --quantise: which graphs, and how")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="the study: comma-separated schemes to compare with float32")
    p.add_argument("--work", type=Path, default=Path("/tmp/trunkserve-int8"),
                   help="the study: where the float32 repository and its quantised copies are built")
    p.add_argument("--glue-dir", type=Path, default=None, help="the study: GLUE folder; None: $GLUE_DIR, else ../shared/glue")
    p.add_argument("--max-rows", type=int, default=None, help="the study: score only the first N dev rows per task; None: all")
    p.add_argument("--speed-s", type=float, default=8.0, help="the study: seconds of in-process timing per variant")
    p.add_argument("--batch-size", type=int, default=16, help="the study: batch size of the timing")
    p.add_argument("--out", type=Path, default=Path("reports"), help="the study: folder for int8-accuracy.json and .md")
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a run can fail with that is the caller's to fix: said in one line, exit 2, no traceback."""
    from trunkserve.export.errors import ExportError

    return (LoadTestError, ExportError, OSError, ValueError)


def _quantise(a) -> int:
    try:
        quantised_copy(a.quantise, a.into, a.scheme, overwrite=a.overwrite)
    except _expected_errors() as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {a.into} ({a.scheme}: {SCHEMES[a.scheme].describe()}; accuracy cost: reports/int8-accuracy.md)")
    return 0


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
    p = _parser()
    a = p.parse_args(argv)
    if a.quantise:
        if not a.into:
            p.error("--quantise needs --into")
        if a.into.resolve() == a.quantise.resolve():
            p.error("--into must differ from the repository (the float32 graphs are kept)")
        return _quantise(a)
    if not a.heads:
        p.error("give --heads (the study) or --quantise REPO --into DEST")
    return _study(a)


if __name__ == "__main__":
    sys.exit(main())
