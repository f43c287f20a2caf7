"""The trunk/head split of a BERT encoder.

``Trunk`` = embeddings + the bottom layers, frozen and shared by every task; it
returns the hidden states at each configured branch depth and runs no further
than the deepest one. ``Head`` = a few transformer layers on top of one branch
depth + pooler + task output. ``FullModel`` = both with nothing shared: one model per task. Trunk followed by head is exactly the original
encoder cut at that depth, which is what the parity tests rely on.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .bert import BertConfig, BertEmbeddings, BertLayer, BertPooler, TokenPacking, mask_bias

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASK_TYPES = (CLASSIFICATION, REGRESSION)


def _layer_state(state: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    prefix = f"encoder.layer.{index}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class Trunk(nn.Module):
    """Embeddings + layers ``0 .. max(depths)-1``; outputs hidden states after each depth.

    Depth ``d`` means "after ``d`` encoder layers" (``0`` is the embedding output).
    """

    def __init__(self, config: BertConfig, depths: Sequence[int]):
        super().__init__()
        depths = sorted(set(int(d) for d in depths))
        if not depths:
            raise ValueError("a trunk needs at least one branch depth")
        if depths[0] < 0 or depths[-1] > config.num_hidden_layers:
            raise ValueError(f"branch depths {depths} outside 0..{config.num_hidden_layers}")
        self.config = config
        self.depths = tuple(depths)
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(depths[-1]))

    @classmethod
    def from_state_dict(cls, config: BertConfig, state: dict[str, torch.Tensor], depths: Sequence[int]) -> "Trunk":
        trunk = cls(config, depths)
        trunk.embeddings.load_state_dict(_sub_state(state, "embeddings."), strict=False)
        for i, layer in enumerate(trunk.layers):
            layer.load_state_dict(_layer_state(state, i))
        return trunk

    def forward(self, input_ids, attention_mask, token_type_ids, packed: bool = False) -> tuple[torch.Tensor, ...]:
        """Hidden states ``[batch, seq, hidden]`` after each branch depth.

        ``packed``: the layers' per-token work runs on the real tokens only (``TokenPacking``)
        and padded positions of the outputs are zeros. The served graph uses it; training
        and the hidden-state cache keep the padded form.
        """
        hidden = self.embeddings(input_ids, token_type_ids)
        bias = mask_bias(attention_mask, hidden.dtype)
        outputs = [hidden] if self.depths[0] == 0 else []
        if packed:
            packing = TokenPacking(attention_mask, self.config.hidden_size)
            tokens = packing.pack(hidden)
            for i, layer in enumerate(self.layers, start=1):
                tokens = layer.forward_packed(tokens, packing, bias)
                if i in self.depths:
                    outputs.append(packing.unpack(tokens))
            return tuple(outputs)
        for i, layer in enumerate(self.layers, start=1):
            hidden = layer(hidden, bias)
            if i in self.depths:
                outputs.append(hidden)
        return tuple(outputs)

    def freeze(self) -> "Trunk":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class Head(nn.Module):
    """``num_layers`` BERT layers + pooler + classifier (or one regression score)."""

    def __init__(self, config: BertConfig, num_layers: int, num_labels: int, task_type: str = CLASSIFICATION):
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if task_type == REGRESSION:
            num_labels = 1
        if num_labels < 1:
            raise ValueError("num_labels must be >= 1")
        self.config = config
        self.task_type = task_type
        self.num_labels = num_labels
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(num_layers))
        self.pooler = BertPooler(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @classmethod
    def from_backbone_layers(
        cls,
        config: BertConfig,
        state: dict[str, torch.Tensor],
        first_layer: int,
        num_layers: int,
        num_labels: int,
        task_type: str = CLASSIFICATION,
        seed: int = 0,
    ) -> "Head":
        """A head whose layers are copies of encoder layers ``first_layer ..`` and a fresh classifier."""
        if first_layer + num_layers > config.num_hidden_layers:
            raise ValueError(
                f"head layers {first_layer}..{first_layer + num_layers - 1} exceed the "
                f"backbone's {config.num_hidden_layers} layers"
            )
        torch.manual_seed(seed)
        head = cls(config, num_layers, num_labels, task_type)
        for i, layer in enumerate(head.layers):
            layer.load_state_dict(_layer_state(state, first_layer + i))
        pooler = _sub_state(state, "pooler.")
        if pooler:
            head.pooler.load_state_dict(pooler)
        nn.init.normal_(head.classifier.weight, std=0.02)
        nn.init.zeros_(head.classifier.bias)
        return head

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, absorbed: bool = False, packed: bool = False
    ) -> torch.Tensor:
        """Raw task output: logits ``[batch, num_labels]`` or scores ``[batch, 1]``.

        ``absorbed``: compute the last layer's [CLS] attention in the folded form
        (``BertLayer.forward``); ``packed``: the layers below the last run on the real
        tokens only (``TokenPacking``). The served graphs use both, training neither.
        """
        return self.output(self.encode(hidden, attention_mask, absorbed, packed))

    def output(self, cls_state: torch.Tensor) -> torch.Tensor:
        """Pooler + classifier on the last layer's [CLS] row(s) (``encode``'s result)."""
        return self.classifier(self.dropout(self.pooler(cls_state)))

    def encode(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, absorbed: bool = False, packed: bool = False
    ) -> torch.Tensor:
        """The head's layers, the last at [CLS] only: what its pooler reads (``[batch, 1, hidden]``)."""
        bias = mask_bias(attention_mask, hidden.dtype)
        below = self.layers[:-1]
        if packed and len(below):
            packing = TokenPacking(attention_mask, self.config.hidden_size)
            tokens = packing.pack(hidden)
            for layer in below:
                tokens = layer.forward_packed(tokens, packing, bias)
            hidden = packing.unpack(tokens)
        else:
            for layer in below:
                hidden = layer(hidden, bias)
        if len(self.layers):
            # Only [CLS] of the last layer reaches the pooler: compute that row alone (exact).
            hidden = self.layers[-1](hidden, bias, first_token_only=True, absorbed=absorbed)
        return hidden

    def serving_outputs(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, served: bool = True
    ) -> tuple[torch.Tensor, ...]:
        """What the served graph returns: (logits, probabilities) or (score,).

        ``served=False`` gives the same outputs computed as in training (no folded
        attention, no packing): the reference that export validation holds the served
        graph to.
        """
        out = self.forward(hidden, attention_mask, absorbed=served, packed=served)
        if self.task_type == REGRESSION:
            return (out,)
        return out, torch.softmax(out, dim=-1)


