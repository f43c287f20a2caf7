"""Offline graph tuning of a built repository: ORT's BERT fusions and int8 dynamic quantisation.

Both rewrite every ``model.onnx`` of a repository in place (trunk, heads, and
the baseline's full models alike, so a comparison stays fair), and check each
rewritten graph against the original on valid inputs before keeping it.
Fusion (fused Attention, SkipLayerNorm, BiasGelu) changes no result beyond
float rounding; int8 quantisation does, so it is never on by default
(``export.quantise`` makes a quantised copy). Every size comes from the
repository or the graph itself, so any BERT width and head count works.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from trunkserve.specs import ATTENTION_MASK, HEAD_HIDDEN, HEAD_PREFIX, TOKEN_TYPE_IDS

from . import configs
from .errors import GraphMismatchError, RepositoryError
from .names import TRUNK

FUSED_ATOL = 1e-3


@dataclass
class GraphChange:
    model: str
    fused: dict
    max_abs_diff: float
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class GraphSizes:
    """The backbone's sizes that tuning needs; 0 means "not known: take it from the graph".

    Why not MiniLM's numbers: the random feeds must fit the graph (a 384-wide
    ``hidden_states`` fed to a 128-wide head fails), token ids must be inside the
    vocabulary, and ORT's attention fusion needs the head count and width.
    """

    hidden_size: int = 0
    num_heads: int = 0  # 0 also lets ORT's fusion detect it from the graph
    vocab_size: int = 0


def repository_sizes(repo: str | Path) -> GraphSizes:
    """The sizes a built repository records: the trunk config's width, a head's BERT config for the rest.

    Every head of a repository shares the trunk's backbone (``check_head_fits``), so any
    ``head.json`` a head version keeps says how many attention heads and tokens it has.
    A folder without them (a baseline repository, say) gives zeros: read from the graphs.
    """
    repo = Path(repo)
    hidden = 0
    if (repo / TRUNK / "config.pbtxt").exists():
        params = configs.read_config(repo / TRUNK).parameters
        hidden = int(params["hidden_size"].string_value) if "hidden_size" in params else 0
    for meta in sorted(repo.glob(f"{HEAD_PREFIX}*/*/head.json")):
        cfg = json.loads(meta.read_text()).get("bert_config", {})
        return GraphSizes(hidden or int(cfg.get("hidden_size", 0)), int(cfg.get("num_attention_heads", 0)),
                          int(cfg.get("vocab_size", 0)))
    return GraphSizes(hidden)


def _width(graph_input, sizes: GraphSizes) -> int:
    """The last axis of a ``hidden_states`` input: fixed in the graph, else the recorded width."""
    dim = graph_input.shape[-1] if graph_input.shape else None
    width = dim if isinstance(dim, int) and dim > 0 else sizes.hidden_size
    if not width:
        raise RepositoryError(f"input {graph_input.name}: its width is neither fixed in the graph nor known from the repository")
    return width


def _feeds(sess, sizes: GraphSizes = GraphSizes(), seq: int = 24, batch: int = 3) -> dict:
    """Random but valid inputs for ``sess``: the parity check runs the graph before and after on them."""
    rng = np.random.default_rng(0)
    high = min(5000, sizes.vocab_size) if sizes.vocab_size else 5000
    feeds = {}
    for i in sess.get_inputs():
        if i.name == HEAD_HIDDEN:
            feeds[i.name] = rng.standard_normal((batch, seq, _width(i, sizes))).astype(np.float32)
        elif i.name == ATTENTION_MASK:
            m = np.ones((batch, seq), np.int64)
            m[1, seq // 2:] = 0
            feeds[i.name] = m
        elif i.name == TOKEN_TYPE_IDS:
            feeds[i.name] = np.zeros((batch, seq), np.int64)
        else:
            feeds[i.name] = rng.integers(min(1000, high // 2), high, (batch, seq)).astype(np.int64)
    return feeds


def _run(path: Path, feeds=None, sizes: GraphSizes = GraphSizes()):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = feeds or _feeds(sess, sizes)
    return feeds, sess.run(None, feeds)


def weight_matmuls(path: str | Path) -> list[str]:
    """The MatMul nodes whose second operand is a constant 2-D weight; shared constants get their own copy first (in place).

    Why 2-D only: ONNX Runtime's DynamicQuantizeMatMul refuses a 3-D constant at run time, and a
    head group's absorbed attention holds its heads' folded keys and values as [G*n, ...] stacks;
    its 2-D products (the wide query, each head's output projection and feed-forward layer) are
    most of its bytes, and the bytes are what a group costs at serving batch sizes. Why the
    copies: the ONNX exporter stores equal weights once and reads the others through
    ``Identity``, and the quantiser only quantises a product whose weight is a constant.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in consts]
    for node in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(consts[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        consts[copy.name] = copy
        graph.node.remove(node)
    if shared:
        onnx.save(model, str(path))
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in consts and len(consts[n.input[1]].dims) == 2]


def tune_graph(path: Path, fuse: bool = True, quantize: bool = False, sizes: GraphSizes = GraphSizes(),
               atol: float | None = FUSED_ATOL, per_channel: bool = False,
               op_types: Sequence[str] | None = None, weights_2d_only: bool = False) -> GraphChange:
    """Fuse and/or quantise one graph in place.

    ``sizes``: the backbone's (``repository_sizes``); unknown ones are read from the graph.
    ``per_channel``: one int8 scale per output column of each weight; ``op_types``: the
    operators to quantise (default: every type ``quantize_dynamic`` handles);
    ``weights_2d_only``: only the products of ``weight_matmuls`` (head groups).
    """
    from onnxruntime.transformers import optimizer

    path = Path(path)
    before = path.stat().st_size
    original = path.with_suffix(".orig.onnx")
    shutil.copy2(path, original)
    try:
        feeds, ref = _run(original, sizes=sizes)
        fused: dict = {}
        if fuse:
            opt = optimizer.optimize_model(str(original), model_type="bert", num_heads=sizes.num_heads,
                                           hidden_size=sizes.hidden_size, opt_level=0)
            fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
            opt.save_model_to_file(str(path))
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = path.with_suffix(".q.onnx")
            nodes = weight_matmuls(path) if weights_2d_only else None
            if nodes == []:
                raise GraphMismatchError(f"{path}: no MatMul with a constant 2-D weight to quantise")
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=["MatMul"] if nodes else (list(op_types) if op_types else None),
                             nodes_to_quantize=nodes,
                             extra_options={"DefaultTensorType": 1})  # 1 = FLOAT
            tmp.replace(path)
        _, out = _run(path, feeds)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, out))
        if atol is not None and diff > atol:
            shutil.copy2(original, path)
            raise GraphMismatchError(f"{path}: tuned graph differs from the original by {diff:.2e} (> {atol})")
    finally:
        original.unlink(missing_ok=True)
    return GraphChange(path.parent.parent.name, fused, round(diff, 6), before, path.stat().st_size)


def tune_repository(repo: str | Path, fuse: bool = True, quantize: bool = False, per_channel: bool = False,
                    models: Sequence[str] | None = None, op_types: Sequence[str] | None = None,
                    weights_2d_only: Sequence[str] = ()) -> list[GraphChange]:
    """Tune the ONNX graphs of ``repo`` in place: every model's, or only those of ``models`` (folder names).

    Every version folder's graph, not only the first: a head swapped in later is served too.
    ``quantize`` skips the parity bound (see the int8 report). Models in ``weights_2d_only``
    quantise only their constant 2-D weight products (``tune_graph``).
    """
    changes = []
    sizes = repository_sizes(repo)
    for path in sorted(Path(repo).glob("*/*/model.onnx")):
        if not path.parent.name.isdigit() or (models is not None and path.parent.parent.name not in models):
            continue
        changes.append(tune_graph(path, fuse=fuse, quantize=quantize, atol=None if quantize else FUSED_ATOL,
                                  sizes=sizes, per_channel=per_channel, op_types=op_types,
                                  weights_2d_only=path.parent.parent.name in weights_2d_only))
    if not changes:
        raise RepositoryError(f"{repo}: no <model>/<version>/model.onnx to tune")
    return changes
