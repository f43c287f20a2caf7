"""Distilling a teacher's task layers into a smaller student head.

Loss (classification): ``soft_weight * T^2 * CE(softmax(teacher/T), softmax(student/T))
+ hard_weight * CE(labels, student)``; the ``T^2`` keeps the soft term's gradients on
the scale of the hard term as ``T`` changes (Hinton et al.). Regression: MSE to the
teacher's score plus MSE to the label. Optional hidden-state distillation adds the
MSE between each student layer's output and the teacher layer it stands in for.

The student reads the same branch depth as its teacher and starts from the
teacher's lowest ``m`` task layers, pooler and output layer, so it starts close
to the teacher's function. With several teachers (MKDM), the targets are the
average of their soft labels (or scores); the student starts from the first one.

Teacher targets are computed once per training example (teacher in eval mode, no
dropout), so training the student costs only its own layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from trunkserve.bert import mask_bias
from trunkserve.modules import REGRESSION, Head

from .cache import HiddenStateCache
from .loop import FitConfig, FitResult
from .teacher import predict_head, train_head_on_cache


class DistillError(ValueError):
    """Teachers and student do not fit together (depth, labels, layer count)."""


def soft_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean_i( -sum_c p_teacher[i,c] * log softmax(student/T)[i,c] )``; ``teacher_probs`` already at ``T``."""
    logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return temperature ** 2 * -(teacher_probs.float() * logp).sum(dim=-1).mean()


def distillation_loss(
    student_out: torch.Tensor,
    teacher_target: torch.Tensor,
    labels: torch.Tensor,
    task_type: str,
    temperature: float = 2.0,
    soft_weight: float = 1.0,
    hard_weight: float = 1.0,
) -> torch.Tensor:
    """Soft + hard loss. ``teacher_target``: soft labels at ``T`` (classification) or scores (regression)."""
    if task_type == REGRESSION:
        s = student_out.float().reshape(-1)
        return soft_weight * F.mse_loss(s, teacher_target.float().reshape(-1)) + hard_weight * F.mse_loss(s, labels.float())
    soft = soft_cross_entropy(student_out, teacher_target, temperature)
    return soft_weight * soft + hard_weight * F.cross_entropy(student_out.float(), labels.long())


def init_student(teacher: Head, num_layers: int) -> Head:
    """A ``num_layers`` head holding copies of the teacher's lowest layers, pooler and output layer."""
    if not 1 <= num_layers <= teacher.num_layers:
        raise DistillError(f"student layers must be in 1..{teacher.num_layers} (the teacher's), got {num_layers}")
    student = Head(teacher.config, num_layers, teacher.num_labels, teacher.task_type)
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("layers.") or int(k.split(".")[1]) < num_layers}
    student.load_state_dict(copy.deepcopy(state))
    return student


@torch.no_grad()
def teacher_targets(teachers: list[Head], cache: HiddenStateCache, depth: int, temperature: float, bf16: bool = False) -> torch.Tensor:
    """Averaged soft labels ``softmax(logits/T)`` (or scores) of ``teachers`` for every example of ``cache``."""
    acc = None
    for t in teachers:
        out = torch.from_numpy(predict_head(t, cache, depth, bf16=bf16))
        target = out if t.task_type == REGRESSION else torch.softmax(out / temperature, dim=-1)
        acc = target if acc is None else acc + target
    return acc / len(teachers)


def layer_outputs(head: Head, hidden: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states after each of ``head``'s transformer layers."""
    bias = mask_bias(attention_mask, hidden.dtype)
    outs = []
    for layer in head.layers:
        hidden = layer(hidden, bias)
        outs.append(hidden)
    return outs


def hidden_mse(student_layers, teacher_layers, attention_mask) -> torch.Tensor:
    """MSE over real tokens between each student layer and the teacher layer it maps to (uniform mapping, last to last)."""
    m, n = len(student_layers), len(teacher_layers)
    mask = attention_mask.unsqueeze(-1).float()
    total = 0.0
    for j, s in enumerate(student_layers):
        t = teacher_layers[(j + 1) * n // m - 1]
        total = total + (((s.float() - t.float()) ** 2) * mask).sum() / (mask.sum() * s.shape[-1])
    return total / m


def train_student(
    teachers: list[Head],
    train: HiddenStateCache,
    val: HiddenStateCache,
    depth: int,
    metric: str,
    cfg: FitConfig,
    num_layers: int = 1,
    temperature: float = 2.0,
    soft_weight: float = 1.0,
    hard_weight: float = 1.0,
    hidden_weight: float = 0.0,
    desc: str = "student",
) -> tuple[Head, FitResult]:
    """Distil ``teachers`` (one, or several for MKDM) into a ``num_layers`` student at ``depth``."""
    if not teachers:
        raise DistillError("at least one teacher is needed")
    first = teachers[0]
    for t in teachers[1:]:
        if (t.task_type, t.num_labels) != (first.task_type, first.num_labels):
            raise DistillError("teachers disagree on task type or label count")
    student = init_student(first, num_layers)
    targets = teacher_targets(teachers, train, depth, temperature, bf16=cfg.use_bf16).to(train.device)
    labels = torch.from_numpy(train.enc.labels).to(train.device)
    for t in teachers:
        t.eval()
        for p in t.parameters():
            p.requires_grad_(False)

    def loss_fn(out, idx, hidden, mask):
        loss = distillation_loss(out, targets[idx], labels[idx], student.task_type, temperature, soft_weight, hard_weight)
        if hidden_weight > 0:
            s_layers = layer_outputs(student, hidden, mask)
            with torch.no_grad():
                t_layers = layer_outputs(first, hidden, mask)
            loss = loss + hidden_weight * hidden_mse(s_layers, t_layers, mask)
        return loss

    result = train_head_on_cache(student, train, val, depth, metric, cfg, loss_fn=loss_fn, desc=desc)
    return student, result
