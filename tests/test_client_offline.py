"""The client's decisions that need no server: when to warn about a missing pair, and its CLIs' help."""

from __future__ import annotations

import pytest

from client.api import TrunkserveClient, trained_on_pairs
from client.cli import missing_pair_warning


@pytest.mark.parametrize("params, want", [
    ({"pair": "true"}, True), ({"pair": "True "}, True), ({"pair": "false"}, False),
    ({}, None), ({"pair": ""}, None), ({"pair": "maybe"}, None), ({"task_type": "classification"}, None),
])
def test_the_head_config_says_whether_it_was_trained_on_pairs(params, want):
    assert trained_on_pairs(params) is want


@pytest.mark.parametrize("task, on_pairs, pairs, warned", [
    ("mrpc", True, None, True),                  # no --pair
    ("mrpc", True, ["", ""], True),              # JSONL rows without text_pair
    ("mrpc", True, ["B", ""], True),             # one row without: its answer may be meaningless
    ("mrpc", True, ["B", "D"], False),
    ("sst2", False, None, False),
    ("sst2", None, None, False),                 # a head exported before pair was recorded
    ("multitask", True, None, False),            # the ensemble's heads differ: no check
])
def test_a_missing_pair_is_warned_about_only_for_a_pair_head(task, on_pairs, pairs, warned):
    warning = missing_pair_warning(task, on_pairs, pairs)
    if warned:
        assert warning == (f"task {task!r} was trained on text pairs; pass --pair (or text_pair in JSONL) "
                           "or the answer may be meaningless")
    else:
        assert warning is None


class _Transport:
    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def model_parameters(self, model):
        self.asked.append(model)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("answer, want", [
    ({"pair": "true"}, True),
    (ConnectionRefusedError("down"), None),
    (Exception("[403] This API is restricted, expecting header 'x-k'"), None),
    (KeyError("config"), None),
])
def test_reading_the_head_config_never_fails_the_call(answer, want):
    client = TrunkserveClient("localhost:1")
    client.transport = _Transport(answer)
    assert client.head_trained_on_pairs("mrpc") is want and client.transport.asked == ["head_mrpc"]
    assert client.head_trained_on_pairs("multitask") is None and client.transport.asked == ["head_mrpc"]
