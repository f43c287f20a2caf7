"""The merged graphs run in-process with ONNX Runtime, no server: the ceiling the server is measured against.

Same ONNX files, same ORT session settings (``make_session``), except threads:
by default the session uses all cores (ORT's default), which is the best a single
process can do, rather than the per-process thread count the server's configs set
for sharing the cores among many model processes. Same tokenizer and buckets, and the same
batching the server does: every input is tokenized on its own (as one request
is), inputs of the same length bucket are merged up to ``batch_size``, then
the trunk runs once and each head group (as ``multitask`` does) once on its output.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from trunkserve.deployment.files import read_model_config
from trunkserve.deployment.layout import TOKENIZER, TRUNK, VERSION, group_model_folders, head_model_name
from trunkserve.deployment.params import OnnxParams, TokenizerParams
from trunkserve.deployment.reader import read_heads
from trunkserve.serving.onnx_runtime import GraphRunner, make_session
from trunkserve.serving.tokenizer_runtime import load_tokenizer
from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN, TOKEN_INPUTS, hidden_name

from .corpus import Pair, Sampler


def _session(repo: Path, model: str, intra_op_threads: int | None = 0, version: str = VERSION):
    """``intra_op_threads=None`` takes the repository config's value; 0 is all cores."""
    p = OnnxParams.from_config(read_model_config(repo / model))
    return make_session(
        repo / model / version / p.onnx_file,
        intra_op_threads=p.intra_op_threads if intra_op_threads is None else intra_op_threads,
        inter_op_threads=p.inter_op_threads,
    )


@dataclass(frozen=True)
class GroupBranch:
    """Where a head group reads the trunk (``branch_layer``) and its model's name, beside per-head entries."""

    branch_layer: int
    model: str


def _group_runners(repo: Path, intra_op_threads: int | None) -> list[tuple[GroupBranch, GraphRunner]]:
    """The head groups ``multitask`` routes to, each at its newest version (what the server serves)."""
    out = []
    for folder in group_model_folders(repo):
        config = read_model_config(folder)
        version = max((p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
        depth = int(config["parameters"]["branch_layer"]["string_value"])
        out.append((GroupBranch(depth, folder.name), GraphRunner(_session(repo, folder.name, intra_op_threads, version))))
    return out


def repository_tokenizer(repo: Path):
    """The repository's tokenizer model, in this process (same buckets and truncation as served)."""
    params = TokenizerParams.from_config(read_model_config(repo / TOKENIZER))
    return load_tokenizer(repo / TOKENIZER / VERSION, params)


class MergedPipeline:
    """tokenizer -> trunk -> every head group (``multitask``'s path), or every head one by one (``groups=False``)."""

    def __init__(self, repo: str | Path, intra_op_threads: int | None = 0, groups: bool = True):
        repo = Path(repo)
        self.tokenizer = repository_tokenizer(repo)
        self.trunk = GraphRunner(_session(repo, TRUNK, intra_op_threads))
        self.heads = (_group_runners(repo, intra_op_threads) if groups else []) or [
            (h.entry, GraphRunner(_session(repo, head_model_name(t), intra_op_threads))) for t, h in read_heads(repo).items()
        ]

    def run(self, ids: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        hidden = self.trunk(ids)
        return [run(self.head_feeds(e, hidden, ids)) for e, run in self.heads]

    @staticmethod
    def head_feeds(entry, hidden: dict[str, np.ndarray], ids: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A head's inputs: the trunk output at its branch depth and the token mask (what the ensemble routes)."""
        return {HEAD_HIDDEN: hidden[hidden_name(entry.branch_layer)], ATTENTION_MASK: ids[ATTENTION_MASK]}

    def batches(self, inputs: Sequence[Pair], batch_size: int):
        """Tokenize one input at a time, group by bucket, merge up to ``batch_size`` (the server's batching)."""
        for _, ids in self.indexed_batches(inputs, batch_size):
            yield ids

    def indexed_batches(self, inputs: Sequence[Pair], batch_size: int):
        """``batches``, each with the positions in ``inputs`` of its rows (to put outputs back in order)."""
        groups: dict[int, list[tuple[int, dict]]] = defaultdict(list)
        for i, (text, pair) in enumerate(inputs):
            enc = self.tokenizer.encode([text], [pair]).as_dict()
            groups[enc["input_ids"].shape[1]].append((i, enc))
        for encs in groups.values():
            for s in range(0, len(encs), batch_size):
                chunk = encs[s : s + batch_size]
                yield [i for i, _ in chunk], {n: np.concatenate([e[n] for _, e in chunk]) for n in TOKEN_INPUTS}


@dataclass
class InProcessResult:
    batch_size: int
    inputs: int
    seconds: float
    inputs_per_s: float
    cpu_s_per_input: float


def measure(pipeline: MergedPipeline, corpus: Sequence[Pair], batch_size: int, seconds: float = 5.0, seed: int = 0) -> InProcessResult:
    """Inputs/s, end to end (tokenization included), run for about ``seconds``."""
    sampler = Sampler(corpus, seed)
    chunk = max(64, batch_size * 8)
    for ids in pipeline.batches(list(zip(*sampler.batch(chunk))), batch_size):  # warm-up
        pipeline.run(ids)
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        texts, pairs = sampler.batch(chunk)
        for ids in pipeline.batches(list(zip(texts, pairs)), batch_size):
            pipeline.run(ids)
        done += chunk
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return InProcessResult(batch_size, done, round(wall, 2), round(done / wall, 1), round(cpu / done, 5))
