"""Partial fine-tuning teachers (frozen bottom ``k`` layers) and the full fine-tuning baseline.

Teacher for branch depth ``k`` with ``n`` task layers: encoder layers ``k .. k+n-1``
copied from the backbone, plus its pooler and a fresh output layer, trained on the
cached depth-``k`` hidden states (the frozen trunk never runs again). The full
fine-tuning baseline trains embeddings + all layers from tokens (``trunkserve.modules.FullModel``,
the model the single-task repository serves): what serving one model per task would give,
on the same data, backbone and recipe.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trunkserve.backbone import Backbone
from trunkserve.modules import REGRESSION, FullModel, Head

from .cache import HiddenStateCache
from .data.encode import Encoded, length_batches, pad_tokens
from .loop import FitConfig, FitResult, autocast, fit, seed_everything, to_device, train_device
from .metrics import compute_metrics, headline


def task_loss(out: torch.Tensor, labels: torch.Tensor, task_type: str) -> torch.Tensor:
    """Cross-entropy on logits, or MSE on the score for regression."""
    if task_type == REGRESSION:
        return F.mse_loss(out.float().squeeze(-1), labels.float())
    return F.cross_entropy(out.float(), labels.long())


@torch.no_grad()
def predict_head(head: Head, cache: HiddenStateCache, depth: int, batch_size: int = 128, bf16: bool = False) -> np.ndarray:
    """Head outputs for every example of ``cache``, in example order (float32 numpy)."""
    head.to(cache.device).eval()
    out = np.zeros((len(cache), head.num_labels), dtype=np.float32)
    for idx in length_batches(cache.enc.lengths, batch_size, shuffle=False):
        hidden, mask = cache.batch(idx, depth)
        with autocast(bf16):
            out[idx] = head(hidden, mask).float().cpu().numpy()
    return out


def evaluate_outputs(outputs: np.ndarray, enc: Encoded, metric: str) -> tuple[float, dict]:
    m = compute_metrics(metric, outputs, enc.labels)
    return headline(m), m


def train_head_on_cache(
    head: Head,
    train: HiddenStateCache,
    val: HiddenStateCache,
    depth: int,
    metric: str,
    cfg: FitConfig,
    loss_fn=None,
    desc: str = "head",
) -> FitResult:
    """Fit ``head`` on cached states; ``loss_fn(out, idx, hidden, mask)`` defaults to the task loss."""
    labels = torch.from_numpy(train.enc.labels).to(train.device)
    if loss_fn is None:
        def loss_fn(out, idx, hidden, mask):
            return task_loss(out, labels[idx], head.task_type)

    def step(idx):
        hidden, mask = train.batch(idx, depth)
        return loss_fn(head(hidden, mask), idx, hidden, mask)

    def batches(epoch):
        return length_batches(train.enc.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch)

    def evaluate():
        return evaluate_outputs(predict_head(head, val, depth, bf16=cfg.use_bf16), val.enc, metric)

    seed_everything(cfg.seed)
    return fit(head, step, batches, evaluate, cfg, desc=desc)


def build_teacher(bb: Backbone, branch_layer: int, num_layers: int, num_labels: int, task_type: str, seed: int) -> Head:
    return Head.from_backbone_layers(bb.config, bb.state_dict, branch_layer, num_layers, num_labels, task_type, seed=seed)


def train_teacher(
    bb: Backbone, train: HiddenStateCache, val: HiddenStateCache, branch_layer: int, num_layers: int,
    num_labels: int, task_type: str, metric: str, cfg: FitConfig, desc: str = "teacher",
) -> tuple[Head, FitResult]:
    head = build_teacher(bb, branch_layer, num_layers, num_labels, task_type, cfg.seed)
    return head, train_head_on_cache(head, train, val, branch_layer, metric, cfg, desc=desc)


@torch.no_grad()
def predict_full(model: FullModel, enc: Encoded, batch_size: int = 128, bf16: bool = False) -> np.ndarray:
    dev = train_device()
    model.to(dev).eval()
    out = np.zeros((len(enc), model.head.num_labels), dtype=np.float32)
    for idx in length_batches(enc.lengths, batch_size, shuffle=False):
        with autocast(bf16):
            out[idx] = model(**to_device(pad_tokens(enc, idx), dev)).float().cpu().numpy()
    return out


def train_full(
    bb: Backbone, train: Encoded, val: Encoded, num_labels: int, task_type: str, metric: str, cfg: FitConfig,
    desc: str = "full fine-tuning",
) -> tuple[FullModel, FitResult]:
    seed_everything(cfg.seed)
    dev = train_device()
    model = FullModel.from_backbone(bb.config, bb.state_dict, num_labels, task_type, cfg.seed).to(dev)
    labels = torch.from_numpy(train.labels).to(dev)

    def step(idx):
        return task_loss(model(**to_device(pad_tokens(train, idx), dev)), labels[idx], task_type)

    def batches(epoch):
        return length_batches(train.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch)

    def evaluate():
        return evaluate_outputs(predict_full(model, val, bf16=cfg.use_bf16), val, metric)

    return model, fit(model, step, batches, evaluate, cfg, desc=desc)
