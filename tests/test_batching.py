"""Merging same-shape requests into one graph run and splitting the outputs back."""

import numpy as np

from trunkserve.serving.batching import group_by_shape, run_batched


def test_groups_by_non_batch_shape():
    feeds = [{"x": np.zeros((1, 16))}, {"x": np.zeros((3, 32))}, {"x": np.zeros((2, 16))}]
    groups = sorted(group_by_shape(feeds).values())
    assert groups == [[0, 2], [1]]


def test_run_batched_calls_once_per_shape_and_keeps_order():
    calls = []

    def run(feeds):
        calls.append(feeds["x"].shape)
        return {"y": feeds["x"].sum(axis=1, keepdims=True)}

    feeds = [{"x": np.full((1, 4), 1.0)}, {"x": np.full((2, 8), 2.0)}, {"x": np.full((3, 4), 3.0)}]
    out = run_batched(feeds, run)
    assert sorted(calls) == [(2, 8), (4, 4)]
    assert [o["y"].shape for o in out] == [(1, 1), (2, 1), (3, 1)]
    assert out[0]["y"][0, 0] == 4.0 and out[1]["y"][0, 0] == 16.0 and out[2]["y"][2, 0] == 12.0
