"""Trunk cache, frozen trunk, distillation loss, student learning and the head artefact, on small subsets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trunkserve.artifacts import load_head, read_canary
from trunkserve.fingerprint import trunk_fingerprint
from trunkserve.modules import Head, Trunk
from trunkserve.tokenization import BucketTokenizer

from trunkserve.training.cache import HiddenStateCache
from trunkserve.training.data.encode import pad_tokens
from trunkserve.training.data.glue import default_glue_dir
from trunkserve.training.ablation import ablate_task
from trunkserve.training.distill import DistillError, distillation_loss, hidden_mse, init_student, soft_cross_entropy, train_student
from trunkserve.training.loop import FitConfig
from trunkserve.training.metrics import compute_metrics
from trunkserve.training.options import HeadOptions, PipelineError
from trunkserve.training.pipeline import train_heads
from trunkserve.training.results import results_json
from trunkserve.training.search import TaskSearch, choose, merged_layers
from trunkserve.training.prepare import prepare
from trunkserve.training.trials import Trial, candidates, run_seed
from trunkserve.training.teacher import predict_head, train_teacher

GLUE = default_glue_dir()
needs_glue = pytest.mark.skipif(not (GLUE / "SST-2/train.tsv").exists(), reason="shared GLUE data not present")
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def bb():
    from trunkserve.backbone import load_backbone

    return load_backbone()


@pytest.fixture(scope="module")
def sst2(bb):
    """300 SST-2 training rows, trunk states cached at depths 3 and 5."""
    opts = HeadOptions(max_train=330, max_val=30, max_dev=100, progress=False)
    return prepare("sst2", bb, opts, GLUE, cache_depths=(3, 5))


def test_distillation_loss_hand_computed():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    T = 2.0
    # teacher probs at T=2: softmax([0, .5]) ; student log-probs at T=2: log softmax([.5, 0])
    pt = [1 / (1 + math.exp(0.5)), 1 / (1 + math.exp(-0.5))]
    ls = [0.5 - math.log(math.exp(0.5) + 1), 0.0 - math.log(math.exp(0.5) + 1)]
    soft = -(pt[0] * ls[0] + pt[1] * ls[1]) * T * T
    hard = -(1.0 - math.log(math.e + 1))  # CE of label 0 under logits [1, 0]
    probs = torch.softmax(t / T, dim=-1)
    assert soft_cross_entropy(s, probs, T).item() == pytest.approx(soft, rel=1e-6)
    loss = distillation_loss(s, probs, torch.tensor([0]), "classification", T, soft_weight=1.0, hard_weight=1.0)
    assert loss.item() == pytest.approx(soft + hard, rel=1e-6)
    half = distillation_loss(s, probs, torch.tensor([0]), "classification", T, soft_weight=0.5, hard_weight=0.0)
    assert half.item() == pytest.approx(soft / 2, rel=1e-6)
    # regression: MSE to the teacher's score + MSE to the label
    r = distillation_loss(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [2.0]]), torch.tensor([0.0, 3.0]), "regression")
    assert r.item() == pytest.approx((0.25 + 0) / 2 + (1 + 1) / 2)


def test_hidden_mse_hand_computed():
    # student layer j maps to teacher layer (j+1)*n//m - 1: 1 student layer of 2 -> the teacher's last
    mask = torch.tensor([[1, 1, 0]])
    s = [torch.zeros(1, 3, 2)]
    t = [torch.full((1, 3, 2), 5.0), torch.tensor([[[1.0, 1.0], [3.0, 1.0], [100.0, 100.0]]])]
    # real tokens only: (1 + 1 + 9 + 1) / (2 tokens * 2 dims) = 3; the padded 100s are ignored
    assert hidden_mse(s, t, mask).item() == pytest.approx(3.0)
    # 2 student layers of 2: layer j -> teacher layer j; each layer (16 + 16 + 4 + 16) / 4 = 13, averaged over layers
    assert hidden_mse([t[1], t[0]], t, mask).item() == pytest.approx(13.0)


def test_cache_matches_fresh_trunk_pass(bb, sst2):
    cache = sst2.caches["train"]
    idx = [0, 5, 17, 42]
    trunk = Trunk.from_state_dict(bb.config, bb.state_dict, (3, 5)).eval()
    with torch.no_grad():
        t = pad_tokens(sst2.train, idx)
        fresh = trunk(t["input_ids"], t["attention_mask"], t["token_type_ids"])
    for d, h in zip((3, 5), fresh):
        hidden, mask = cache.batch(idx, d)
        assert torch.equal(mask, t["attention_mask"])
        m = mask.bool()
        torch.testing.assert_close(hidden[m], h[m], atol=2e-2, rtol=2e-3)  # float16 storage
        assert hidden[~m].abs().max() == 0 if (~m).any() else True
    # a cache bounded to a few examples recomputes the rest and agrees exactly with the full cache
    small = HiddenStateCache(trunk, sst2.train, max_bytes=1 << 20)
    assert 0 < small.n_cached < len(sst2.train)
    far = [len(sst2.train) - 1, 1, small.n_cached + 3]
    for d in (3, 5):
        torch.testing.assert_close(small.batch(far, d)[0], cache.batch(far, d)[0], atol=1e-3, rtol=0)


def test_trunk_frozen_bit_identical_and_student_init(bb, sst2):
    trunk = sst2.caches["train"].trunk
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    bb_before = {k: v.clone() for k, v in bb.state_dict.items()}
    opts = HeadOptions(epochs=1, min_steps=0, progress=False, full_baseline=True, max_val=30)
    res = run_seed(bb, sst2, opts, seed=0, cands=[(3, 3, 1)], log=lambda *_: None)
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())
    assert all(not p.requires_grad for p in trunk.parameters())
    assert all(torch.equal(bb_before[k], v) for k, v in bb.state_dict.items())
    teacher = res.trial.teacher
    assert teacher.num_layers == 3 and res.trial.student.num_layers == 1
    for name in ("pooler.dense.weight", "classifier.weight"):
        assert not torch.equal(teacher.state_dict()[name], bb_before.get(name, torch.zeros(1)))
    student = init_student(teacher, 2)
    assert torch.equal(student.state_dict()["layers.1.output.dense.weight"], teacher.state_dict()["layers.1.output.dense.weight"])
    assert torch.equal(student.state_dict()["classifier.weight"], teacher.state_dict()["classifier.weight"])
    with pytest.raises(DistillError):
        init_student(teacher, 4)


def test_student_beats_random_head(bb, sst2):
    train, val = sst2.caches["train"], sst2.caches["val"]
    cfg = FitConfig(epochs=3, lr=2e-4, progress=False, evals_per_epoch=1, patience=10)
    teacher, _ = train_teacher(bb, train, val, 5, 1, 2, "classification", "sst2", cfg)
    student, _ = train_student([teacher], train, val, 5, "sst2", cfg, num_layers=1)
    random_head = Head(bb.config, 1, 2).eval()
    acc = lambda h: compute_metrics("sst2", predict_head(h, train, 5), sst2.train.labels)["accuracy"]  # noqa: E731
    assert acc(student) > acc(random_head) + 0.15
    assert acc(student) > 0.75


def test_candidates_respect_trunk_depths():
    assert candidates(HeadOptions(depths=(2, 4), search=True), 6) == [(2, 4, 1), (4, 2, 1)]
    assert candidates(HeadOptions(depths=(2, 4)), 6) == [(4, 2, 1)]
    assert candidates(HeadOptions(depths=(2, 4), branch_layer=2, teacher_layers=3), 6) == [(2, 3, 1)]
    assert candidates(HeadOptions(depths=(3, 5), search=True, search_student_layers=(2, 1)), 6) == [(3, 3, 1), (3, 3, 2), (5, 1, 1)]
    with pytest.raises(PipelineError):
        candidates(HeadOptions(depths=(2, 4), branch_layer=3), 6)
    with pytest.raises(PipelineError):
        candidates(HeadOptions(depths=(5,), student_layers=2), 6)
    with pytest.raises(PipelineError, match="--teacher-layers 9: above branch depth 3 the backbone has 3"):
        candidates(HeadOptions(depths=(3,), teacher_layers=9), 6)


def test_run_options_that_would_train_nothing_or_the_wrong_rows_are_refused(capsys):
    from trunkserve.training.cli import main
    from trunkserve.training.options import check_run_options

    check_run_options(["sst2", "mrpc"], {"sst2": 100}, {"seeds": (0,)})  # fine
    bad = {
        "no tasks": ([], None, {}),
        "not in --tasks": (["sst2"], {"sst": 100}, {}),
        "positive number of rows": (["sst2"], -5, {}),
        "no seeds": (["sst2"], None, {"seeds": ()}),
        "batch_size must be at least 1": (["sst2"], None, {"batch_size": 0}),
        "max_length must be at least 1": (["sst2"], None, {"max_length": 0}),
    }
    for message, (tasks, caps, opts) in bad.items():
        with pytest.raises(PipelineError, match=message):
            check_run_options(tasks, caps, opts)
    for argv, message in (
        (["--tasks", ""], "no tasks"),
        (["--tasks", "sst2", "--seeds", ""], "no seeds"),
        (["--tasks", "sst2", "--max-train", "sst=100"], "not in --tasks"),
    ):
        assert main(["train-heads", *argv, "--out", "/nonexistent/never-written"]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train-heads", "--tasks", "sst2", "--max-train", "sst2=5,foo"])
    assert exc.value.code == 2 and "--max-train takes N or task=N" in capsys.readouterr().err


@needs_glue
def test_train_heads_writes_exportable_heads(bb, tmp_path):
    res = train_heads(["stsb"], glue_dir=GLUE, out=tmp_path / "heads", max_train=250, epochs=1, max_val=30,
                      max_dev=60, depths=(3,), min_steps=0, quality_gate="warn", progress=False, log=lambda *_: None)
    head, meta = load_head(tmp_path / "heads/stsb")
    assert meta.task == "stsb" and meta.task_type == "regression" and meta.labels == ["score"]
    assert meta.branch_layer == 3 and meta.num_layers == 1 == head.num_layers
    assert meta.trunk_fingerprint == trunk_fingerprint(bb.state_dict, 3, bb.tokenizer_files())
    assert meta.training["role"] == "student" and meta.training["temperature"] == 2.0
    assert "pearson" in meta.metrics["dev"]["dev"] and res["stsb"]["k"] == 3
    canary = read_canary(tmp_path / "heads/stsb")
    assert len(canary["outputs"]["score"]) == len(canary["texts"])
    _, tmeta = load_head(tmp_path / "teachers/heads/stsb")
    assert tmeta.num_layers == 3 and tmeta.training["role"] == "teacher"
    # the canary is reproducible from the folder alone
    trunk = Trunk.from_state_dict(bb.config, bb.state_dict, (3,)).eval()
    tok = BucketTokenizer(bb.path, max_length=meta.max_seq_len)
    enc = tok.encode([a for a, _ in canary["texts"]], [b for _, b in canary["texts"]])
    t = {k: torch.from_numpy(v) for k, v in enc.as_dict().items()}
    with torch.no_grad():
        out = head(trunk(t["input_ids"], t["attention_mask"], t["token_type_ids"])[0], t["attention_mask"])
    np.testing.assert_allclose(out.numpy(), np.array(canary["outputs"]["score"]), atol=1e-4)
    # the hidden-state ablation runs on the written teacher: the extra loss term changes what is learnt
    ab = ablate_task(bb, "stsb", tmp_path / "teachers/heads/stsb", 1, HeadOptions(max_train=250, epochs=1, min_steps=0, max_val=30, max_dev=60,
                     depths=(3,), progress=False), glue_dir=GLUE, log=lambda *_: None)
    assert ab["k"] == 3 and set(ab["runs"]) == {"0.0", "1.0"}
    assert all(np.isfinite(r["dev"]) for r in ab["runs"].values())
    assert ab["runs"]["0.0"]["val"] != ab["runs"]["1.0"]["val"]


def test_custom_task_end_to_end_and_cli(bb, tmp_path):
    import json
    import subprocess
    import sys

    pos = ["a wonderful, moving film", "great acting and a clever plot", "i loved every minute", "superb and funny"]
    neg = ["a dull, lifeless mess", "boring and far too long", "i hated every minute", "awful script and acting"]
    rows = [{"text": t, "label": "good"} for t in pos] + [{"text": t, "label": "bad"} for t in neg]
    f = tmp_path / "reviews.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows * 6) + "\n")
    train_heads("reviews", out=tmp_path / "heads", custom={"reviews": {"train": str(f), "dev": str(f)}}, epochs=1,
                max_val=8, min_steps=0, depths=(4,), progress=False, log=lambda *_: None)
    head, meta = load_head(tmp_path / "heads/reviews")
    assert meta.labels == ["bad", "good"] and meta.training["data"] == "custom" and meta.branch_layer == 4
    # the CLI reports data errors cleanly (exit 2, the missing file named)
    r = subprocess.run([sys.executable, "-m", "trunkserve.training", "train-heads", "--tasks", "rte", "--glue-dir", str(tmp_path),
                        "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "RTE/train.tsv" in r.stderr


def _search(task, *trials):
    """A task's search result with hand-set validation scores (no training needed to test the choice)."""
    return TaskSearch(task, HeadOptions(), None, [Trial(k, 6 - k, m, None, None, 0.0, val, 0.0, 0.0) for k, m, val in trials], 0.0)


