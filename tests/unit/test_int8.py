"""Int8 on the test repository: the study's scoring order, the quantised copy and its CLI (real graphs, few GLUE rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import DEPTHS
from trunkserve.loadtest.inprocess import MergedPipeline
from trunkserve.export.cli import main
from trunkserve.export.errors import QuantisationError
from trunkserve.export.quantise import quantised_copy
from trunkserve.loadtest.int8 import _only, dev_scores, served_outputs
from trunkserve.training.data.glue import default_glue_dir, load_glue_task

GLUE = default_glue_dir()
needs_glue = pytest.mark.skipif(not (GLUE / "SST-2/dev.tsv").exists(), reason="shared GLUE data not present")


@needs_glue
def test_served_outputs_keep_example_order(built_repo):
    pipeline = MergedPipeline(built_repo.repo, groups=False)
    rows = load_glue_task("mrpc", GLUE, splits=("dev",)).dev["dev"][:14]
    batched = served_outputs(pipeline, rows, batch_size=4)
    one = _only(pipeline, "mrpc")
    for i in (0, 5, 13):
        alone = served_outputs(one, [rows[i]], batch_size=1)["mrpc"]
        np.testing.assert_allclose(batched["mrpc"][i], alone[0], atol=1e-5)
    assert set(batched) == {e.task for e, _ in pipeline.heads}


@needs_glue
def test_quantised_copy_is_int8_smaller_and_scored(built_repo, tmp_path):
    q = quantised_copy(built_repo.repo, tmp_path / "int8", "int8")
    src, dst = built_repo.repo / "trunk/1/model.onnx", q / "trunk/1/model.onnx"
    assert dst.stat().st_size < src.stat().st_size / 2
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(dst)).graph.node)
    f32, _ = dev_scores(MergedPipeline(built_repo.repo, groups=False), GLUE, max_rows=24)
    i8, metrics = dev_scores(MergedPipeline(q, groups=False), GLUE, max_rows=24)
    assert set(f32) == set(i8) == {"sst2", "mrpc", "stsb"}
    assert all(np.isfinite(v) for v in i8.values()) and "pearson" in metrics["stsb"]


def test_cli_refuses_to_quantise_in_place(built_repo, capsys):
    assert main(["quantise", "--repo", str(built_repo.repo), "--out", str(built_repo.repo)]) == 2
    assert "must differ" in capsys.readouterr().err


def _quantised_ops(path) -> int:
    return sum(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(path)).graph.node)


def _weight_scales(path) -> list[np.ndarray]:
    """The int8 weights' scale initialisers (``quantize_dynamic`` names them ``<weight>_scale``)."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_scale")]


def test_trunk_only_per_channel_scheme_leaves_heads_float32(built_repo, tmp_path):
    q = quantised_copy(built_repo.repo, tmp_path / "trunk-pc", "int8-trunk-matmul-per-channel")
    assert _quantised_ops(q / "trunk/1/model.onnx") > 0
    for head in ("head_sst2", "head_mrpc", "head_stsb"):
        assert _quantised_ops(q / head / "1/model.onnx") == 0
        assert (q / head / "1/model.onnx").read_bytes() == (built_repo.repo / head / "1/model.onnx").read_bytes()
    scales = _weight_scales(q / "trunk/1/model.onnx")  # MatMul weights only: the embedding tables stay float32
    assert len(scales) == 6 * max(DEPTHS) and all(s.size in (384, 1536) for s in scales)  # one scale per output column


def test_default_scheme_quantises_embeddings_with_one_scale_per_tensor(built_repo, tmp_path):
    q = quantised_copy(built_repo.repo, tmp_path / "pt", "int8")
    scales = _weight_scales(q / "trunk/1/model.onnx")
    assert len(scales) == 6 * max(DEPTHS) + 3 and all(s.size == 1 for s in scales)  # + word, position, token-type tables


def test_unknown_scheme_is_refused(built_repo, tmp_path):
    with pytest.raises(QuantisationError, match="unknown quantisation scheme 'int4'.*int8-matmul-per-channel"):
        quantised_copy(built_repo.repo, tmp_path / "x", "int4")
    assert not (tmp_path / "x").exists()


