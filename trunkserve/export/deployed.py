"""The deployed repository read back: the serving options it was built with, and its trunk run offline.

Why a reader of its own: hot-swap validation, the int8 canaries and the CLI
all need what is *deployed* (not what a command line says), and reading it
here, below every tool that changes the repository, keeps imports one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN, TOKEN_INPUTS, hidden_name
from trunkserve.tokenization import BucketTokenizer

from . import configs
from .configs import MODEL_FILES, ONNXRUNTIME, PYTHON_ORT, TENSORRT, ServingOptions
from .errors import RepositoryError
from .names import FLOAT32_REFERENCE, MULTITASK, TOKENIZER, TRUNK, VERSION, head_model_name
from .repository import head_model_folders, trunk_quantisation
from .validate import sentence_feeds


def _backend(cfg) -> str:
    if cfg.platform == "tensorrt_plan":
        return TENSORRT
    return ONNXRUNTIME if cfg.backend == "onnxruntime" else PYTHON_ORT


def deployed_options(repo: Path) -> ServingOptions:
    """The serving options the deployed repository was built with, read back from its configs.

    A hot-added head must batch and thread like its siblings (and share the
    ensembles' ``max_batch_size``), so nothing is taken from the command line.
    """
    cfg = configs.read_config(repo / TRUNK)
    p = {k: v.string_value for k, v in cfg.parameters.items()}
    heads = head_model_folders(repo)
    head_instances = configs.read_config(heads[0]).instance_group[0].count if heads else 1
    db = cfg.dynamic_batching
    return ServingOptions(
        backend=_backend(cfg),
        max_batch_size=cfg.max_batch_size,
        max_queue_delay_us=db.max_queue_delay_microseconds,
        preferred_batch_sizes=list(db.preferred_batch_size),
        trunk_instances=cfg.instance_group[0].count if cfg.instance_group else 1,
        head_instances=head_instances,
        ort_intra_op_threads=int(p.get("intra_op_threads", p.get("intra_op_thread_count", 0)) or 0),
        ort_inter_op_threads=int(p.get("inter_op_threads", p.get("inter_op_thread_count", 1)) or 1),
        gpu=bool(cfg.instance_group) and cfg.instance_group[0].kind == 1,  # KIND_GPU
    )


def onnx_session(path: Path):
    """An ONNX Runtime session on the CPU (the offline checks never need a GPU)."""
    import onnxruntime as ort  # heavy, and only the offline checks need it

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def deployed_tokenizer(repo: Path) -> BucketTokenizer:
    """The tokenizer the ``tokenizer`` model serves, with its configured length and buckets."""
    tcfg = configs.read_config(repo / TOKENIZER)
    p = {k: v.string_value for k, v in tcfg.parameters.items()}
    return BucketTokenizer(
        repo / TOKENIZER / VERSION / p.get("tokenizer_dir", "tokenizer"),
        max_length=int(p.get("max_length", 128)),
        buckets=[int(b) for b in p.get("buckets", "16,32,64,128").split(",") if b],
    )


class DeployedTrunk:
    """The deployed tokenizer + trunk ONNX, run offline: real hidden states for validation and canaries.

    Using the files Triton serves (not a PyTorch trunk rebuilt from a
    backbone) means a head is checked against exactly what it will be fed.
    """

    def __init__(self, repo: Path):
        self.tokenizer = deployed_tokenizer(repo)
        onnx_path = repo / TRUNK / VERSION / MODEL_FILES[PYTHON_ORT]
        if not onnx_path.exists():
            raise RepositoryError(f"{onnx_path}: no trunk ONNX to validate heads against (TensorRT-only repository?)")
        self.quantisation = trunk_quantisation(repo)
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


def versions_of(repo: Path, task: str) -> list[int]:
    """The version folders of ``head_<task>`` on disk, oldest first (Triton serves the newest)."""
    folder = Path(repo) / head_model_name(task)
    return sorted(int(d.name) for d in folder.iterdir() if d.is_dir() and d.name.isdigit()) if folder.exists() else []


def in_multitask(repo: Path, task: str) -> bool:
    """Whether the deployed ``multitask`` ensemble routes to ``task``'s head."""
    try:
        cfg = configs.read_config(repo / MULTITASK)
    except OSError:
        return False
    return any(s.model_name == head_model_name(task) for s in cfg.ensemble_scheduling.step)
