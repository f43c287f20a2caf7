"""Head groups to ONNX: which heads share a graph, its export, and its check against each head.

A group is every head of one branch depth and layer count (``trunkserve.head_group``),
exported as one graph whose outputs carry the ``multitask`` ensemble's names
(``<task>_logits``, ...). Validation holds each task's outputs to that head's own
PyTorch ``serving_outputs(served=False)`` (the per-head graphs' reference), so a
group graph is as correct as the per-head graphs it replaces.

In a repository a group is the Triton model ``heads_d<k>`` (``write_group_model``):
``multitask`` runs one step per group, and the operations rebuild a group's graph
from its members' head version folders (each a full head artefact) as a new version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch

from trunkserve.defaults import ONNX_OPSET
from trunkserve.deployment.layout import MODEL_FILES, PYTHON_ORT, TENSORRT, VERSION, group_model_name
from trunkserve.deployment.params import GroupParams, ServingOptions
from trunkserve.head_group import HeadGroup, load_group
from trunkserve.modules import Head
from trunkserve.specs import HEAD_HIDDEN, GraphSpec, head_group_spec

from . import configs
from .errors import GraphMismatchError, RepositoryError
from .onnx_export import _EXAMPLE_BATCH, _EXAMPLE_SEQ, _export
from .shims import ONNX_MODEL, write_shim
from .validate import VALIDATION_ATOL, ValidationReport, compare_with_torch


class GroupMember(Protocol):
    """What grouping reads of a head (``HeadMeta`` has it)."""

    task: str
    branch_layer: int
    num_layers: int


#: The group model's name (``heads_d3``, ``heads_d3_l2``), spelled by the repository contract.
group_name = group_model_name


def group_heads(entries: Sequence[GroupMember]) -> dict[str, list[str]]:
    """``{group name: [tasks]}``, grouped by (branch depth, num_layers), names and tasks sorted."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(group_name(e.branch_layer, e.num_layers), []).append(e.task)
    clash = sorted(set(groups) & {e.task for e in entries})
    if clash:
        raise RepositoryError(f"task name(s) {clash} are head-group model names; rename the task(s)")
    for tasks in groups.values():
        if len(set(tasks)) != len(tasks):
            raise RepositoryError(f"a task appears twice among the heads: {sorted(tasks)}")
    return {name: sorted(groups[name]) for name in sorted(groups)}


def export_head_group(group: HeadGroup, name: str, path: str | Path, opset: int = ONNX_OPSET) -> GraphSpec:
    """Write the group's graph (dynamic batch and sequence axes); returns its spec."""
    spec = group.spec(name)
    hidden = torch.randn(_EXAMPLE_BATCH, _EXAMPLE_SEQ, group.config.hidden_size)
    mask = torch.ones(_EXAMPLE_BATCH, _EXAMPLE_SEQ, dtype=torch.int64)
    mask[1, _EXAMPLE_SEQ // 2 :] = 0
    _export(group, (hidden, mask), spec, Path(path), opset)
    return spec


def _per_head_reference(heads: Sequence[Head]):
    """Each head's plain PyTorch outputs (``served=False``), in the group spec's order."""

    def reference(hidden_states, attention_mask):
        return tuple(o for h in heads for o in h.eval().serving_outputs(hidden_states, attention_mask, served=False))

    return reference


def validate_head_group(
    path: str | Path,
    spec: GraphSpec,
    heads: Mapping[str, Head],
    feeds: Mapping[str, np.ndarray],
    atol: float = VALIDATION_ATOL,
) -> ValidationReport:
    """Run the group graph on ``feeds`` (hidden_states, attention_mask) against each head's own PyTorch outputs.

    Raises ``GraphMismatchError`` naming the first output (``<task>_<output>``) over ``atol``.
    """
    members = [(task, head.task_type, head.num_labels) for task, head in heads.items()]
    want = head_group_spec(spec.name, members, spec.tensor(HEAD_HIDDEN).axes[-1]).output_names
    if want != spec.output_names:
        raise GraphMismatchError(
            f"{spec.name}: outputs {spec.output_names} are not those of heads {list(heads)} ({want})"
        )
    return compare_with_torch(path, spec, _per_head_reference(list(heads.values())), feeds, atol)


def group_outputs(path: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The group graph's outputs by name, e.g. for ``inspection.compare_canary(got, canary, "<task>_")``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


def export_group_from_folders(
    folders: Sequence[str | Path], path: str | Path, feeds: Mapping[str, np.ndarray], name: str | None = None
) -> tuple[GraphSpec, ValidationReport]:
    """Load head folders of one depth and layer count, export their group to ``path`` and validate it.

    ``feeds``: real trunk outputs at the group's depth (``repository.hidden_feeds``);
    ``name`` defaults to ``group_name(depth, num_layers)``.
    """
    loaded = load_group(folders)
    name = name or group_name(loaded.depth, loaded.num_layers)
    spec = export_head_group(loaded.group, name, path)
    return spec, validate_head_group(path, spec, loaded.heads, feeds)


def write_group_model(repo: str | Path, group: GroupParams, folders: Sequence[str | Path], opts: ServingOptions,
                      feeds: Mapping[str, np.ndarray], version: str = VERSION) -> ValidationReport:
    """Export ``group`` from its members' head artefacts (``folders``, in ``group.tasks`` order) into
    ``repo/<group>/<version>/``, validated against each head's PyTorch outputs, and write its config.

    ``feeds``: real trunk outputs at the group's depth. The config lists the members (``GroupParams``);
    every version of a group shares it, so a rebuild with other members rewrites it.
    """
    folder = Path(repo) / group.name
    spec, report = export_group_from_folders(folders, folder / version / MODEL_FILES[PYTHON_ORT], feeds, group.name)
    read = list(dict.fromkeys(n.rsplit("_", 1)[0] for n in spec.output_names))
    if read != list(group.tasks):
        raise RepositoryError(f"{group.name}: the head folders hold tasks {read}, the group's members are {list(group.tasks)}")
    configs.write_config(folder, configs.graph_config(spec, opts, opts.head_instances, group.parameters()))
    if opts.backend == PYTHON_ORT:
        write_shim(folder / version, ONNX_MODEL)
    return report


def multitask_groups(entries: Sequence[GroupMember], opts: ServingOptions) -> dict[str, list[str]] | None:
    """The head groups ``multitask`` routes through (``group_heads``), or None where it keeps one step per head:
    TensorRT repositories, whose engines are built per head for now (``export.tensorrt``)."""
    return None if opts.backend == TENSORRT else group_heads(entries)
