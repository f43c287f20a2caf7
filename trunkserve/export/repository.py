"""Writes the Triton model repository: tokenizer, trunk, heads, head groups and the ensembles (``ensembles``).

The layout and what each config says are the core contract's
(``trunkserve.deployment``: ``layout`` names the folders, ``params`` gives each
model's parameters); this module exports the graphs, validates them against
PyTorch and writes the models, then swaps the whole repository in.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from trunkserve.artifacts import HeadMeta, load_head, read_canary, read_meta, save_head
from trunkserve.backbone import Backbone, load_backbone
from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_MAX_SEQ_LEN
from trunkserve.deployment.layout import LABELS_FILE, MODEL_FILES, PYTHON_ORT, TOKENIZER, TRUNK, VERSION, head_model_name
from trunkserve.deployment.params import GroupParams, HeadEntry, TokenizerParams, TrunkInfo
from trunkserve.deployment.reader import read_heads
from trunkserve.fingerprint import trunk_fingerprint
from trunkserve.modules import REGRESSION, Head, HeadGraph, Trunk
from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN, TOKEN_INPUTS, GraphSpec, head_spec, hidden_name, tokenizer_spec
from trunkserve.tokenization import BucketTokenizer

from . import configs, quality
from .configs import ServingOptions
from .ensembles import head_steps, write_multitask_ensemble, write_task_ensemble
from .errors import RepositoryError
from .fit import check_depths, check_head_fits, head_entry, trunk_depths
from .head_groups import multitask_groups, write_group_model
from .onnx_export import export_head, export_trunk
from .shims import ONNX_MODEL, TOKENIZER_MODEL, write_shim
from .validate import ValidationReport, compare_with_torch, sentence_feeds

# re-exported for the tests that import them from here
__all__ = ["HeadEntry", "TrunkInfo", "build_repository", "head_model_name", "hidden_feeds", "read_build_info",
           "scan_heads", "trunk_depths"]

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


# ---------------------------------------------------------------- writers


def write_tokenizer_model(repo: Path, backbone: Backbone, opts: ServingOptions, params: TokenizerParams) -> Path:
    folder = repo / TOKENIZER
    tok_dir = folder / VERSION / params.tokenizer_dir
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (backbone.path / name).exists():
            shutil.copy2(backbone.path / name, tok_dir / name)
    configs.write_config(folder, configs.tokenizer_config(tokenizer_spec(), opts, params))
    write_shim(folder / VERSION, TOKENIZER_MODEL)
    return folder


def _graph_model(folder: Path, spec: GraphSpec, opts: ServingOptions, instances: int, params: dict, labelled=()):
    configs.write_config(folder, configs.graph_config(spec, opts, instances, params, labelled))
    if opts.backend == PYTHON_ORT:
        write_shim(folder / VERSION, ONNX_MODEL)


def write_trunk_model(
    repo: Path, trunk: Trunk, info: TrunkInfo, opts: ServingOptions, tokenizer: BucketTokenizer
) -> ValidationReport:
    folder = repo / TRUNK
    onnx_path = folder / VERSION / MODEL_FILES[PYTHON_ORT]
    spec = export_trunk(trunk, onnx_path)
    report = compare_with_torch(onnx_path, spec, trunk, sentence_feeds(tokenizer))
    _graph_model(folder, spec, opts, opts.trunk_instances, info.parameters())
    return report


def hidden_feeds(trunk: Trunk, tokenizer: BucketTokenizer, depth: int) -> dict[str, np.ndarray]:
    """Real trunk outputs on the validation sentences, as feeds for a head graph."""
    feeds = sentence_feeds(tokenizer)
    with torch.no_grad():
        outs = trunk(*[torch.from_numpy(feeds[n]) for n in TOKEN_INPUTS])
    return {HEAD_HIDDEN: outs[trunk.depths.index(depth)].numpy(), ATTENTION_MASK: feeds[ATTENTION_MASK]}


#: Optional pre-exported head graph inside an artefact; validated and served instead of re-exporting.
HEAD_ONNX = "head.onnx"


@dataclass
class Artefact:
    """A head folder read once (head.json, weights, canary, optional ``head.onnx``): later steps use this, not the disk."""

    folder: Path
    head: Head
    meta: HeadMeta
    canary: dict | None = None
    graph: bytes | None = None  # the artefact's own head.onnx, served instead of a fresh export


def load_artefact(head_dir: str | Path, with_graph: bool = False) -> Artefact:
    """Read a head folder; ``with_graph`` takes its ``head.onnx`` too (hot-add serves it; ``build`` exports afresh)."""
    folder = Path(head_dir)
    head, meta = load_head(folder)
    supplied = folder / HEAD_ONNX
    graph = supplied.read_bytes() if with_graph and supplied.exists() else None
    return Artefact(folder, head, meta, read_canary(folder), graph)


def write_head_model(
    repo: Path,
    loaded: Artefact,
    info: TrunkInfo,
    opts: ServingOptions,
    feeds: Mapping[int, dict[str, np.ndarray]],
    version: str = VERSION,
    write_config: bool = True,
) -> tuple[HeadEntry, ValidationReport]:
    """Export one head (or write its pre-exported graph) into ``repo/head_<task>/<version>/``, validated against PyTorch.

    ``feeds`` maps each trunk depth to real trunk outputs (see ``hidden_feeds``).
    Everything written comes from ``loaded``: the artefact's folder is not read again.
    The version folder also holds the head artefact itself (head.json, weights, canary):
    its head group's graph is rebuilt from it when another member changes.
    """
    head, meta = loaded.head, loaded.meta
    check_head_fits(meta, info)
    folder = repo / head_model_name(meta.task)
    onnx_path = folder / version / MODEL_FILES[PYTHON_ORT]
    if loaded.graph is None:
        spec = export_head(head, meta.task, onnx_path)
    else:
        spec = head_spec(meta.task, meta.task_type, meta.num_labels, info.hidden_size)
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        onnx_path.write_bytes(loaded.graph)
    report = compare_with_torch(onnx_path, spec, HeadGraph(head, served=False), feeds[meta.branch_layer])
    save_head(folder / version, head, meta, loaded.canary)
    entry = head_entry(meta)
    if write_config:
        labelled = [] if meta.task_type == REGRESSION else [o.name for o in spec.outputs]
        (folder / LABELS_FILE).write_text("\n".join(meta.labels) + "\n")
        _graph_model(folder, spec, opts, opts.head_instances, entry.parameters(), labelled)
    elif opts.backend == PYTHON_ORT:
        write_shim(folder / version, ONNX_MODEL)
    return entry, report


def scan_heads(repo: str | Path) -> list[HeadEntry]:
    """Heads present in the repository folder, sorted by task name."""
    return [h.entry for h in read_heads(repo).values()]


# ---------------------------------------------------------------- whole repository


@dataclass
class BuildResult:
    repo: Path
    trunk: TrunkInfo
    heads: list[HeadEntry]
    reports: list[ValidationReport]
    quality: list[str] = field(default_factory=list)  # per head: recorded scores, gate, and "shipped anyway" notes


def make_trunk(backbone: Backbone, depths: Sequence[int], max_seq_len: int) -> tuple[Trunk, TrunkInfo]:
    trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, depths).freeze()
    files = backbone.tokenizer_files()
    info = TrunkInfo(
        depths=trunk.depths,
        fingerprints={d: trunk_fingerprint(backbone.state_dict, d, files) for d in trunk.depths},
        hidden_size=backbone.config.hidden_size,
        max_seq_len=max_seq_len,
        backbone=backbone.name,
    )
    return trunk, info


def build_repository(
    heads: Sequence[str | Path],
    out: str | Path = "model_repository",
    backbone: str | Path | None = None,
    depths: Sequence[int] | None = None,
    options: ServingOptions | None = None,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    force: bool = False,
) -> BuildResult:
    """Build a complete repository in a staging folder, then swap it into ``out``.

    Every graph is validated against PyTorch before anything replaces ``out``,
    so a failed build leaves the previous repository as it was. ``depths=None``
    exposes the ``DEFAULT_DEPTHS`` the backbone has layers for plus every depth
    the given heads read (``trunk_depths``, checked by ``check_depths``). A head
    whose training failed its quality gate is refused (``FailedQualityGate``,
    before any export) unless ``force``, as ``add-head`` does.
    """
    opts = options or ServingOptions()
    if not heads:
        raise RepositoryError("no head folders given")
    gate = quality_lines(heads, force)
    out = Path(out).resolve()
    bb = load_backbone(backbone)
    chosen = trunk_depths(heads, bb.config.num_hidden_layers) if depths is None else depths
    trunk, info = make_trunk(bb, check_depths(chosen, heads, bb, given=depths is not None), max_seq_len)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        entries, reports = _write_models(staging, bb, trunk, info, heads, opts, TokenizerParams(max_length=max_seq_len, buckets=buckets))
        _write_readme(staging, info, entries, opts)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(out, info, entries, reports, gate)


def _write_models(staging: Path, bb: Backbone, trunk: Trunk, info: TrunkInfo, heads: Sequence[str | Path],
                  opts: ServingOptions, params: TokenizerParams) -> tuple[list[HeadEntry], list[ValidationReport]]:
    """Every model of the repository into ``staging``: trunk and tokenizer, each head with its ensemble, ``multitask``."""
    tokenizer = BucketTokenizer(bb.path, max_length=params.max_length, buckets=params.buckets)
    reports = [write_trunk_model(staging, trunk, info, opts, tokenizer)]
    write_tokenizer_model(staging, bb, opts, params)
    entries, labels = [], {}
    feeds = {d: hidden_feeds(trunk, tokenizer, d) for d in info.depths}
    for head_dir in heads:
        artefact = load_artefact(head_dir)
        entry, report = write_head_model(staging, artefact, info, opts, feeds)
        if entry.task in labels:
            raise RepositoryError(f"two head folders for task {entry.task!r}")
        entries.append(entry)
        reports.append(report)
        labels[entry.task] = artefact.meta.labels
        write_task_ensemble(staging, entry.task, entry.task_type, artefact.meta.labels, head_steps(entry), opts)
    groups = multitask_groups(entries, opts)
    by_task = {e.task: e for e in entries}
    for tasks in (groups or {}).values():
        group = GroupParams(tuple(tasks), by_task[tasks[0]].branch_layer, by_task[tasks[0]].num_layers)
        folders = [staging / head_model_name(t) / VERSION for t in tasks]
        reports.append(write_group_model(staging, group, folders, opts, feeds[group.branch_layer]))
    write_multitask_ensemble(staging, opts, entries, labels, groups)
    return entries, reports


def quality_lines(heads: Sequence[str | Path], force: bool = False) -> list[str]:
    """Every head's recorded scores (``quality.describe``); a failed gate refuses the set unless ``force``."""
    lines = []
    for h in heads:
        meta = read_meta(h)
        note = quality.check_gate(meta, force)
        lines.append(quality.describe(meta) + (f"\nnote: {note}" if note else ""))
    return lines