def test_budgeted_choice_is_the_best_combination_that_fits():
    searches = {
        "a": _search("a", (4, 1, 80.0), (4, 2, 81.0), (3, 2, 84.0)),
        "b": _search("b", (4, 1, 20.0), (3, 1, 17.0), (3, 2, 28.0)),
        "c": _search("c", (4, 1, 70.0), (3, 1, 72.0)),
    }
    # Unconstrained: each task's best student.
    free = choose(searches, 6)
    assert {t: (x.k, x.m) for t, x in free.items()} == {"a": (3, 2), "b": (3, 2), "c": (3, 1)}
    # 7 of 18 layers: the trunk to depth 3 once + one 2-layer head + two 1-layer heads.
    picked = choose(searches, 6, layer_budget=7 / 18)
    assert merged_layers({t: (x.k, x.m) for t, x in picked.items()}) <= 7
    # Brute force over every combination agrees with the dynamic programme.
    import itertools
    best = max(
        (combo for combo in itertools.product(*(s.trials for s in searches.values()))
         if merged_layers({i: (x.k, x.m) for i, x in enumerate(combo)}) <= 7),
        key=lambda combo: sum(x.student_val for x in combo),
    )
    assert sum(x.student_val for x in picked.values()) == sum(x.student_val for x in best)
    assert {t: (x.k, x.m) for t, x in picked.items()} == {"a": (3, 2), "b": (3, 1), "c": (3, 1)}
    with pytest.raises(PipelineError, match="layer budget"):
        choose(searches, 6, layer_budget=5 / 18)