class FullModel(nn.Module):
    """Embeddings + every encoder layer + pooler + task output: one fully fine-tuned model per task.

    What serving without the trunk/head split runs: the training baseline (``training.teacher``)
    and the single-task repository (``export.baseline``) both build it here, so the two compare
    the same model. ``forward`` is the training form (logits); ``serving_outputs`` the served one.
    """

    def __init__(self, trunk: Trunk, head: Head):
        super().__init__()
        if trunk.depths != (0,) or head.num_layers != trunk.config.num_hidden_layers:
            raise ValueError(f"a full model is the embeddings (trunk depth 0) + all {trunk.config.num_hidden_layers} "
                             f"layers in its head, got trunk depths {trunk.depths} and {head.num_layers} head layers")
        self.trunk, self.head = trunk, head

    @classmethod
    def from_backbone(cls, config: BertConfig, state: dict[str, torch.Tensor], num_labels: int,
                      task_type: str = CLASSIFICATION, seed: int = 0) -> "FullModel":
        """The pre-trained encoder with a fresh output layer (seeded)."""
        trunk = Trunk.from_state_dict(config, state, (0,))
        head = Head.from_backbone_layers(config, state, 0, config.num_hidden_layers, num_labels, task_type, seed=seed)
        return cls(trunk, head)

    @property
    def num_layers(self) -> int:
        return self.head.num_layers

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        (hidden,) = self.trunk(input_ids, attention_mask, token_type_ids)
        return self.head(hidden, attention_mask)

    def serving_outputs(self, input_ids, attention_mask, token_type_ids) -> tuple[torch.Tensor, ...]:
        """As served (packed layers, folded [CLS] attention, like the merged graphs): (logits, probabilities) or (score,)."""
        (hidden,) = self.trunk(input_ids, attention_mask, token_type_ids, packed=True)
        return self.head.serving_outputs(hidden, attention_mask)


class FullGraph(nn.Module):
    """``FullModel.serving_outputs`` as ``forward``, for ONNX export."""

    def __init__(self, model: FullModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model.serving_outputs(input_ids, attention_mask, token_type_ids)


class HeadGraph(nn.Module):
    """``Head.serving_outputs`` as ``forward``, for ONNX export (``served=False``: the validation reference)."""

    def __init__(self, head: Head, served: bool = True):
        super().__init__()
        self.head = head
        self.served = served

    def forward(self, hidden_states, attention_mask):
        return self.head.serving_outputs(hidden_states, attention_mask, served=self.served)


class TrunkGraph(nn.Module):
    """The served trunk (``Trunk.forward(packed=True)``) as ``forward``, for ONNX export.

    Export validation holds it to the plain ``Trunk`` at real tokens.
    """

    def __init__(self, trunk: Trunk):
        super().__init__()
        self.trunk = trunk

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.trunk(input_ids, attention_mask, token_type_ids, packed=True)
