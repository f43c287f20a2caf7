"""The two deployments under comparison, built for N tasks from the same task list.

``merged``: one trunk (``DEFAULT_DEPTHS``) + N one-layer heads (``export.repository``).
``single-task``: N full models, one per task (``export.baseline``).
Heads are untrained (``make_untrained_head``): cost depends on shapes only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from trunkserve.export.baseline import TaskSpec, build_baseline_repository
from trunkserve.export.configs import ServingOptions
from trunkserve.export.repository import build_repository
from trunkserve import glue
from trunkserve.defaults import DEFAULT_DEPTHS

MERGED, SINGLE = "merged", "single-task"
DEPLOYMENTS = (MERGED, SINGLE)

#: The first five tasks are GLUE's (types and labels from ``trunkserve.glue``); more are synthetic binary classifiers.
GLUE_TASKS = tuple(
    TaskSpec(name, glue.GLUE_TASKS[name].task_type, glue.GLUE_TASKS[name].labels)
    for name in ("sst2", "mrpc", "stsb", "cola", "rte")
)


def task_list(n: int) -> list[TaskSpec]:
    extra = [TaskSpec(f"syn{i:02d}") for i in range(len(GLUE_TASKS), max(n, len(GLUE_TASKS)))]
    return [*GLUE_TASKS, *extra][:n]


def make_heads(tasks: Sequence[TaskSpec], root: str | Path, depths: Sequence[int] = DEFAULT_DEPTHS) -> list[Path]:
    """Untrained one-layer heads for ``tasks`` (reused if already written), branch depths cycling over ``depths``."""
    from trunkserve.backbone import load_backbone
    from trunkserve.modules import Trunk
    from trunkserve.synthetic import make_untrained_head

    root = Path(root)
    bb, trunk, out = None, None, []
    for i, t in enumerate(tasks):
        folder = root / t.task
        if not (folder / "head.json").exists():
            if bb is None:
                bb = load_backbone()
                trunk = Trunk.from_state_dict(bb.config, bb.state_dict, list(depths)).freeze()
            make_untrained_head(bb, folder, t.task, t.labels, t.task_type, depths[i % len(depths)], 1, seed=i, trunk=trunk)
        out.append(folder)
    return out


def build(kind: str, n: int, work: str | Path, options: ServingOptions, depths: Sequence[int] = DEFAULT_DEPTHS,
          quantise: str = "") -> Path:
    """The deployment's repository for N tasks under ``work``; ``quantise``: an int8 scheme (``export.quant_schemes``).

    Quantised, merged is ``export.quantise``'s copy (trunk, heads and head groups) and single-task's
    full models get the same scheme's settings, so that the two stay comparable.
    """
    from trunkserve.export.quant_schemes import scheme_named

    how = scheme_named(quantise) if quantise else None  # an unknown scheme fails before anything is built
    work = Path(work)
    tasks = task_list(n)
    out = work / f"{kind}-{n}"
    if kind not in DEPLOYMENTS:
        raise ValueError(f"deployment must be one of {DEPLOYMENTS}")
    if kind == MERGED:
        heads = make_heads(tasks, work / "heads", depths)
        built = out.with_name(f"{out.name}-float32") if how else out  # the quantised copy needs its float32 source
        build_repository(heads, out=built, depths=depths, options=options)
        if how:
            from trunkserve.export.quantise import quantised_copy

            quantised_copy(built, out, how.name, overwrite=True)
    else:
        build_baseline_repository(tasks, out=out, options=options)
        if how:
            from trunkserve.export.graph_tuning import tune_repository

            tune_repository(out, fuse=False, quantize=True, per_channel=how.per_channel, op_types=how.op_types)
    return out


def model_bytes(repo: str | Path) -> int:
    """Bytes of the served model graphs on disk (``model.onnx`` / ``model.plan``; not a quantised trunk's float32 reference)."""
    return sum(p.stat().st_size for name in ("model.onnx", "model.plan") for p in Path(repo).rglob(name))
