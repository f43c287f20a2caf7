"""Replica addresses: repeated --url, a file of URLs, dns://NAME:PORT (DNS faked at socket.getaddrinfo only)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from trunkserve.export.fleet_control import FleetControl, connect
from trunkserve.export.replica_urls import ReplicaUrlError, is_fleet, replica_urls

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "deploy" / "kubernetes" / "hot-add-job.yaml"


def fake_dns(monkeypatch, answers: dict[str, list[str]]):
    """socket.getaddrinfo answering ``answers`` (host -> addresses), once per socket type as the real one does."""
    asked = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        asked.append((host, port, type))
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for addr in answers[host]:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            sockaddr = (addr, port, 0, 0) if fam == socket.AF_INET6 else (addr, port)
            out += [(fam, socket.SOCK_STREAM, 6, "", sockaddr), (fam, socket.SOCK_STREAM, 6, "", sockaddr)]
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_repeated_urls_keep_their_order_each_once():
    assert replica_urls(["b:8000", "a:8000", "b:8000"]) == ["b:8000", "a:8000"]
    assert not is_fleet(["a:8000"]) and is_fleet(["a:8000", "b:8000"]) and is_fleet(["dns://x:8000"])


def test_a_dns_name_is_every_address_behind_it_sorted(monkeypatch):
    asked = fake_dns(monkeypatch, {"trunkserve-replicas": ["10.0.0.12", "10.0.0.3", "fd00::7", "10.0.0.12"]})
    assert replica_urls(["dns://trunkserve-replicas:8000"]) == ["10.0.0.3:8000", "10.0.0.12:8000", "[fd00::7]:8000"]
    assert asked == [("trunkserve-replicas", 8000, socket.SOCK_STREAM)]


def test_a_urls_file_takes_comments_blank_lines_and_dns_names(monkeypatch, tmp_path):
    fake_dns(monkeypatch, {"pods": ["10.1.0.2", "10.1.0.1"]})
    f = tmp_path / "replicas.txt"
    f.write_text("# the fleet\nlocalhost:8000\n\n  dns://pods:9000   # every pod\nlocalhost:8000\n")
    assert replica_urls(["other:8000"], f) == ["other:8000", "localhost:8000", "10.1.0.1:9000", "10.1.0.2:9000"]
    assert is_fleet([], f)


@pytest.mark.parametrize("spec, message", [
    ("dns://nowhere:8000", r"'nowhere' does not resolve.*headless Service"),
    ("dns://trunkserve-replicas", "needs a port"),
    ("localhost", "needs a port"),
    ("http://localhost:8000", "write host:port"),
])
def test_addresses_that_cannot_be_used_say_why(monkeypatch, spec, message):
    fake_dns(monkeypatch, {"trunkserve-replicas": ["10.0.0.1"]})
    with pytest.raises(ReplicaUrlError, match=message):
        replica_urls([spec])


def test_an_empty_or_missing_urls_file_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("# nobody\n\n")
    with pytest.raises(ReplicaUrlError, match="names no replica"):
        replica_urls([], tmp_path / "empty.txt")
    with pytest.raises(ReplicaUrlError, match="cannot read"):
        replica_urls([], tmp_path / "missing.txt")


def test_one_plain_url_is_one_server_a_set_is_a_fleet():
    from trunkserve.export.admin import ServerControl

    assert connect([]) is None
    one = connect(["localhost:8000"])
    assert type(one) is ServerControl and one.url == "localhost:8000"
    fleet = connect(["localhost:8000", "localhost:8010"])
    assert isinstance(fleet, FleetControl) and [r.url for r in fleet.replicas] == ["localhost:8000", "localhost:8010"]
    assert isinstance(connect(["localhost:8000"], skip_unreachable=True), FleetControl)
    for c in (one, fleet):
        c.close()


def test_the_hot_add_jobs_exact_command_line_parses_into_a_fleet(monkeypatch):
    """deploy/kubernetes/hot-add-job.yaml's container command and args, $(TASK) filled in as Kubernetes does."""
    from trunkserve.export.cli import parser
    from trunkserve.export.hotswap_cli import _server

    fake_dns(monkeypatch, {"trunkserve-replicas": ["10.0.0.5", "10.0.0.4", "10.0.0.6"]})
    (job,) = [d for d in yaml.safe_load_all(JOB.read_text()) if d]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["command"][:3] == ["python3", "-m", "trunkserve.export"]
    argv = [a.replace("$(TASK)", env["TASK"]) for a in c["command"][3:] + c["args"]]
    args = parser().parse_args(argv)
    assert (str(args.head_dir), str(args.repo), args.url) == ("/incoming/intent", "/repository", ["dns://trunkserve-replicas:8000"])
    fleet = _server(args)
    assert isinstance(fleet, FleetControl)
    assert [r.url for r in fleet.replicas] == ["10.0.0.4:8000", "10.0.0.5:8000", "10.0.0.6:8000"]
    fleet.close()
