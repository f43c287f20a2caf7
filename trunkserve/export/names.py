"""The layout's names, now spelled in the core contract (``trunkserve.deployment.layout``); kept for the tests that import them here."""

from __future__ import annotations

from trunkserve.deployment.layout import (  # noqa: F401
    FLOAT32_REFERENCE,
    HEAD_PREFIX,
    MULTITASK,
    QUANTISATION,
    TOKENIZER,
    TRUNK,
    VERSION,
    head_model_name,
    head_task,
)

__all__ = ["FLOAT32_REFERENCE", "HEAD_PREFIX", "MULTITASK", "QUANTISATION", "TOKENIZER", "TRUNK", "VERSION",
           "head_model_name", "head_task"]
