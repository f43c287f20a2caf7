"""A model's ``config.pbtxt`` parsed with Triton's own protobuf, and turned into the JSON form.

Why the JSON form: the Python backend hands a model its config as JSON
(``args["model_config"]``), so turning a parsed file into the same dict lets
``params`` have one parser for both. Protobuf is imported inside the functions:
the Python-backend stub imports ``params`` (and so this module) but never reads
a file, and ``tritonclient.grpc`` is heavy to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import RepositoryError
from .layout import CONFIG_FILE


def parse_pbtxt(text: str):
    """``text`` as Triton's ``ModelConfig`` message (``text_format.ParseError`` where Triton would refuse it too)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def load_config(folder: str | Path):
    """A model's ``config.pbtxt`` as a ``ModelConfig``; a file Triton could not parse either is a ``RepositoryError`` naming it."""
    from google.protobuf import text_format

    path = Path(folder) / CONFIG_FILE
    try:
        return parse_pbtxt(path.read_text())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path} is not a valid model configuration: {exc}") from None


def config_dict(config: Any) -> dict:
    """A ``ModelConfig`` message in the JSON form the Python backend receives; a dict is returned as it is."""
    if isinstance(config, dict):
        return config
    from google.protobuf import json_format

    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def read_model_config(folder: str | Path) -> dict:
    """``folder/config.pbtxt`` in the JSON form; a missing file is a ``RepositoryError`` naming it."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise RepositoryError(f"{path}: no such model configuration")
    return config_dict(load_config(folder))
