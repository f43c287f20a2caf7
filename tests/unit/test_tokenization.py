"""Bucket padding, truncation, pairs, and the server tokenizer's input checks."""

import numpy as np
import pytest

from trunkserve.serving.tokenizer_runtime import MAX_TEXT_CHARS, TextInputError, encode_request
from trunkserve.tokenization import BucketTokenizer, bucket_length


def test_bucket_length():
    assert bucket_length(3, (16, 32)) == 16
    assert bucket_length(17, (16, 32)) == 32
    assert bucket_length(99, (16, 32)) == 32


def test_pads_to_bucket_and_marks_segments(tokenizer):
    enc = tokenizer.encode(["a good film", "is it?"], ["", "yes it is"])
    assert enc.input_ids.shape == (2, 16) and enc.input_ids.dtype == np.int64
    assert enc.attention_mask[0].sum() == 5  # [CLS] a good film [SEP]
    assert enc.token_type_ids[0].sum() == 0 and enc.token_type_ids[1].sum() > 0
    assert not enc.truncated.any()


def test_truncates_long_text(backbone):
    tok = BucketTokenizer(backbone.path, max_length=32, buckets=(16, 32))
    enc = tok.encode(["word " * 100, "short"], ["pair " * 100, ""])
    assert enc.input_ids.shape == (2, 32)
    assert enc.truncated.tolist() == [True, False]
    assert enc.attention_mask[0].sum() == 32
    assert set(enc.token_type_ids[0][enc.attention_mask[0] == 1]) == {0, 1}  # longest-first keeps both segments


def _bytes(*texts):
    return np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)


def test_encode_request(tokenizer):
    out = encode_request(tokenizer, _bytes("hello", "world"), _bytes("", "pair"))
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids", "truncated"}
    assert out["truncated"].shape == (2, 1)


@pytest.mark.parametrize(
    "texts, message",
    [((" ",), "empty"), ((b"\xff\xfe",), "UTF-8"), (("x" * (MAX_TEXT_CHARS + 1),), "limit")],
)
def test_encode_request_rejects(tokenizer, texts, message):
    with pytest.raises(TextInputError, match=message):
        encode_request(tokenizer, _bytes(*texts), None)


def test_pair_rows_must_match(tokenizer):
    with pytest.raises(TextInputError, match="rows"):
        encode_request(tokenizer, _bytes("a", "b"), _bytes("c"))
