"""``python -m trunkserve.client`` as a subprocess against the real server: answers and every error case."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from servertools import torch_reference
from trunkserve.server import free_port

pytestmark = pytest.mark.server


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "trunkserve.client", *args], capture_output=True, text=True, timeout=timeout)


def _lines(proc):
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_infer_single_task_matches_pytorch(server, trunk, tokenizer, head_dirs):
    texts = ["a great movie", "a dreadful, boring mess"]
    out = _lines(run_cli("infer", "--url", server.http_url, "--task", "sst2", *texts))
    want = torch_reference(trunk, tokenizer, head_dirs["sst2"], texts)
    for item, logits, probs in zip(out, want["logits"], want["probabilities"]):
        np.testing.assert_allclose(item["logits"], logits, atol=1e-4)
        assert item["label"] == ["negative", "positive"][int(np.argmax(probs))]
        assert abs(sum(item["probabilities"].values()) - 1) < 1e-4
        assert item["latency_ms"] > 0 and item["truncated"] is False


def test_infer_pair_over_grpc(server, trunk, tokenizer, head_dirs):
    out = _lines(
        run_cli("infer", "--url", server.grpc_url, "--protocol", "grpc", "--task", "mrpc", "He left early.", "--pair", "He went home early.")
    )
    want = torch_reference(trunk, tokenizer, head_dirs["mrpc"], ["He left early."], ["He went home early."])
    assert out[0]["text_pair"] == "He went home early."
    np.testing.assert_allclose(out[0]["logits"], want["logits"][0], atol=1e-4)


def test_multitask_from_jsonl(server, tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "fine film"}\n{"text": "A man sings.", "text_pair": "A man is singing."}\n{"text": "third"}\n')
    out = _lines(run_cli("infer", "--url", server.http_url, "--task", "multitask", "--file", str(f), "--batch-size", "2"))
    assert len(out) == 3
    assert set(out[1]["results"]) == {"sst2", "mrpc", "stsb"}
    assert isinstance(out[1]["results"]["stsb"]["score"], float)
    assert out[0]["latency_ms"] == out[1]["latency_ms"] != out[2]["latency_ms"]  # per request


def test_tasks_lists_served(server):
    assert json.loads(run_cli("tasks", "--url", server.http_url).stdout)["tasks"] == ["mrpc", "sst2", "stsb", "multitask"]


def test_unknown_task_lists_served(server):
    p = run_cli("infer", "--url", server.http_url, "--task", "sentiment", "hello")
    assert p.returncode == 4 and "unknown task 'sentiment'" in p.stderr and "sst2" in p.stderr


def test_empty_text(server):
    p = run_cli("infer", "--url", server.http_url, "--task", "sst2", "  ")
    assert p.returncode == 2 and "empty" in p.stderr


def test_too_long_text_is_truncated_and_said(server):
    p = run_cli("infer", "--url", server.http_url, "--task", "sst2", "very long " * 300)
    out = _lines(p)
    assert out[0]["truncated"] is True and "truncated" in p.stderr


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_text_the_server_refuses_is_bad_input(server, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    p = run_cli("infer", "--url", url, "--protocol", protocol, "--task", "sst2", "x" * 100_001)
    assert p.returncode == 2 and "the limit is 100000" in p.stderr, p.stderr


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_unreachable(protocol):
    p = run_cli("infer", "--url", f"localhost:{free_port()}", "--protocol", protocol, "--task", "sst2", "x", "--timeout", "5")
    assert p.returncode == 3 and "cannot reach Triton" in p.stderr


def test_a_restricted_api_is_a_refusal_not_an_unreachable_server():
    from trunkserve.client.transport import is_connection_error, is_restricted_error

    grpc_refusal = Exception("[StatusCode.UNAVAILABLE] This protocol is restricted, expecting header 'triton-grpc-protocol-x-k'")
    http_refusal = Exception("[403] This API is restricted, expecting header 'x-k'")
    down = Exception("[StatusCode.UNAVAILABLE] failed to connect to all addresses")
    assert is_restricted_error(grpc_refusal) and is_restricted_error(http_refusal) and not is_restricted_error(down)
    assert not is_connection_error(grpc_refusal) and not is_connection_error(http_refusal)
    assert is_connection_error(down) and is_connection_error(ConnectionRefusedError())


def test_jsonl_rows_that_are_not_text_are_refused_with_their_line(tmp_path):
    f = tmp_path / "in.jsonl"
    for line, message in (
        ('{"text": 5}', "in.jsonl:2: 'text' must be a non-empty string, got 5"),
        ('{"text": null}', "in.jsonl:2: 'text' must be a non-empty string, got None"),
        ('{"text": "ok", "text_pair": 7}', "in.jsonl:2: 'text_pair' must be a string, got 7"),
    ):
        f.write_text('{"text": "fine"}\n' + line + "\n")
        # the file is read before any call, so no server is needed; the port is closed
        p = run_cli("infer", "--url", f"localhost:{free_port()}", "--task", "sst2", "--file", str(f))
        assert p.returncode == 2 and message in p.stderr, p.stderr


@pytest.mark.parametrize("url", ["not a url:::", "http://localhost:8000", "localhost:port"])
def test_a_malformed_url_is_bad_input_without_a_traceback(url):
    p = run_cli("tasks", "--url", url)
    assert p.returncode == 2 and "--url must be host:port" in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------- a pair head called without its second text


@pytest.fixture(scope="module")
def pair_server(built_repo, tmp_path_factory):
    """A copy of the test repository whose head_mrpc says ``pair: "true"`` (as the exporter now records), served.

    Only what the ``mrpc`` and ``sst2`` ensembles need is copied (fewer models to start);
    head_sst2 keeps no ``pair`` parameter, like a head exported before it was recorded.
    """
    import shutil

    from trunkserve.export import configs
    from trunkserve.server import TritonProcess

    root = tmp_path_factory.mktemp("pair_repo")
    repo = root / "model_repository"
    for model in ("tokenizer", "trunk", "head_mrpc", "mrpc", "head_sst2", "sst2"):
        shutil.copytree(built_repo.repo / model, repo / model)
    cfg = configs.read_config(repo / "head_mrpc")
    cfg.parameters["pair"].string_value = "true"
    configs.write_config(repo / "head_mrpc", cfg)
    proc = TritonProcess(repo, root / "tritonserver.log", extra_args=["--model-control-mode=explicit", "--load-model=*"])
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log_tail()


PAIR_WARNING = ("warning: task 'mrpc' was trained on text pairs; pass --pair (or text_pair in JSONL) "
                "or the answer may be meaningless")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_pair_head_without_its_pair_answers_with_one_warning(pair_server, tmp_path, protocol):
    url = pair_server.http_url if protocol == "http" else pair_server.grpc_url
    base = ("infer", "--url", url, "--protocol", protocol)
    alone = run_cli(*base, "--task", "mrpc", "He left early.", "Rain again.")
    assert len(_lines(alone)) == 2 and alone.stderr.count(PAIR_WARNING) == 1, alone.stderr
    paired = run_cli(*base, "--task", "mrpc", "He left early.", "--pair", "He went home early.")
    assert len(_lines(paired)) == 1 and "warning" not in paired.stderr, paired.stderr
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "A man sings.", "text_pair": "A man is singing."}\n{"text": "no pair here"}\n')
    jsonl = run_cli(*base, "--task", "mrpc", "--file", str(f), "--batch-size", "1")
    assert len(_lines(jsonl)) == 2 and jsonl.stderr.count(PAIR_WARNING) == 1, jsonl.stderr
    f.write_text('{"text": "A man sings.", "text_pair": "A man is singing."}\n')
    assert "warning" not in run_cli(*base, "--task", "mrpc", "--file", str(f)).stderr
    old_head = run_cli(*base, "--task", "sst2", "a great movie")  # no pair parameter: nothing to say
    assert len(_lines(old_head)) == 1 and old_head.stderr == "", old_head.stderr
