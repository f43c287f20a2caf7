"""Shared fixtures: the real backbone, untrained heads, a built repository and a real server.

Everything is real: the packaged MiniLM-L6 BERT, ONNX graphs exported from it,
and ``tritonserver`` started through the bundle's launcher. Session-scoped so
the suite exports and starts once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The launcher puts this interpreter's bin/ first on PATH for the server; make
# sure subprocesses (CLI tests) use it too.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

SERVED_TASKS = {
    "sst2": dict(labels=["negative", "positive"], task_type="classification"),
    "mrpc": dict(labels=["not_equivalent", "equivalent"], task_type="classification"),
    "stsb": dict(labels=["score"], task_type="regression"),
}
from trunkserve.defaults import DEFAULT_DEPTHS  # noqa: E402

# The shipped default depth(s), so tests exercise what users deploy, plus one deeper
# branch so that heads reading different depths are always served and checked.
DEPTHS = tuple(sorted({*DEFAULT_DEPTHS, max(DEFAULT_DEPTHS) + 1}))
DEPTH = DEPTHS[0]


def head_depth(i: int) -> int:
    """Served heads cycle over the trunk's depths (sst2 and stsb at the first, mrpc at the next)."""
    return DEPTHS[i % len(DEPTHS)]


@pytest.fixture(scope="session")
def backbone():
    from trunkserve.backbone import load_backbone

    return load_backbone()


@pytest.fixture(scope="session")
def trunk(backbone):
    from trunkserve.modules import Trunk

    return Trunk.from_state_dict(backbone.config, backbone.state_dict, list(DEPTHS)).freeze()


@pytest.fixture(scope="session")
def tokenizer(backbone):
    from trunkserve.tokenization import BucketTokenizer

    return BucketTokenizer(backbone.path)


@pytest.fixture(scope="session")
def head_dirs(tmp_path_factory, backbone, trunk):
    from trunkserve.synthetic import make_untrained_head

    root = tmp_path_factory.mktemp("heads")
    for i, (task, spec) in enumerate(SERVED_TASKS.items()):
        make_untrained_head(backbone, root / task, task, branch_layer=head_depth(i), seed=i, trunk=trunk, **spec)
    return {task: root / task for task in SERVED_TASKS}


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory, head_dirs):
    from trunkserve.export.repository import build_repository

    out = tmp_path_factory.mktemp("repo") / "model_repository"
    return build_repository(list(head_dirs.values()), out=out, depths=list(DEPTHS))


@pytest.fixture(scope="session")
def server(built_repo, tmp_path_factory):
    """A real tritonserver in explicit model-control mode with every model loaded."""
    from trunkserve.server import TritonProcess

    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    proc = TritonProcess(built_repo.repo, log, extra_args=["--model-control-mode=explicit", "--load-model=*"])
    proc.start()
    yield proc
    code = proc.stop()
    assert code == 0, f"tritonserver did not shut down cleanly (exit {code}):\n{proc.log_tail()}"
