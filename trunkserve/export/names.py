"""The names in a model repository's layout: model folders, version folder, trunk files and parameters.

Head model names (``head_model_name``) are spelled once, in ``trunkserve.specs``
(the graph specs name the head graphs too), and re-exported here.

Why a module of names alone: the writer (``repository``), the readers
(``deployed``, ``quantised``) and the hot-swap tools all spell them, and a
module that imports nothing of the export side can be imported by every one
of them without an import cycle.
"""

from __future__ import annotations

from trunkserve.specs import HEAD_PREFIX, head_model_name, head_task  # one spelling, in trunkserve.specs

TOKENIZER, TRUNK, MULTITASK = "tokenizer", "trunk", "multitask"
#: The version folder ``build`` writes (hot-swapped heads add 2, 3, ...).
VERSION = "1"
#: The float32 trunk kept beside a quantised one: offline checks of new heads run on it.
FLOAT32_REFERENCE = "float32_reference.onnx"
#: The trunk config parameter that records the quantisation scheme (absent: float32 graphs).
QUANTISATION = "quantisation"

__all__ = ["FLOAT32_REFERENCE", "HEAD_PREFIX", "MULTITASK", "QUANTISATION", "TOKENIZER", "TRUNK", "VERSION",
           "head_model_name", "head_task"]
