"""The real tritonserver on the real exported repository: parity, ensembles, pruning, reloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import DEPTH, DEPTHS
from servertools import execution_counts, infer, load_count, text_inputs, torch_reference
from trunkserve.server import TritonProcess

pytestmark = pytest.mark.server

SENTENCES = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
    "a sometimes tedious film .",
]
PAIRS = ["", "grim and hopeless", "", "it is a dull movie ."]


@pytest.fixture(scope="module")
def windowed(head_dirs, tmp_path_factory):
    """A build with 20 ms batching windows at the trunk and heads: requests sent together then meet in one
    execution. The default build has no window (a lone request must not wait), so whether two requests
    share an execution there depends on timing; the batching behaviour itself is tested here."""
    from conftest import DEPTHS
    from trunkserve.deployment.params import ServingOptions
    from trunkserve.export.repository import build_repository

    root = tmp_path_factory.mktemp("windowed")
    opts = ServingOptions(max_queue_delay_us=20000, preferred_batch_sizes=(32, 64), head_queue_delay_us=20000)
    built = build_repository(list(head_dirs.values()), out=root / "repo", depths=list(DEPTHS), options=opts)
    with TritonProcess(built.repo, root / "log.txt", ["--model-control-mode=explicit", "--load-model=*"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.http_url)
    yield c
    c.close()


def test_multitask_matches_pytorch(client, trunk, tokenizer, head_dirs):
    outputs = ["sst2_logits", "sst2_probabilities", "mrpc_logits", "stsb_score"]
    result = infer(client, "multitask", SENTENCES, outputs, PAIRS)
    for task in ("sst2", "mrpc", "stsb"):
        want = torch_reference(trunk, tokenizer, head_dirs[task], SENTENCES, PAIRS)
        key = "score" if task == "stsb" else "logits"
        got = result.as_numpy(f"{task}_{key}")
        assert got.shape == want[key].shape
        np.testing.assert_allclose(got, want[key], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.as_numpy("sst2_probabilities").sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("task, outputs", [("sst2", ["logits", "probabilities"]), ("mrpc", ["logits", "probabilities"]), ("stsb", ["score"])])
def test_each_task_ensemble_answers(client, trunk, tokenizer, head_dirs, task, outputs):
    result = infer(client, task, SENTENCES[:2], [*outputs, "truncated"], PAIRS[:2])
    want = torch_reference(trunk, tokenizer, head_dirs[task], SENTENCES[:2], PAIRS[:2])
    for name in outputs:
        np.testing.assert_allclose(result.as_numpy(name), want[name], atol=1e-4, rtol=0)
    assert result.as_numpy("truncated").tolist() == [[False], [False]]


def test_classification_extension_gives_label_names(client):
    r = client.infer(
        "sst2",
        [*__import__("servertools").text_inputs(["what a film"])],
        outputs=[httpclient.InferRequestedOutput("probabilities", class_count=2)],
    )
    labels = sorted(e.decode().split(":", 2)[2] for e in r.as_numpy("probabilities")[0])
    assert labels == ["negative", "positive"]


#: The served heads' groups: sst2 and stsb read the first depth, mrpc the next.
SST2_GROUP, MRPC_GROUP = f"heads_d{DEPTH}", f"heads_d{DEPTHS[-1]}"


def test_multitask_runs_only_requested_heads(client):
    """Asked for one task, ``multitask`` runs the trunk once and that task's head group once (the heads of
    its depth, computed together); the other depth's group and the per-head models do not run."""
    models = ["head_sst2", "head_mrpc", "head_stsb", SST2_GROUP, MRPC_GROUP, "trunk"]
    before = execution_counts(client, models)
    infer(client, "multitask", ["only sst2 please"], ["sst2_probabilities"])
    after = execution_counts(client, models)
    assert after[SST2_GROUP] == before[SST2_GROUP] + 1
    assert after["trunk"] == before["trunk"] + 1
    assert after[MRPC_GROUP] == before[MRPC_GROUP]
    assert all(after[h] == before[h] for h in ("head_sst2", "head_mrpc", "head_stsb"))  # multitask runs groups
    infer(client, "multitask", ["only mrpc"], ["mrpc_logits"])
    again = execution_counts(client, models)
    assert again[MRPC_GROUP] == after[MRPC_GROUP] + 1 and again[SST2_GROUP] == after[SST2_GROUP]


