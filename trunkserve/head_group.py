"""Every head of one branch depth computed as one wide graph (``HeadGroup``).

Why: served one by one, each head is its own Triton step, and a step's fixed cost
(Python backend, scheduling, one ONNX run) is several times a one-layer head's graph
work. Heads that read the same hidden states can run together instead: the layer that
reads the shared states does so in one matrix product over every head's projections
concatenated, the layers above as batched products over a group axis of stacked
weights, and pooler and classifier likewise (padded to the widest label count, sliced
per task). The outputs are each head's ``serving_outputs`` up to float rounding;
tests and export validation hold them to the heads' plain PyTorch form at 1e-4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .artifacts import HeadMeta, load_head
from .bert import BertConfig, BertLayer, mask_bias
from .modules import REGRESSION, Head
from .specs import GraphSpec, head_group_spec

#: Config fields that shape a head's weights or its arithmetic: stacking needs them equal.
ARCHITECTURE_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps")


class HeadGroupError(ValueError):
    """Heads that cannot share one graph: none, or differing layer counts, depths or architecture."""


def _stack(tensors: Sequence[torch.Tensor], transpose: bool = False) -> torch.Tensor:
    """Stack along a new group axis; ``transpose`` turns ``Linear`` weights [out, in] into [in, out]."""
    out = torch.stack([t.detach().float() for t in tensors])
    return out.transpose(-1, -2).contiguous() if transpose else out


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-group ``Linear``: x [G, ..., in] with weight [G, in, out] and bias [G, out]; one batched product."""
    shape = x.shape
    y = torch.matmul(x.reshape(weight.shape[0], -1, weight.shape[1]), weight) + bias.unsqueeze(1)
    return y.reshape(*shape[:-1], weight.shape[2])


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, width: int, eps: float) -> torch.Tensor:
    """Per-group LayerNorm over the last axis (``width``, a Python int so that ONNX export sees a constant)."""
    view = (-1,) + (1,) * (x.dim() - 2) + (width,)
    return F.layer_norm(x, (width,), eps=eps) * weight.view(view) + bias.view(view)


def _activation(name: str):
    if name == "gelu":
        return lambda x: F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise HeadGroupError(f"unsupported hidden_act {name!r} (gelu, gelu_new, relu)")


