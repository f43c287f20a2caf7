"""Bounds read from the exported graphs, and the checks that turn a caller's bad ids into a plain error."""

from __future__ import annotations

import numpy as np
import pytest

from trunkserve.serving.input_checks import InputError, bounds_from_graph, check_feed


def _trunk_feed(ids, mask=None, types=None):
    ids = np.array([ids], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids) if mask is None else np.array([mask]),
            "token_type_ids": np.zeros_like(ids) if types is None else np.array([types])}


def test_the_trunk_graph_gives_its_vocabulary_and_type_vocabulary(built_repo, backbone):
    bounds = bounds_from_graph(built_repo.repo / "trunk/1/model.onnx")
    assert bounds == {"input_ids": backbone.config.vocab_size, "token_type_ids": backbone.config.type_vocab_size,
                      "attention_mask": 2}


def test_a_head_graph_checks_only_its_mask(built_repo):
    assert bounds_from_graph(built_repo.repo / "head_sst2/1/model.onnx") == {"attention_mask": 2}


BOUNDS = {"input_ids": 30522, "token_type_ids": 2, "attention_mask": 2}


def test_ids_inside_the_ranges_pass():
    check_feed(_trunk_feed([101, 0, 30521, 102], types=[0, 1, 1, 0], mask=[1, 1, 0, 0]), BOUNDS)


@pytest.mark.parametrize("feed, names", [
    (_trunk_feed([101, 30522, 102]), "input_ids holds 30522; its values must be 0 to 30521"),
    (_trunk_feed([101, -1, 102]), "input_ids holds -1"),  # Gather would wrap it round silently
    (_trunk_feed([101, 5, 102], types=[0, 2, 0]), "token_type_ids holds 2; its values must be 0 to 1"),
    (_trunk_feed([101, 5, 102], mask=[1, 3, 1]), "attention_mask holds 3; its values must be 0 or 1"),
])
def test_out_of_range_values_are_named_plainly(feed, names):
    with pytest.raises(InputError, match=names.replace("(", r"\(")):
        check_feed(feed, BOUNDS)


def test_inputs_that_disagree_on_their_length_are_refused():
    feed = _trunk_feed([101, 5, 102])
    feed["attention_mask"] = np.ones((1, 5), dtype=np.int64)
    with pytest.raises(InputError, match=r"batch and sequence.*attention_mask \[1, 5\]"):
        check_feed(feed, BOUNDS)
    head = {"hidden_states": np.zeros((2, 4, 8), np.float32), "attention_mask": np.ones((2, 3), np.int64)}
    with pytest.raises(InputError, match="hidden_states"):
        check_feed(head, {"attention_mask": 2})
