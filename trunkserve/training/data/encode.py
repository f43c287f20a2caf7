"""Tokenize once into variable-length rows; batch by length so padding costs little.

Tokenization uses the serving ``BucketTokenizer`` (same truncation as the server),
then strips the bucket padding so each example keeps only its real tokens. Batches
group examples of similar length (sorted within shuffled pools) and pad to the
batch's longest, which on CPU saves most of the compute that padding to 128 would waste.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .types import Example


@dataclass
class Encoded:
    ids: list[np.ndarray]  # int64 token ids per example, no padding
    types: list[np.ndarray]
    labels: np.ndarray  # int64 class index or float32 score
    truncated: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)


def encode_examples(examples: list[Example], tokenizer, regression: bool, chunk: int = 256) -> Encoded:
    ids, types, truncated = [], [], 0
    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        has_pairs = any(e.text_pair for e in part)
        enc = tokenizer.encode([e.text for e in part], [e.text_pair or "" for e in part] if has_pairs else None)
        truncated += int(enc.truncated.sum())
        lengths = enc.attention_mask.sum(axis=1)
        for row, n in enumerate(lengths):
            ids.append(enc.input_ids[row, :n].copy())
            types.append(enc.token_type_ids[row, :n].copy())
    labels = np.array([e.label for e in examples], dtype=np.float32 if regression else np.int64)
    return Encoded(ids, types, labels, truncated)


def pad_tokens(enc: Encoded, idx) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``token_type_ids`` for examples ``idx``."""
    seq = max(len(enc.ids[i]) for i in idx)
    n = len(idx)
    input_ids = torch.zeros(n, seq, dtype=torch.long)
    mask = torch.zeros(n, seq, dtype=torch.long)
    types = torch.zeros(n, seq, dtype=torch.long)
    for row, i in enumerate(idx):
        k = len(enc.ids[i])
        input_ids[row, :k] = torch.from_numpy(enc.ids[i])
        types[row, :k] = torch.from_numpy(enc.types[i])
        mask[row, :k] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}


def length_batches(lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50) -> list[np.ndarray]:
    """Index batches of similar length. With ``shuffle``: random pools of ``pool`` batches, sorted inside, batch order shuffled."""
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    batches = []
    step = batch_size * pool
    for start in range(0, n, step):
        chunk = order[start:start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
