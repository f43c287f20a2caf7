"""Would ranking the capped study's candidates on their mean over three seeds change the joint choice?

Seed 0's candidates come from the capped study of 2026-11-22 (seed0-study.json, a copy of that
day's reports/glue.json); seeds 1 and 2 from two searches of the small tasks on the same caps
(seed1.json, seed2.json; commands in README.md). The choice is training.pipeline.choose, the
one the study uses, with TaskSearch.val averaging over the searched seeds.

    python reports/search-seeds/choose_mean.py
"""
import json
from pathlib import Path

from trunkserve.training.options import HeadOptions
from trunkserve.training.pipeline import TaskSearch, choose, merged_layers
from trunkserve.training.trials import Trial

HERE = Path(__file__).parent


def trials(cands):
    return [Trial(c["k"], c["n"], c["m"], None, None, c["teacher_val"], c["student_val"], 0, 0) for c in cands]


study = json.loads((HERE / "seed0-study.json").read_text())["tasks"]
later = {seed: json.loads((HERE / f"seed{seed}.json").read_text()) for seed in (1, 2)}
mean, first = {}, {}
for task, r in study.items():
    first[task] = TaskSearch(task, HeadOptions(), None, trials(r["seeds"][0]["candidates"]), 0)
    mean[task] = TaskSearch(task, HeadOptions(), None, first[task].trials, 0,
                            later={s: trials(d[task]["seeds"][0]["candidates"]) for s, d in later.items() if task in d})
    print(task, " ".join(f"k{x.k}m{x.m}={mean[task].val(x):.1f}" for x in first[task].trials))
for label, searches in (("seed 0 only", first), ("mean of seeds 0-2", mean)):
    picked = choose(searches, 6, 0.35)
    print(f"{label}: " + ", ".join(f"{t} k{x.k}m{x.m}" for t, x in picked.items()),
          f"-> {merged_layers({t: (x.k, x.m) for t, x in picked.items()})} layers, summed validation "
          f"{sum(searches[t].val(x) for t, x in picked.items()):.1f}")
