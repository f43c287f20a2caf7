"""A stable identity for "the frozen part a head was trained on".

A head only makes sense on top of the exact hidden states it saw in training.
Those depend on the embedding and layer weights up to the branch depth, on the
depth itself and on the tokenizer; the fingerprint hashes exactly those, so two
trunks that expose the same depth of the same backbone agree, and a head trained
on another backbone, another depth or another vocabulary is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

FINGERPRINT_CHARS = 16


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return np.ascontiguousarray(t.detach().cpu().float().numpy()).tobytes()


def trunk_fingerprint(
    state: Mapping[str, torch.Tensor], depth: int, tokenizer_files: Iterable[Path]
) -> str:
    """Hash of embeddings + layers ``< depth`` (names, shapes, float32 bytes), ``depth`` and tokenizer files.

    ``state`` uses Hugging Face key names (``embeddings.*``, ``encoder.layer.N.*``);
    a ``Trunk``'s own state dict is accepted too (``layers.N.*``).
    """
    h = hashlib.sha256()
    h.update(f"depth={int(depth)}\n".encode())
    def canonical_name(key: str) -> str:
        return "encoder.layer." + key[len("layers."):] if key.startswith("layers.") else key

    for canonical, key in sorted((canonical_name(k), k) for k in state):
        if canonical.startswith("embeddings."):
            pass
        elif canonical.startswith("encoder.layer."):
            if int(canonical.split(".")[2]) >= depth:
                continue
        else:
            continue
        if canonical.endswith("position_ids"):
            continue
        tensor = state[key]
        h.update(f"{canonical}:{tuple(tensor.shape)}\n".encode())
        h.update(_tensor_bytes(tensor))
    for path in sorted(Path(p) for p in tokenizer_files):
        h.update(f"file={path.name}\n".encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:FINGERPRINT_CHARS]
