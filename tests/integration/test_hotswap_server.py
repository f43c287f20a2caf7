"""Hot-swap on the real tritonserver: add, swap, roll back and remove a head under load,
with the trunk never reloaded, zero failed requests, bit-identical outputs for the other tasks,
failures rolled back to exactly the previous deployment, and the repository API behind a key.

One explicit-mode server for the module, on its own copy of the repository, started with
``--http-restricted-api`` / ``--grpc-restricted-protocol`` so every test runs with access control on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from trunkserve.client.api import TrunkserveClient, UnknownTask
from trunkserve.export.hotswap import (
    AccessDenied,
    AdminKeyMissing,
    AdminKeyRefused,
    CanaryFailed,
    HeadRejected,
    HotswapError,
    ServerControl,
    ServerUnavailable,
    add_head,
    remove_head,
    rollback_head,
    swap_head,
)
from servertools import Load as ServerLoad, infer, load_count
from repotools import BAD, leftovers, multitask_heads, tree_digest
from trunkserve.server import TritonProcess, free_port
from trunkserve.synthetic import make_untrained_head

pytestmark = pytest.mark.server

HEADER, KEY = "x-trunkserve-admin-key", "s3cret-admin"
ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["a gripping, beautifully acted film.", "the service was slow and the food was cold."]
PAIRS = ["", "the food was cold"]
# what the load threads ask for, per model: the other tasks, also through multitask
TRAFFIC = {
    "sst2": ["logits", "probabilities"],
    "mrpc": ["logits"],
    "multitask": ["sst2_logits", "mrpc_probabilities", "stsb_score"],
}


@pytest.fixture(scope="module")
def srv(built_repo, tmp_path_factory):
    root = tmp_path_factory.mktemp("hotswap_server")
    repo = root / "model_repository"
    shutil.copytree(built_repo.repo, repo)
    args = [
        "--model-control-mode=explicit",
        "--load-model=*",
        f"--http-restricted-api=model-repository:{HEADER}={KEY}",
        f"--grpc-restricted-protocol=model-repository:{HEADER}={KEY}",
    ]
    proc = TritonProcess(repo, root / "tritonserver.log", extra_args=args).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(srv):
    c = httpclient.InferenceServerClient(srv.http_url)
    yield c
    c.close()


@pytest.fixture
def control(srv):
    c = ServerControl(srv.http_url, admin_key=KEY)
    yield c
    c.close()


def served_state(control) -> dict[str, str]:
    return {k: v for k, v in control.states().items()}


def trunk_unchanged(srv, client) -> None:
    assert load_count(srv.log_text(), "trunk") == 1, srv.log_tail()
    assert client.is_model_ready("trunk")
    # only the pre-compiled shim in __pycache__: the stub wrote nothing, so the trunk's folder is unchanged
    assert [p.name for p in (Path(srv.repository) / "trunk" / "1" / "__pycache__").iterdir()] == [f"model.{sys.implementation.cache_tag}.pyc"]


def Load(url: str, threads: int = 3) -> ServerLoad:
    """Client threads sending the other tasks' requests and checking every answer bit for bit."""
    return ServerLoad(url, TRAFFIC, TEXTS, PAIRS, threads)