def test_head_groups_match_the_per_head_models_and_pytorch(client, trunk, tokenizer, head_dirs):
    """Every output of ``multitask`` (through the head groups) equals the task's own ensemble (its single head
    model) and trunk + head in PyTorch within 1e-4."""
    wanted = {"sst2": ["logits", "probabilities"], "mrpc": ["logits", "probabilities"], "stsb": ["score"]}
    grouped = infer(client, "multitask", SENTENCES, [f"{t}_{o}" for t, outs in wanted.items() for o in outs], PAIRS)
    for task, outs in wanted.items():
        single = infer(client, task, SENTENCES, outs, PAIRS)
        want = torch_reference(trunk, tokenizer, head_dirs[task], SENTENCES, PAIRS)
        for o in outs:
            got = grouped.as_numpy(f"{task}_{o}")
            np.testing.assert_allclose(got, single.as_numpy(o), atol=1e-4, rtol=0, err_msg=f"{task}_{o}")
            np.testing.assert_allclose(got, want[o], atol=1e-4, rtol=0, err_msg=f"{task}_{o}")


def _one_text_per_bucket(tokenizer) -> list[str]:
    """Texts whose padded lengths are all different (one per length bucket)."""
    sentence = "a much longer sentence that needs the next bucket ."
    texts, seen = [], set()
    for repeats in range(1, 40):
        text = " ".join([sentence] * repeats)
        length = tokenizer.encode([text]).as_dict()["input_ids"].shape[1]
        if length not in seen:
            seen.add(length)
            texts.append(text)
    return texts


def test_requests_of_different_lengths_share_a_batch(windowed, trunk, tokenizer, head_dirs):
    """Requests of different length buckets are batched together (ragged batching), answers unchanged.

    Every request in a round has its own padded length, so an execution that serves two
    of them can only exist if ragged batching merged different shapes: without it, each
    round takes exactly one execution per request. Whether two requests land in the same
    batch depends on timing, so a few rounds are tried (the CI machine once gave only
    pairs); a single merged round proves the point.
    """
    server, client = windowed, httpclient.InferenceServerClient(windowed.http_url)
    texts = _one_text_per_bucket(tokenizer)
    assert len(texts) >= 3, texts
    out = [httpclient.InferRequestedOutput("logits")]
    want = torch_reference(trunk, tokenizer, head_dirs["sst2"], texts)["logits"]
    per_round = []
    for _ in range(8):
        before = execution_counts(client, ["head_sst2"])["head_sst2"]
        concurrent = httpclient.InferenceServerClient(server.http_url, concurrency=len(texts))
        try:
            pending = [concurrent.async_infer("sst2", text_inputs([t]), outputs=out) for t in texts]
            results = [p.get_result().as_numpy("logits") for p in pending]
        finally:
            concurrent.close()
        np.testing.assert_allclose(np.concatenate(results), want, atol=1e-4, rtol=0)
        per_round.append(execution_counts(client, ["head_sst2"])["head_sst2"] - before)
        if per_round[-1] < len(texts):
            break
    assert min(per_round) < len(texts), f"executions per round of {len(texts)} distinct lengths: {per_round}"


