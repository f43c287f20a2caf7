"""Distilling a teacher's task layers into a smaller student head.

Loss (classification): ``soft_weight * T^2 * CE(softmax(teacher/T), softmax(student/T))
+ hard_weight * CE(labels, student)``; the ``T^2`` keeps the soft term's gradients on
the scale of the hard term as ``T`` changes (Hinton et al.). Regression: MSE to the
teacher's score plus MSE to the label. Optional hidden-state distillation adds the
MSE between each student layer's output and the teacher layer it stands in for.

The student reads the same branch depth as its teacher and starts from the
teacher's lowest ``m`` task layers, pooler and output layer, so it starts close
to the teacher's function. With several teachers (MKDM), the targets are the
average of their soft labels (or scores), weighted if asked; the student starts from the first one.
With a transfer set (``training.transfer``) the student also learns the targets on those rows, the
soft term only: they have no labels, so the hard term is the mean over the labelled rows of a batch.

Teacher targets are computed once per training example (teacher in eval mode, no
dropout), so training the student costs only its own layers.

The copied pooler and output layer were trained on the teacher's *top* layer, not on
the student's lower one, so the student starts near chance whatever its layers hold
(a 3-class intent student began at 26.7% while its teacher scored 100%). Where the
data is small (the schedule had to be raised to ``min_steps``), they are refitted to
the student's own [CLS] states on the same loss before distillation
(``fit_output_layer``: the layers frozen, their states computed once), so the few
steps there are start from a working classifier. On the GLUE study's larger sets the
student recovers on its own and the refit moved candidates by -4.8 to +3.1 points
(CoLA's chosen student -1.0 and -2.4 on two seeds), so ``refit="small"`` is the default.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from trunkserve.bert import mask_bias
from trunkserve.defaults import DEFAULT_REFIT_STEPS
from trunkserve.modules import REGRESSION, Head

from .cache import ConcatCache, HiddenStateCache
from .loop import FitConfig, FitResult
from .data.encode import length_batches
from .loop import autocast, seed_everything, train_device
from .teacher import predict_head, train_head_on_cache


REFIT_POLICIES = ("small", "always", "never")


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
    labelled: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft + hard loss. ``teacher_target``: soft labels at ``T`` (classification) or scores (regression).

    ``labelled`` (bool per row): the rows whose label counts; the others (transfer rows) add the soft term only.
    """
    if labelled is not None:
        return _partly_labelled_loss(student_out, teacher_target, labels, task_type, temperature, soft_weight,
                                     hard_weight, labelled)
    if task_type == REGRESSION:
        s = student_out.float().reshape(-1)
        return soft_weight * F.mse_loss(s, teacher_target.float().reshape(-1)) + hard_weight * F.mse_loss(s, labels.float())
    soft = soft_cross_entropy(student_out, teacher_target, temperature)
    return soft_weight * soft + hard_weight * F.cross_entropy(student_out.float(), labels.long())


def _partly_labelled_loss(student_out, teacher_target, labels, task_type, temperature, soft_weight, hard_weight, labelled):
    """The soft term over every row, the hard term averaged over the ``labelled`` rows (0 when there are none)."""
    keep = labelled.float()
    if task_type == REGRESSION:
        s = student_out.float().reshape(-1)
        soft = F.mse_loss(s, teacher_target.float().reshape(-1))
        hard = F.mse_loss(s, labels.float(), reduction="none")
    else:
        soft = soft_cross_entropy(student_out, teacher_target, temperature)
        hard = F.cross_entropy(student_out.float(), labels.long(), reduction="none")
    return soft_weight * soft + hard_weight * (hard * keep).sum() / keep.sum().clamp(min=1.0)


def init_student(teacher: Head, num_layers: int) -> Head:
    """A ``num_layers`` head holding copies of the teacher's lowest layers, pooler and output layer."""
    if not 1 <= num_layers <= teacher.num_layers:
        raise DistillError(f"student layers must be in 1..{teacher.num_layers} (the teacher's), got {num_layers}")
    student = Head(teacher.config, num_layers, teacher.num_labels, teacher.task_type)
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("layers.") or int(k.split(".")[1]) < num_layers}
    student.load_state_dict(copy.deepcopy(state))
    return student


@torch.no_grad()
def teacher_targets(teachers: list[Head], cache: HiddenStateCache, depth: int, temperature: float, bf16: bool = False,
                    weights: list[float] | None = None) -> torch.Tensor:
    """Averaged soft labels ``softmax(logits/T)`` (or scores) of ``teachers`` for every example of ``cache``;
    with ``weights`` (one per teacher, normalised here) their weighted mean."""
    if weights is not None:
        if len(weights) != len(teachers) or min(weights) < 0 or sum(weights) <= 0:
            raise DistillError(f"need one non-negative weight per teacher ({len(teachers)}), not all 0; got {weights}")
        weights = [w / sum(weights) for w in weights]
    acc = None
    for i, t in enumerate(teachers):
        out = torch.from_numpy(predict_head(t, cache, depth, bf16=bf16))
        target = out if t.task_type == REGRESSION else torch.softmax(out / temperature, dim=-1)
        if weights is not None:
            target = weights[i] * target
        acc = target if acc is None else acc + target
    return acc if weights is not None else acc / len(teachers)