def test_add_swap_rollback_remove_under_load(srv, client, control, new_heads, capsys):
    repo = Path(srv.repository)
    trunk_files = sorted(p.name for p in (repo / "trunk").rglob("*"))
    counts = {}
    with Load(srv.http_url) as load:
        # add: head, ensemble, canary, then multitask
        before = load.ok
        t0 = time.monotonic()
        r = add_head(new_heads["cola"], repo, control)
        counts["add"] = load.ok - before
        secs = {"add": time.monotonic() - t0}
        assert r.canary_diff is not None and r.canary_diff < 1e-3
        assert control.ready("head_cola") and control.ready("cola")
        v1 = infer(client, "cola", TEXTS, ["logits"], PAIRS).as_numpy("logits")
        mt = infer(client, "multitask", TEXTS, ["cola_logits", "sst2_logits"], PAIRS)
        np.testing.assert_array_equal(mt.as_numpy("cola_logits"), v1)

        # swap: version 2 served, version 1 kept on disk
        before = load.ok
        t0 = time.monotonic()
        r = swap_head(new_heads["cola_v2"], repo, control)
        counts["swap"] = load.ok - before
        secs["swap"] = time.monotonic() - t0
        assert r.version == 2 and sorted(os.listdir(repo / "head_cola")) == ["1", "2", "config.pbtxt", "labels.txt"]
        v2 = infer(client, "cola", TEXTS, ["logits"], PAIRS).as_numpy("logits")
        assert not np.allclose(v1, v2)
        np.testing.assert_array_equal(infer(client, "multitask", TEXTS, ["cola_logits"], PAIRS).as_numpy("cola_logits"), v2)
        assert client.get_model_config("head_cola")["version_policy"] == {"latest": {"num_versions": 1}}

        # rollback through the CLI, key from the environment
        before, t0 = load.ok, time.monotonic()
        env = dict(os.environ, PYTHONPATH=str(ROOT), TRUNKSERVE_ADMIN_KEY=KEY)
        p = subprocess.run(
            [sys.executable, "-m", "trunkserve.export", "swap-head", "--rollback", "cola", "--repo", str(repo), "--url", srv.http_url],
            capture_output=True, text=True, env=env, timeout=300,
        )
        counts["rollback"] = load.ok - before
        secs["rollback (CLI process)"] = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        np.testing.assert_array_equal(infer(client, "cola", TEXTS, ["logits"], PAIRS).as_numpy("logits"), v1)

        # remove: out of multitask first, then ensemble and head
        before, t0 = load.ok, time.monotonic()
        remove_head("cola", repo, control)
        counts["remove"] = load.ok - before
        secs["remove"] = time.monotonic() - t0
    assert load.failures == [], load.failures[:5]
    # remove takes well under a second, so few or no requests may fall inside it; the others overlap many
    assert counts["add"] > 0 and counts["swap"] > 0 and counts["rollback"] > 0, counts
    states = control.states()
    assert states.get("head_cola") != "READY" and states.get("cola") != "READY"
    with pytest.raises(Exception, match="(?i)cola"):
        infer(client, "multitask", TEXTS, ["cola_logits"], PAIRS)
    assert multitask_heads(repo) == ["head_mrpc", "head_sst2", "head_stsb"]
    trunk_unchanged(srv, client)
    assert sorted(p.name for p in (repo / "trunk").rglob("*")) == trunk_files
    assert leftovers(repo) == []
    with capsys.disabled():
        print(f"\n[hotswap] {load.threads} client threads, 0 failures; requests served during each step: {counts}; "
              f"seconds per step: { {k: round(v, 2) for k, v in secs.items()} }; total {load.ok}")


@pytest.mark.parametrize("kind", ["duplicate", *BAD])
def test_bad_head_leaves_server_unchanged(srv, client, control, bad_heads, head_dirs, kind):
    repo = Path(srv.repository)
    head_dir, message = (head_dirs["sst2"], "already deployed") if kind == "duplicate" else bad_heads[kind]
    files, states, loads = tree_digest(repo), served_state(control), srv.log_text().count("successfully loaded")
    with pytest.raises(HeadRejected, match=message):
        add_head(head_dir, repo, control)
    assert tree_digest(repo) == files
    assert served_state(control) == states
    assert srv.log_text().count("successfully loaded") == loads  # nothing was (re)loaded
    trunk_unchanged(srv, client)


class Flaky(ServerControl):
    """The real server, but one chosen call loses the connection (as if the server went away),
    or the served canary answers wrong; every other call, the rollback included, goes through."""

    def __init__(self, *a, drop_load_of=None, corrupt_infer_of=None, **kw):
        super().__init__(*a, **kw)
        self.drop_load_of, self.corrupt_infer_of = drop_load_of, corrupt_infer_of

    def load(self, model):
        if model == self.drop_load_of:
            self.drop_load_of = None

            def refused(*_a, **_k):
                raise ConnectionRefusedError(111, "Connection refused")

            return self._call(f"load {model}", refused)
        return super().load(model)

    def infer(self, model, texts, outputs):
        got = super().infer(model, texts, outputs)
        return {k: v + 1.0 for k, v in got.items()} if model == self.corrupt_infer_of else got