def test_bad_requests_get_errors_and_server_keeps_serving(client):
    with pytest.raises(Exception, match="empty") as exc:
        infer(client, "sst2", ["   "], ["probabilities"])
    assert exc.value.status() == "400"  # the client's fault (INVALID_ARG), not a server error
    bad = httpclient.InferInput("input_ids", [1, 4], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(Exception, match="(?i)data.?type|datatype|expected"):
        client.infer("trunk", [bad])
    with pytest.raises(Exception, match="(?i)unknown model|not found"):
        infer(client, "nope", ["x"], ["probabilities"])
    assert infer(client, "sst2", ["still fine"], ["probabilities"]).as_numpy("probabilities").shape == (1, 2)


def test_reloading_ensembles_does_not_reload_trunk(server, client):
    trunk_dir = Path(server.repository) / "trunk" / "1"
    files_before = sorted(p.name for p in trunk_dir.rglob("*"))
    assert load_count(server.log_text(), "trunk") == 1
    client.load_model("multitask")
    client.load_model("sst2")
    assert client.is_model_ready("trunk")
    assert load_count(server.log_text(), "trunk") == 1, server.log_tail()
    assert sorted(p.name for p in trunk_dir.rglob("*")) == files_before


def test_without_precompiled_shim_the_trunk_would_reload(built_repo, tmp_path):
    """Control for the test above: the stub's __pycache__ really does trigger a reload."""
    repo = tmp_path / "repo"
    shutil.copytree(built_repo.repo, repo, ignore=shutil.ignore_patterns("head_mrpc", "head_stsb", "mrpc", "stsb", "multitask"))
    shutil.rmtree(repo / "trunk" / "1" / "__pycache__")
    with TritonProcess(repo, tmp_path / "log.txt", extra_args=["--model-control-mode=explicit", "--load-model=sst2"]) as srv:
        c = httpclient.InferenceServerClient(srv.http_url)
        infer(c, "sst2", ["hello"], ["probabilities"])
        assert (repo / "trunk" / "1" / "__pycache__").exists()
        c.load_model("sst2")
        assert load_count(srv.log_text(), "trunk") == 2


def test_a_bad_request_fails_alone_not_the_requests_batched_with_it(windowed):
    """Out-of-range token ids sent straight to the trunk, in the same execution as good requests.

    The dynamic batcher mixes clients; before ``run_isolated`` one bad request failed every
    request of its execution. Whether they share an execution depends on timing, so rounds
    are tried until one does (Triton's execution count says so).
    """
    server, client = windowed, httpclient.InferenceServerClient(windowed.http_url)
    def trunk_inputs(ids):
        arrays = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
                  "token_type_ids": np.zeros((1, len(ids)), dtype=np.int64)}
        inputs = []
        for name, value in arrays.items():
            x = httpclient.InferInput(name, list(value.shape), "INT64")
            x.set_data_from_numpy(value)
            inputs.append(x)
        return inputs

    good, bad = [101] + [2000] * 14 + [102], [101] + [10**7] * 14 + [102]
    shared = False
    for _ in range(8):
        before = execution_counts(client, ["trunk"])["trunk"]
        concurrent = httpclient.InferenceServerClient(server.http_url, concurrency=4)
        try:
            pending = [concurrent.async_infer("trunk", trunk_inputs(ids)) for ids in (good, bad, good, good)]
            outcomes = []
            for p in pending:
                try:
                    outcomes.append(p.get_result())
                except Exception as exc:  # the bad one
                    outcomes.append(exc)
        finally:
            concurrent.close()
        assert isinstance(outcomes[1], Exception)
        assert all(not isinstance(o, Exception) for i, o in enumerate(outcomes) if i != 1), outcomes
        shared = execution_counts(client, ["trunk"])["trunk"] - before < len(pending)
        if shared:
            break
    assert shared, "no round put the bad request in an execution with good ones"
    assert infer(client, "sst2", ["still fine"], ["probabilities"]).as_numpy("probabilities").shape == (1, 2)


def _int64_inputs(arrays: dict) -> list:
    inputs = []
    for name, value in arrays.items():
        x = httpclient.InferInput(name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64")
        x.set_data_from_numpy(value)
        inputs.append(x)
    return inputs


@pytest.mark.parametrize("model, arrays, named", [
    ("trunk", {"input_ids": np.array([[101, 10**7, 102]]), "attention_mask": np.ones((1, 3), np.int64),
               "token_type_ids": np.zeros((1, 3), np.int64)}, "input_ids holds 10000000"),
    ("trunk", {"input_ids": np.array([[101, -5, 102]]), "attention_mask": np.ones((1, 3), np.int64),
               "token_type_ids": np.zeros((1, 3), np.int64)}, "input_ids holds -5"),
    ("trunk", {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.ones((1, 3), np.int64),
               "token_type_ids": np.full((1, 3), 9, np.int64)}, "token_type_ids holds 9"),
    ("head_sst2", {"hidden_states": np.zeros((1, 3, 384), np.float32),
                   "attention_mask": np.array([[1, 4, 1]], np.int64)}, "attention_mask holds 4"),
    ("head_sst2", {"hidden_states": np.zeros((1, 3, 384), np.float32),
                   "attention_mask": np.ones((1, 5), np.int64)}, "batch and sequence"),
])
def test_out_of_range_ids_sent_straight_to_a_graph_are_the_callers_fault(client, model, arrays, named):
    """INVALID_ARGUMENT (HTTP 400) with a plain message naming the input, not ONNX Runtime's node names."""
    if model == "head_sst2" and not client.is_model_ready(model):
        pytest.skip("head_sst2 is not loaded")
    arrays = {k: v.astype(np.int64) if v.dtype.kind == "i" else v for k, v in arrays.items()}
    if model == "head_sst2":
        width = client.get_model_metadata(model)["inputs"][0]["shape"][-1]
        arrays["hidden_states"] = np.zeros((*arrays["hidden_states"].shape[:2], int(width)), np.float32)
    with pytest.raises(Exception, match=named) as exc:
        client.infer(model, _int64_inputs(arrays))
    assert exc.value.status() == "400", str(exc.value)
    assert "Gather" not in str(exc.value) and "Non-zero status" not in str(exc.value)
    assert infer(client, "sst2", ["still fine"], ["probabilities"]).as_numpy("probabilities").shape == (1, 2)
