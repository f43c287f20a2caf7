"""The deployed repository's trunk run offline, on the files Triton serves.

Why a module of its own: hot-swap validation and the int8 canaries need what
is *deployed* (not what a command line says). What the configs say is read by
the core contract (``trunkserve.deployment.reader.Deployment``); this module
adds the ONNX Runtime sessions, below every tool that changes the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from trunkserve.deployment.layout import FLOAT32_REFERENCE, MODEL_FILES, PYTHON_ORT, TOKENIZER, TRUNK, VERSION
from trunkserve.deployment.params import ServingOptions
from trunkserve.deployment.reader import Deployment
from trunkserve.serving.tokenizer_runtime import load_tokenizer
from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN, TOKEN_INPUTS, hidden_name

from .errors import RepositoryError
from .validate import sentence_feeds


def deployed_options(repo: Path) -> ServingOptions:
    """The serving options the deployed repository was built with, read back from its configs.

    A hot-added head must batch and thread like its siblings (and share the
    ensembles' ``max_batch_size``), so nothing is taken from the command line.
    """
    return Deployment.read(repo).options


def onnx_session(path: Path):
    """An ONNX Runtime session on the CPU (the offline checks never need a GPU)."""
    import onnxruntime as ort  # heavy, and only the offline checks need it

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class DeployedTrunk:
    """The deployed tokenizer + trunk ONNX, run offline: real hidden states for validation and canaries.

    Using the files Triton serves (not a PyTorch trunk rebuilt from a
    backbone) means a head is checked against exactly what it will be fed.
    ``deployment``: the repository as an operation already read it.
    """

    def __init__(self, repo: Path, deployment: Deployment | None = None):
        repo = Path(repo)
        deployment = deployment or Deployment.read(repo)
        self.tokenizer = load_tokenizer(repo / TOKENIZER / VERSION, deployment.tokenizer)
        onnx_path = repo / TRUNK / VERSION / MODEL_FILES[PYTHON_ORT]
        if not onnx_path.exists():
            raise RepositoryError(f"{onnx_path}: no trunk ONNX to validate heads against (TensorRT-only repository?)")
        self.quantisation = deployment.trunk.quantisation
        self.served = onnx_session(onnx_path)
        # checks against PyTorch run on the float32 trunk; on a quantised repository it is kept beside the served one
        reference = onnx_path.with_name(FLOAT32_REFERENCE)
        if self.quantisation and not reference.exists():
            raise RepositoryError(f"{reference}: missing; the trunk is quantised ({self.quantisation}) and heads are checked on its float32 graph")
        self.float32 = onnx_session(reference) if self.quantisation else self.served

    def hidden(self, feeds: dict[str, np.ndarray], depth: int, served: bool = False) -> dict[str, np.ndarray]:
        """The trunk's output at ``depth``: float32 (for checks against PyTorch), or ``served``: what the server computes."""
        (h,) = (self.served if served else self.float32).run([hidden_name(depth)], {n: feeds[n] for n in TOKEN_INPUTS})
        return {HEAD_HIDDEN: h, ATTENTION_MASK: feeds[ATTENTION_MASK]}

    def validation_feeds(self, depth: int) -> dict[str, np.ndarray]:
        return self.hidden(sentence_feeds(self.tokenizer), depth)

    def texts_feeds(self, texts: Sequence[Sequence[str]], depth: int, served: bool = False) -> dict[str, np.ndarray]:
        enc = self.tokenizer.encode([t[0] for t in texts], [t[1] if len(t) > 1 else "" for t in texts])
        return self.hidden(enc.as_dict(), depth, served)
