"""Fleet-wide hot-add on real tritonservers: three replicas on one copied repository behind a real HAProxy.

The head is validated and the repository written once; every replica loads and canaries it before any
switches ``multitask``; a replica lost mid-operation rolls every replica and the files back; an unreachable
replica refuses the operation before anything changes (``--skip-unreachable`` goes on); a replica started
afterwards loads the repository as it now is; ``list-heads`` counts readiness per replica and flags drift.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from repotools import leftovers, multitask_heads, tree_digest
from servertools import Load as ServerLoad, infer, load_count
from trunkserve.export.admin import ServerControl
from trunkserve.export.errors import ServerUnavailable
from trunkserve.export.fleet_control import FleetControl, ReplicasUnreachable
from trunkserve.export.fleet_ops import list_fleet_heads, report_table
from trunkserve.export.hotswap import add_head, remove_head, swap_head
from trunkserve.fleet.local import REPLICA_ARGS, LocalFleet
from trunkserve.server import free_port

pytestmark = pytest.mark.server

HEADER, KEY = "x-trunkserve-admin-key", "fleet-admin-key"
ROOT = Path(__file__).resolve().parents[2]
TEXTS, PAIRS = ["a gripping, beautifully acted film.", "the food was cold."], ["", "it was cold"]
TRAFFIC = {"sst2": ["probabilities"], "mrpc": ["logits"], "multitask": ["sst2_logits", "stsb_score"]}


@pytest.fixture(scope="module")
def fleet(built_repo, tmp_path_factory):
    if not shutil.which("haproxy"):
        pytest.skip("haproxy (Debian package) is installed by .ci/run")
    root = tmp_path_factory.mktemp("fleet_ops")
    repo = root / "model_repository"
    shutil.copytree(built_repo.repo, repo)
    args = [*REPLICA_ARGS, f"--http-restricted-api=model-repository:{HEADER}={KEY}"]
    f = LocalFleet(repo, root / "fleet", replicas=3, replica_args=args)
    f.start()
    yield f
    f.stop()


def live(fleet):
    return [s for s in fleet.servers if s.proc is not None and s.proc.poll() is None]


def control(fleet, **kw) -> FleetControl:
    return FleetControl([ServerControl(s.http_url, admin_key=KEY) for s in live(fleet)], **kw)


def Load(url: str, threads: int = 3) -> ServerLoad:
    """Client threads through the balancer asking the deployed tasks; every exception or changed answer counts."""
    return ServerLoad(url, TRAFFIC, TEXTS, PAIRS, threads, atol=1e-5)


def cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRUNKSERVE_ADMIN_KEY=KEY)
    return subprocess.run([sys.executable, "-m", "trunkserve.export", *argv], capture_output=True, text=True, env=env,
                          timeout=600)


def answers(fleet, model, outputs):
    return [infer(httpclient.InferenceServerClient(s.http_url), model, TEXTS, outputs, PAIRS).as_numpy(outputs[0])
            for s in live(fleet)]


def served(fleet) -> set[tuple[str, str]]:
    """The (model, version) pairs READY on every live replica, read from each one's repository index; they must agree."""
    per = []
    for s in live(fleet):
        c = ServerControl(s.http_url, admin_key=KEY)
        per.append({(m["name"], str(m.get("version", ""))) for m in c.index() if m.get("state") == "READY"})
        c.close()
    assert len(per) == len(live(fleet)) and all(p == per[0] for p in per), [sorted(p ^ per[0]) for p in per]
    return per[0]


def versions(serving: set[tuple[str, str]], model: str) -> list[str]:
    return sorted(v for name, v in serving if name == model)


