"""The small-data user's path on the real server: CSV, train, hot-add, infer, remove (the rest: tests/unit/test_small_data.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_python

GLUE = Path(__file__).resolve().parents[3] / "shared" / "glue"
needs_glue = pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").is_file(), reason="GLUE data not present")


run = run_python  # conftest's: ``python -m ...`` in a child process


# ---------------------------------------------------------------------------------- units


@pytest.fixture(scope="module")
def live(built_repo, tmp_path_factory):
    from trunkserve.server import TritonProcess

    root = tmp_path_factory.mktemp("small_data_server")
    repo = root / "model_repository"
    shutil.copytree(built_repo.repo, repo)
    proc = TritonProcess(repo, root / "tritonserver.log", extra_args=["--model-control-mode=explicit", "--load-model=*"])
    proc.start()
    yield proc, repo
    assert proc.stop() == 0, proc.log_tail()


@pytest.mark.server
def test_custom_csv_to_a_served_task_and_back(intent_head, live, tmp_path):
    """CSV -> train-heads -> add-head on a running server -> client infer on new utterances -> remove-head."""
    folder, _, _ = intent_head
    proc, repo = live
    url = ["--repo", str(repo), "--url", proc.http_url]
    added = run("-m", "trunkserve.export", "add-head", str(folder), *url)
    assert added.returncode == 0, added.stderr[-3000:]
    assert "head intent: validation" in added.stdout and "majority class" in added.stdout
    assert "quality gate: passed" in added.stdout
    utterances = {"wake me up at quarter to eight on sunday": "set_alarm",
                  "will it rain in oslo this weekend": "weather",
                  "put on some reggae": "play_music",
                  "i want to hear purple rain by prince": "play_music",
                  "set an alarm for 9": "set_alarm"}
    got = run("-m", "trunkserve.client", "infer", "--task", "intent", "--url", proc.http_url, *utterances)
    assert got.returncode == 0, got.stderr
    answers = [json.loads(line)["label"] for line in got.stdout.splitlines()]
    assert answers == list(utterances.values()), answers
    removed = run("-m", "trunkserve.export", "remove-head", "intent", *url)
    assert removed.returncode == 0, removed.stderr[-3000:]
    gone = run("-m", "trunkserve.client", "infer", "--task", "intent", "--url", proc.http_url, "set an alarm for 9")
    assert gone.returncode == 4 and "intent" in gone.stderr


@pytest.mark.server
@pytest.mark.slow
def test_a_failed_head_is_refused_at_hot_add_unless_forced(intent, live, tmp_path):
    train, dev = intent
    p = run("-m", "trunkserve.training", "train-heads", "--tasks", "intent", "--custom", f"intent={train},{dev}", "--student-epochs", "0",
            "--quality-gate", "warn", "--no-progress", "--out", str(tmp_path / "heads"))
    assert p.returncode == 0 and "shipping the student anyway" in p.stdout, p.stdout[-2000:]
    proc, repo = live
    url = ["--repo", str(repo), "--url", proc.http_url]
    refused = run("-m", "trunkserve.export", "add-head", str(tmp_path / "heads/intent"), *url)
    assert refused.returncode != 0 and "--force" in refused.stderr, (refused.stdout, refused.stderr)
    assert not (repo / "head_intent").exists()
    forced = run("-m", "trunkserve.export", "add-head", str(tmp_path / "heads/intent"), *url, "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert run("-m", "trunkserve.export", "remove-head", "intent", *url).returncode == 0
