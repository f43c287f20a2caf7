"""Untrained heads: pre-trained layers above the branch depth and a fresh, seeded classifier.

Used where only the plumbing matters (parity tests, the serving-cost sweep
with many synthetic tasks). They are complete, valid artefacts with the right
fingerprint and a canary, so every deployment path treats them as real heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .artifacts import HeadMeta, save_head
from .backbone import Backbone
from .canary import make_canary
from .defaults import DEFAULT_DEPTHS
from .fingerprint import trunk_fingerprint
from .modules import REGRESSION, Head, Trunk
from .tokenization import BucketTokenizer


def make_untrained_head(
    backbone: Backbone,
    out: str | Path,
    task: str,
    labels: Sequence[str] = ("negative", "positive"),
    task_type: str = "classification",
    branch_layer: int = DEFAULT_DEPTHS[0],
    num_layers: int = 1,
    seed: int = 0,
    trunk: Trunk | None = None,
    logit_scale: float = 1.0,
) -> Path:
    """Write a head folder for ``task`` that reads depth ``branch_layer`` of ``backbone``.

    ``logit_scale`` multiplies the fresh classifier's weights: a fresh classifier gives
    near-zero outputs, which hide small changes of the trunk's hidden states; a trained
    head's outputs are large, and so is their sensitivity (tests of quantised trunks use it).
    """
    labels = ["score"] if task_type == REGRESSION else list(labels)
    head = Head.from_backbone_layers(
        backbone.config, backbone.state_dict, branch_layer, num_layers, len(labels), task_type, seed=seed
    )
    with torch.no_grad():
        head.classifier.weight.mul_(logit_scale)
    if trunk is None or branch_layer not in trunk.depths:
        trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, [branch_layer]).freeze()
    meta = HeadMeta(
        task=task,
        task_type=task_type,
        labels=labels,
        branch_layer=branch_layer,
        num_layers=num_layers,
        trunk_fingerprint=trunk_fingerprint(backbone.state_dict, branch_layer, backbone.tokenizer_files()),
        bert_config=backbone.config.to_dict(),
        backbone=str(backbone.path),
        metrics={},
        training={"untrained": True, "seed": seed},
    )
    canary = make_canary(trunk, head, branch_layer, BucketTokenizer(backbone.path))
    return save_head(out, head, meta, canary)