def test_fleet_add_swap_rollback_remove_under_load(fleet, new_heads, capsys):
    """The whole life of a task over three replicas while clients ask the other tasks through the balancer.

    The load never asks cola (``TRAFFIC``: sst2, mrpc and multitask's sst2/stsb outputs), so its removal costs no
    request by design; what it checks is that nothing else is disturbed at any step. After each step every replica
    serves the same models at the same versions (``served``)."""
    repo, urls = fleet.repository, [a for s in live(fleet) for a in ("--url", s.http_url)]
    before = served(fleet)
    with Load(fleet.http_url) as load:
        added = cli("add-head", str(new_heads["cola"]), "--repo", str(repo), *urls)
        during_add, after_add = load.ok, served(fleet)
        swapped = swap_head(new_heads["cola_v2"], repo, fc := control(fleet))
        fc.close()
        after_swap, v2 = served(fleet), answers(fleet, "cola", ["logits"])
        rolled = cli("swap-head", "--rollback", "cola", "--repo", str(repo), *urls, "--json")
        after_rollback, v1 = served(fleet), answers(fleet, "cola", ["logits"])
        mt = answers(fleet, "multitask", ["cola_logits"])
        listed = cli("list-heads", "--repo", str(repo), *urls)
        before_remove = load.ok
        removed = cli("remove-head", "cola", "--repo", str(repo), *urls)
        after_remove = served(fleet)
    assert added.returncode == 0, added.stdout + added.stderr
    assert load.failures == [] and during_add > 0 and load.ok > before_remove > during_add, (load.failures[:3], load.ok)
    lines = added.stdout.splitlines()
    rows = [line for line in lines if line.startswith("localhost:")]
    assert len(rows) == 3 and all(" switched " in r and "head_cola, cola, multitask" in r for r in rows), added.stdout
    assert lines[-1] == "fleet: 3 replicas (switched 3)"
    assert versions(after_add, "head_cola") == ["1"] and versions(after_add, "cola") == ["1"]
    assert swapped.version == 2 and all(np.allclose(v, v2[0], atol=1e-5) for v in v2)
    assert versions(after_swap, "head_cola") == ["2"]
    assert rolled.returncode == 0, rolled.stderr
    report = json.loads(rolled.stdout)
    assert report["result"]["version"] == 1 and [r["status"] for r in report["replicas"]] == ["switched"] * 3
    assert versions(after_rollback, "head_cola") == ["1"]
    assert all(np.array_equal(v, v1[0]) for v in v1) and not np.allclose(v1[0], v2[0])
    assert all(np.array_equal(v, v1[0]) for v in mt), "multitask routes to cola on every replica"
    assert listed.returncode == 0, listed.stderr
    cola = next(line for line in listed.stdout.splitlines() if line.startswith("cola "))
    assert "v1 ready 3/3" in cola and "v2" not in cola and cola.rstrip().endswith("-"), listed.stdout
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert removed.stdout.splitlines()[-1] == "fleet: 3 replicas (switched 3)", removed.stdout
    assert not versions(after_remove, "head_cola") and not versions(after_remove, "cola")
    assert {n for n, _ in after_remove} == {n for n, _ in before}, "the fleet serves what it served before cola"
    for s in live(fleet):
        assert load_count(s.log_text(), "trunk") == 1, s.log_tail()  # the trunk is never reloaded
    with capsys.disabled():
        print(f"\n[fleet ops] add-head over 3 replicas under load ({load.ok} requests over add, swap, rollback and "
              f"remove, 0 failed):\n{added.stdout}\nremove-head:\n{removed.stdout}")


class Timed(ServerControl):
    """A real replica whose loads and unloads are logged with their start and end times (``log``, shared)."""

    def __init__(self, url: str, log: list, **kw):
        super().__init__(url, **kw)
        self.log = log

    def load(self, model: str) -> None:
        t0 = time.monotonic()
        super().load(model)
        self.log.append((t0, time.monotonic(), f"load {model}"))

    def unload(self, model: str, wait: bool = True) -> None:
        t0 = time.monotonic()
        super().unload(model, wait)
        self.log.append((t0, time.monotonic(), f"unload {model}"))


