"""A small, export-friendly BERT encoder whose parameter names match Hugging Face's.

Why our own and not ``transformers.BertModel``: the trunk/head split needs to
cut the encoder at arbitrary depths, and the graphs must export to ONNX with
stable names on any transformers release (attention back-ends and mask helpers
change between releases). Keeping Hugging Face's parameter names means any BERT
checkpoint folder loads with ``load_state_dict`` after stripping a prefix, and a
test checks the numbers against ``transformers.BertModel``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

#: Added to attention scores at padded positions. Large enough that softmax
#: weights are exactly zero in float32, small enough to stay finite in ONNX.
MASK_BIAS = -1.0e4


@dataclass(frozen=True)
class BertConfig:
    """The subset of a Hugging Face ``config.json`` the encoder needs."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, raw: dict) -> "BertConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return asdict(self)


def _activation(name: str):
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unsupported hidden_act {name!r} (gelu, gelu_new, relu)")


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of ``queries`` (default: every position of ``hidden``) over every position of ``hidden``."""
        queries = hidden if queries is None else queries
        q, k, v = self._split(self.query(queries)), self._split(self.key(hidden)), self._split(self.value(hidden))
        return self._attend(q, k, v, mask_bias).reshape(queries.shape)

    def forward_packed(self, tokens: torch.Tensor, packing: "TokenPacking", mask_bias: torch.Tensor) -> torch.Tensor:
        """``forward`` on packed real tokens ``[tokens, hidden]``: projections per token, attention padded."""
        q, k, v = (self._split(packing.unpack(proj(tokens))) for proj in (self.query, self.key, self.value))
        return packing.pack(self._attend(q, k, v, mask_bias))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """[batch, heads, seq, dim] queries/keys/values -> context [batch, seq, heads * dim]."""
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2)
        return ctx.reshape(ctx.shape[0], ctx.shape[1], -1)

    def first_token_absorbed(self, hidden: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """Attention of position 0 over every position, without projecting each position's key and value.

        For one query per sequence, ``q . (W_k h_t + b_k)`` equals ``(W_k^T q) . h_t`` plus a
        constant that softmax removes, and the probability-weighted sum of ``W_v h_t + b_v``
        equals ``W_v`` applied to the probability-weighted sum of ``h_t``, plus ``b_v``. So the
        key and value weights are folded into the one query (the "absorbed" form) and each
        position costs a dot product per attention head instead of two hidden x hidden
        projections: about 30x less work per position on MiniLM, which is most of a one-layer
        head's cost. Same result as ``forward(hidden, mask_bias, hidden[:, :1])`` up to float
        rounding (checked in tests and by export validation against the plain form).
        """
        b, _, h = hidden.shape
        # Batched products without broadcasting (which ONNX Runtime would materialise):
        # per attention head over the batch for the weights, per sequence for the positions.
        q = self.query(hidden[:, 0]).view(b, self.num_heads, self.head_dim).transpose(0, 1)  # [heads, b, dim]
        wk = self.key.weight.view(self.num_heads, self.head_dim, h)
        folded = torch.matmul(q, wk).transpose(0, 1) / math.sqrt(self.head_dim)  # [b, heads, hidden]
        scores = torch.matmul(folded, hidden.transpose(1, 2)) + mask_bias[:, 0]  # [b, heads, seq]
        probs = self.dropout(torch.softmax(scores, dim=-1))
        pooled = torch.matmul(probs, hidden).transpose(0, 1)  # [heads, b, hidden]
        wv = self.value.weight.view(self.num_heads, self.head_dim, h).transpose(1, 2)  # [heads, hidden, dim]
        ctx = torch.matmul(pooled, wv) + self.value.bias.view(self.num_heads, 1, self.head_dim)  # [heads, b, dim]
        return ctx.transpose(0, 1).reshape(b, 1, h)


class _DenseNorm(nn.Module):
    """Dense + dropout + residual LayerNorm: BERT's ``*Output`` blocks."""

    def __init__(self, d_in: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _DenseNorm(config.hidden_size, config)

    def forward(self, hidden, mask_bias, queries=None):
        queries = hidden if queries is None else queries
        return self.output(self.self(hidden, mask_bias, queries), queries)

    def first_token_absorbed(self, hidden, mask_bias):
        return self.output(self.self.first_token_absorbed(hidden, mask_bias), hidden[:, :1])

    def forward_packed(self, tokens, packing, mask_bias):
        return self.output(self.self.forward_packed(tokens, packing, mask_bias), tokens)


class _Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _activation(config.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _DenseNorm(config.intermediate_size, config)

    def forward(
        self, hidden: torch.Tensor, mask_bias: torch.Tensor, first_token_only: bool = False, absorbed: bool = False
    ) -> torch.Tensor:
        """``first_token_only``: compute the output at position 0 only ([batch, 1, hidden]).

        Exact for a last layer whose only reader is the pooler ([CLS]): keys and values
        still come from every position, but the query, attention output and feed-forward
        run for one position instead of all of them, about a sixth of a full layer's work
        at typical lengths. ``absorbed`` (with ``first_token_only``) also skips the per-position
        key and value projections (``_SelfAttention.first_token_absorbed``); the served graphs
        use it, training keeps the plain form so that its numbers stay those of the study.
        """
        if first_token_only and absorbed:
            attn = self.attention.first_token_absorbed(hidden, mask_bias)
        else:
            attn = self.attention(hidden, mask_bias, hidden[:, :1] if first_token_only else None)
        return self.output(self.intermediate(attn), attn)

    def forward_packed(self, tokens: torch.Tensor, packing: "TokenPacking", mask_bias: torch.Tensor) -> torch.Tensor:
        """``forward`` on the real tokens only (``TokenPacking``): [tokens, hidden] -> [tokens, hidden]."""
        attn = self.attention.forward_packed(tokens, packing, mask_bias)
        return self.output(self.intermediate(attn), attn)


class TokenPacking:
    """Where a padded batch's real tokens are, so that per-token work skips the padding.

    Why: every projection and feed-forward of a BERT layer acts on each token on its
    own, and they are most of a layer's work. Run on ``[batch * seq, hidden]`` they
    also compute every padded position, which no reader uses (attention masks them,
    the pooler reads [CLS]). Packing the real tokens into ``[tokens, hidden]`` first
    removes that work; only attention itself, which needs the sequence layout, runs
    on the padded form (``unpack`` puts zeros at padded positions). The served graphs
    use it (``Trunk.forward(packed=True)``, ``Head.forward(packed=True)``); the numbers
    at real tokens are those of the padded form up to float rounding.
    """

    def __init__(self, attention_mask: torch.Tensor, hidden_size: int):
        self.batch, self.seq = attention_mask.shape
        self.width = int(hidden_size)  # a constant, so that exported graphs keep a fixed hidden axis
        self.index = torch.nonzero(attention_mask.reshape(-1)).squeeze(1)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] -> [tokens, hidden] (real tokens, in order)."""
        return padded.reshape(self.batch * self.seq, self.width).index_select(0, self.index)

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        """[tokens, hidden] -> [batch, seq, hidden], zeros at padded positions."""
        zeros = tokens.new_zeros(self.batch * self.seq, self.width)
        return zeros.index_put((self.index,), tokens).view(self.batch, self.seq, self.width)


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def mask_bias(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[batch, seq] 0/1 mask -> additive [batch, 1, 1, seq] bias for attention scores."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_BIAS
