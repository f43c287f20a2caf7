"""The head artefact: round trip, and clear errors on every kind of broken folder."""

import json
import shutil

import pytest
from conftest import DEPTH

from trunkserve.artifacts import HeadArtifactError, HeadMeta, check_task_name, load_head, read_canary, save_head


def test_round_trip(head_dirs):
    head, meta = load_head(head_dirs["sst2"])
    assert meta.task == "sst2" and meta.labels == ["negative", "positive"]
    assert meta.branch_layer == DEPTH and meta.num_layers == 1 and len(meta.trunk_fingerprint) == 16
    canary = read_canary(head_dirs["sst2"])
    assert len(canary["texts"]) == len(canary["outputs"]["logits"])


def test_regression_meta(head_dirs):
    _, meta = load_head(head_dirs["stsb"])
    assert meta.task_type == "regression" and meta.labels == ["score"]


@pytest.mark.parametrize("name", ["", "SST2", "2cls", "bad-name", "multitask", "trunk", "tokenizer", "head_x", "heads_d3", "heads_x", "a" * 49])
def test_bad_task_names(name):
    with pytest.raises(HeadArtifactError):
        check_task_name(name)


def test_corrupt_weights(head_dirs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(head_dirs["sst2"], bad)
    (bad / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HeadArtifactError, match="cannot read"):
        load_head(bad)


def test_weights_that_do_not_fit_meta(head_dirs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(head_dirs["sst2"], bad)
    meta = json.loads((bad / "head.json").read_text())
    meta["num_layers"] = 2
    (bad / "head.json").write_text(json.dumps(meta))
    with pytest.raises(HeadArtifactError, match="do not fit head.json .*missing: .*layers.1") as exc:
        load_head(bad)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 600
    meta["num_layers"] = 1
    meta["labels"] = ["a", "b", "c"]
    (bad / "head.json").write_text(json.dumps(meta))
    with pytest.raises(HeadArtifactError, match=r"of another shape: .*\(2, 384\) instead of \(3, 384\)"):
        load_head(bad)


def test_missing_and_malformed_json(tmp_path):
    with pytest.raises(HeadArtifactError, match="head.json missing"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text("{")
    with pytest.raises(HeadArtifactError, match="invalid JSON"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(HeadArtifactError, match="format_version"):
        load_head(tmp_path)


def test_save_refuses_inconsistent_meta(backbone, tmp_path):
    from trunkserve.modules import Head

    head = Head(backbone.config, 1, 2)
    meta = HeadMeta("t", "classification", ["a", "b", "c"], 3, 1, "x" * 16, backbone.config.to_dict())
    with pytest.raises(HeadArtifactError):
        save_head(tmp_path / "h", head, meta)
    with pytest.raises(HeadArtifactError, match="at least 2 labels"):
        HeadMeta("t", "classification", ["a"], 3, 1, "x" * 16, {})


def test_group_model_names_are_refused_saying_why():
    with pytest.raises(HeadArtifactError, match=r"invalid task name 'heads_d3'.*heads_\* are reserved"):
        check_task_name("heads_d3")
    assert check_task_name("headsup") == "headsup"  # only the prefix with its underscore is taken
