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
