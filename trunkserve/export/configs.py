"""``config.pbtxt`` generation from Triton's own ``ModelConfig`` protobuf.

As in PyTriton's ``model_config/generator.py``: build the message from a plain
dict with ``json_format.ParseDict`` (unknown fields fail loudly) and print it
with ``text_format``. Tensor names, types and dims all come from
``trunkserve.specs``; tests parse every generated config back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from trunkserve.specs import GraphSpec, TensorSpec

from .errors import RepositoryError

PYTHON_ORT = "python-onnxruntime"
ONNXRUNTIME = "onnxruntime"
TENSORRT = "tensorrt"
BACKENDS = (PYTHON_ORT, ONNXRUNTIME, TENSORRT)

#: File each backend loads from a version folder.
MODEL_FILES = {PYTHON_ORT: "model.onnx", ONNXRUNTIME: "model.onnx", TENSORRT: "model.plan"}
LABELS_FILE = "labels.txt"


@dataclass
class ServingOptions:
    """Knobs of the generated configs (instance counts, batching, threads, backend)."""

    backend: str = PYTHON_ORT
    max_batch_size: int = 64
    # Tuned on the 2-core machine (reports/serving-cost.md): every ensemble step is a
    # Python-backend round trip with a cost per execution, so larger server-side batches
    # (20 ms window; no preferred size below 32, which would release a batch as soon as
    # 16 requests wait) and two single-threaded trunk instances beat small batches on
    # multi-threaded sessions.
    max_queue_delay_us: int = 20000
    preferred_batch_sizes: Sequence[int] = (32, 64)
    tokenizer_instances: int = 1
    trunk_instances: int = 2
    head_instances: int = 1
    ort_intra_op_threads: int = 1  # 0: ONNX Runtime's default (all cores)
    ort_inter_op_threads: int = 1
    gpu: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == TENSORRT:
            self.gpu = True

    @property
    def kind(self) -> str:
        return "KIND_GPU" if self.gpu else "KIND_CPU"


def _io(t: TensorSpec, label_file: str | None = None) -> dict:
    d = {"name": t.name, "data_type": t.triton_dtype, "dims": t.triton_dims()}
    if label_file:
        d["label_filename"] = label_file
    return d


def _params(values: dict) -> dict:
    return {k: {"string_value": str(v)} for k, v in values.items()}


def _batching(opts: ServingOptions) -> dict:
    sizes = [s for s in opts.preferred_batch_sizes if s <= opts.max_batch_size]
    d = {"max_queue_delay_microseconds": opts.max_queue_delay_us}
    if sizes:
        d["preferred_batch_size"] = sizes
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
) -> model_config_pb2.ModelConfig:
    """Config for a trunk or head graph on the chosen backend; ``labelled_outputs`` get ``labels.txt``."""
    labelled = set(labelled_outputs)
    d: dict = {
        "name": spec.name,
        "max_batch_size": opts.max_batch_size,
        "input": [_io(t) for t in spec.inputs],
        "output": [_io(t, LABELS_FILE if t.name in labelled else None) for t in spec.outputs],
        "instance_group": [{"count": instances, "kind": opts.kind}],
        "dynamic_batching": _batching(opts),
    }
    params = dict(parameters or {})
    if opts.backend == PYTHON_ORT:
        d["backend"] = "python"
        _allow_ragged(d["input"])
        params.update(
            onnx_file=MODEL_FILES[PYTHON_ORT],
            intra_op_threads=opts.ort_intra_op_threads,
            inter_op_threads=opts.ort_inter_op_threads,
            device="cuda" if opts.gpu else "cpu",
        )
    elif opts.backend == ONNXRUNTIME:
        d["backend"] = "onnxruntime"
        d["default_model_filename"] = MODEL_FILES[ONNXRUNTIME]
        params.update(intra_op_thread_count=opts.ort_intra_op_threads, inter_op_thread_count=opts.ort_inter_op_threads)
    else:
        d["platform"] = "tensorrt_plan"
        d["default_model_filename"] = MODEL_FILES[TENSORRT]
    d["parameters"] = _params(params)
    return _message(d)


def tokenizer_config(spec: GraphSpec, opts: ServingOptions, parameters: dict) -> model_config_pb2.ModelConfig:
    """The Python-backend tokenizer (every backend choice keeps it on the Python backend, on CPU)."""
    return _message(
        {
            "name": spec.name,
            "backend": "python",
            "max_batch_size": opts.max_batch_size,
            "input": [_io(t) for t in spec.inputs],
            "output": [_io(t) for t in spec.outputs],
            "instance_group": [{"count": opts.tokenizer_instances, "kind": "KIND_CPU"}],
            "dynamic_batching": _batching(opts),
            "parameters": _params(parameters),
        }
    )


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


def parse_pbtxt(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def write_config(folder: str | Path, config: model_config_pb2.ModelConfig) -> Path:
    path = Path(folder) / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_pbtxt(config))
    return path


def read_config(folder: str | Path) -> model_config_pb2.ModelConfig:
    """A model's ``config.pbtxt``; a file Triton could not parse either is a ``RepositoryError`` naming it."""
    path = Path(folder) / "config.pbtxt"
    try:
        return parse_pbtxt(path.read_text())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path} is not a valid model configuration: {exc}") from None
