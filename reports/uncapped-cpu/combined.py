"""The current study's choice scored on whole training files, from the runs that trained each task that way.

No single uncapped run of the current choice exists (that needs a lent GPU for SST-2), so each
task's figures come from the run that trained its chosen (k, m) on its whole training file, with
the study's seeds and recipe: SST-2 and RTE (k3 m1) from the GPU run (reports/gpu/glue.json),
CoLA (k2 m2) from the capped study itself (CoLA is not capped there: build/glue5, copied to
reports/glue.json), MRPC (k3 m1) and STS-B (k2 m2) from CPU runs here. Full fine-tuning comes
from the same run as the student, except MRPC's k3 m1 run, which reuses mrpc_stsb.json's full
fine-tuning (same seeds and validation split).

    python reports/uncapped-cpu/combined.py
"""
import json
from pathlib import Path

R = Path(__file__).resolve().parents[1]


def load(path, task):
    d = json.loads((R / path).read_text())
    return (d["tasks"] if "tasks" in d else d)[task]


SOURCES = {  # task: (file with the student, file with full fine-tuning)
    "sst2": ("gpu/glue.json", "gpu/glue.json"),
    "cola": ("glue.json", "glue.json"),
    "mrpc": ("uncapped-cpu/mrpc_k3m1.json", "uncapped-cpu/mrpc_stsb.json"),
    "stsb": ("uncapped-cpu/mrpc_stsb.json", "uncapped-cpu/mrpc_stsb.json"),
    "rte": ("gpu/glue.json", "gpu/glue.json"),
}
study = json.loads((R / "glue.json").read_text())["tasks"]
rows = []
print("| task | train rows | full FT | student (k+m) | student / full | from |")
print("|---|---|---|---|---|---|")
for task, (s_file, f_file) in SOURCES.items():
    s, f = load(s_file, task), load(f_file, task)
    if (s["k"], s["m"]) != (study[task]["k"], study[task]["m"]) or s["train_rows"] != f["train_rows"]:
        raise SystemExit(f"{task}: {s_file} trained k{s['k']} m{s['m']} on {s['train_rows']} rows; the study chose "
                         f"k{study[task]['k']} m{study[task]['m']} (full fine-tuning: {f['train_rows']} rows)")
    full, student = f["full_dev_mean"], s["student_dev_mean"]
    rows.append((full, student))
    print(f"| {task} | {s['train_rows']} | {full:.1f} | {student:.1f} ({s['k']}+{s['m']}) | {100 * student / full:.1f}% | {s_file} |")
full = sum(r[0] for r in rows) / len(rows)
student = sum(r[1] for r in rows) / len(rows)
print(f"| **average** | | **{full:.1f}** | **{student:.1f}** | **{100 * student / full:.1f}%** | |")
