"""The GLUE report's markdown/PNG rendering, from the committed study JSON (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.report import render

REPORTS = Path(__file__).resolve().parents[1] / "reports"


@pytest.mark.parametrize("study", ["glue.json", "gpu/glue.json"])
def test_render_says_whether_training_sets_were_capped(tmp_path, study):
    res = json.loads((REPORTS / study).read_text())
    (tmp_path / "glue.json").write_text(json.dumps(res))
    md = render(tmp_path / "glue.json").read_text()
    assert (tmp_path / "glue.png").stat().st_size > 0
    capped = res["options"]["max_train"] is not None
    assert ("Caveat: capped training sets" in md) == capped
    assert ("(whole train file)" in md) == (not capped)
    avg = res["average"]["student_pct_of_full"]
    assert f"**{avg:.1f}%**" in md
