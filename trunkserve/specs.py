"""One declarative spec per graph: tensor names, dtypes and axes for ONNX and Triton alike.

In the spirit of optimum's ``OnnxConfig``: the exporter takes input/output names
and dynamic axes from here, the config writer takes Triton names, data types and
dims from the same objects, and validation checks exported graphs against them.
Nothing else in the bundle spells a tensor name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

BATCH = "batch"
SEQUENCE = "sequence"

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
TOKEN_INPUTS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)
HEAD_HIDDEN = "hidden_states"
LOGITS = "logits"
PROBABILITIES = "probabilities"
SCORE = "score"
TEXT = "text"
TEXT_PAIR = "text_pair"
TRUNCATED = "truncated"

_TRITON_DTYPES = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.object_): "TYPE_STRING",
    np.dtype(np.bool_): "TYPE_BOOL",
}


#: A task's head graph is the Triton model ``head_<task>``; the task's ensemble carries the task's own name.
HEAD_PREFIX = "head_"


def head_model_name(task: str) -> str:
    """The model (and graph) name of ``task``'s head: every module that names a head model asks here."""
    return f"{HEAD_PREFIX}{task}"


def head_task(model: str) -> str | None:
    """The task whose head ``model`` is (``head_sst2`` -> ``sst2``), or None for any other model name."""
    return model[len(HEAD_PREFIX):] if model.startswith(HEAD_PREFIX) else None


def hidden_name(depth: int) -> str:
    """Trunk output name for the hidden states after ``depth`` layers."""
    return f"hidden_{int(depth)}"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor: name, numpy dtype and axes (ints are fixed sizes, strings are dynamic axis names)."""

    name: str
    dtype: np.dtype
    axes: tuple

    @property
    def triton_dtype(self) -> str:
        return _TRITON_DTYPES[np.dtype(self.dtype)]

    def triton_dims(self) -> list[int]:
        """Dims without the batch axis (Triton adds it when ``max_batch_size > 0``); dynamic -> -1."""
        axes = self.axes[1:] if self.axes and self.axes[0] == BATCH else self.axes
        return [a if isinstance(a, int) else -1 for a in axes]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: a for i, a in enumerate(self.axes) if isinstance(a, str)}


@dataclass(frozen=True)
class GraphSpec:
    """The interface of one exported graph (trunk or head)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes() for t in (*self.inputs, *self.outputs)}

    def tensor(self, name: str) -> TensorSpec:
        for t in (*self.inputs, *self.outputs):
            if t.name == name:
                return t
        raise KeyError(name)


def _ids(name: str) -> TensorSpec:
    return TensorSpec(name, np.dtype(np.int64), (BATCH, SEQUENCE))


def trunk_spec(depths: Sequence[int], hidden_size: int) -> GraphSpec:
    return GraphSpec(
        name="trunk",
        inputs=tuple(_ids(n) for n in TOKEN_INPUTS),
        outputs=tuple(
            TensorSpec(hidden_name(d), np.dtype(np.float32), (BATCH, SEQUENCE, hidden_size)) for d in sorted(set(depths))
        ),
    )


def head_output_specs(task_type: str, num_labels: int) -> tuple[TensorSpec, ...]:
    f32 = np.dtype(np.float32)
    if task_type == "regression":
        return (TensorSpec(SCORE, f32, (BATCH, 1)),)
    return (TensorSpec(LOGITS, f32, (BATCH, num_labels)), TensorSpec(PROBABILITIES, f32, (BATCH, num_labels)))


def _head_inputs(hidden_size: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(HEAD_HIDDEN, np.dtype(np.float32), (BATCH, SEQUENCE, hidden_size)), _ids(ATTENTION_MASK))


def head_spec(task: str, task_type: str, num_labels: int, hidden_size: int) -> GraphSpec:
    outputs = head_output_specs(task_type, num_labels)
    return GraphSpec(name=head_model_name(task), inputs=_head_inputs(hidden_size), outputs=outputs)


def head_group_spec(name: str, members: Sequence[tuple[str, str, int]], hidden_size: int) -> GraphSpec:
    """One graph for several heads of one depth (``trunkserve.head_group``): a head's inputs, then per
    (task, task_type, num_labels) that head's outputs named ``<task>_<output>``, the ``multitask`` ensemble's names."""
    outputs = tuple(
        TensorSpec(f"{task}_{o.name}", o.dtype, o.axes)
        for task, task_type, num_labels in members
        for o in head_output_specs(task_type, num_labels)
    )
    return GraphSpec(name=name, inputs=_head_inputs(hidden_size), outputs=outputs)


def tokenizer_spec() -> GraphSpec:
    obj = np.dtype(np.object_)
    return GraphSpec(
        name="tokenizer",
        inputs=(TensorSpec(TEXT, obj, (BATCH, 1)), TensorSpec(TEXT_PAIR, obj, (BATCH, 1))),
        outputs=(*(_ids(n) for n in TOKEN_INPUTS), TensorSpec(TRUNCATED, np.dtype(np.bool_), (BATCH, 1))),
    )