def test_report_shows_each_scheme_against_float32():
    from trunkserve.loadtest.int8 import markdown

    def variant(name, sst2, stsb):
        return {"name": name, "scores": {"sst2": sst2, "stsb": stsb}, "inputs_per_s": 1.0, "cpu_s_per_input": 1.0, "model_mb": 1.0}

    res = {"heads": ["h"], "max_rows": None, "batch_size": 16, "command": "c", "trained_scores": {"sst2": 80.0},
           "schemes": {"int8": "a", "int8-matmul-per-channel": "b"},
           "variants": [variant("float32", 80.0, 84.0), variant("int8", 78.0, 83.0), variant("int8-matmul-per-channel", 79.5, 84.5)]}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in markdown(res).splitlines()
            if line.startswith("| ") and "---" not in line}
    assert rows["sst2"] == ["80.00", "80.00", "78.00 (-2.00)", "79.50 (-0.50)"]
    assert rows["stsb"] == ["-", "84.00", "83.00 (-1.00)", "84.50 (+0.50)"]
    assert rows["**average**"][2:] == ["**80.50 (-1.50)**", "**82.00 (+0.00)**"]


def test_cli_quantises_with_the_default_scheme(built_repo, tmp_path, capsys):
    into = tmp_path / "q"
    assert main(["quantise", "--repo", str(built_repo.repo), "--out", str(into)]) == 0
    assert "int8-matmul-per-channel" in capsys.readouterr().out
    for model in ("trunk", "head_sst2"):
        scales = _weight_scales(into / model / "1/model.onnx")
        assert scales and all(s.size > 1 for s in scales)  # per column, and no embedding table among them


# ---------------------------------------------------------------- a quantised repository stays open to hot-add

def test_quantised_copy_keeps_a_float32_trunk_and_its_own_canaries(built_repo, tmp_path):
    import json

    from trunkserve.export.hotswap import DeployedTrunk
    from trunkserve.export.quantised import FLOAT32_REFERENCE, trunk_quantisation

    q = quantised_copy(built_repo.repo, tmp_path / "q")
    assert trunk_quantisation(q) == "int8-matmul-per-channel" and trunk_quantisation(built_repo.repo) == ""
    from trunkserve.export.repository import read_build_info

    assert read_build_info(q)["quantisation"] == "int8-matmul-per-channel"
    assert (q / "trunk/1" / FLOAT32_REFERENCE).read_bytes() == (built_repo.repo / "trunk/1/model.onnx").read_bytes()
    trunk = DeployedTrunk(q)
    import onnxruntime as ort

    for task in ("sst2", "mrpc", "stsb"):
        canary = json.loads((q / f"head_{task}/1/canary.json").read_text())
        assert "served graphs" in canary["reference"]
        sess = ort.InferenceSession(str(q / f"head_{task}/1/model.onnx"), providers=["CPUExecutionProvider"])
        depth = int(configs_param(q / f"head_{task}", "branch_layer"))
        names = list(canary["outputs"])
        got = sess.run(names, trunk.texts_feeds(canary["texts"], depth, served=True))
        for n, g in zip(names, got):
            np.testing.assert_allclose(g, np.asarray(canary["outputs"][n], np.float32), atol=1e-6)


def test_a_quantised_repository_is_not_quantised_again(built_repo, tmp_path):
    q = quantised_copy(built_repo.repo, tmp_path / "q")
    with pytest.raises(QuantisationError, match="already quantised \\(int8-matmul-per-channel\\)"):
        quantised_copy(q, tmp_path / "qq")
    assert not (tmp_path / "qq").exists()


def configs_param(folder, key):
    from trunkserve.export import configs

    return configs.read_config(folder).parameters[key].string_value


def test_offline_hot_add_on_a_quantised_repository_keeps_the_float32_checks(built_repo, tmp_path, new_heads, bad_heads):
    import json

    from trunkserve.export.hotswap import HeadRejected, add_head

    q = quantised_copy(built_repo.repo, tmp_path / "q")
    corrupt, message = bad_heads["canary_mismatch"]  # the artefact's own canary is still checked, on the float32 trunk
    with pytest.raises(HeadRejected, match=message):
        add_head(corrupt, q)
    assert not (q / "head_cola").exists()
    result = add_head(new_heads["cola"], q)
    assert any("quantised (int8-matmul-per-channel)" in n for n in result.notes)
    assert "served graphs" in json.loads((q / "head_cola/1/canary.json").read_text())["reference"]


