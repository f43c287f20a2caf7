"""The names in a model repository's layout: model folders, version folder, files and backends.

Layout (``<m>/config.pbtxt`` + version folder ``<m>/1/``)::

    tokenizer/         Python backend; 1/tokenizer/ holds the tokenizer files
    trunk/             1/model.onnx; parameters carry depths and fingerprints
    head_<task>/       1/model.onnx, 1/head.json, 1/weights.safetensors, 1/canary.json; labels.txt
    heads_d<k>[_l<n>]/ 1/model.onnx: every head of depth k (and n layers, n > 1) as one graph
    <task>/            ensemble: tokenizer -> trunk -> head_<task>
    multitask/         ensemble: tokenizer -> trunk -> one head group per (depth, layers) in parallel

Head model names (``head_model_name``) are spelled once, in ``trunkserve.specs``
(the graph specs name the head graphs too), and re-exported here. A version
folder of a head holds a complete head artefact (head.json + weights), which is
what a head group's graph is rebuilt from when a member is added, swapped or removed.
"""

from __future__ import annotations

from pathlib import Path

from trunkserve.specs import HEAD_PREFIX, head_model_name, head_task  # one spelling, in trunkserve.specs

TOKENIZER, TRUNK, MULTITASK = "tokenizer", "trunk", "multitask"
#: The version folder ``build`` writes (hot-swapped heads add 2, 3, ...).
VERSION = "1"
CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
#: The tokenizer files' folder inside the tokenizer model's version folder.
TOKENIZER_DIR = "tokenizer"
#: The float32 trunk kept beside a quantised one: offline checks of new heads run on it.
FLOAT32_REFERENCE = "float32_reference.onnx"
#: The trunk config parameter that records the quantisation scheme (absent: float32 graphs).
QUANTISATION = "quantisation"

PYTHON_ORT = "python-onnxruntime"
ONNXRUNTIME = "onnxruntime"
TENSORRT = "tensorrt"
BACKENDS = (PYTHON_ORT, ONNXRUNTIME, TENSORRT)
#: File each backend loads from a version folder.
MODEL_FILES = {PYTHON_ORT: "model.onnx", ONNXRUNTIME: "model.onnx", TENSORRT: "model.plan"}


#: Head group models (``heads_d3``, ``heads_d3_l2``); task names may not start with ``heads_`` (``artifacts``).
GROUP_PREFIX = "heads_d"


def group_model_name(depth: int, num_layers: int = 1) -> str:
    """``heads_d3`` for the one-layer heads of depth 3 (the usual kind), ``heads_d3_l2`` for two-layer ones.

    Why the layer count only past one: names stay short for the common case and never
    change when a head of another layer count joins the depth.
    """
    return f"{GROUP_PREFIX}{int(depth)}" + ("" if int(num_layers) == 1 else f"_l{int(num_layers)}")


def group_model_folders(repo: str | Path) -> list[Path]:
    """The head group model folders (``heads_d<k>...`` with a config) in the repository, sorted by name."""
    return sorted(d for d in Path(repo).glob(f"{GROUP_PREFIX}*") if (d / CONFIG_FILE).exists())


def model_versions(folder: str | Path) -> list[int]:
    """The version folders of a model folder, oldest first (Triton serves the newest); none if it is absent."""
    folder = Path(folder)
    return sorted(int(d.name) for d in folder.iterdir() if d.is_dir() and d.name.isdigit()) if folder.exists() else []


def head_model_folders(repo: str | Path) -> list[Path]:
    """The head model folders (``head_<task>/`` with a config) in the repository, sorted by name."""
    return sorted(d for d in Path(repo).glob(f"{HEAD_PREFIX}*") if (d / CONFIG_FILE).exists())


def versions_of(repo: str | Path, task: str) -> list[int]:
    """The version folders of ``head_<task>`` on disk, oldest first (Triton serves the newest)."""
    return model_versions(Path(repo) / head_model_name(task))


__all__ = ["BACKENDS", "CONFIG_FILE", "FLOAT32_REFERENCE", "GROUP_PREFIX", "HEAD_PREFIX", "LABELS_FILE", "MODEL_FILES", "MULTITASK",
           "ONNXRUNTIME", "PYTHON_ORT", "QUANTISATION", "TENSORRT", "TOKENIZER", "TOKENIZER_DIR", "TRUNK", "VERSION",
           "group_model_folders", "group_model_name", "head_model_folders", "head_model_name", "head_task",
           "model_versions", "versions_of"]
