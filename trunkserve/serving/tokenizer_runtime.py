"""The server's tokenizer: validation of raw text and encoding of one request."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..deployment.params import TokenizerParams
from ..tokenization import BucketTokenizer

#: Characters per text beyond which a request is refused instead of tokenized.
#: Tokens past ``max_length`` are truncated anyway; this bound only stops a
#: multi-megabyte body from tying up a tokenizer instance.
MAX_TEXT_CHARS = 100_000


def load_tokenizer(version_dir: str | Path, params: TokenizerParams) -> BucketTokenizer:
    """The tokenizer a deployed ``tokenizer`` model serves, from its version folder and its config's parameters."""
    return BucketTokenizer(Path(version_dir) / params.tokenizer_dir, max_length=params.max_length, buckets=params.buckets)


class TextInputError(ValueError):
    """The request's text cannot be served (empty, too large, not UTF-8)."""


def decode_texts(raw: np.ndarray, field: str, allow_empty: bool) -> list[str]:
    """BYTES tensor [batch, 1] -> list of str, with clear errors."""
    texts = []
    for i, item in enumerate(raw.reshape(-1)):
        if isinstance(item, (bytes, bytearray)):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TextInputError(f"{field}[{i}] is not valid UTF-8") from exc
        text = str(item)
        if not allow_empty and not text.strip():
            raise TextInputError(f"{field}[{i}] is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise TextInputError(f"{field}[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        texts.append(text)
    return texts


def encode_request(tokenizer: BucketTokenizer, text: np.ndarray, text_pair: np.ndarray | None) -> dict[str, np.ndarray]:
    """One request's BYTES inputs -> id tensors padded to a bucket, plus ``truncated`` [batch, 1]."""
    texts = decode_texts(text, "text", allow_empty=False)
    pairs: Sequence[str] = [""] * len(texts) if text_pair is None else decode_texts(text_pair, "text_pair", True)
    if len(pairs) != len(texts):
        raise TextInputError(f"text has {len(texts)} rows but text_pair has {len(pairs)}")
    enc = tokenizer.encode(texts, pairs)
    out = enc.as_dict()
    out["truncated"] = enc.truncated.reshape(-1, 1)
    return out
