"""Defaults shared by export, training and the demo, in one place.

``DEFAULT_DEPTHS``: where the frozen trunk branches. MiniLM-L6 has 6 layers; the
trunk runs up to the deepest branch depth and every head reads one of them.
The GLUE study (``reports/glue.md``) searched k in {2, 3} and student layers in
{1, 2} under a 35% layer budget: SST-2, MRPC and RTE chose k = 3, CoLA and STS-B
k = 2, so the trunk runs three layers (an earlier run had found depth 4 worse
than 3 for every task). The default stays (3,), what the demo's and the
benchmark's heads read; ``python -m trunkserve.export build`` adds every depth its heads
declare (``export.repository.trunk_depths``), so the study's heads deploy on a
trunk exposing 2 and 3 without a flag, and ``--depths`` sets them explicitly.

``DEFAULT_MIN_STEPS``: the fewest optimiser steps any training schedule runs
(``training.loop``): 300 rows at batch 32 get 17 epochs instead of 3, while every
schedule of the capped GLUE study is longer already. ``DEFAULT_REFIT_STEPS``: steps
refitting a new student's output layer to its own states (``training.distill``).
"""

import os
from pathlib import Path

DEFAULT_DEPTHS = (3,)
DEFAULT_MAX_SEQ_LEN = 128
DEFAULT_BUCKETS = (16, 32, 64, 128)
ONNX_OPSET = 17
DEFAULT_MIN_STEPS = 150
DEFAULT_REFIT_STEPS = 200


def default_glue_dir() -> Path:
    """``$GLUE_DIR`` if set, else ``<checkout>/../shared/glue`` (this environment's copy)."""
    env = os.environ.get("GLUE_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "glue"
