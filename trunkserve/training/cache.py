"""Frozen-trunk hidden states, computed once per example and reused by every epoch, seed and search candidate.

Why: the trunk (embeddings + bottom ``k`` layers) is frozen, so its output for an
example never changes. Running it once and training teachers and students on the
stored states removes the trunk's forward pass (and all padding beyond each
example's real length) from every later step; on 2 CPU cores this is what makes
training many heads practical (the report measures the speed-up).

Storage: for every branch depth, one float16 matrix ``[total_tokens, hidden]`` with
per-example offsets (no padding). Size = tokens x hidden x 2 bytes x depths; e.g.
5,000 examples of ~40 tokens at hidden 384 and two depths take ~300 MB.
The cache is bounded by ``max_bytes`` (default ``DEFAULT_CACHE_BYTES`` = 4 GiB):
examples beyond the bound are not stored and are recomputed by the trunk whenever
a batch needs them, so a large data set still trains, only slower.
The store lives on the training device (``training.loop.train_device()``): on a GPU
the trunk runs there once and every batch is gathered there, with no host copies.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from trunkserve.modules import Trunk

from .data.encode import Encoded, length_batches, pad_tokens
from .loop import to_device, train_device

DEFAULT_CACHE_BYTES = 4 << 30


class CacheError(ValueError):
    """A depth the cache does not hold was asked for."""


class HiddenStateCache:
    """Hidden states of ``trunk`` at each of its depths for the examples of ``enc``."""

    def __init__(
        self,
        trunk: Trunk,
        enc: Encoded,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        batch_size: int = 64,
        dtype: torch.dtype = torch.float16,
        progress: bool = False,
        desc: str = "trunk cache",
    ):
        self.device = train_device()
        self.trunk = trunk.freeze().to(self.device)
        self.enc = enc
        self.depths = tuple(trunk.depths)
        self.dtype = dtype
        hidden = trunk.config.hidden_size
        lengths = enc.lengths
        per_token = hidden * torch.finfo(dtype).bits // 8 * len(self.depths)
        # Store a prefix of the examples (in index order) that fits the bound.
        cum = np.cumsum(lengths) * per_token
        self.n_cached = int(np.searchsorted(cum, max_bytes, side="right"))
        self.offsets = np.zeros(len(enc) + 1, dtype=np.int64)
        self.offsets[1:] = np.cumsum(lengths)
        total = int(self.offsets[self.n_cached])
        self.store = {d: torch.empty(total, hidden, dtype=dtype, device=self.device) for d in self.depths}
        self.nbytes = total * per_token
        t0 = time.perf_counter()
        batches = length_batches(lengths[: self.n_cached], batch_size, shuffle=False)
        it = batches
        if progress:
            from tqdm import tqdm

            it = tqdm(batches, desc=desc, leave=False)
        for idx in it:
            outs = self._run_trunk(idx)
            dest, src, _, _ = self._positions(idx)
            dest, src = (torch.from_numpy(a).to(self.device) for a in (dest, src))
            for d, h in zip(self.depths, outs):
                self.store[d][src] = h.reshape(-1, hidden)[dest].to(dtype)
        self.build_seconds = time.perf_counter() - t0

    @torch.no_grad()
    def _run_trunk(self, idx) -> tuple[torch.Tensor, ...]:
        t = to_device(pad_tokens(self.enc, idx), self.device)
        return self.trunk(t["input_ids"], t["attention_mask"], t["token_type_ids"])

    def __len__(self) -> int:
        return len(self.enc)

    def _positions(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """For examples ``idx`` right-padded to their longest: every real token's row in the
        flattened padded batch (``dest``) and in the flat store (``src``), the lengths, the padded length."""
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        seq = int(lengths.max())
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        dest = np.repeat(np.arange(len(idx)) * seq, lengths) + within
        return dest, np.repeat(starts, lengths) + within, lengths, seq

    def batch(self, idx, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hidden [B, S, H] float32, attention_mask [B, S])`` for examples ``idx`` at ``depth``."""
        if depth not in self.store:
            raise CacheError(f"depth {depth} not cached (cached: {self.depths})")
        idx = np.asarray(idx, dtype=np.int64)
        dest, src, lengths, seq = self._positions(idx)
        n = len(idx)
        hidden = torch.zeros(n * seq, self.trunk.config.hidden_size, device=self.device)
        # One gather from the flat store and one scatter into the padded batch, not a copy per row.
        cached = np.repeat(idx < self.n_cached, lengths)
        if cached.any():
            hidden[torch.from_numpy(dest[cached]).to(self.device)] = self.store[depth][
                torch.from_numpy(src[cached]).to(self.device)].float()
        missing = np.flatnonzero(idx >= self.n_cached)
        if len(missing):
            h = self._run_trunk(idx[missing])[self.depths.index(depth)]
            for j, row in enumerate(missing):
                hidden[row * seq: row * seq + lengths[row]] = h[j, : lengths[row]].to(self.dtype).float()
        mask = torch.zeros(n * seq, dtype=torch.long)
        mask[torch.from_numpy(dest)] = 1
        return hidden.view(n, seq, -1), mask.view(n, seq).to(self.device)


class ConcatCache:
    """Two caches read as one, ``first``'s examples then ``second``'s: a student's labelled rows and its
    transfer rows (``training.transfer``), each cached once, batched together."""

    def __init__(self, first: HiddenStateCache, second: HiddenStateCache):
        self.parts = (first, second)
        self.device, self.trunk, self.split = first.device, first.trunk, len(first)
        a, b = first.enc, second.enc
        self.enc = Encoded(a.ids + b.ids, a.types + b.types, np.concatenate([a.labels, b.labels.astype(a.labels.dtype)]),
                           a.truncated + b.truncated)

    def __len__(self) -> int:
        return len(self.enc)

    def batch(self, idx, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``HiddenStateCache.batch`` over both parts: rows in ``idx`` order, padded to the longest."""
        idx = np.asarray(idx, dtype=np.int64)
        parts = []
        for rows, part, offset in ((np.flatnonzero(idx < self.split), self.parts[0], 0),
                                   (np.flatnonzero(idx >= self.split), self.parts[1], self.split)):
            if len(rows):
                parts.append((torch.from_numpy(rows).to(self.device), *part.batch(idx[rows] - offset, depth)))
        seq = max(h.shape[1] for _, h, _ in parts)
        hidden = torch.zeros(len(idx), seq, parts[0][1].shape[2], device=self.device)
        mask = torch.zeros(len(idx), seq, dtype=torch.long, device=self.device)
        for rows, h, m in parts:
            hidden[rows, : h.shape[1]] = h
            mask[rows, : m.shape[1]] = m
        return hidden, mask