def _swap_in(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_readme(repo: Path, info: TrunkInfo, entries: Sequence[HeadEntry], opts: ServingOptions) -> None:
    lines = [
        "# model_repository (generated by `python -m trunkserve.export build`; do not edit by hand)",
        "",
        f"backend: {opts.backend}; trunk depths {list(info.depths)}; fingerprints {info.fingerprints}",
        "",
        "| model | what |",
        "|---|---|",
        "| tokenizer | text/text_pair -> token ids (Python backend) |",
        "| trunk | frozen embeddings + bottom layers -> hidden states |",
    ]
    for e in entries:
        lines.append(f"| {head_model_name(e.task)} | {e.task_type} head on {hidden_name(e.branch_layer)} |")
        lines.append(f"| {e.task} | ensemble tokenizer -> trunk -> {head_model_name(e.task)} |")
    groups = multitask_groups(entries, opts)
    for name, tasks in (groups or {}).items():
        lines.append(f"| {name} | head group: {', '.join(tasks)} as one graph |")
    through = "every head group" if groups is not None else "every head"
    lines.append(f"| multitask | ensemble: one trunk pass feeds {through} |")
    (repo / "README.md").write_text("\n".join(lines) + "\n")


def read_build_info(repo: str | Path) -> dict:
    repo = Path(repo)
    info = TrunkInfo.read(repo)
    return {"trunk": info.parameters(), "quantisation": info.quantisation or "none (float32 graphs)",
            "heads": [e.__dict__ for e in scan_heads(repo)]}


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