def test_two_fleet_operations_at_once_are_serialised_by_the_lock_and_both_land(fleet, new_heads):
    """add-head qnli and add-head cola started at the same moment on one repository: the second waits for the
    repository lock (none of its loads overlaps the first's), both land, and every replica serves both."""
    repo, servers, before = fleet.repository, live(fleet), served(fleet)
    logs, results, errors, go = {"qnli": [], "cola": []}, {}, {}, threading.Barrier(2)

    def run(task: str) -> None:
        fc = FleetControl([Timed(s.http_url, logs[task], admin_key=KEY) for s in servers])
        go.wait()
        try:
            results[task] = add_head(new_heads[task], repo, fc)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors[task] = exc
        finally:
            fc.close()

    threads = [threading.Thread(target=run, args=(task,)) for task in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert errors == {} and set(results) == {"qnli", "cola"}, errors
    (start1, end1, first), (start2, end2, second) = sorted((min(a for a, _, _ in log), max(b for _, b, _ in log), task)
                                                           for task, log in logs.items())
    assert end1 <= start2, f"{second} loaded on a replica at {start2:.2f} before {first} finished at {end1:.2f}"
    assert results[second].seconds > end1 - start1, "the second one's time includes its wait for the lock"
    both = served(fleet)
    for task in ("qnli", "cola"):
        assert versions(both, f"head_{task}") == ["1"] and versions(both, task) == ["1"]
    assert {"head_qnli", "head_cola"} <= set(multitask_heads(repo)) and leftovers(repo) == []
    for s in servers:
        infer(httpclient.InferenceServerClient(s.http_url), "multitask", TEXTS, ["qnli_logits", "cola_logits"], PAIRS)
    fc = control(fleet)
    for task in ("qnli", "cola"):
        remove_head(task, repo, fc)
    fc.close()
    assert {n for n, _ in served(fleet)} == {n for n, _ in before} and leftovers(repo) == []


class KilledBeforeLoading(ServerControl):
    """A real replica SIGKILLed just before it is asked to load ``model``: no clean shutdown, as when its container dies.

    The launcher ``exec``s the server, so the process the fleet started *is* tritonserver (``exe`` says so). The
    kill takes its process group, i.e. tritonserver and its Python-backend stubs: a stub started after the server
    came up inherits the server's sockets (the listening one and every accepted connection), so killing
    tritonserver alone leaves them open and a request in flight there hangs until the client gives up (seen:
    one ``timed out`` 60 s after the kill) instead of failing over."""

    def __init__(self, process, model: str, **kw):
        super().__init__(process.http_url, **kw)
        self.process, self.model, self.exe, self.killed_at = process, model, "", None

    def load(self, model: str) -> None:
        proc = self.process.proc
        if model == self.model and proc.poll() is None:
            self.exe = os.path.basename(os.readlink(f"/proc/{proc.pid}/exe"))
            os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: its group id is its pid
            proc.wait(timeout=30)
            self.killed_at = time.monotonic()
        super().load(model)


def test_a_replica_lost_mid_add_rolls_every_replica_and_the_files_back(fleet, new_heads, capsys):
    """Two replicas have loaded qnli and switched multitask when the third is SIGKILLed (it has loaded head_qnli and
    qnli, not yet multitask): all undone, and the clients going through the balancer lose no request."""
    repo = fleet.repository
    files, servers, routed = tree_digest(repo), live(fleet), multitask_heads(fleet.repository)
    before = [ServerControl(s.http_url, admin_key=KEY).states() for s in servers[:2]]
    last = KilledBeforeLoading(servers[-1], "multitask", admin_key=KEY)
    fc = FleetControl([*(ServerControl(s.http_url, admin_key=KEY) for s in servers[:-1]), last])
    with Load(fleet.http_url) as load:
        with pytest.raises(ServerUnavailable, match=rf"replica {last.url}: load multitask: cannot reach Triton.*"
                                                    r"rolled back: restore multitask, unload qnli, unload head_qnli"):
            add_head(new_heads["qnli"], repo, fc)
    assert last.exe == "tritonserver" and servers[-1].proc.returncode == -signal.SIGKILL
    assert load.failures == [], (load.failures[:3], [round(t - last.killed_at, 2) for t in load.failed_at])
    assert tree_digest(repo) == files and leftovers(repo) == []
    assert multitask_heads(repo) == routed and "head_qnli" not in routed
    after = [ServerControl(s.http_url, admin_key=KEY).states() for s in servers[:2]]
    assert [{k for k, v in s.items() if v == "READY"} for s in after] == [{k for k, v in s.items() if v == "READY"} for s in before]
    for s in servers[:2]:
        with pytest.raises(Exception, match="(?i)qnli"):
            infer(httpclient.InferenceServerClient(s.http_url), "multitask", TEXTS, ["qnli_logits"], PAIRS)
    rows = fc.report(ServerUnavailable("lost"))
    assert [r["status"] for r in rows] == ["rolled back", "rolled back", "lost"]
    # the new head, its ensemble, the rebuilt group of its depth, then multitask
    assert {"head_qnli", "qnli", "multitask"} <= set(rows[0]["loaded"]) and rows[0]["switched"]
    groups = [m for m in rows[0]["loaded"] if m.startswith("heads_d")]
    assert groups and rows[0]["loaded"][-1] == "multitask"
    # undone in reverse: multitask back, the new models out, the group's previous version back
    back = rows[0]["rolled_back"]
    assert back[:3] == ["load multitask", "unload qnli", "unload head_qnli"] and back[3:] == [f"load {g}" for g in groups]
    lost = rows[2]["loaded"]  # it went away before multitask: nothing could be undone there
    assert {"head_qnli", "qnli"} <= set(lost) and "multitask" not in lost and rows[2]["rolled_back"] == []
    with capsys.disabled():
        print(f"\n[fleet ops] a replica lost mid-add:\n{report_table(fc)}")
    fc.close()


def test_an_unreachable_replica_refuses_then_skip_unreachable_and_a_late_replica_joins(fleet, new_heads, tmp_path):
    repo, gone = fleet.repository, f"localhost:{free_port()}"
    files, servers = tree_digest(repo), live(fleet)
    loads = [(load_count(s.log_text(), "head_qnli"), load_count(s.log_text(), "qnli")) for s in servers]
    with pytest.raises(ReplicasUnreachable, match=rf"1 of {len(servers) + 1} replicas cannot be reached, so nothing was changed: {gone}"):
        add_head(new_heads["qnli"], repo, FleetControl([*(ServerControl(s.http_url, admin_key=KEY) for s in servers),
                                                         ServerControl(gone, admin_key=KEY)]))
    # nothing of qnli was loaded anywhere (Triton itself re-loads a swapped task's ensemble on any repository call)
    assert tree_digest(repo) == files
    assert [(load_count(s.log_text(), "head_qnli"), load_count(s.log_text(), "qnli")) for s in servers] == loads

    listing = tmp_path / "replicas.txt"
    listing.write_text("".join(f"{s.http_url}\n" for s in servers) + f"{gone}  # not up\n")
    p = cli("add-head", str(new_heads["qnli"]), "--repo", str(repo), "--urls-file", str(listing), "--skip-unreachable")
    assert p.returncode == 0, p.stdout + p.stderr
    assert any(line.startswith(gone) and " skipped " in line for line in p.stdout.splitlines()), p.stdout

    late = fleet.start_replica()  # a replica that starts now loads the repository as it is: qnli included
    assert load_count(late.log_text(), "trunk") == 1
    got = answers(fleet, "qnli", ["logits"])
    assert len(got) == len(servers) + 1 and all(np.array_equal(g, got[0]) for g in got)
    fc = control(fleet)
    rows = {r["task"]: r for r in list_fleet_heads(repo, fc)}
    n = len(servers) + 1
    assert rows["qnli"]["ready"] == f"v1 ready {n}/{n}" and rows["qnli"]["drift"] == []
    assert rows["sst2"]["ready"] == f"v1 ready {n}/{n}" and rows["sst2"]["drift"] == []
    remove_head("qnli", repo, fc)
    fc.close()
    assert not any(ServerControl(s.http_url, admin_key=KEY).ready("qnli") for s in live(fleet))


def test_list_heads_flags_a_replica_that_drifted(fleet, capsys):
    repo, servers = fleet.repository, live(fleet)
    odd = ServerControl(servers[0].http_url, admin_key=KEY)
    odd.unload("stsb")  # one replica no longer serves the stsb ensemble
    try:
        p = cli("list-heads", "--repo", str(repo), *[a for s in servers for a in ("--url", s.http_url)])
        assert p.returncode == 0, p.stderr
        stsb = next(line for line in p.stdout.splitlines() if line.startswith("stsb "))
        assert f"v1 ready {len(servers)}/{len(servers)}" in stsb and f"ensemble stsb not ready on {servers[0].http_url}" in stsb
        with capsys.disabled():
            print(f"\n[fleet ops] list-heads with one replica drifted:\n{p.stdout}")
        fc = control(fleet)
        rows = {r["task"]: r for r in list_fleet_heads(repo, fc)}
        assert rows["stsb"]["drift"] == [f"ensemble stsb not ready on {servers[0].http_url}"]
        assert rows["sst2"]["drift"] == [] and rows["sst2"]["ready"] == f"v1 ready {len(servers)}/{len(servers)}"
        assert fc.states()["stsb"] == f"READY on {len(servers) - 1}/{len(servers)}"
        fc.close()
    finally:
        odd.load("stsb")
        odd.close()
