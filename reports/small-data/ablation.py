"""Why small-data heads came out at chance: the schedule floor and the output-layer refit, one at a time.

    python reports/small-data/ablation.py [--out reports/small-data/ablation.json]

Trains the 3-class intent task (examples/intent_data.py: 300 rows, 60 dev) and SST-2 capped
to 300 rows with the default settings of ``train-heads``, varying only ``min_steps`` (0 = the
old schedule: ``epochs`` alone) and ``refit`` (never = the student keeps the teacher's
output layer; the default, small, refits here since both sets are small). Prints teacher and student validation and dev scores per setting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from trunkserve.examples.intent_data import write_intent_task
from trunkserve.training.pipeline import train_heads

SETTINGS = {"old (min_steps 0, no refit)": dict(min_steps=0, refit="never"),
            "refit only": dict(min_steps=0, refit="always"),
            "min_steps only": dict(refit="never"),
            "both (default)": {}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reports/small-data/ablation.json", help="where the JSON goes")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train, dev = write_intent_task(Path(tmp) / "intent")
        tasks = {"intent (300 rows)": dict(tasks="intent", custom={"intent": {"train": str(train), "dev": str(dev)}}),
                 "sst2 (300 rows)": dict(tasks="sst2", max_train=300)}
        for tname, tkw in tasks.items():
            for sname, skw in SETTINGS.items():
                res = train_heads(out=Path(tmp) / "heads", progress=False, log=lambda _: None, **tkw, **skw)
                (r,) = res.values()
                s0 = r["seeds"][0]
                row = {"task": tname, "setting": sname, "teacher_val": s0["teacher"]["val"], "student_val": s0["student"]["val"],
                       "teacher_dev": r["teacher_dev_mean"], "student_dev": r["student_dev_mean"]}
                rows.append(row)
                print(f"{tname:18s} {sname:28s} teacher val {row['teacher_val']:6.2f} dev {row['teacher_dev']:6.2f} | "
                      f"student val {row['student_val']:6.2f} dev {row['student_dev']:6.2f}", flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
