"""Merging same-shape requests into one graph run and splitting the outputs back."""

import numpy as np

from trunkserve.serving.batching import group_by_shape, run_batched, run_isolated


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


def test_a_failing_request_costs_only_itself_its_answer():
    calls = []

    def run(feeds):  # fails on any row holding a negative id, as ONNX Runtime does on an out-of-range index
        calls.append(feeds["x"].shape[0])
        if (feeds["x"] < 0).any():
            raise ValueError("index out of range")
        return {"y": feeds["x"] * 2}

    feeds = [{"x": np.full((1, 4), 1.0)}, {"x": np.full((2, 4), -1.0)}, {"x": np.full((1, 4), 3.0)}, {"x": np.full((1, 8), 5.0)}]
    out = run_isolated(feeds, run)
    assert isinstance(out[1], ValueError) and "out of range" in str(out[1])
    assert out[0]["y"][0, 0] == 2.0 and out[2]["y"][0, 0] == 6.0 and out[3]["y"].shape == (1, 8)
    assert sorted(calls) == [1, 1, 1, 2, 4]  # the 16-wide group once; the failed 4-row group again one by one
    assert run_isolated([feeds[0], feeds[3]], run)[1]["y"][0, 0] == 10.0  # no failure: batched only