def test_server_lost_mid_add_rolls_back_everything(srv, client, new_heads):
    """Head and ensemble are loaded and multitask rewritten when the connection drops at the
    multitask reload: files, multitask and loaded models all come back to what they were."""
    repo = Path(srv.repository)
    files, loads = tree_digest(repo), load_count(srv.log_text(), "head_qnli")
    flaky = Flaky(srv.http_url, admin_key=KEY, drop_load_of="multitask")
    states = served_state(flaky)
    with pytest.raises(ServerUnavailable, match=r"rewriting multitask failed: load multitask: cannot reach Triton.*rolled back: restore multitask, unload qnli, unload head_qnli"):
        add_head(new_heads["qnli"], repo, flaky)
    assert load_count(srv.log_text(), "head_qnli") == loads + 1  # it really was loaded, then undone
    assert tree_digest(repo) == files
    assert not flaky.ready("head_qnli") and not flaky.ready("qnli")
    after = served_state(flaky)
    assert {k: v for k, v in after.items() if v == "READY"} == {k: v for k, v in states.items() if v == "READY"}
    assert infer(client, "multitask", TEXTS, ["sst2_logits"], PAIRS).as_numpy("sst2_logits").shape == (2, 2)
    trunk_unchanged(srv, client)
    flaky.close()


def test_canary_mismatch_on_swap_restores_previous_version(srv, client, control, new_heads):
    repo = Path(srv.repository)
    add_head(new_heads["cola"], repo, control)
    v1 = infer(client, "cola", TEXTS, ["logits"], PAIRS).as_numpy("logits")
    files = tree_digest(repo)
    flaky = Flaky(srv.http_url, admin_key=KEY, corrupt_infer_of="cola")
    with pytest.raises(CanaryFailed, match="canary through cola failed.*rolled back: remove head_cola/2"):
        swap_head(new_heads["cola_v2"], repo, flaky)
    flaky.close()
    assert tree_digest(repo) == files
    np.testing.assert_array_equal(infer(client, "cola", TEXTS, ["logits"], PAIRS).as_numpy("logits"), v1)
    remove_head("cola", repo, control)
    trunk_unchanged(srv, client)


def test_unreachable_server_is_reported_before_anything_changes(srv, new_heads):
    repo = Path(srv.repository)
    files = tree_digest(repo)
    with pytest.raises(ServerUnavailable, match="cannot reach Triton"):
        add_head(new_heads["qnli"], repo, ServerControl(f"localhost:{free_port()}", admin_key=KEY, timeout_s=5))
    assert tree_digest(repo) == files