def _trials(*trials):
    return [Trial(k, 6 - k, m, None, None, 0.0, val, 0.0, 0.0) for k, m, val in trials]


def test_choice_ranks_by_the_mean_over_searched_seeds():
    # Seed 0 alone prefers b's one-layer student (30 against 28); the three seeds' mean prefers two layers (24 against 29).
    a = _search("a", (3, 1, 80.0), (3, 2, 81.0))
    b = _search("b", (3, 1, 30.0), (3, 2, 28.0))
    assert {t: (x.k, x.m) for t, x in choose({"a": a, "b": b}, 6, layer_budget=6 / 12).items()} == {"a": (3, 2), "b": (3, 1)}
    b.later = {1: _trials((3, 1, 20.0), (3, 2, 29.0)), 2: _trials((3, 1, 22.0), (3, 2, 30.0))}
    assert b.val(b.trials[0]) == pytest.approx(24.0) and b.val(b.trials[1]) == pytest.approx(29.0)
    assert b.on_seed(2, b.trials[1]).student_val == 30.0
    assert a.val(a.trials[1]) == 81.0  # a task searched on one seed keeps its own score
    assert choose({"b": b}, 6)["b"].m == 2
    # Under a budget with room for one two-layer head, b's gain on the mean (+5) beats a's (+1).
    assert {t: (x.k, x.m) for t, x in choose({"a": a, "b": b}, 6, layer_budget=6 / 12).items()} == {"a": (3, 1), "b": (3, 2)}


