"""Repositories whose graphs were quantised after export (``export.quantise``, ``python -m trunkserve.export quantise``).

Why: a head's canary holds the outputs PyTorch gave on the float32 trunk, and the
hot-add checks hold a head to it at 1e-3, offline and again through the served
ensemble. An int8 trunk moves every head's outputs by far more than that (0.23 in a
logit of the study's SST-2 head), so an int8 repository keeps two things:

- the float32 trunk beside the served one (``trunk/1/float32_reference.onnx``): the
  offline checks of a new head (graph against PyTorch, the artefact's canary) run on
  it, exactly as on a float32 repository;
- per head version, a canary whose reference comes from the served graphs
  themselves, run offline (``served_reference``), which the checks through the
  server compare against: they prove the server runs those graphs, as before.

The trunk's config records the scheme (parameter ``quantisation``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from trunkserve.artifacts import read_canary, write_canary
from trunkserve.canary import CANARY_ATOL
from trunkserve.deployment.params import trunk_quantisation

from . import configs, graph_tuning
from .configs import MODEL_FILES, PYTHON_ORT
from .deployed import DeployedTrunk, onnx_session
from .names import FLOAT32_REFERENCE, QUANTISATION, TRUNK, VERSION, head_model_name
from .quant_schemes import scheme_named
from .repository import scan_heads

__all__ = ["FLOAT32_REFERENCE", "QUANTISATION", "keep_float32_trunk", "mark_quantised", "quantise_group",
           "rederive_canaries", "served_reference", "trunk_quantisation"]


def keep_float32_trunk(repo: str | Path) -> Path:
    """Copy the (still float32) served trunk graph to ``FLOAT32_REFERENCE``; call before quantising."""
    version = Path(repo) / TRUNK / VERSION
    return Path(shutil.copy2(version / MODEL_FILES[PYTHON_ORT], version / FLOAT32_REFERENCE))


def mark_quantised(repo: str | Path, scheme: str) -> None:
    folder = Path(repo) / TRUNK
    cfg = configs.read_config(folder)
    cfg.parameters[QUANTISATION].string_value = scheme
    configs.write_config(folder, cfg)


def served_reference(canary: dict, outputs: dict[str, np.ndarray], scheme: str) -> dict:
    """``canary`` with its reference outputs replaced by what the served graphs give offline."""
    return {
        "texts": canary["texts"],
        "outputs": {n: np.asarray(outputs[n]).tolist() for n in canary["outputs"]},
        "atol": canary.get("atol", CANARY_ATOL),
        "reference": f"the served graphs ({scheme} trunk) run offline; the artefact's float32 canary differs",
    }


def rederive_canaries(repo: str | Path, scheme: str) -> None:
    """Give every deployed head version a canary from the repository's own (quantised) graphs."""
    repo = Path(repo)
    trunk = DeployedTrunk(repo)
    for entry in scan_heads(repo):
        folder = repo / head_model_name(entry.task)
        for version in sorted(p for p in folder.iterdir() if p.name.isdigit()):
            canary = read_canary(version)
            if canary is None:
                continue
            sess = onnx_session(version / MODEL_FILES[PYTHON_ORT])
            names = list(canary["outputs"])
            got = dict(zip(names, sess.run(names, trunk.texts_feeds(canary["texts"], entry.branch_layer, served=True))))
            write_canary(version, served_reference(canary, got, scheme))


def quantise_group(path: str | Path, scheme: str, repo: str | Path) -> bool:
    """Quantise a (validated, float32) head group graph as ``quantise`` did the repository's; False if the scheme keeps heads float32.

    Why at every rebuild: a group rebuilt by a hot-add on a quantised repository would
    otherwise serve float32, slower and unlike the group it replaces.
    """
    how = scheme_named(scheme)
    if how.trunk_only:
        return False
    graph_tuning.tune_graph(Path(path), fuse=False, quantize=True, atol=None, per_channel=how.per_channel,
                            sizes=graph_tuning.repository_sizes(repo), weights_2d_only=True)
    return True