def test_repository_api_needs_the_key_inference_does_not(srv, client, new_heads, monkeypatch):
    repo = Path(srv.repository)
    with pytest.raises(Exception, match=f"403.*{HEADER}"):
        client.load_model("sst2")
    with pytest.raises(Exception, match=f"403.*{HEADER}"):
        client.unload_model("sst2")
    assert client.is_model_ready("sst2")
    assert infer(client, "sst2", TEXTS, ["probabilities"], PAIRS).as_numpy("probabilities").shape == (2, 2)
    files = tree_digest(repo)
    monkeypatch.delenv("TRUNKSERVE_ADMIN_KEY", raising=False)
    monkeypatch.delenv("TRUNKSERVE_ADMIN_HEADER", raising=False)
    # a missing key and a refused one need different fixes, so they are told apart (both are AccessDenied)
    missing = "refused the model-repository API.*the server's repository API needs the admin key: pass --admin-key or set TRUNKSERVE_ADMIN_KEY"
    refused = r"the admin key was refused by the server \(wrong key, or header name differs: --admin-header\)"
    # the header sent is named (over gRPC with Triton's metadata prefix)
    cases = [(None, None, AdminKeyMissing, missing), ("wrong-key", None, AdminKeyRefused, refused + f".*{HEADER}'"),
             (KEY, "x-other-header", AdminKeyRefused, refused + ".*x-other-header'")]
    for key, header, error, message in cases:
        with pytest.raises(error, match=message) as exc:
            add_head(new_heads["qnli"], repo, ServerControl(srv.http_url, admin_key=key, admin_header=header))
        assert isinstance(exc.value, AccessDenied)
        if error is AdminKeyRefused:
            assert "needs the admin key" not in str(exc.value)
        with pytest.raises(error, match=message):
            ServerControl(srv.grpc_url, protocol="grpc", admin_key=key, admin_header=header).check()
    assert tree_digest(repo) == files
    # gRPC: same restriction through --grpc-restricted-protocol
    g = grpcclient.InferenceServerClient(srv.grpc_url)
    with pytest.raises(Exception, match="(?i)restricted|permission|unavailable"):
        g.get_model_repository_index()
    assert g.is_model_ready("sst2")
    g.close()
    gctl = ServerControl(srv.grpc_url, protocol="grpc", admin_key=KEY)
    assert gctl.states()["trunk"] == "READY"
    gctl.close()
    # the project's client needs no key for inference: the index is refused, statistics list the tasks
    for protocol, url in (("http", srv.http_url), ("grpc", srv.grpc_url)):
        tc = TrunkserveClient(url, protocol=protocol)
        assert {"sst2", "multitask"} <= set(tc.tasks())
        assert tc.infer("sst2", TEXTS, PAIRS)[0]["label"] in {"negative", "positive"}
        assert set(tc.infer("multitask", TEXTS, PAIRS)[1]["results"]) >= {"sst2"}
        with pytest.raises(UnknownTask, match="served tasks: .*sst2"):
            tc.infer("no_such_task", TEXTS)
        tc.close()
    # the CLI: key from the environment works, none is refused with exit 2
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRUNKSERVE_ADMIN_KEY", None)
    cmd = [sys.executable, "-m", "trunkserve.export", "list-heads", "--repo", str(repo), "--url", srv.http_url]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "AdminKeyMissing" in p.stderr and "pass --admin-key or set TRUNKSERVE_ADMIN_KEY" in p.stderr
    p = subprocess.run(cmd + ["--admin-key", "wrong-key"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "AdminKeyRefused" in p.stderr and "wrong key, or header name differs" in p.stderr
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, TRUNKSERVE_ADMIN_KEY=KEY), timeout=300)
    assert p.returncode == 0 and "READY" in p.stdout
    trunk_unchanged(srv, client)


def test_a_server_that_refuses_model_loads_is_said_before_anything_changes(built_repo, new_heads, tmp_path):
    """Default model-control mode: Triton refuses every load, so hot-add must stop at the check, not mid-change."""
    repo = tmp_path / "model_repository"
    shutil.copytree(built_repo.repo, repo)
    files = tree_digest(repo)
    with TritonProcess(repo, tmp_path / "tritonserver.log") as plain:
        for protocol, url in (("http", plain.http_url), ("grpc", plain.grpc_url)):
            ctl = ServerControl(url, protocol=protocol)
            with pytest.raises(HotswapError, match="does not take model loads.*--model-control-mode=explicit") as exc:
                add_head(new_heads["qnli"], repo, ctl)
            assert "COULD NOT UNDO" not in str(exc.value)
            ctl.close()
        assert tree_digest(repo) == files
        c = httpclient.InferenceServerClient(plain.http_url)
        assert infer(c, "sst2", TEXTS, ["probabilities"], PAIRS).as_numpy("probabilities").shape == (2, 2)
        c.close()


# ---------------------------------------------------------------- head groups


def served_groups(repo: Path) -> dict[str, tuple[list[str], list[int]]]:
    from trunkserve.deployment.reader import Deployment

    return {n: (list(g.params.tasks), g.versions) for n, g in Deployment.read(repo).groups.items()}


