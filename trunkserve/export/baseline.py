"""The single-task-serving repository: what a user runs without the trunk/head split.

For the same tasks as a merged repository, one *full* model per task (embeddings
+ all encoder layers + pooler + classifier, one ONNX graph), each behind its own
``tokenizer -> model_<task>`` ensemble, plus a ``multitask`` ensemble that sends
each input to every full model. Ensemble names and outputs match the merged
repository (``<task>``, ``multitask``, ``<task>_probabilities`` ...), so the same
client and load test run against either; only the cost differs.

The weights are the pre-trained encoder with a fresh classifier: for cost only
shapes matter. The tokenizer model is shared by every ensemble, which favours
this baseline (a user running N separate deployments would tokenize N times).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trunkserve.artifacts import check_task_name, read_meta
from trunkserve.backbone import Backbone, load_backbone
from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_MAX_SEQ_LEN, ONNX_OPSET
from trunkserve.deployment.layout import MULTITASK, VERSION
from trunkserve.deployment.params import TokenizerParams
from trunkserve.modules import CLASSIFICATION, REGRESSION, FullGraph, FullModel
from trunkserve.specs import TOKEN_INPUTS, GraphSpec, head_output_specs, tokenizer_spec, _ids

from . import configs
from .configs import LABELS_FILE, MODEL_FILES, PYTHON_ORT, ServingOptions, Step
from .errors import RepositoryError
from .ensembles import atomic_write, task_outputs, tokenizer_step, truncated_output, write_task_ensemble
from .onnx_export import _example_ids, _export
from .repository import _swap_in, write_tokenizer_model
from .shims import ONNX_MODEL, write_shim

BASELINE_KIND = "single-task"


def full_model_name(task: str) -> str:
    return f"model_{task}"


@dataclass(frozen=True)
class TaskSpec:
    """A task as the baseline needs it: name, type and labels (``["score"]`` for regression)."""

    task: str
    task_type: str = CLASSIFICATION
    labels: tuple[str, ...] = ("negative", "positive")

    def __post_init__(self):
        check_task_name(self.task)
        if self.task_type == REGRESSION:
            object.__setattr__(self, "labels", ("score",))
        elif len(self.labels) < 1:
            raise RepositoryError(f"task {self.task!r} has no labels")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @classmethod
    def from_head_dir(cls, folder: str | Path) -> "TaskSpec":
        meta = read_meta(folder)
        return cls(meta.task, meta.task_type, tuple(meta.labels))


def full_model_spec(spec: TaskSpec) -> GraphSpec:
    return GraphSpec(
        name=full_model_name(spec.task),
        inputs=tuple(_ids(n) for n in TOKEN_INPUTS),
        outputs=head_output_specs(spec.task_type, spec.num_labels),
    )


def make_full_model(backbone: Backbone, spec: TaskSpec, seed: int = 0) -> FullGraph:
    """The full model as served (``trunkserve.modules.FullModel.serving_outputs``), ready to export."""
    model = FullModel.from_backbone(backbone.config, backbone.state_dict, spec.num_labels, spec.task_type, seed=seed)
    model.trunk.freeze()
    return FullGraph(model).eval()


def export_full_model(model: FullGraph, spec: TaskSpec, path: str | Path, opset: int = ONNX_OPSET) -> GraphSpec:
    gspec = full_model_spec(spec)
    ex = _example_ids(gspec)
    _export(model, tuple(ex[n] for n in TOKEN_INPUTS), gspec, Path(path), opset)
    return gspec


def _model_step(spec: TaskSpec, prefix: str) -> Step:
    return Step(
        full_model_name(spec.task),
        {n: n for n in TOKEN_INPUTS},
        {o.name: f"{prefix}{o.name}" for o in head_output_specs(spec.task_type, spec.num_labels)},
    )


def write_full_model(repo: Path, backbone: Backbone, spec: TaskSpec, opts: ServingOptions, seed: int) -> int:
    """Export ``model_<task>`` and its config; returns the ONNX file size in bytes."""
    folder = repo / full_model_name(spec.task)
    onnx_path = folder / VERSION / MODEL_FILES[PYTHON_ORT]
    gspec = export_full_model(make_full_model(backbone, spec, seed), spec, onnx_path)
    labelled = [] if spec.task_type == REGRESSION else [o.name for o in gspec.outputs]
    if labelled:
        (folder / LABELS_FILE).write_text("\n".join(spec.labels) + "\n")
    params = {"task_type": spec.task_type, "num_labels": spec.num_labels, "deployment": BASELINE_KIND}
    configs.write_config(folder, configs.graph_config(gspec, opts, opts.trunk_instances, params, labelled, "trunk"))
    if opts.backend == PYTHON_ORT:
        write_shim(folder / VERSION, ONNX_MODEL)
    return onnx_path.stat().st_size


def write_fanout_ensemble(repo: Path, specs: Sequence[TaskSpec], opts: ServingOptions) -> Path:
    """``multitask``: tokenize once, run every full model on the same ids."""
    folder = repo / MULTITASK
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    outputs = [truncated_output()]
    for s in specs:
        outputs += task_outputs(s.task_type, s.num_labels, f"{s.task}_", f"{s.task}_{LABELS_FILE}")
        if s.task_type != REGRESSION:
            atomic_write(folder / f"{s.task}_{LABELS_FILE}", "\n".join(s.labels) + "\n")
    steps = [tokenizer_step(), *(_model_step(s, f"{s.task}_") for s in specs)]
    cfg = configs.ensemble_config(MULTITASK, tokenizer_spec().inputs, outputs, steps, opts.max_batch_size)
    configs.write_config(folder, cfg)
    return folder


@dataclass
class BaselineResult:
    repo: Path
    tasks: list[TaskSpec]
    model_bytes: int


def build_baseline_repository(
    tasks: Sequence[TaskSpec | str | Path],
    out: str | Path = "baseline_repository",
    backbone: str | Path | Backbone | None = None,
    options: ServingOptions | None = None,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
) -> BaselineResult:
    """Write the single-task repository for ``tasks`` (specs or head folders), swapped in atomically.

    ``options.trunk_instances`` sets each full model's instance count (a full
    model plays the trunk's role: it is the one big graph per request).
    """
    opts = options or ServingOptions()
    specs = [t if isinstance(t, TaskSpec) else TaskSpec.from_head_dir(t) for t in tasks]
    if not specs:
        raise RepositoryError("no tasks given")
    names = [s.task for s in specs]
    if len(set(names)) != len(names):
        raise RepositoryError(f"duplicate tasks in {names}")
    bb = backbone if isinstance(backbone, Backbone) else load_backbone(backbone)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        write_tokenizer_model(staging, bb, opts, TokenizerParams(max_length=max_seq_len, buckets=buckets))
        size = 0
        for i, spec in enumerate(specs):
            size += write_full_model(staging, bb, spec, opts, seed=i)
            write_task_ensemble(staging, spec.task, spec.task_type, spec.labels, [_model_step(spec, "")], opts)
        write_fanout_ensemble(staging, specs, opts)
        (staging / "README.md").write_text(
            "# single-task baseline repository (python -m trunkserve.export baseline; do not edit by hand)\n\n"
            f"One full {bb.config.num_hidden_layers}-layer model per task: {', '.join(names)}; "
            "`multitask` tokenizes once and runs every full model.\n"
        )
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BaselineResult(out, specs, size)
