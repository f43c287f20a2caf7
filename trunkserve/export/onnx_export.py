"""PyTorch -> ONNX for the trunk and for each head, names and axes from ``trunkserve.specs``."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from trunkserve.defaults import ONNX_OPSET
from trunkserve.modules import Head, HeadGraph, Trunk, TrunkGraph
from trunkserve.specs import GraphSpec, head_spec, trunk_spec

_EXAMPLE_BATCH, _EXAMPLE_SEQ = 2, 16


def _example_ids(spec: GraphSpec) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 1000, (_EXAMPLE_BATCH, _EXAMPLE_SEQ), dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, _EXAMPLE_SEQ // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _export(module: torch.nn.Module, args: tuple, spec: GraphSpec, path: Path, opset: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.onnx_dynamic_axes(),
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return path


def export_trunk(trunk: Trunk, path: str | Path, opset: int = ONNX_OPSET) -> GraphSpec:
    """Write the served trunk graph (``TrunkGraph``: padding skipped); returns its spec (inputs: token ids, outputs: ``hidden_<d>``)."""
    spec = trunk_spec(trunk.depths, trunk.config.hidden_size)
    ex = _example_ids(spec)
    _export(TrunkGraph(trunk), (ex["input_ids"], ex["attention_mask"], ex["token_type_ids"]), spec, Path(path), opset)
    return spec


def export_head(head: Head, task: str, path: str | Path, opset: int = ONNX_OPSET) -> GraphSpec:
    """Write a head graph: (hidden_states, attention_mask) -> logits+probabilities or score."""
    spec = head_spec(task, head.task_type, head.num_labels, head.config.hidden_size)
    hidden = torch.randn(_EXAMPLE_BATCH, _EXAMPLE_SEQ, head.config.hidden_size)
    mask = torch.ones(_EXAMPLE_BATCH, _EXAMPLE_SEQ, dtype=torch.int64)
    _export(HeadGraph(head), (hidden, mask), spec, Path(path), opset)
    return spec