def test_head_groups_follow_every_operation_under_load(srv, client, control, new_heads, backbone, trunk, tmp_path, capsys):
    """Under steady load (other tasks, also through ``multitask``): the depth's group rebuilt as a new version at
    each of add, swap, rollback and remove, a new layer count's group created and removed, every answer of the
    other tasks bit-identical, zero failures, the trunk and the other depth's group never reloaded."""
    from conftest import DEPTH, DEPTHS
    from servertools import execution_counts

    repo = Path(srv.repository)
    group, deep, l2 = f"heads_d{DEPTH}", f"heads_d{DEPTHS[-1]}", f"heads_d{DEPTH}_l2"
    two_layer = make_untrained_head(backbone, tmp_path / "two", "twolayer", num_layers=2, seed=31, trunk=trunk)
    deep_loads = load_count(srv.log_text(), deep)
    steps = []

    def step(name, fn):
        before = served_groups(repo).get(group, ([], [0]))[1][-1]
        fn()
        members, versions = served_groups(repo)[group]
        steps.append((name, versions[-1] - before))
        return members

    with Load(srv.http_url) as load:
        assert step("add", lambda: add_head(new_heads["cola"], repo, control)) == ["cola", "sst2", "stsb"]
        v1 = infer(client, "cola", TEXTS, ["logits"], PAIRS).as_numpy("logits")
        grouped = infer(client, "multitask", TEXTS, ["cola_logits"], PAIRS).as_numpy("cola_logits")
        np.testing.assert_allclose(grouped, v1, atol=1e-4, rtol=0)
        add_head(two_layer, repo, control)  # a layer count of its own: a new group
        assert served_groups(repo)[l2] == (["twolayer"], [1]) and control.ready(l2)
        step("swap", lambda: swap_head(new_heads["cola_v2"], repo, control))
        v2 = infer(client, "multitask", TEXTS, ["cola_logits"], PAIRS).as_numpy("cola_logits")
        assert not np.allclose(v2, grouped)
        step("rollback", lambda: rollback_head("cola", repo, control))
        np.testing.assert_array_equal(infer(client, "multitask", TEXTS, ["cola_logits"], PAIRS).as_numpy("cola_logits"),
                                      grouped)
        remove_head("twolayer", repo, control)
        assert l2 not in served_groups(repo) and not control.ready(l2)
        assert step("remove", lambda: remove_head("cola", repo, control)) == ["sst2", "stsb"]
    assert load.failures == [], load.failures[:5]
    assert [n for n, moved in steps if moved != 1] == [], steps  # one new group version per operation
    assert len(served_groups(repo)[group][1]) == 2  # the served version and the one before it
    assert load_count(srv.log_text(), deep) == deep_loads  # the other depth's group never reloaded
    trunk_unchanged(srv, client)
    assert leftovers(repo) == []
    before = execution_counts(client, [group, deep])
    infer(client, "multitask", TEXTS, ["sst2_logits"], PAIRS)
    after = execution_counts(client, [group, deep])
    assert after == {group: before[group] + 1, deep: before[deep]}
    with capsys.disabled():
        print(f"\n[head groups] {load.ok} requests under load, 0 failures; group versions per step: {steps}")


def test_a_head_whose_group_canary_fails_is_refused_and_everything_restored(srv, client, new_heads):
    """The new head passes its own ensemble's canary but the group's, through ``multitask``, answers wrong:
    refused, and files, loaded models and ``multitask``'s answers are as before."""
    repo = Path(srv.repository)
    files = tree_digest(repo)
    flaky = Flaky(srv.http_url, admin_key=KEY, corrupt_infer_of="multitask")
    states = served_state(flaky)
    before = infer(client, "multitask", TEXTS, ["sst2_logits", "stsb_score"], PAIRS)
    with pytest.raises(CanaryFailed, match=r"canary of qnli through heads_d\d+ \(multitask\) failed.*rolled back: "
                                           r"restore multitask, unload qnli, unload head_qnli, remove heads_d\d+/\d+ "
                                           r"and reload heads_d\d+"):
        add_head(new_heads["qnli"], repo, flaky)
    assert tree_digest(repo) == files
    after = served_state(flaky)
    flaky.close()
    assert {k: v for k, v in after.items() if v == "READY"} == {k: v for k, v in states.items() if v == "READY"}
    again = infer(client, "multitask", TEXTS, ["sst2_logits", "stsb_score"], PAIRS)
    for o in ("sst2_logits", "stsb_score"):
        np.testing.assert_array_equal(again.as_numpy(o), before.as_numpy(o))
    with pytest.raises(Exception, match="(?i)qnli"):
        infer(client, "multitask", TEXTS, ["qnli_logits"], PAIRS)
    trunk_unchanged(srv, client)
