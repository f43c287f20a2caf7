"""``config.pbtxt`` generation from Triton's own ``ModelConfig`` protobuf.

As in PyTriton's ``model_config/generator.py``: build the message from a plain
dict with ``json_format.ParseDict`` (unknown fields fail loudly) and print it
with ``text_format``. Tensor names, types and dims all come from
``trunkserve.specs``; tests parse every generated config back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

# What the configs say is the core contract's (``trunkserve.deployment``): its dataclasses give the
# parameters written here, and parse them back; the names below are re-exported for the callers of this module.
from trunkserve.deployment.files import load_config as read_config, parse_pbtxt
from trunkserve.deployment.layout import (BACKENDS, CONFIG_FILE, LABELS_FILE, MODEL_FILES, ONNXRUNTIME, PYTHON_ORT, TENSORRT,
                                         TRUNK)
from trunkserve.deployment.params import ServingOptions, TokenizerParams
from trunkserve.specs import GraphSpec, TensorSpec

__all__ = ["BACKENDS", "LABELS_FILE", "MODEL_FILES", "ONNXRUNTIME", "PYTHON_ORT", "TENSORRT", "ServingOptions", "Step",
           "ensemble_config", "graph_config", "parse_pbtxt", "read_config", "to_pbtxt", "tokenizer_config", "write_config"]


def _io(t: TensorSpec, label_file: str | None = None) -> dict:
    d = {"name": t.name, "data_type": t.triton_dtype, "dims": t.triton_dims()}
    if label_file:
        d["label_filename"] = label_file
    return d


def _params(values: dict[str, str]) -> dict:
    return {k: {"string_value": str(v)} for k, v in values.items()}


def _batching(opts: ServingOptions, role: str) -> dict:
    """The dynamic batcher of one step; preferred sizes only where there is a window to fill (the trunk's)."""
    delay = opts.queue_delay_us(role)
    sizes = [s for s in opts.preferred_batch_sizes if s <= opts.max_batch_size] if role == "trunk" else []
    d: dict = {"max_queue_delay_microseconds": delay}
    if sizes and delay:
        d["preferred_batch_size"] = sizes
    return d


def _cached(d: dict, opts: ServingOptions) -> dict:
    if opts.response_cache:
        d["response_cache"] = {"enable": True}
    return d


def _allow_ragged(inputs: list[dict]) -> None:
    """Let the dynamic batcher merge requests of different length buckets (Python backend only).

    By default Triton batches only requests whose inputs have equal shapes, and with
    four length buckets arriving interleaved that left batches of about 1.5 requests
    under load (measured: trunk and heads at N=5, 16 users). The Python model gets each
    request's tensors separately and ``serving.batching.run_batched`` groups them by
    shape itself, so the shape check is not needed there. The native ONNX Runtime and
    TensorRT backends would concatenate ragged inputs, so they keep the check.
    """
    for i in inputs:
        if -1 in i["dims"]:
            i["allow_ragged_batch"] = True


def _message(d: dict) -> model_config_pb2.ModelConfig:
    return json_format.ParseDict(d, model_config_pb2.ModelConfig())


def graph_config(
    spec: GraphSpec,
    opts: ServingOptions,
    instances: int,
    parameters: dict | None = None,
    labelled_outputs: Iterable[str] = (),
    role: str | None = None,
) -> model_config_pb2.ModelConfig:
    """Config for a trunk or head graph on the chosen backend; ``labelled_outputs`` get ``labels.txt``.

    ``parameters`` are the model's own (``TrunkInfo.parameters()``, ``HeadEntry.parameters()``);
    the backend's (file, threads, device) come from ``ServingOptions.runtime_parameters``.
    """
    labelled = set(labelled_outputs)
    d: dict = {
        "name": spec.name,
        "max_batch_size": opts.max_batch_size,
        "input": [_io(t) for t in spec.inputs],
        "output": [_io(t, LABELS_FILE if t.name in labelled else None) for t in spec.outputs],
        "instance_group": [{"count": instances, "kind": opts.kind}],
        "dynamic_batching": _batching(opts, role or ("trunk" if spec.name == TRUNK else "head")),
    }
    _cached(d, opts)
    if opts.backend == PYTHON_ORT:
        d["backend"] = "python"
        _allow_ragged(d["input"])
    elif opts.backend == ONNXRUNTIME:
        d["backend"] = "onnxruntime"
        d["default_model_filename"] = MODEL_FILES[ONNXRUNTIME]
    else:
        d["platform"] = "tensorrt_plan"
        d["default_model_filename"] = MODEL_FILES[TENSORRT]
    d["parameters"] = _params({**(parameters or {}), **opts.runtime_parameters()})
    return _message(d)


def tokenizer_config(spec: GraphSpec, opts: ServingOptions, params: TokenizerParams) -> model_config_pb2.ModelConfig:
    """The Python-backend tokenizer (every backend choice keeps it on the Python backend, on CPU)."""
    return _message(_cached(
        {
            "name": spec.name,
            "backend": "python",
            "max_batch_size": opts.max_batch_size,
            "input": [_io(t) for t in spec.inputs],
            "output": [_io(t) for t in spec.outputs],
            "instance_group": [{"count": opts.tokenizer_instances, "kind": "KIND_CPU"}],
            "dynamic_batching": _batching(opts, "tokenizer"),
            "parameters": _params(params.parameters()),
        }, opts))


@dataclass
class Step:
    """One ensemble step: model name and its input/output maps (model tensor -> ensemble tensor)."""

    model: str
    inputs: dict[str, str]
    outputs: dict[str, str]


def ensemble_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[tuple[TensorSpec, str | None]],
    steps: Sequence[Step],
    max_batch_size: int,
) -> model_config_pb2.ModelConfig:
    """An ensemble; ``outputs`` pairs each output spec with its label file name (or None)."""
    return _message(
        {
            "name": name,
            "platform": "ensemble",
            "max_batch_size": max_batch_size,
            "input": [_io(t) for t in inputs],
            "output": [_io(t, label_file) for t, label_file in outputs],
            "ensemble_scheduling": {
                "step": [
                    {"model_name": s.model, "model_version": -1, "input_map": s.inputs, "output_map": s.outputs}
                    for s in steps
                ]
            },
        }
    )


def to_pbtxt(config: model_config_pb2.ModelConfig) -> str:
    return text_format.MessageToString(config)


def write_config(folder: str | Path, config: model_config_pb2.ModelConfig) -> Path:
    path = Path(folder) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_pbtxt(config))
    return path
