"""The names in a model repository's layout: model folders, version folder, files and backends.

Layout (``<m>/config.pbtxt`` + version folder ``<m>/1/``)::

    tokenizer/         Python backend; 1/tokenizer/ holds the tokenizer files
    trunk/             1/model.onnx; parameters carry depths and fingerprints
    head_<task>/       1/model.onnx, 1/head.json, 1/canary.json; labels.txt
    <task>/            ensemble: tokenizer -> trunk -> head_<task>
    multitask/         ensemble: tokenizer -> trunk -> every head in parallel

Head model names (``head_model_name``) are spelled once, in ``trunkserve.specs``
(the graph specs name the head graphs too), and re-exported here.
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


def head_model_folders(repo: str | Path) -> list[Path]:
    """The head model folders (``head_<task>/`` with a config) in the repository, sorted by name."""
    return sorted(d for d in Path(repo).glob(f"{HEAD_PREFIX}*") if (d / CONFIG_FILE).exists())


def versions_of(repo: str | Path, task: str) -> list[int]:
    """The version folders of ``head_<task>`` on disk, oldest first (Triton serves the newest)."""
    folder = Path(repo) / head_model_name(task)
    return sorted(int(d.name) for d in folder.iterdir() if d.is_dir() and d.name.isdigit()) if folder.exists() else []


__all__ = ["BACKENDS", "CONFIG_FILE", "FLOAT32_REFERENCE", "HEAD_PREFIX", "LABELS_FILE", "MODEL_FILES", "MULTITASK",
           "ONNXRUNTIME", "PYTHON_ORT", "QUANTISATION", "TENSORRT", "TOKENIZER", "TOKENIZER_DIR", "TRUNK", "VERSION",
           "head_model_folders", "head_model_name", "head_task", "versions_of"]