@needs_glue
def test_search_on_every_seed_scores_later_seeds_without_retraining(bb, tmp_path):
    res = train_heads(["stsb"], glue_dir=GLUE, out=tmp_path / "heads", max_train=150, epochs=1, max_val=30, max_dev=40,
                      depths=(3,), min_steps=0, search_student_layers=(1, 2), seeds=(0, 1), search_every_seed=True,
                      progress=False, log=lambda *_: None)["stsb"]
    first, second = res["seeds"]
    assert [(c["k"], c["m"]) for c in second["candidates"]] == [(c["k"], c["m"]) for c in first["candidates"]] == [(3, 1), (3, 2)]
    mean = {c["m"]: (c["student_val"] + d["student_val"]) / 2 for c, d in zip(first["candidates"], second["candidates"])}
    assert res["m"] == max(mean, key=mean.get)
    # the later seed's scored head is the one its search trained, not a retrained copy
    chosen = next(c for c in second["candidates"] if c["m"] == res["m"])
    assert second["student"]["val"] == chosen["student_val"] and second["teacher"]["val"] == chosen["teacher_val"]
    _, meta = load_head(tmp_path / "heads/stsb")
    assert meta.training["search_every_seed"] is True


def test_merged_layers_counts_the_trunk_once():
    assert merged_layers({"a": (4, 1), "b": (3, 2), "c": (4, 1)}) == 4 + 4