def test_a_sharp_heads_float32_canary_fails_on_the_int8_trunk(built_repo, tmp_path, sharp_heads):
    """What the served canary would meet without its own reference (guards the next test's strength)."""
    import json

    from trunkserve.export.hotswap import CanaryFailed, DeployedTrunk, compare_canary
    from trunkserve.modules import HeadGraph
    from trunkserve.artifacts import load_head
    import torch

    q = quantised_copy(built_repo.repo, tmp_path / "q")
    head, meta = load_head(sharp_heads[0])
    canary = json.loads((sharp_heads[0] / "canary.json").read_text())
    feeds = DeployedTrunk(q).texts_feeds(canary["texts"], meta.branch_layer, served=True)
    with torch.no_grad():
        logits, probs = HeadGraph(head, served=False)(*(torch.from_numpy(feeds[n]) for n in ("hidden_states", "attention_mask")))
    with pytest.raises(CanaryFailed, match="differs from the artefact's canary"):
        compare_canary({"logits": logits.numpy(), "probabilities": probs.numpy()}, canary)


def test_every_version_of_a_head_is_quantised_not_only_the_first(built_repo, tmp_path, sharp_heads):
    """A head swapped in before quantising is served from version 2: that graph must be int8 too."""
    import shutil

    from trunkserve.export.hotswap import add_head, swap_head

    src = tmp_path / "src"
    shutil.copytree(built_repo.repo, src)
    add_head(sharp_heads[0], src)
    assert swap_head(sharp_heads[1], src).version == 2
    q = quantised_copy(src, tmp_path / "q")
    for version in ("1", "2"):
        assert _quantised_ops(q / "head_sharp" / version / "model.onnx") > 0, version


# ---------------------------------------------------------------- --out: refuse to lose data, stage, move into place


