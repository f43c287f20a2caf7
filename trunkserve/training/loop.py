"""One training loop for full fine-tuning, teachers and students.

AdamW (no decay on biases and LayerNorm), linear warm-up then linear decay,
gradient clipping, a validation score ``evals_per_epoch`` times per epoch, the best
checkpoint kept (and restored at the end), early stopping after ``patience`` evaluations
without improvement, and a tqdm bar with the running loss and last validation score.

Small data: ``epochs`` alone gives a few hundred rows a few dozen optimiser steps, too
few to move a fresh classifier (a 300-row task got 27 steps, and early stopping ended
it after 20 while the scores sat at chance). So a schedule is at least ``min_steps``
steps (epochs are raised to reach it, at most ``max_epochs``), and where it was raised,
early stopping does not fire before that many steps.
Mixed precision (bfloat16 autocast) is used where the CPU has native bf16 (AMX /
AVX512-BF16) or on a GPU; master weights stay float32.

Device: training runs on ``train_device()``: CUDA when present (the trunk cache, the
trained modules and every batch live there), else the CPU; ``TRUNKSERVE_TRAIN_DEVICE``
overrides it (``cpu`` on a GPU machine, say, to reproduce a CPU run).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn


ENV_DEVICE = "TRUNKSERVE_TRAIN_DEVICE"


def train_device() -> torch.device:
    """``$TRUNKSERVE_TRAIN_DEVICE``, else ``cuda`` when a GPU is visible, else ``cpu``."""
    name = os.environ.get(ENV_DEVICE) or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"{ENV_DEVICE}={name!r} is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{ENV_DEVICE}={name!r} but no CUDA device is visible")
    return dev


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of named tensors on ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}


def bf16_supported() -> bool:
    if train_device().type == "cuda":
        return torch.cuda.is_bf16_supported()
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover - private API differs between releases
            pass
    return False


@dataclass
class FitConfig:
    epochs: float = 3.0
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    evals_per_epoch: int = 2
    patience: int = 4
    min_steps: int = 0  # the schedule is at least this many steps (epochs raised, up to max_epochs)
    max_epochs: float = 100.0
    seed: int = 0
    bf16: bool | None = None  # None: when the hardware supports it
    progress: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bf16"] = self.use_bf16
        return d

    @property
    def use_bf16(self) -> bool:
        return bf16_supported() if self.bf16 is None else bool(self.bf16)


@dataclass
class FitResult:
    best_score: float
    best_metrics: dict
    steps: int
    seconds: float
    history: list = field(default_factory=list)
    planned_steps: int = 0
    epochs: float = 0.0  # the schedule's epochs, after raising it to min_steps

    def schedule(self) -> dict:
        """What ``head.json`` records of the run: planned and run steps, the epochs that made them."""
        return {"planned_steps": self.planned_steps, "steps": self.steps, "epochs": round(self.epochs, 3),
                "stopped_early": self.steps < self.planned_steps}


def schedule_steps(cfg: FitConfig, steps_per_epoch: int) -> int:
    """``epochs`` worth of steps, raised to ``min_steps`` but to no more than ``max_epochs``.

    ``epochs == 0`` is a deliberate "do not train" (0 steps: the module is only scored).
    """
    if cfg.epochs == 0:
        return 0
    natural = max(1, int(math.ceil(cfg.epochs * steps_per_epoch)))
    floor = min(cfg.min_steps, int(math.ceil(cfg.max_epochs * steps_per_epoch)))
    return max(natural, floor)


def stop_floor(cfg: FitConfig, steps_per_epoch: int, total_steps: int) -> int:
    """The step before which early stopping may not fire: ``min_steps`` where the floor raised the schedule.

    A schedule that ``epochs`` already makes long enough keeps its early stopping exactly as it was, so
    runs on larger sets (the GLUE study's) reproduce bit for bit.
    """
    natural = int(math.ceil(cfg.epochs * steps_per_epoch))
    return min(cfg.min_steps, total_steps) if natural < cfg.min_steps else 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(enabled: bool):
    return torch.autocast(train_device().type, dtype=torch.bfloat16, enabled=enabled)


def make_optimizer(module: nn.Module, cfg: FitConfig, total_steps: int):
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    warmup = int(cfg.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def fit(
    module: nn.Module,
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    make_batches: Callable[[int], Sequence[np.ndarray]],
    evaluate: Callable[[], tuple[float, dict]],
    cfg: FitConfig,
    desc: str = "train",
) -> FitResult:
    """Train the trainable parameters of ``module``; ``loss_fn(batch_indices)`` returns the loss."""
    from tqdm import tqdm

    module.to(train_device())
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if not trainable:
        raise ValueError(f"{desc}: nothing to train (all parameters frozen)")
    steps_per_epoch = len(make_batches(0))
    total_steps = schedule_steps(cfg, steps_per_epoch)
    no_stop_before = stop_floor(cfg, steps_per_epoch, total_steps)
    eval_every = max(1, steps_per_epoch // max(1, cfg.evals_per_epoch))
    opt, sched = make_optimizer(module, cfg, total_steps)
    use_bf16 = cfg.use_bf16
    best_score, best_metrics, best_state = -math.inf, {}, None
    since_best, step, running = 0, 0, None
    history = []
    t0 = time.perf_counter()
    bar = tqdm(total=total_steps, desc=desc, disable=not cfg.progress, leave=False, dynamic_ncols=True)
    stop = False
    epoch = 0
    if total_steps == 0:
        module.eval()
        with torch.no_grad(), autocast(use_bf16):
            best_score, best_metrics = evaluate()
    while step < total_steps and not stop:
        module.train()
        for idx in make_batches(epoch):
            with autocast(use_bf16):
                loss = loss_fn(idx)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable.values(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.update(1)
            if step % eval_every == 0 or step == total_steps:
                module.eval()
                with torch.no_grad(), autocast(use_bf16):
                    score, metrics = evaluate()
                module.train()
                history.append({"step": step, "loss": running, "val": score})
                if score > best_score:
                    best_score, best_metrics, since_best = score, metrics, 0
                    best_state = {n: p.detach().clone() for n, p in trainable.items()}
                else:
                    since_best += 1
                bar.set_postfix(loss=f"{running:.4f}", val=f"{score:.2f}", best=f"{best_score:.2f}")
                if since_best >= cfg.patience and step >= no_stop_before:
                    stop = True
                    break
            else:
                bar.set_postfix(loss=f"{running:.4f}", best=f"{best_score:.2f}")
            if step >= total_steps:
                break
        epoch += 1
    bar.close()
    if best_state is not None:
        with torch.no_grad():
            for n, p in trainable.items():
                p.copy_(best_state[n])
    module.eval()
    return FitResult(best_score, best_metrics, step, time.perf_counter() - t0, history, total_steps,
                     total_steps / max(1, steps_per_epoch))
