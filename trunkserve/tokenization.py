"""Text -> padded id tensors, with padding to a few length buckets.

Why buckets: Triton's dynamic batcher only merges requests whose tensors have
the same shape. Padding every request to the smallest bucket that fits its
longest sequence (e.g. 16, 32, 64, 128) gives a handful of shapes, so requests
of similar length batch together, without padding every short sentence to the
maximum length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_BUCKETS = (16, 32, 64, 128)


@dataclass
class Encoded:
    input_ids: np.ndarray  # [batch, seq] int64
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    truncated: np.ndarray  # [batch] bool: the text did not fit and was cut

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


def bucket_length(longest: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= ``longest`` (the largest bucket caps everything)."""
    for b in sorted(buckets):
        if longest <= b:
            return b
    return max(buckets)


class BucketTokenizer:
    """A fast BERT tokenizer that truncates to ``max_length`` and pads to a length bucket."""

    def __init__(self, tokenizer_dir, max_length: int = 128, buckets: Sequence[int] = DEFAULT_BUCKETS):
        from .backbone import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.max_length = int(max_length)
        self.buckets = tuple(sorted({min(int(b), self.max_length) for b in buckets} | {self.max_length}))
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Encoded:
        if pairs is None:
            pairs = [""] * len(texts)
        if len(pairs) != len(texts):
            raise ValueError("texts and pairs differ in length")
        rows, truncated = [], []
        for a, b in zip(texts, pairs):
            enc = self.tokenizer.encode(a, b) if b else self.tokenizer.encode(a)
            ids, types = enc.ids, enc.type_ids
            truncated.append(len(ids) > self.max_length)
            if len(ids) > self.max_length:
                ids, types = self._truncate(a, b)
            rows.append((ids, types))
        seq = bucket_length(max((len(r[0]) for r in rows), default=1), self.buckets)
        n = len(rows)
        input_ids = np.full((n, seq), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, seq), dtype=np.int64)
        type_ids = np.zeros((n, seq), dtype=np.int64)
        for i, (ids, types) in enumerate(rows):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
            type_ids[i, : len(types)] = types
        return Encoded(input_ids, mask, type_ids, np.array(truncated, dtype=bool))

    def _truncate(self, a: str, b: str):
        """Longest-first truncation, as Hugging Face does for pairs."""
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        try:
            enc = self.tokenizer.encode(a, b) if b else self.tokenizer.encode(a)
        finally:
            self.tokenizer.no_truncation()
        return enc.ids, enc.type_ids
