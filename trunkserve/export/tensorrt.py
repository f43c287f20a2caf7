"""TensorRT plans for the ``tensorrt`` backend, built with ``trtexec`` on the target GPU.

Plans are specific to the GPU and TensorRT version that build them, so they are
never shipped: ``python -m trunkserve.export build-plans --repo model_repository`` (``tensorrt_cli``) runs in
the serving container (see ``docker/``) and turns each ``1/model.onnx`` of a
``tensorrt_plan`` model into ``1/model.plan``. Optimisation profiles come from
the same graph specs as everything else (batch 1..max_batch_size, sequence
1..max_seq_len).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .configs import read_config
from .errors import ExportError

TRTEXEC_PATHS = ("trtexec", "/usr/src/tensorrt/bin/trtexec")


def _shape(config, batch: int, seq: int) -> str:
    parts = []
    for inp in config.input:
        dims = [batch] + [seq if d == -1 else int(d) for d in inp.dims]
        parts.append(f"{inp.name}:{'x'.join(map(str, dims))}")
    return ",".join(parts)


def trtexec_command(model_dir: str | Path, max_seq_len: int, opt_batch: int = 8, opt_seq: int = 64, fp16: bool = True) -> list[str]:
    """The ``trtexec`` call that builds ``<model_dir>/1/model.plan`` from ``1/model.onnx``."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if config.platform != "tensorrt_plan":
        raise ExportError(f"{model_dir.name}: not a tensorrt_plan model (platform {config.platform!r})")
    max_batch = config.max_batch_size
    cmd = [
        _trtexec(),
        f"--onnx={model_dir / '1' / 'model.onnx'}",
        f"--saveEngine={model_dir / '1' / config.default_model_filename}",
        f"--minShapes={_shape(config, 1, 1)}",
        f"--optShapes={_shape(config, min(opt_batch, max_batch), min(opt_seq, max_seq_len))}",
        f"--maxShapes={_shape(config, max_batch, max_seq_len)}",
    ]
    if fp16:
        cmd.append("--fp16")
    return cmd


def _trtexec() -> str:
    for candidate in TRTEXEC_PATHS:
        found = shutil.which(candidate) or (candidate if Path(candidate).exists() else None)
        if found:
            return found
    return TRTEXEC_PATHS[0]


def plan_models(repo: str | Path) -> list[Path]:
    return [p.parent for p in sorted(Path(repo).glob("*/config.pbtxt")) if read_config(p.parent).platform == "tensorrt_plan"]


def build_plans(repo: str | Path, max_seq_len: int = 128, fp16: bool = True, dry_run: bool = False) -> list[list[str]]:
    commands = [trtexec_command(m, max_seq_len, fp16=fp16) for m in plan_models(repo)]
    if not commands:
        raise ExportError(f"{repo}: no tensorrt_plan models (build with --backend tensorrt)")
    for cmd in commands:
        print(" ".join(cmd))
        if not dry_run:
            if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
                raise ExportError("trtexec not found: run this inside the Triton/TensorRT container on the target GPU")
            subprocess.run(cmd, check=True)
    return commands
