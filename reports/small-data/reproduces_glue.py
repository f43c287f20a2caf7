"""The study trains exactly as before the small-data changes: RTE's and MRPC's seed 0 against reports/glue.json.

Those are the two capped tasks whose early stopping could fire before step 150 (the new floor). Made by

    python -m trunkserve.training train-heads --tasks rte,mrpc --max-train rte=1500,mrpc=2000 --epochs 4 --student-epochs 5 \\
        --lr 3e-4 --full-lr 1e-4 --depths 2,3 --search --search-student-layers 1,2 --seeds 0 --full-baseline \\
        --quality-gate warn --out /tmp/guard/heads --summary reports/small-data/rte_mrpc_seed0.json --no-progress
    python reports/small-data/reproduces_glue.py      # exit 0: every candidate and baseline score identical
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
old = json.loads((HERE.parent / "glue.json").read_text())["tasks"]
new = json.loads((HERE / "rte_mrpc_seed0.json").read_text())
same = True
for task in ("rte", "mrpc"):
    o, n = old[task]["seeds"][0], new[task]["seeds"][0]
    key = lambda c: (c["k"], c["m"], c["teacher_val"], c["student_val"])  # noqa: E731
    cands = [key(c) for c in o["candidates"]] == [key(c) for c in n["candidates"]]
    full = (o["full"]["val"], o["full"]["dev"]["dev"]["score"]) == (n["full"]["val"], n["full"]["dev"]["dev"]["score"])
    print(f"{task}: candidates identical {cands}, full fine-tuning identical {full}")
    same &= cands and full
sys.exit(0 if same else 1)
