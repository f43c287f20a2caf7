"""The GLUE report's markdown/PNG rendering, from the committed study JSON (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trunkserve.training.report import render

REPORTS = Path(__file__).resolve().parents[2] / "reports"


@pytest.mark.parametrize("study", ["glue.json", "gpu/glue.json"])
def test_render_says_whether_training_sets_were_capped(tmp_path, study):
    res = json.loads((REPORTS / study).read_text())
    (tmp_path / "glue.json").write_text(json.dumps(res))
    md = render(tmp_path / "glue.json").read_text()
    assert (tmp_path / "glue.png").stat().st_size > 0
    caps = res["options"]["max_train"] or {}
    capped = [t for t in res["tasks"] if (caps.get(t) if isinstance(caps, dict) else caps)]
    assert ("Caveat: capped training sets" in md) == bool(capped)
    for t, r in res["tasks"].items():  # the settings line says, per task, which rows it trained on
        assert f"{t} {r['train_rows'] + r['val_rows']} " + ("(seeded sample, capped)" if t in capped else "(whole train file)") in md
    avg = res["average"]["student_pct_of_full"]
    assert f"**{avg:.1f}%**" in md


def test_search_table_shows_the_scores_the_choice_ranked():
    from trunkserve.training.report import search_scores

    def cand(m, teacher, student):
        return {"k": 3, "n": 3, "m": m, "teacher_val": teacher, "student_val": student}

    r = {"seeds": [{"candidates": [cand(1, 30.0, 30.0), cand(2, 30.0, 28.0)]},
                   {"candidates": [cand(1, 20.0, 20.0), cand(2, 20.0, 30.0)]}]}
    assert [c["student_val"] for c in search_scores(r, every_seed=False)] == [30.0, 28.0]
    assert [(c["teacher_val"], c["student_val"]) for c in search_scores(r, every_seed=True)] == [(25.0, 25.0), (25.0, 29.0)]


def test_a_baseline_scoring_zero_or_below_has_no_percentage(tmp_path):
    """A tiny or failed run can leave full fine-tuning at MCC 0 (one class predicted) or a negative
    correlation: the report then says n/a for that share instead of failing or printing a sign-flipped one."""
    res = json.loads((REPORTS / "glue.json").read_text())
    res["tasks"]["cola"]["full_dev_mean"] = 0.0
    res["tasks"]["stsb"]["full_dev_mean"] = -3.0
    res["average"]["student_pct_of_full"] = None
    (tmp_path / "glue.json").write_text(json.dumps(res))
    rows = {}
    for line in render(tmp_path / "glue.json").read_text().splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split("|")[1].strip(), line)  # the main table comes first
    assert "| n/a |" in rows["cola"] and "| n/a |" in rows["stsb"]
    assert "| 96.6% |" in rows["sst2"] and "**n/a**" in rows["**average**"]


def _study(**changes) -> dict:
    res = json.loads((REPORTS / "glue.json").read_text())
    res.update(changes)
    return res


def _rendered(tmp_path, res: dict) -> str:
    (tmp_path / "glue.json").write_text(json.dumps(res))
    return " ".join(render(tmp_path / "glue.json").read_text().split())


@pytest.mark.parametrize("hardware, seconds, machine, verdict", [
    (None, 3000, "2 CPU threads (x86_64)", "not judged (unknown machine)"),
    ({"device": "cpu", "cpu": "Xeon", "cores": 2, "threads": 2}, 3000, "2-core CPU (Xeon), 2 training threads", ": met."),
    ({"device": "cpu", "cpu": "Xeon", "cores": 2, "threads": 2}, 4000, "2-core CPU (Xeon)", ": not met."),
    ({"device": "cuda", "cpu": "EPYC", "cores": 16, "threads": 16, "gpu": "NVIDIA H200"}, 600,
     "NVIDIA H200 (GPU; host 16-core CPU (EPYC))", "not comparable (this run: NVIDIA H200"),
])
def test_machine_and_time_verdict_come_from_the_recorded_run(tmp_path, hardware, seconds, machine, verdict):
    """A GPU run is not judged against the 2-core CPU time target, and a study that recorded no machine says so."""
    res = _study(seconds=seconds)
    if hardware:
        res["hardware"] = hardware
    md = _rendered(tmp_path, res)
    assert f"on {machine}" in md
    targets = md[md.index("**Targets.**"):md.index("![scores]")]
    assert "(target < 60 min on 2 CPU cores)" in targets and verdict in targets


def test_targets_and_recipe_are_read_from_the_study(tmp_path):
    res = _study(targets={"student_pct_of_full": 95.0, "cost_ratio": 0.5, "minutes": 30.0, "minutes_cpu_cores": 4},
                 fit={"warmup_ratio": 0.2, "max_grad_norm": 0.5, "evals_per_epoch": 3, "patience": 6})
    md = _rendered(tmp_path, res)
    assert "(target >= 95%): met" in md and "(target <= 50%): met" in md and "(target < 30 min on 4 CPU cores)" in md
    assert "20% warm-up" in md and "grad-norm clip 0.5" in md and "validation 3 times per epoch" in md
    assert "early stopping after 6 evaluations" in md


def test_the_ablation_verdict_follows_its_numbers(tmp_path):
    res = _study()
    ab = res["hidden_ablation"]
    md = _rendered(tmp_path, res)
    assert "**hurts** on validation and dev" in md  # the committed study: both moved down by more than 0.5
    for run in (t["runs"]["1.0"] for t in ab["tasks"].values()):
        run["val"] += 30.0  # validation now favours the extra term, dev does not
    md = _rendered(tmp_path, res)
    assert "**disagree or barely move**" in md and "which favours the extra term" in md
    noisiest = max((t for t, r in res["tasks"].items() if len(r["seeds"]) > 1), key=lambda t: res["tasks"][t]["student_dev_std"])
    assert f"({noisiest})" in md


@pytest.mark.parametrize("path", ["glue.json", "gpu/glue.json", "search-seeds/seed1.json", "small-data/rte_mrpc_seed0.json",
                                  "uncapped-cpu/mrpc_stsb.json"])
def test_typed_results_read_and_write_the_committed_json_unchanged(path):
    from trunkserve.training.results import TaskResult

    data = json.loads((REPORTS / path).read_text())
    tasks = data["tasks"] if "tasks" in data else data
    for raw in tasks.values():
        r = TaskResult.from_json(raw)
        assert json.dumps(r.to_json()) == json.dumps(raw)  # same keys, same order, same values
        assert r["seeds"][0]["student"]["val"] == r.seeds[0].student.val  # the dict view reads as before


def test_the_cli_passes_only_what_was_set_under_the_library_names():
    from trunkserve.training.cli import parser
    from trunkserve.training.flags import keywords
    from trunkserve.training.options import HeadOptions, RunOptions, StudyOptions

    a = parser().parse_args(["train-heads", "--tasks", "sst2"])
    assert keywords(a, RunOptions, HeadOptions) == {"tasks": "sst2"}  # every default is the fields' own
    a = parser().parse_args(["train-heads", "--tasks", "sst2", "--no-bf16", "--cache-max-gb", "1", "--min-student-ratio", "0.8",
                             "--seeds", "1,2", "--custom", "x=a.csv", "--summary", "s.json", "--no-progress"])
    kw = keywords(a, RunOptions, HeadOptions)
    assert {k: v for k, v in kw.items() if k != "custom"} == {
        "tasks": "sst2", "bf16": False, "cache_max_bytes": 2**30, "min_ratio": 0.8, "seeds": (1, 2), "summary_path": "s.json",
        "progress": False}
    assert kw["custom"]["x"].train == "a.csv"
    rep = parser().parse_args(["report", "--tasks", "rte", "--no-speedup", "--small-seeds", "0"])
    assert keywords(rep, StudyOptions, HeadOptions) == {"tasks": "rte", "measure_speedup": False, "small_seeds": (0,)}
