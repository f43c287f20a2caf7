"""The student recipe: multi-teacher soft labels, teacher weights, the transfer set and what head.json records."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from trunkserve.artifacts import load_head
from trunkserve.training.cache import ConcatCache
from trunkserve.training.data.glue import default_glue_dir, load_glue_task
from trunkserve.training.distill import distillation_loss, init_student, teacher_targets, train_student
from trunkserve.training.loop import FitConfig
from trunkserve.training.options import HeadOptions, PipelineError, check_recipe_options
from trunkserve.training.pipeline import train_heads
from trunkserve.training.prepare import build_caches, cap, carve_validation, prepare
from trunkserve.training.recipe import teacher_seeds, teacher_weights
from trunkserve.training.teacher import predict_head, train_teacher
from trunkserve.training.transfer import build_transfer, held_out, normalise, perturb
from trunkserve.training.trials import train_trials

GLUE = default_glue_dir()
needs_glue = pytest.mark.skipif(not (GLUE / "SST-2/train.tsv").exists(), reason="shared GLUE data not present")
K = 3


@pytest.fixture(scope="module")
def bb():
    from trunkserve.backbone import load_backbone

    return load_backbone()


@pytest.fixture(scope="module")
def sst2(bb):
    """120 SST-2 rows (108 train, 12 validation), 60 augmented transfer rows, cached at depth 3."""
    opts = HeadOptions(max_train=120, max_val=12, max_dev=20, transfer=("augment",), transfer_max=60, progress=False)
    return prepare("sst2", bb, opts, GLUE, cache_depths=(K,))


@pytest.fixture(scope="module")
def teachers(bb, sst2):
    """Two teachers (seeds 0 and 1), a few steps each: their outputs differ from each other and from a fresh student."""
    d = sst2.data
    cfg = dict(epochs=3, lr=1e-3, min_steps=0, batch_size=16, progress=False)
    return [train_teacher(bb, sst2.caches["train"], sst2.caches["val"], K, 3, d.num_labels, d.task_type, d.metric,
                          FitConfig(seed=s, **cfg))[0] for s in (0, 1)]


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    e = np.exp(x / temperature - (x / temperature).max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@needs_glue
def test_multi_teacher_soft_labels_are_the_mean_and_the_weighted_mean(sst2, teachers):
    cache, T = sst2.caches["val"], 2.0
    probs = [_softmax(predict_head(t, cache, K), T) for t in teachers]
    assert not np.allclose(probs[0], probs[1], atol=1e-3)  # two different teachers, or the check below proves nothing
    mean = teacher_targets(teachers, cache, K, T).numpy()
    weighted = teacher_targets(teachers, cache, K, T, weights=[1.0, 3.0]).numpy()
    for row in (0, 5, 11):
        for c in range(2):
            assert mean[row, c] == pytest.approx((probs[0][row, c] + probs[1][row, c]) / 2, abs=1e-6)
            assert weighted[row, c] == pytest.approx(0.25 * probs[0][row, c] + 0.75 * probs[1][row, c], abs=1e-6)
    np.testing.assert_allclose(weighted.sum(axis=1), 1.0, atol=1e-6)


def test_teacher_weights_and_seeds():
    assert teacher_weights([60.0, 70.0, 50.0], 50.0) == [1 / 3] * 3
    # validation: in proportion to the score above the majority class (10 and 20 points; the third is at chance)
    assert teacher_weights([60.0, 70.0, 50.0], 50.0, "validation") == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert teacher_weights([40.0, 45.0], 50.0, "validation") == [0.5, 0.5]  # none above chance: equal
    assert teacher_weights([float("nan"), 55.0], 50.0, "validation") == [0.0, 1.0]
    assert teacher_weights([30.0, 10.0], float("nan"), "validation") == pytest.approx([0.75, 0.25])  # regression's chance
    assert teacher_seeds(HeadOptions(), 1) == (1, 2, 3)  # seeds 0, 1, 2 with three teachers reuse each other's
    assert teacher_seeds(HeadOptions(student_recipe="single-teacher"), 4) == (4,)
    with pytest.raises(PipelineError, match="weighting"):
        teacher_weights([1.0], 0.0, "best")


def test_recipe_options_are_checked():
    for bad, match in (({"transfer": ("augment", "none")}, "none cannot"), ({"transfer": ("file",)}, "--transfer-text"),
                       ({"transfer": ("books",)}, "unknown source"), ({"teachers": 0}, "at least 1"),
                       ({"student_recipe": "two"}, "student_recipe")):
        with pytest.raises(PipelineError, match=match):
            check_recipe_options(bad)
    assert HeadOptions(transfer=("none",), transfer_text="t.txt").transfer_sources == ("file",)
    assert HeadOptions(transfer="none").transfer_sources == ()


def test_transfer_rows_add_the_soft_term_only():
    s, t = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.softmax(torch.tensor([[0.0, 1.0], [1.0, 0.0]]) / 2, dim=-1)
    y = torch.tensor([0, 1])
    both = distillation_loss(s, t, y, "classification")
    assert distillation_loss(s, t, y, "classification", labelled=torch.tensor([True, True])).item() == pytest.approx(both.item())
    soft_only = distillation_loss(s, t, y, "classification", hard_weight=0.0)
    assert distillation_loss(s, t, y, "classification", labelled=torch.tensor([False, False])).item() == pytest.approx(soft_only.item())
    # one labelled row: its cross-entropy alone is the hard term
    hard_first = -(1.0 - math.log(math.e + 1))
    got = distillation_loss(s, t, y, "classification", labelled=torch.tensor([True, False])).item()
    assert got == pytest.approx(soft_only.item() + hard_first, rel=1e-6)


@needs_glue
def test_the_transfer_set_shares_no_sentence_with_dev_or_validation():
    for task, sources in (("mrpc", ("augment", "other-tasks")), ("sst2", ("other-tasks",))):
        data = load_glue_task(task, GLUE)
        train_rows, val_rows = carve_validation(cap(data.train, 400, 0), 0.1, 40, 0)
        ts = build_transfer(data, train_rows, val_rows, sources, 300, glue_dir=GLUE)
        banned = held_out(data, val_rows, GLUE)
        assert len(ts.rows) == 300 - ts.excluded and set(ts.sources) == set(sources)
        assert all((ex.text_pair is not None) == (task == "mrpc") for ex in ts.rows)
        dev = {normalise(t) for rows in data.dev.values() for ex in rows for t in (ex.text, ex.text_pair) if t}
        val = {normalise(t) for ex in val_rows for t in (ex.text, ex.text_pair) if t}
        assert dev and val and dev | val <= banned
        assert not {normalise(t) for ex in ts.rows for t in (ex.text, ex.text_pair) if t} & (dev | val), task


@needs_glue
def test_dev_sentences_in_a_transfer_file_are_left_out(tmp_path):
    data = load_glue_task("sst2", GLUE)
    train_rows, val_rows = carve_validation(cap(data.train, 200, 0), 0.1, 20, 0)
    dev_lines = [ex.text for ex in data.dev["dev"][:5]]
    f = tmp_path / "extra.txt"
    f.write_text("\n".join(dev_lines + [" " + dev_lines[0].upper() + " ", "a sentence of my own", val_rows[0].text]) + "\n")
    ts = build_transfer(data, train_rows, val_rows, ("file",), 100, glue_dir=GLUE, text_file=f)
    assert [ex.text for ex in ts.rows] == ["a sentence of my own"] and ts.excluded == 7
    assert perturb("one two three four five six seven", random.Random(0)) != "one two three four five six seven"


@needs_glue
def test_a_student_trained_on_the_transfer_set_moves_towards_its_teachers(sst2, teachers):
    transfer, train = sst2.caches["transfer"], sst2.caches["train"]
    assert len(transfer) == 60 and not ({normalise(ex.text) for ex in sst2.transfer_info.rows}
                                       & {normalise(ex.text) for rows in sst2.data.dev.values() for ex in rows})
    both = ConcatCache(train, transfer)  # read as one: the parts' rows, in the asked order
    idx = np.array([len(train) + 3, 0, len(train), 7])
    h, m = both.batch(idx, K)
    for row, (part, i) in enumerate(((transfer, 3), (train, 0), (transfer, 0), (train, 7))):
        hp, mp = part.batch([i], K)
        torch.testing.assert_close(h[row, : hp.shape[1]], hp[0])
        assert m[row].sum() == mp.sum()
    targets = teacher_targets(teachers, transfer, K, 2.0)

    def kl(head) -> float:
        logp = torch.log_softmax(torch.from_numpy(predict_head(head, transfer, K)) / 2.0, dim=-1)
        return float((targets * (targets.log() - logp)).sum(-1).mean())

    before = kl(init_student(teachers[0], 1))
    student, fit = train_student(teachers, train, sst2.caches["val"], K, "sst2",
                               FitConfig(epochs=2, lr=1e-3, min_steps=0, batch_size=16, progress=False), num_layers=1,
                               refit="never", transfer=transfer)
    assert fit.planned_steps == 2 * math.ceil((len(train) + len(transfer)) / 16)  # the transfer rows are in every epoch
    assert kl(student) < 0.8 * before, (kl(student), before)  # measured: 0.046 -> 0.030


@needs_glue
def test_a_trials_recipe_record_names_its_teachers_and_transfer_rows(bb, sst2):
    opts = HeadOptions(epochs=1, min_steps=0, batch_size=16, progress=False, teachers=2, teacher_weighting="validation",
                       transfer=("augment",), transfer_max=60)
    (multi,) = train_trials(bb, sst2, opts, 0, [(K, 3, 1)], log=lambda *_: None)
    r = multi.recipe
    assert (r["name"], r["teachers"], r["teacher_seeds"], r["transfer"]["rows"]) == ("multi-teacher", 2, [0, 1], 60)
    assert sum(r["weights"]) == pytest.approx(1.0) and multi.teacher_val == max(r["teacher_val"])
    single_opts = dataclasses.replace(opts, student_recipe="single-teacher", transfer=("none",))
    (single,) = train_trials(bb, sst2, single_opts, 1, [(K, 3, 1)], log=lambda *_: None)
    assert (single.recipe["name"], single.recipe["teacher_seeds"], single.recipe["transfer"]["rows"]) == ("single-teacher", [1], 0)
    assert single.teacher is sst2.teachers[next(key for key in sst2.teachers if key[2] == 1)][0]  # seed 1's teacher, reused


@needs_glue
def test_a_trained_heads_metadata_names_the_recipe(tmp_path):
    train_heads(["rte"], glue_dir=GLUE, out=tmp_path / "heads", max_train=120, epochs=1, max_val=20, max_dev=20, depths=(3,),
                min_steps=0, teachers=2, transfer=("augment",), transfer_max=40, quality_gate="warn", progress=False,
                log=lambda *_: None)
    _, meta = load_head(tmp_path / "heads/rte")
    r = meta.training["recipe"]
    assert r["name"] == "multi-teacher" and r["teachers"] == 2 and r["teacher_seeds"] == [0, 1] and len(r["teacher_val"]) == 2
    assert r["transfer"] == {"sources": ["augment"], "rows": 40, "max": 40, "by_source": {"augment": 40}, "excluded": 0}
    assert r["weights"] == [0.5, 0.5] and r["weighting"] == "mean"


@needs_glue
def test_the_recipe_ablation_writes_its_table(tmp_path):
    from trunkserve.training.recipe_ablation import recipe_ablation

    res = recipe_ablation(["rte"], seeds=1, out=tmp_path, glue_dir=GLUE, max_train=80, epochs=1, min_steps=0, max_val=10,
                          max_dev=20, depths=(3,), teachers=2, transfer_max=30, log=lambda *_: None)
    runs = res["tasks"]["rte"]["runs"]
    assert list(runs) == ["single-teacher", "multi-teacher", "multi-teacher+transfer"]
    assert [runs[n]["seeds"][0]["recipe"]["transfer"]["rows"] for n in runs] == [0, 0, 30]
    assert [runs[n]["seeds"][0]["recipe"]["teachers"] for n in runs] == [1, 2, 2]
    table = (tmp_path / "recipe.md").read_text()
    assert "| rte | multi-teacher+transfer |" in table and (tmp_path / "recipe.json").is_file()


@needs_glue
def test_build_caches_caches_the_transfer_rows_too(bb, sst2):
    assert set(sst2.caches) == {"train", "val", "dev:dev", "transfer"} and sst2.transfer_info.sources == {"augment": 60}
    none = dataclasses.replace(sst2, caches={}, transfer=None, transfer_info=None, teachers={})
    assert "transfer" not in build_caches(none, bb, HeadOptions(progress=False), [K]).caches