def test_train_device_follows_the_environment(monkeypatch):
    from trunkserve.training.loop import ENV_DEVICE, train_device

    monkeypatch.setenv(ENV_DEVICE, "cpu")
    assert train_device() == torch.device("cpu")
    monkeypatch.setenv(ENV_DEVICE, "not-a-device")
    with pytest.raises(ValueError, match=ENV_DEVICE):
        train_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv(ENV_DEVICE, "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            train_device()
    monkeypatch.delenv(ENV_DEVICE)
    assert train_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def _without_times(x):
    if isinstance(x, dict):
        return {k: _without_times(v) for k, v in x.items() if "seconds" not in k and not k.endswith("_dir")}
    if isinstance(x, list):
        return [_without_times(v) for v in x]
    return x


@needs_glue
@pytest.mark.slow
def test_training_jobs_in_worker_processes_give_the_same_results(bb, tmp_path):
    """``jobs=2`` shares the search (one job per branch depth), the later seeds and the baselines with a
    worker; every score and the written heads' bytes stay those of the sequential run."""
    import hashlib

    kw = dict(glue_dir=GLUE, max_train=160, epochs=1, min_steps=0, max_val=30, max_dev=40, depths=(2, 3), search=True,
              search_student_layers=(1, 2), seeds=(0, 1), full_baseline=True, layer_budget=0.5, progress=False)
    alone = train_heads(["rte", "mrpc"], out=tmp_path / "a/heads", log=lambda *_: None, **kw)
    lines = []
    shared = train_heads(["rte", "mrpc"], out=tmp_path / "b/heads", jobs=2, log=lines.append, **kw)
    assert _without_times(results_json(alone)) == _without_times(results_json(shared))
    for task in ("rte", "mrpc"):
        for role in ("heads", "teachers/heads"):
            one, two = (hashlib.sha256((tmp_path / run / role / task / "weights.safetensors").read_bytes()).hexdigest()
                        for run in "ab")
            assert one == two, (task, role)
    assert any("(worker)" in line and "k=" in line for line in lines), lines
    assert any("(worker)" in line and "full fine-tuning" in line for line in lines), lines
    with pytest.raises(PipelineError, match="jobs"):
        train_heads(["rte"], out=tmp_path / "c", jobs=0, **kw)


def test_workers_take_training_jobs_first_and_the_largest():
    from trunkserve.training.parallel import FULL, TRIALS, Job, spare_pick, worker_pick

    jobs = [Job(FULL, "sst2", 0, (), 90.0), Job(TRIALS, "rte", 0, ((3, 3, 1),), 5.0),
            Job(TRIALS, "sst2", 0, ((2, 4, 1), (2, 4, 2)), 40.0), Job(FULL, "rte", 1, (), 9.0)]
    order = []
    pending = list(jobs)
    while pending:
        order.append(worker_pick(pending))
        pending.remove(order[-1])
    assert [(j.kind, j.task, j.seed) for j in order] == [
        (TRIALS, "sst2", 0), (TRIALS, "rte", 0), (FULL, "sst2", 0), (FULL, "rte", 1)]
    assert spare_pick(jobs) is jobs[1]
    assert Job(TRIALS, "rte", 0, ((3, 3, 1),), 1.0).key == jobs[1].key  # the cost only orders


def _full_job_pool(bb, opts, workers=1):
    from trunkserve.training.parallel import JobPool
    from trunkserve.training.trials import full_result

    prep = {}

    def local(job):
        prep.setdefault(job.task, prepare(job.task, bb, opts, GLUE))
        return full_result(bb, prep[job.task], opts, job.seed, log=lambda _msg: None)

    return JobPool(workers, torch.get_num_threads(), lambda _task: opts, local, GLUE, {}, bb.path)


@needs_glue
def test_a_failed_job_names_its_task_and_seed(bb):
    from trunkserve.training.parallel import FULL, Job, ParallelError

    opts = HeadOptions(max_train=50, epochs=1, min_steps=0, progress=False)
    with _full_job_pool(bb, opts) as pool:
        pool.plan([Job(FULL, "nosuchtask", 3)])
        with pytest.raises(ParallelError, match=r"nosuchtask \(seed 3\).*unknown task"):
            pool.result(Job(FULL, "nosuchtask", 3))


@needs_glue
@pytest.mark.slow
def test_the_asking_process_runs_untaken_jobs_and_works_while_it_waits(bb):
    """The worker takes the largest job; the asker runs what no worker has taken, and, while the
    job it asked for runs in the worker, the smallest pending one."""
    from trunkserve.training.parallel import FULL, Job

    opts = HeadOptions(max_train=60, max_val=20, max_dev=20, epochs=1, min_steps=0, progress=False)
    jobs = [Job(FULL, "rte", seed, (), cost) for seed, cost in ((0, 1.0), (1, 4.0), (2, 2.0), (3, 3.0))]
    with _full_job_pool(bb, opts) as pool:
        pool.plan(jobs)  # the worker takes seed 1 (largest) at once
        results = [pool.result(j) for j in jobs]
        ran_here = [j.seed for j in pool.ran_here]
    assert ran_here[:2] == [0, 2], ran_here  # seed 0 asked and untaken; seed 2 run while waiting for seed 1
    assert 1 not in ran_here and [remote for _, remote in results][1]
    assert all(set(r) == {"val", "seconds", "layers", "dev"} and r["layers"] == bb.config.num_hidden_layers
               for r, _ in results)


@needs_glue
@pytest.mark.slow
def test_cli_jobs_restarts_with_sleeping_threads(tmp_path):
    """``python -m trunkserve.training ... --jobs 2`` runs with OMP_WAIT_POLICY=PASSIVE (it restarts itself to set it)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    p = subprocess.run(
        [sys.executable, "-m", "trunkserve.training", "train-heads", "--tasks", "rte", "--glue-dir", str(GLUE), "--max-train", "80",
         "--epochs", "1", "--min-steps", "0", "--quality-gate", "warn", "--max-val", "20", "--max-dev", "20",
         "--depths", "3", "--full-baseline", "--jobs", "2",
         "--no-progress", "--out", str(tmp_path / "heads"), "--summary", str(tmp_path / "s.json")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "(worker)" in p.stdout and "OMP_WAIT_POLICY is not PASSIVE" not in p.stdout, p.stdout
    assert (tmp_path / "heads/rte").is_dir()
