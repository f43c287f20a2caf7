"""Head groups follow every operation offline: rebuilt as new versions, created, removed, restored on failure."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import DEPTH, DEPTHS
from repotools import leftovers, multitask_steps, tree_digest

from trunkserve.deployment.reader import Deployment
from trunkserve.export.errors import HotswapError
from trunkserve.export.head_groups import group_outputs
from trunkserve.export.hotswap import add_head, list_heads, remove_head, rollback_head, swap_head
from trunkserve.export.regroup import KEEP_GROUP_VERSIONS
from trunkserve.synthetic import make_untrained_head

D, DEEP = f"heads_d{DEPTH}", f"heads_d{DEPTHS[-1]}"


@pytest.fixture
def repo(built_repo, tmp_path):
    out = tmp_path / "deploy" / "model_repository"
    shutil.copytree(built_repo.repo, out)
    return out


@pytest.fixture(scope="module")
def two_layer(tmp_path_factory, backbone, trunk):
    return make_untrained_head(backbone, tmp_path_factory.mktemp("two") / "deep", "deeptask", num_layers=2, seed=21,
                               trunk=trunk)


def groups(repo) -> dict[str, tuple[list[str], list[int]]]:
    return {n: (list(g.params.tasks), g.versions) for n, g in Deployment.read(repo).groups.items()}


def test_each_operation_rebuilds_the_group_as_a_new_version(repo, new_heads):
    assert groups(repo) == {D: (["sst2", "stsb"], [1]), DEEP: (["mrpc"], [1])}
    add_head(new_heads["cola"], repo)
    assert groups(repo) == {D: (["cola", "sst2", "stsb"], [1, 2]), DEEP: (["mrpc"], [1])}
    assert multitask_steps(repo) == {D: ["cola", "sst2", "stsb"], DEEP: ["mrpc"]}
    swap_head(new_heads["cola_v2"], repo)
    assert groups(repo)[D] == (["cola", "sst2", "stsb"], [2, 3])  # the older ones pruned
    rollback_head("cola", repo)
    assert groups(repo)[D] == (["cola", "sst2", "stsb"], [3, 4])
    remove_head("cola", repo)
    assert groups(repo) == {D: (["sst2", "stsb"], [4, 5]), DEEP: (["mrpc"], [1])}
    assert multitask_steps(repo) == {D: ["sst2", "stsb"], DEEP: ["mrpc"]}
    assert KEEP_GROUP_VERSIONS == 2 and leftovers(repo) == []


def test_the_rebuilt_group_serves_the_version_on_disk(repo, new_heads, trunk, tokenizer):
    """After a swap and its rollback the group graph answers as that version's own head graph does."""
    import onnxruntime as ort

    from trunkserve.export.repository import hidden_feeds

    feeds = hidden_feeds(trunk, tokenizer, DEPTH)
    add_head(new_heads["cola"], repo)
    for op, version in ((lambda: swap_head(new_heads["cola_v2"], repo), 2), (lambda: rollback_head("cola", repo), 1)):
        op()
        newest = groups(repo)[D][1][-1]
        got = group_outputs(repo / D / str(newest) / "model.onnx", feeds)["cola_logits"]
        head = ort.InferenceSession(str(repo / "head_cola" / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(got, head.run(["logits"], feeds)[0], atol=1e-4, rtol=0)


def test_a_head_of_a_new_layer_count_gets_its_own_group_and_takes_it_along(repo, two_layer):
    add_head(two_layer, repo)
    g = groups(repo)
    assert g[f"{D}_l2"] == (["deeptask"], [1]) and g[D] == (["sst2", "stsb"], [1])  # the one-layer group untouched
    assert [r["in_multitask"] for r in list_heads(repo) if r["task"] == "deeptask"] == [True]
    remove_head("deeptask", repo)
    assert f"{D}_l2" not in groups(repo) and not (repo / f"{D}_l2").exists()
    assert multitask_steps(repo) == {D: ["sst2", "stsb"], DEEP: ["mrpc"]}


def test_removing_a_depths_last_head_removes_its_group(repo):
    remove_head("mrpc", repo)
    assert groups(repo) == {D: (["sst2", "stsb"], [1])} and not (repo / DEEP).exists()
    assert multitask_steps(repo) == {D: ["sst2", "stsb"]}


def test_a_group_that_cannot_be_rebuilt_leaves_the_repository_as_it_was(repo, new_heads):
    """A repository whose head versions lack their weights (built before head groups) is refused, all undone."""
    (repo / "head_sst2" / "1" / "weights.safetensors").unlink()
    before = tree_digest(repo)
    with pytest.raises(HotswapError, match=rf"{D}: cannot be rebuilt from the deployed head versions.*rebuild.*rolled back"):
        add_head(new_heads["cola"], repo)
    assert tree_digest(repo) == before and leftovers(repo) == []
