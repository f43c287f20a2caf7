"""docker/ cannot be built here (no Docker engine): check what can be checked without one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from trunkserve.export.cli import parser

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
# NGC release -> Triton server version (release notes); the wheel-served binary is 2.51.
NGC_TO_TRITON = {"24.10": "2.51.0"}


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


def test_base_image_matches_bundled_triton_version():
    import pytriton

    args = dict(a.split("=", 1) for op, a in _instructions(DOCKER / "Dockerfile") if op == "ARG" and "=" in a)
    tag = args["TRITON_IMAGE"].rsplit(":", 1)[1].split("-")[0]
    assert tag in NGC_TO_TRITON
    assert "2.51" in NGC_TO_TRITON[tag]
    assert Path(pytriton.__file__).parent.joinpath("tritonserver", "bin", "tritonserver").exists()


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
