"""The names in a model repository's layout: model folders, version folder, trunk files and parameters.

Why a module of names alone: the writer (``repository``), the readers
(``deployed``, ``quantised``) and the hot-swap tools all spell them, and a
module that imports nothing of the export side can be imported by every one
of them without an import cycle.
"""

from __future__ import annotations

TOKENIZER, TRUNK, MULTITASK = "tokenizer", "trunk", "multitask"
#: The version folder ``build`` writes (hot-swapped heads add 2, 3, ...).
VERSION = "1"
#: The float32 trunk kept beside a quantised one: offline checks of new heads run on it.
FLOAT32_REFERENCE = "float32_reference.onnx"
#: The trunk config parameter that records the quantisation scheme (absent: float32 graphs).
QUANTISATION = "quantisation"


def head_model_name(task: str) -> str:
    return f"head_{task}"
