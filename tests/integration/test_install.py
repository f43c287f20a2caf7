"""What ``pyproject.toml`` promises an installer: the client part alone runs without torch.

A fresh venv gets ``pip install '.[client]'`` (dependencies from the package index, as a user's
would), and its ``python -m trunkserve.client`` calls the real server of the suite.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.server


def test_a_client_only_install_has_no_torch_and_calls_the_server(server, tmp_path):
    env_dir = tmp_path / "client-venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    import shutil

    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "artifacts", "build", "model_repository*",
                                                             "baseline_repository", "reports", "*.egg-info", "data"))
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", f"{src}[client]"], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "True", "the client extra pulled in torch"
    got = subprocess.run([str(py), "-m", "trunkserve.client", "infer", "--task", "sst2", "--url", server.http_url, "a fine film"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    answer = json.loads(got.stdout.splitlines()[0])
    assert answer["label"] in ("negative", "positive") and abs(sum(answer["probabilities"].values()) - 1) < 1e-4