def _tree(folder):
    """Every file under ``folder`` with its bytes: what "left as it was" means."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or ".old-" in p.name)


def test_cli_refuses_a_folder_it_did_not_write_and_leaves_it_alone(built_repo, tmp_path, capsys):
    into = tmp_path / "mine"
    into.mkdir()
    (into / "notes.txt").write_text("keep me")
    assert main(["quantise", "--repo", str(built_repo.repo), "--out", str(into)]) == 2
    err = capsys.readouterr().err
    assert "TargetNotEmpty" in err and "not an earlier output of quantise" in err and "--overwrite" in err
    assert _tree(into) == {"notes.txt": b"keep me"} and _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["inside", "above"])
def test_a_target_inside_the_source_or_holding_it_is_refused_even_with_overwrite(built_repo, tmp_path, where):
    if where == "inside":
        into, match = built_repo.repo / "int8", "inside the repository"
    else:
        into, match = built_repo.repo.parent, "replacing it would delete the source"
    before = _tree(built_repo.repo)
    with pytest.raises(QuantisationError, match=match):
        quantised_copy(built_repo.repo, into, overwrite=True)
    assert _tree(built_repo.repo) == before


def test_overwrite_replaces_a_foreign_folder_and_an_earlier_output_is_replaced_without_it(built_repo, tmp_path):
    from trunkserve.export.quantised import trunk_quantisation

    into = tmp_path / "q"
    into.mkdir()
    (into / "notes.txt").write_text("old")
    assert main(["quantise", "--repo", str(built_repo.repo), "--out", str(into), "--overwrite"]) == 0
    assert not (into / "notes.txt").exists() and trunk_quantisation(into) == "int8-matmul-per-channel"
    assert not (into / ".trunkserve.lock").exists()  # the source's lock file is not copied
    # an earlier output of the command is what --into is for: replaced without --overwrite
    assert main(["quantise", "--repo", str(built_repo.repo), "--out", str(into), "--scheme", "int8-trunk-matmul-per-channel"]) == 0
    assert trunk_quantisation(into) == "int8-trunk-matmul-per-channel" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [None, "foreign", "earlier"])
def test_a_failed_run_leaves_no_servable_output_and_the_target_as_it_was(built_repo, tmp_path, monkeypatch, existing):
    """The quantisation fails half-way (after the float32 copy, as a 384-wide feed on a narrower graph did)."""
    from trunkserve.export import graph_tuning

    into = tmp_path / "q"
    if existing == "foreign":
        into.mkdir()
        (into / "notes.txt").write_text("old")
    elif existing == "earlier":  # a small stand-in for an earlier output: its trunk records a scheme
        (into / "trunk").mkdir(parents=True)
        (into / "trunk/config.pbtxt").write_text('name: "trunk"\nparameters { key: "quantisation" value { string_value: "int8" } }\n')
    before = _tree(into) if into.exists() else None

    def fail(repo, **kwargs):
        (Path(repo) / "trunk/1/model.onnx").write_bytes(b"half-written")
        raise QuantisationError("quantisation failed half-way")

    monkeypatch.setattr(graph_tuning, "tune_repository", fail)
    with pytest.raises(QuantisationError, match="half-way"):
        quantised_copy(built_repo.repo, into, overwrite=existing == "foreign")
    assert (_tree(into) if into.exists() else None) == before
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- a backbone that is not MiniLM's 384 wide


@pytest.fixture(scope="module")
def narrow_repo(tmp_path_factory, backbone):
    """A repository on a random 128-wide BERT (2 layers, 2 attention heads) in Hugging Face layout."""
    import shutil

    import torch
    import transformers

    from trunkserve.export.repository import build_repository
    from trunkserve.backbone import load_backbone
    from trunkserve.synthetic import make_untrained_head

    root = tmp_path_factory.mktemp("narrow")
    folder = root / "bert-h128"
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                                  vocab_size=backbone.config.vocab_size)
    transformers.BertModel(cfg).save_pretrained(str(folder))
    for f in backbone.tokenizer_files():
        shutil.copy2(f, folder / f.name)
    narrow = load_backbone(folder)
    assert narrow.config.hidden_size == 128 and (folder / "model.safetensors").exists()
    heads = [make_untrained_head(narrow, root / "heads/sst2", "sst2", branch_layer=1, seed=0, logit_scale=50.0),
             make_untrained_head(narrow, root / "heads/stsb", "stsb", task_type="regression", branch_layer=1, seed=1)]
    return build_repository(heads, root / "repo", backbone=folder, depths=[1]).repo


def test_repository_sizes_come_from_the_repository(built_repo, narrow_repo):
    from trunkserve.export.graph_tuning import GraphSizes, repository_sizes

    assert repository_sizes(narrow_repo) == GraphSizes(hidden_size=128, num_heads=2, vocab_size=30522)
    assert repository_sizes(built_repo.repo) == GraphSizes(hidden_size=384, num_heads=12, vocab_size=30522)


def test_a_128_wide_backbone_is_quantised_and_serves_valid_outputs(narrow_repo, tmp_path):
    from trunkserve.export.quantised import FLOAT32_REFERENCE, trunk_quantisation

    q = quantised_copy(narrow_repo, tmp_path / "q")
    assert trunk_quantisation(q) == "int8-matmul-per-channel" and (q / "trunk/1" / FLOAT32_REFERENCE).exists()
    for model in ("trunk", "head_sst2", "head_stsb"):
        assert _quantised_ops(q / model / "1/model.onnx") > 0, model
        assert all(s.size in (1, 2, 128, 512) for s in _weight_scales(q / model / "1/model.onnx"))  # per column of a 128-wide BERT
    pipeline = MergedPipeline(q, intra_op_threads=1, groups=False)
    ids = pipeline.tokenizer.encode(["a fine film", "dull", "it was neither good nor bad"], ["", "", ""]).as_dict()
    hidden = pipeline.trunk(ids)
    assert hidden["hidden_1"].shape == (*ids["input_ids"].shape, 128)
    outputs = {e.task: out for (e, _), out in zip(pipeline.heads, pipeline.run(ids))}
    assert outputs["sst2"]["logits"].shape == outputs["sst2"]["probabilities"].shape == (3, 2)
    np.testing.assert_allclose(outputs["sst2"]["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert outputs["stsb"]["score"].shape == (3, 1)
    assert all(np.isfinite(v).all() for out in outputs.values() for v in out.values())


# ---------------------------------------------------------------- head groups: int8 in their 2-D weight products


def _matmul_weight_ranks(path) -> dict[str, int]:
    """Per float32 MatMul left in the graph, the rank of its constant operand (0: none)."""
    model = onnx.load(str(path))
    ranks = {t.name: len(t.dims) for t in model.graph.initializer}
    return {n.name: ranks.get(n.input[1], 0) for n in model.graph.node if n.op_type == "MatMul"}


def test_head_groups_are_quantised_in_their_2d_weight_products_and_stay_close(built_repo, tmp_path):
    from trunkserve.deployment.layout import group_model_folders
    from trunkserve.export.deployed import DeployedTrunk
    from trunkserve.export.head_groups import group_outputs

    q = quantised_copy(built_repo.repo, tmp_path / "q")
    groups = group_model_folders(q)
    assert groups, "the test repository has head groups"
    trunk = DeployedTrunk(q)
    texts = [["a warm and funny film"], ["the plot is thin", "the story is weak"]]
    for folder in groups:
        src, dst = built_repo.repo / folder.name / "1/model.onnx", folder / "1/model.onnx"
        assert _quantised_ops(dst) > 0 and dst.stat().st_size < 0.75 * src.stat().st_size
        members = sum(o.name.endswith(("_logits", "_score")) for o in onnx.load(str(src)).graph.output)
        int8 = [n for n in onnx.load(str(dst)).graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
        assert members  # the wide query, then per head the attention output and both feed-forward products
        assert len(int8) == 1 + 3 * members, [n.name for n in int8]
        left = _matmul_weight_ranks(dst)  # float32: the folded keys/values (3-D) and the pooler/classifier (small)
        assert all(rank != 2 or "Gemm" in name for name, rank in left.items()), left
        depth = int(folder.name.split("_d")[1].split("_")[0])
        feeds = trunk.texts_feeds(texts, depth, served=True)
        f32, i8 = group_outputs(src, feeds), group_outputs(dst, feeds)
        assert set(f32) == set(i8)
        for name in f32:
            if name.endswith("probabilities"):
                np.testing.assert_allclose(i8[name], f32[name], atol=0.1)  # int8 moves outputs, not answers' shape
            assert not np.array_equal(i8[name], f32[name]) or name.endswith("probabilities")


def test_trunk_only_scheme_keeps_head_groups_float32(built_repo, tmp_path):
    from trunkserve.deployment.layout import group_model_folders

    q = quantised_copy(built_repo.repo, tmp_path / "q", "int8-trunk-matmul-per-channel")
    for folder in group_model_folders(q):
        assert (folder / "1/model.onnx").read_bytes() == (built_repo.repo / folder.name / "1/model.onnx").read_bytes()


def test_a_hot_add_on_a_quantised_repository_rebuilds_its_group_in_int8(built_repo, tmp_path, new_heads):
    import json

    from trunkserve.deployment.layout import group_model_folders, model_versions
    from trunkserve.export.hotswap import add_head

    q = quantised_copy(built_repo.repo, tmp_path / "q")
    add_head(new_heads["cola"], q)
    rebuilt = [f for f in group_model_folders(q) if len(model_versions(f)) > 1]
    assert rebuilt, "the new head joined a group"
    for folder in rebuilt:
        newest = folder / str(model_versions(folder)[-1]) / "model.onnx"
        assert _quantised_ops(newest) > 0
    assert "served graphs" in json.loads((q / "head_cola/1/canary.json").read_text())["reference"]


@needs_glue
def test_scores_through_the_groups_equal_the_per_head_scores_in_float32(built_repo, tmp_path):
    from trunkserve.loadtest.int8 import multitask_dev_scores

    per_head, _ = dev_scores(MergedPipeline(built_repo.repo, groups=False), GLUE, max_rows=40)
    assert multitask_dev_scores(built_repo.repo, GLUE, max_rows=40) == per_head
    q = quantised_copy(built_repo.repo, tmp_path / "q")
    grouped = multitask_dev_scores(q, GLUE, max_rows=40)
    assert set(grouped) == set(per_head) and all(np.isfinite(v) for v in grouped.values())
