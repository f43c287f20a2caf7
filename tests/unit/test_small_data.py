"""A user's own few hundred rows: the schedule floor, the refitted student, the quality gate, and the
whole path (CSV -> train-heads -> add-head on a running server -> client infer -> remove-head).

The intent data comes from ``examples/intent_data.py`` (3 classes, 300 training rows from
templates, 60 dev rows whose slot values never occur in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_python
from trunkserve.training.loop import FitConfig, fit, schedule_steps
from trunkserve.training.metrics import compute_metrics, majority_outputs
from trunkserve.training.quality import QualityError, judge
from trunkserve.artifacts import read_meta

GLUE = Path(__file__).resolve().parents[3] / "shared" / "glue"
needs_glue = pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").is_file(), reason="GLUE data not present")


run = run_python  # conftest's: ``python -m ...`` in a child process


# ---------------------------------------------------------------------------------- units


def test_schedules_reach_min_steps_on_small_data_and_stay_as_they_were_on_large():
    cfg = FitConfig(epochs=3, min_steps=150)
    assert schedule_steps(cfg, 9) == 150  # 270 rows at batch 32: 27 steps raised to 150 (17 epochs)
    assert schedule_steps(cfg, 102) == 306  # the capped SST-2 study: 3 epochs are already more
    assert schedule_steps(FitConfig(epochs=3, min_steps=150, max_epochs=10), 2) == 20  # at most max_epochs
    assert schedule_steps(FitConfig(epochs=3, min_steps=0), 9) == 27
    assert schedule_steps(FitConfig(epochs=0, min_steps=150), 9) == 0  # epochs 0: scored, not trained


def test_early_stopping_waits_for_min_steps():
    """A validation score stuck at chance stopped the old schedule after ``patience`` evaluations."""
    module = nn.Linear(2, 1)
    data = torch.randn(8, 2)

    def loss_fn(idx):
        return module(data[idx]).pow(2).mean()

    def batches(_epoch):
        return [np.array([0, 1]), np.array([2, 3]), np.array([4, 5]), np.array([6, 7])]

    flat = lambda: (50.0, {"accuracy": 0.5})  # noqa: E731
    common = dict(epochs=50, evals_per_epoch=4, patience=2, progress=False, bf16=False)
    assert fit(module, loss_fn, batches, flat, FitConfig(min_steps=0, **common)).steps == 3
    # 50 epochs of 4 steps are 200 steps; a floor of 300 raises them to 300 and early stopping waits for it
    waited = fit(module, loss_fn, batches, flat, FitConfig(min_steps=300, **common))
    assert waited.steps == 300 and waited.planned_steps == 300
    assert waited.schedule() == {"planned_steps": 300, "steps": 300, "epochs": 75.0, "stopped_early": False}
    # a schedule long enough without the floor keeps its early stopping as it was (the GLUE study reproduces)
    assert fit(module, loss_fn, batches, flat, FitConfig(min_steps=40, **common)).steps == 3


def test_majority_baseline_is_chance_by_each_metric():
    train = np.array([0, 1, 1, 1, 2])
    out = majority_outputs(train, 4, 3, regression=False)
    assert out.argmax(axis=1).tolist() == [1, 1, 1, 1]
    assert compute_metrics("multiclass", out, np.array([1, 1, 0, 2]))["accuracy"] == 0.5
    assert compute_metrics("cola", out, np.array([1, 1, 0, 2]))["mcc"] == 0.0
    reg = majority_outputs(np.array([1.0, 2.0, 3.0]), 2, 1, regression=True)
    m = compute_metrics("regression", reg, np.array([0.0, 4.0]))
    assert reg.ravel().tolist() == [2.0, 2.0] and m["pearson"] == 0.0 and m["mae"] == 2.0 and m["rmse"] == 2.0


def _v(score, rmse=None):
    return {"score": score, **({"rmse": rmse} if rmse is not None else {})}


def test_the_gate_passes_good_students_and_falls_back_refuses_or_warns_otherwise():
    ok = judge(_v(91.0), _v(100.0), _v(33.3), regression=False)
    assert (ok.decision, ok.passed) == ("student", True)
    # below 90% of the teacher: the teacher ships
    low = judge(_v(89.0), _v(100.0), _v(33.3), regression=False)
    assert (low.decision, low.passed) == ("teacher", True) and "below 90% of the teacher's 100.00" in low.message
    # at chance: refused when asked, or when the teacher is at chance too
    chance = judge(_v(33.3), _v(100.0), _v(33.3), regression=False, on_fail="refuse")
    assert (chance.decision, chance.passed) == ("failed", False) and "not above the majority-class baseline" in chance.message
    both = judge(_v(30.0), _v(33.3), _v(33.3), regression=False)
    assert (both.decision, both.passed) == ("failed", False) and "teacher is no better" in both.message
    warned = judge(_v(30.0), _v(90.0), _v(33.3), regression=False, on_fail="warn")
    assert (warned.decision, warned.passed) == ("student", False)
    # MCC-like scores near 0: 90% is taken of the teacher's magnitude
    assert judge(_v(4.6), _v(5.0), _v(0.0), regression=False).decision == "student"
    # regression: a correlation above chance is not enough when the error is no better than the mean's
    flat = judge(_v(87.5, rmse=1.6), _v(88.0, rmse=0.8), _v(0.0, rmse=1.5), regression=True)
    assert flat.decision == "teacher" and "RMSE 1.600" in flat.message and flat.to_dict()["majority_rmse"] == 1.5
    with pytest.raises(QualityError):
        judge(_v(1), _v(1), _v(0), regression=False, on_fail="ship-anyway")


# ---------------------------------------------------------------------------------- training


def test_a_300_row_intent_task_ships_a_working_student(intent_head):
    folder, log, summary = intent_head
    meta = read_meta(folder)
    dev = meta.metrics["dev"]["dev"]["accuracy"]
    assert dev >= 0.95, (dev, log)
    assert meta.training["role"] == "student" and meta.num_layers == 1
    assert meta.quality["passed"] and meta.quality["decision"] == "student"
    assert meta.metrics["majority"]["validation"]["score"] < 50  # three classes: chance is about a third
    assert meta.pair is False
    # schedules recorded: 270 rows get the 150-step floor
    assert meta.training["schedule"]["teacher"]["planned_steps"] == 150
    # the log names the type and labels read, and chance beside every score
    assert "classification, 3 classes ['play_music', 'set_alarm', 'weather'], single texts" in log
    assert "(majority class" in log and "majority class 33.33" in log and "quality gate: passed" in log
    assert summary["quality"]["passed"] and summary["shipped"] == "student"


@pytest.mark.slow
def test_a_failed_student_trips_the_gate(intent, tmp_path):
    """Zero student steps (the copied classifier, untouched) is at chance: the teacher ships, or, when
    asked to refuse, the head is written marked failed and the command exits 3. Sibling runs keep
    their own teachers."""
    train, dev = intent
    common = ["-m", "trunkserve.training", "train-heads", "--tasks", "intent", "--custom", f"intent={train},{dev}",
              "--student-epochs", "0", "--no-progress"]
    fb = run(*common, "--out", str(tmp_path / "runs/fallback"))
    assert fb.returncode == 0, fb.stderr[-3000:]
    assert "not above the majority-class baseline" in fb.stdout and "shipping the teacher's layers" in fb.stdout
    meta = read_meta(tmp_path / "runs/fallback/intent")
    assert meta.training["role"] == "teacher" and meta.num_layers == 3
    assert meta.quality["decision"] == "teacher" and meta.quality["passed"] is True
    assert meta.quality["student_val"] <= meta.quality["majority_val"] < meta.quality["teacher_val"]

    rf = run(*common, "--quality-gate", "refuse", "--out", str(tmp_path / "runs/refused"))
    assert rf.returncode == 3, (rf.returncode, rf.stderr[-3000:])
    assert "quality gate failed for intent" in rf.stderr
    failed = read_meta(tmp_path / "runs/refused/intent")
    assert failed.failed_gate and failed.quality["decision"] == "failed" and failed.num_layers == 1
    # both sibling runs' teachers are there: neither overwrote the other
    assert (tmp_path / "runs/teachers/fallback/intent/head.json").is_file()
    assert (tmp_path / "runs/teachers/refused/intent/head.json").is_file()


@needs_glue
@pytest.mark.slow
def test_sst2_capped_to_300_rows_is_clearly_above_chance(tmp_path):
    from trunkserve.training.pipeline import train_heads

    res = train_heads(["sst2"], glue_dir=GLUE, out=tmp_path / "heads", max_train=300, progress=False, log=lambda *_: None)
    r = res["sst2"]
    assert r["student_dev_mean"] >= 70.0, r["student_dev_mean"]
    assert r["majority"]["dev"]["dev"]["score"] < 52  # SST-2 dev is balanced


def test_names_and_files_are_checked_before_any_training(tmp_path):
    from trunkserve.training.cli import main

    csv = tmp_path / "t.csv"
    csv.write_text("text,label\na,x\nb,y\n" * 10)
    for argv, message in (
        (["--tasks", "multitask", "--custom", f"multitask={csv}"], "invalid task name"),
        (["--tasks", "trunk"], "invalid task name"),
        (["--tasks", "bad/name"], "invalid task name"),
        (["--tasks", "ok", "--custom", f"ok={csv}", "--custom", f"other={csv}"], "--custom names task(s) other"),
        (["--tasks", "ok,two", "--custom", f"ok={csv}", "--custom", f"two={tmp_path / 'missing.csv'}"], "missing.csv"),
        (["--tasks", "ok", "--custom", f"ok={csv}", "--quality-gate", "refuse", "--min-student-ratio", "2"], "0..1"),
    ):
        assert main(["train-heads", *argv, "--out", str(tmp_path / "never")]) == 2, argv
        assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------- the user's path, served


def test_every_training_option_has_help_and_shows_its_default():
    import argparse

    from trunkserve.training.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.dest)
            if action.default is not None and action.default is not False and not action.required:
                assert "%(default)" in action.help or isinstance(p.formatter_class, type) and issubclass(
                    p.formatter_class, argparse.ArgumentDefaultsHelpFormatter), (name, action.dest)
        assert "(default:" in text, name
    th = sub.choices["train-heads"].format_help()
    for words in (".csv, .tsv or .jsonl", "numeric order when all are integers", "share of the training rows held out",
                  "(default: 0.1)", "(default: 150)"):
        assert words in " ".join(th.split()), words


def test_the_output_layer_is_refitted_where_the_data_is_small():
    from trunkserve.training.distill import DistillError, should_refit

    small, large = FitConfig(epochs=3, min_steps=150), FitConfig(epochs=5, min_steps=150)
    assert should_refit("small", small, 9)  # 300 rows: 27 steps, raised to 150
    assert not should_refit("small", large, 38)  # the capped study's RTE students: 190 steps
    assert should_refit("always", large, 38) and not should_refit("never", small, 9)
    assert not should_refit("always", FitConfig(epochs=0), 9)  # epochs 0: the student as initialised
    with pytest.raises(DistillError):
        should_refit("sometimes", small, 9)
