"""Every head of one branch depth computed as one wide graph (``HeadGroup``).

Why: served one by one, each head is its own Triton step, and a step's fixed cost
(Python backend, scheduling, one ONNX run) is several times a one-layer head's graph
work. Heads that read the same hidden states run together instead, in one graph: the
first layer's attention, the part that reads the shared states, as one wide
computation over every head's projections concatenated, then each head's own layers,
pooler and classifier. The outputs are each head's ``serving_outputs`` up to float
rounding; tests and export validation hold them to the heads' plain PyTorch form at 1e-4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from .artifacts import HeadMeta, load_head
from .bert import BertConfig, BertLayer, mask_bias
from .modules import REGRESSION, Head
from .specs import GraphSpec, head_group_spec

#: Config fields that shape a head's weights or its arithmetic: concatenating the heads needs them equal.
ARCHITECTURE_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps")


class HeadGroupError(ValueError):
    """Heads that cannot share one graph: none, or differing layer counts, depths or architecture."""


def _stack(tensors: Sequence[torch.Tensor], transpose: bool = False) -> torch.Tensor:
    """Stack along a new group axis; ``transpose`` turns ``Linear`` weights [out, in] into [in, out]."""
    out = torch.stack([t.detach().float() for t in tensors])
    return out.transpose(-1, -2).contiguous() if transpose else out


class _WideAttention(nn.Module):
    """The self-attention of every head's first layer on the group's shared input, computed together.

    Not last (heads of two or more layers): the heads' Q/K/V projections are one matrix
    [hidden, 3*G*hidden], one product over every token; attention then runs batched over
    the group. Last (one-layer heads, [CLS] only): the absorbed form of
    ``_SelfAttention.first_token_absorbed`` with the heads' attention heads side by side
    (G*n of them): one query product, and scores and pooling one product per sequence.
    """

    def __init__(self, layers: Sequence[BertLayer], config: BertConfig, last: bool):
        super().__init__()
        self.groups, self.last = len(layers), last
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        att = [layer.attention.self for layer in layers]
        g, n, d, h = self.groups, self.num_heads, self.head_dim, config.hidden_size
        if last:
            q_w = _stack([a.query.weight for a in att], transpose=True).permute(1, 0, 2).reshape(h, g * h)
            q_b = _stack([a.query.bias for a in att]).reshape(g * h)
            k = _stack([a.key.weight for a in att]).reshape(g * n, d, h)
            v = _stack([a.value.weight for a in att]).view(g, n, d, h).transpose(-1, -2).reshape(g * n, h, d)
            v_b = _stack([a.value.bias for a in att]).reshape(g * n, 1, d)
            for name, t in (("q_w", q_w), ("q_b", q_b), ("k_fold", k), ("v_fold", v), ("v_b", v_b)):
                self.register_buffer(name, t.contiguous())
        else:  # columns ordered (projection, head, hidden) so that one view splits them
            qkv = _stack([torch.cat([a.query.weight, a.key.weight, a.value.weight]) for a in att], transpose=True)
            bias = _stack([torch.cat([a.query.bias, a.key.bias, a.value.bias]) for a in att])  # [G, 3H]
            self.register_buffer("qkv_w", qkv.view(g, h, 3, h).permute(1, 2, 0, 3).reshape(h, 3 * g * h).contiguous())
            self.register_buffer("qkv_b", bias.view(g, 3, h).transpose(0, 1).reshape(3 * g * h).contiguous())

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
        """[batch, seq, H] -> per head the attention context [batch, seq, H] ([batch, 1, H] when last)."""
        return self._absorbed(hidden, bias) if self.last else self._full(hidden, bias)

    def _full(self, hidden: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
        g, n, d = self.groups, self.num_heads, self.head_dim
        b, s = hidden.shape[0], hidden.shape[1]
        qkv = (torch.matmul(hidden, self.qkv_w) + self.qkv_b).view(b, s, 3, g, n, d).permute(2, 3, 0, 4, 1, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [G, batch, n, seq, d]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 1, 3, 2, 4).reshape(g, b, s, n * d)
        return list(ctx.unbind(0))

    def _absorbed(self, hidden: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
        g, n, d = self.groups, self.num_heads, self.head_dim
        b = hidden.shape[0]
        q = (torch.matmul(hidden[:, 0], self.q_w) + self.q_b).view(b, g * n, d).transpose(0, 1)  # [G*n, batch, d]
        folded = torch.matmul(q, self.k_fold).transpose(0, 1) / math.sqrt(d)  # [batch, G*n, H]
        scores = torch.matmul(folded, hidden.transpose(1, 2)) + bias[:, 0]  # [batch, G*n, seq]
        pooled = torch.matmul(torch.softmax(scores, dim=-1), hidden).transpose(0, 1)  # [G*n, batch, H]
        ctx = torch.matmul(pooled, self.v_fold) + self.v_b  # [G*n, batch, d]
        return list(ctx.reshape(g, n, b, d).permute(0, 2, 1, 3).reshape(g, b, 1, n * d).unbind(0))


class HeadGroup(nn.Module):
    """Heads of one branch depth as one module: (hidden_states, attention_mask) -> every task's outputs.

    The first layer's attention, which reads the input all heads share, runs wide
    (``_WideAttention``); everything after it is each head's own modules, so that each
    weight product stays a plain 2-D product: ONNX Runtime pre-packs constant 2-D
    weights only, and stacked [G, in, out] weights measured 2.7x slower at serving
    batch sizes (``reports/microbench/head_group.py``). ``forward`` returns, task by
    task in ``tasks`` order, (logits, probabilities) or (score,): ``spec``'s outputs.
    The group holds the heads themselves (no copies); inference only.
    """

    def __init__(self, heads: Mapping[str, Head]):
        super().__init__()
        if not heads:
            raise HeadGroupError("a head group needs at least one head")
        self.tasks = tuple(heads)
        first = heads[self.tasks[0]]
        self.config, self.num_layers = first.config, first.num_layers
        _check_compatible(heads, self.config, self.num_layers)
        self.heads = nn.ModuleList(heads[t] for t in self.tasks)
        if self.num_layers:
            self.wide = _WideAttention([h.layers[0] for h in self.heads], self.config, last=self.num_layers == 1)
        self.eval()

    @property
    def members(self) -> list[tuple[str, str, int]]:
        """(task, task_type, num_labels) per head, in output order."""
        return [(t, h.task_type, h.num_labels) for t, h in zip(self.tasks, self.heads)]

    def spec(self, name: str) -> GraphSpec:
        return head_group_spec(name, self.members, self.config.hidden_size)

    def encode(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Every head's last-layer [CLS] state [batch, 1, hidden] (``Head.encode(absorbed=True)`` per head)."""
        if not self.num_layers:
            return [hidden] * len(self.heads)
        bias = mask_bias(attention_mask, hidden.dtype)
        first = hidden[:, :1] if self.num_layers == 1 else hidden
        states = []
        for head, ctx in zip(self.heads, self.wide(hidden, bias)):
            layer = head.layers[0]
            attn = layer.attention.output(ctx, first)
            state = layer.output(layer.intermediate(attn), attn)
            for j, above in enumerate(head.layers[1:], start=2):
                state = above(state, bias, first_token_only=j == self.num_layers, absorbed=True)
            states.append(state)
        return states

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs: list[torch.Tensor] = []
        for head, state in zip(self.heads, self.encode(hidden_states, attention_mask)):
            out = head.output(state)
            outputs += [out] if head.task_type == REGRESSION else [out, torch.softmax(out, dim=-1)]
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