@torch.no_grad()
def cls_states(head: Head, cache: HiddenStateCache, depth: int, batch_size: int = 128, bf16: bool = False) -> torch.Tensor:
    """``head.encode`` for every example of ``cache`` (its last layer's [CLS] rows), in example order."""
    head.to(cache.device).eval()
    out = torch.zeros((len(cache), 1, head.config.hidden_size), dtype=torch.float32, device=cache.device)
    for idx in length_batches(cache.enc.lengths, batch_size, shuffle=False):
        hidden, mask = cache.batch(idx, depth)
        with autocast(bf16):
            out[idx] = head.encode(hidden, mask).float()
    return out


def fit_output_layer(
    student: Head, train: HiddenStateCache, depth: int, targets: torch.Tensor, labels: torch.Tensor,
    temperature: float, soft_weight: float, hard_weight: float, steps: int = 200, lr: float = 1e-3,
    batch_size: int = 64, seed: int = 0, bf16: bool = False,
) -> float:
    """Refit the student's pooler and output layer to its own [CLS] states (layers untouched).

    Cheap at any data size: the states are computed once (one forward pass of the
    student's layers), then ``steps`` minibatch steps train two small linear layers.
    Returns the last minibatch loss.
    """
    states = cls_states(student, train, depth, bf16=bf16)
    params = [*student.pooler.parameters(), *student.classifier.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    student.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(len(states), (min(batch_size, len(states)),), generator=gen).to(states.device)
        out = student.output(states[idx])
        loss = distillation_loss(out, targets[idx], labels[idx], student.task_type, temperature, soft_weight, hard_weight)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    student.eval()
    return float(loss.detach())


def should_refit(policy: str, cfg: FitConfig, steps_per_epoch: int) -> bool:
    """``small``: only when ``cfg.epochs`` alone gives fewer than ``cfg.min_steps`` steps; never for ``epochs 0``."""
    if policy not in REFIT_POLICIES:
        raise DistillError(f"refit must be one of {REFIT_POLICIES}, got {policy!r}")
    if cfg.epochs == 0 or policy == "never":
        return False
    return policy == "always" or math.ceil(cfg.epochs * steps_per_epoch) < cfg.min_steps


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
    refit_steps: int = DEFAULT_REFIT_STEPS,
    refit: str = "small",
    desc: str = "student",
    weights: list[float] | None = None,
    transfer: HiddenStateCache | None = None,
) -> tuple[Head, FitResult]:
    """Distil ``teachers`` (one, or several for MKDM, averaged with ``weights``) into a ``num_layers`` student
    at ``depth``; with ``transfer``, also on those unlabelled rows (soft term only)."""
    if not teachers:
        raise DistillError("at least one teacher is needed")
    first = teachers[0]
    for t in teachers[1:]:
        if (t.task_type, t.num_labels) != (first.task_type, first.num_labels):
            raise DistillError("teachers disagree on task type or label count")
    student = init_student(first, num_layers)
    labelled_rows = len(train)
    data = train if transfer is None or len(transfer) == 0 else ConcatCache(train, transfer)
    targets = teacher_targets(teachers, data, depth, temperature, bf16=cfg.use_bf16, weights=weights).to(train.device)
    labels = torch.from_numpy(data.enc.labels).to(train.device)
    labelled = None if data is train else torch.arange(len(data), device=train.device) < labelled_rows
    for t in teachers:
        t.eval()
        for p in t.parameters():
            p.requires_grad_(False)
    steps_per_epoch = len(length_batches(train.enc.lengths, cfg.batch_size, shuffle=False))
    if refit_steps > 0 and should_refit(refit, cfg, steps_per_epoch):
        seed_everything(cfg.seed)
        fit_output_layer(student.to(train_device()), train, depth, targets[:labelled_rows], labels[:labelled_rows],
                         temperature, soft_weight, hard_weight, steps=refit_steps, seed=cfg.seed, bf16=cfg.use_bf16)

    def loss_fn(out, idx, hidden, mask):
        loss = distillation_loss(out, targets[idx], labels[idx], student.task_type, temperature, soft_weight, hard_weight,
                                 None if labelled is None else labelled[torch.as_tensor(idx, device=train.device)])
        if hidden_weight > 0:
            s_layers = layer_outputs(student, hidden, mask)
            with torch.no_grad():
                t_layers = layer_outputs(first, hidden, mask)
            loss = loss + hidden_weight * hidden_mse(s_layers, t_layers, mask)
        return loss

    result = train_head_on_cache(student, data, val, depth, metric, cfg, loss_fn=loss_fn, desc=desc)
    return student, result