class _StackedLayer(nn.Module):
    """Layer ``j`` of every head in the group, its weights stacked over a leading group axis.

    ``shared``: the layer reads the group's common input ([batch, seq, hidden], the first
    layer), so its query/key/value projections (or, when ``last``, the query alone and the
    folded key/value matrices) are one product wide across the heads. ``last``: only
    [CLS] is computed, in the absorbed form of ``_SelfAttention.first_token_absorbed``.
    """

    def __init__(self, layers: Sequence[BertLayer], config: BertConfig, shared: bool, last: bool):
        super().__init__()
        self.groups, self.shared, self.last = len(layers), shared, last
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.hidden = config.hidden_size
        self.eps = config.layer_norm_eps
        self.act = _activation(config.hidden_act)
        att = [layer.attention.self for layer in layers]
        if last:
            self._register_absorbed(att)
        else:
            self._register_projections(att)
        stacked = {
            "o_w": [layer.attention.output.dense.weight for layer in layers],
            "i_w": [layer.intermediate.dense.weight for layer in layers],
            "f_w": [layer.output.dense.weight for layer in layers],
        }
        for name, ws in stacked.items():
            self.register_buffer(name, _stack(ws, transpose=True))
        vectors = {
            "o_b": [layer.attention.output.dense.bias for layer in layers],
            "ln1_w": [layer.attention.output.LayerNorm.weight for layer in layers],
            "ln1_b": [layer.attention.output.LayerNorm.bias for layer in layers],
            "i_b": [layer.intermediate.dense.bias for layer in layers],
            "f_b": [layer.output.dense.bias for layer in layers],
            "ln2_w": [layer.output.LayerNorm.weight for layer in layers],
            "ln2_b": [layer.output.LayerNorm.bias for layer in layers],
        }
        for name, vs in vectors.items():
            self.register_buffer(name, _stack(vs))

    def _register_projections(self, att) -> None:
        """Q, K and V side by side: [hidden, 3*G*hidden] when shared (one product), else [G, hidden, 3*hidden]."""
        qkv = _stack([torch.cat([a.query.weight, a.key.weight, a.value.weight]) for a in att], transpose=True)
        bias = _stack([torch.cat([a.query.bias, a.key.bias, a.value.bias]) for a in att])  # [G, 3H]
        if self.shared:  # columns ordered (projection, head, hidden) so that one view splits them
            g, h = self.groups, self.hidden
            qkv = qkv.view(g, h, 3, h).permute(1, 2, 0, 3).reshape(h, 3 * g * h)
            bias = bias.view(g, 3, h).transpose(0, 1).reshape(3 * g * h)
        self.register_buffer("qkv_w", qkv.contiguous())
        self.register_buffer("qkv_b", bias.contiguous())

    def _register_absorbed(self, att) -> None:
        """The query projection and the key/value weights folded per attention head (``first_token_absorbed``)."""
        g, n, d, h = self.groups, self.num_heads, self.head_dim, self.hidden
        q_w, q_b = _stack([a.query.weight for a in att], transpose=True), _stack([a.query.bias for a in att])
        k = _stack([a.key.weight for a in att]).view(g, n, d, h)
        v = _stack([a.value.weight for a in att]).view(g, n, d, h).transpose(-1, -2)
        v_b = _stack([a.value.bias for a in att]).view(g, n, 1, d)
        if self.shared:  # one query product for all heads; their attention heads side by side (A = G * n)
            q_w, q_b = q_w.permute(1, 0, 2).reshape(h, g * h), q_b.reshape(g * h)
            k, v, v_b = k.reshape(1, g * n, d, h), v.reshape(1, g * n, h, d), v_b.reshape(1, g * n, 1, d)
        for name, t in (("q_w", q_w), ("q_b", q_b), ("k_fold", k), ("v_fold", v), ("v_b", v_b)):
            self.register_buffer(name, t.contiguous())

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """[batch, seq, H] (shared) or [G, batch, seq, H] -> [G, batch, seq, H], or [G, batch, H] when ``last``."""
        if self.last:
            ctx, residual = self._absorbed(x, bias), x[..., 0, :]
        else:
            ctx, residual = self._attention(x, bias), x
        attn = _layer_norm(_linear(ctx, self.o_w, self.o_b) + residual, self.ln1_w, self.ln1_b, self.hidden, self.eps)
        inner = self.act(_linear(attn, self.i_w, self.i_b))
        return _layer_norm(_linear(inner, self.f_w, self.f_b) + attn, self.ln2_w, self.ln2_b, self.hidden, self.eps)

    def _attention(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Full self-attention per head: context [G, batch, seq, H]."""
        g, n, d = self.groups, self.num_heads, self.head_dim
        b, s = x.shape[-3], x.shape[-2]
        if self.shared:
            qkv = (torch.matmul(x, self.qkv_w) + self.qkv_b).view(b, s, 3, g, n, d).permute(2, 3, 0, 4, 1, 5)
        else:
            qkv = _linear(x, self.qkv_w, self.qkv_b).view(g, b, s, 3, n, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [G, batch, n, seq, d]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return ctx.permute(0, 1, 3, 2, 4).reshape(g, b, s, n * d)

    def _absorbed(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """[CLS] attention without per-position key/value projections: context [G, batch, H].

        The attention part runs on P parts of A attention heads each: one part of all G*n
        heads when the input is shared (so scores and pooling are one product per
        sequence for the whole group), else G parts of n.
        """
        g, n, d = self.groups, self.num_heads, self.head_dim
        if self.shared:
            b = x.shape[0]
            q = (torch.matmul(x[:, 0], self.q_w) + self.q_b).view(1, b, g * n, d)
            x = x.unsqueeze(0)  # [1, batch, seq, H]
        else:
            b = x.shape[1]
            q = _linear(x[:, :, 0], self.q_w, self.q_b).view(g, b, n, d)
        folded = torch.matmul(q.transpose(1, 2), self.k_fold) / math.sqrt(d)  # [P, A, batch, H]
        scores = torch.matmul(folded.transpose(1, 2), x.transpose(-1, -2)) + bias[:, 0]  # [P, batch, A, seq]
        pooled = torch.matmul(torch.softmax(scores, dim=-1), x)  # [P, batch, A, H]
        ctx = torch.matmul(pooled.transpose(1, 2), self.v_fold) + self.v_b  # [P, A, batch, d]
        return ctx.reshape(g, n, b, d).transpose(1, 2).reshape(g, b, n * d)


class HeadGroup(nn.Module):
    """Heads of one branch depth as one module: (hidden_states, attention_mask) -> every task's outputs.

    ``forward`` returns, task by task in ``tasks`` order, (logits, probabilities) for a
    classification head and (score,) for a regression head: the order and names of
    ``spec``. Inference only (eval-mode arithmetic, no dropout); the weights are copies.
    """

    def __init__(self, heads: Mapping[str, Head]):
        super().__init__()
        if not heads:
            raise HeadGroupError("a head group needs at least one head")
        self.tasks = tuple(heads)
        first = heads[self.tasks[0]]
        self.config, self.num_layers = first.config, first.num_layers
        _check_compatible(heads, self.config, self.num_layers)
        self.task_types = tuple(heads[t].task_type for t in self.tasks)
        self.num_labels = tuple(heads[t].num_labels for t in self.tasks)
        members = [heads[t] for t in self.tasks]
        self.layers = nn.ModuleList(
            _StackedLayer([h.layers[j] for h in members], self.config, shared=j == 0, last=j == self.num_layers - 1)
            for j in range(self.num_layers)
        )
        self.register_buffer("pool_w", _stack([h.pooler.dense.weight for h in members], transpose=True))
        self.register_buffer("pool_b", _stack([h.pooler.dense.bias for h in members]))
        self._register_classifiers(members)
        self.eval()

    def _register_classifiers(self, members: Sequence[Head]) -> None:
        """Classifiers padded with zero columns to the widest; padded logits get -inf before softmax."""
        widest, h = max(self.num_labels), self.config.hidden_size
        weight, bias = torch.zeros(len(members), h, widest), torch.zeros(len(members), widest)
        pad = torch.zeros(len(members), 1, widest)
        for g, head in enumerate(members):
            weight[g, :, : head.num_labels] = head.classifier.weight.detach().float().t()
            bias[g, : head.num_labels] = head.classifier.bias.detach().float()
            pad[g, 0, head.num_labels :] = float("-inf")
        self.register_buffer("cls_w", weight)
        self.register_buffer("cls_b", bias)
        self.register_buffer("label_pad", pad)

    @property
    def members(self) -> list[tuple[str, str, int]]:
        """(task, task_type, num_labels) per head, in output order."""
        return list(zip(self.tasks, self.task_types, self.num_labels))

    def spec(self, name: str) -> GraphSpec:
        return head_group_spec(name, self.members, self.config.hidden_size)

    def encode(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every head's last-layer [CLS] state: [G, batch, hidden] (``Head.encode`` per head, stacked)."""
        if not self.num_layers:
            return hidden[:, 0].unsqueeze(0).expand(len(self.tasks), -1, -1)
        bias = mask_bias(attention_mask, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, bias)
        return hidden

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = torch.tanh(_linear(self.encode(hidden_states, attention_mask), self.pool_w, self.pool_b))
        logits = _linear(pooled, self.cls_w, self.cls_b)  # [G, batch, widest]
        probs = torch.softmax(logits + self.label_pad, dim=-1)
        outputs: list[torch.Tensor] = []
        for g, (task_type, labels) in enumerate(zip(self.task_types, self.num_labels)):
            if task_type == REGRESSION:
                outputs.append(logits[g, :, :1])
            else:
                outputs += [logits[g, :, :labels], probs[g, :, :labels]]
        return tuple(outputs)


def _check_compatible(heads: Mapping[str, Head], config: BertConfig, num_layers: int) -> None:
    for task, head in heads.items():
        if head.num_layers != num_layers:
            raise HeadGroupError(
                f"head {task!r} has {head.num_layers} layers, the group's first head {num_layers}: "
                "a group holds heads of one layer count (group key: depth, num_layers)"
            )
        differ = [f for f in ARCHITECTURE_FIELDS if getattr(head.config, f) != getattr(config, f)]
        if differ:
            raise HeadGroupError(f"head {task!r} differs from the group's first head in {', '.join(differ)}")


@dataclass
class LoadedGroup:
    """A group read from head folders: the module, the heads it copies and their metadata (folder order)."""

    group: HeadGroup
    heads: dict[str, Head]
    metas: list[HeadMeta]

    @property
    def depth(self) -> int:
        return self.metas[0].branch_layer

    @property
    def num_layers(self) -> int:
        return self.metas[0].num_layers


def load_group(folders: Sequence[str | Path]) -> LoadedGroup:
    """A ``HeadGroup`` from head folders (``artifacts.load_head``), which must read one branch depth."""
    loaded = [load_head(f) for f in folders]
    if not loaded:
        raise HeadGroupError("a head group needs at least one head folder")
    depths = sorted({meta.branch_layer for _, meta in loaded})
    if len(depths) > 1:
        raise HeadGroupError(f"heads of one group read one branch depth; these read {depths}")
    tasks = [meta.task for _, meta in loaded]
    if len(set(tasks)) != len(tasks):
        raise HeadGroupError(f"two head folders for one task: {sorted(tasks)}")
    heads = {meta.task: head for head, meta in loaded}
    return LoadedGroup(HeadGroup(heads), heads, [meta for _, meta in loaded])
