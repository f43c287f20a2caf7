"""A head artefact checked against the deployed repository, before anything touches the repository or the server.

Why all of it runs offline first: head.json (task name, labels), depth, hidden
size and trunk fingerprint against the *deployed* trunk, the ONNX graph
(checker, names, dtypes, dims, values against PyTorch on the deployed trunk's
real outputs) and the artefact's canary through the deployed trunk ONNX + the
new head ONNX can each refuse a head while refusing still changes nothing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trunkserve.artifacts import HeadArtifactError, HeadMeta, load_head, read_canary, write_canary
from trunkserve.canary import CANARY_ATOL
from trunkserve.modules import Head, HeadGraph
from trunkserve.specs import GraphSpec, head_spec

from . import quality
from .configs import MODEL_FILES, PYTHON_ORT, TENSORRT, ServingOptions
from .deployed import DeployedTrunk, deployed_options, onnx_session
from .errors import CanaryFailed, GraphMismatchError, HeadRejected, RepositoryError
from .names import VERSION, head_model_name
from .quantised import served_reference
from .repository import HeadEntry, TrunkInfo, check_head_fits, write_head_model
from .validate import check_interface, compare_with_torch

#: Optional pre-exported head graph inside an artefact; validated and served instead of re-exporting.
HEAD_ONNX = "head.onnx"


@dataclass
class Artefact:
    """A head folder read once (head.json, weights, canary): every later check uses this, not the disk."""

    folder: Path
    head: Head
    meta: HeadMeta
    canary: dict | None


def read_artefact(head_dir: str | Path) -> Artefact:
    """Load the artefact; one that cannot be read, or whose weights do not fit head.json, is ``HeadRejected``."""
    folder = Path(head_dir)
    try:
        head, meta = load_head(folder)
    except HeadArtifactError as exc:
        raise HeadRejected(f"{folder}: {exc}") from exc
    return Artefact(folder, head, meta, read_canary(folder))


def check_gate(artefact: Artefact, force: bool) -> list[str]:
    """Refuse a head that failed its training's quality gate (unless ``force``); the note to show if forced."""
    try:
        note = quality.check_gate(artefact.meta, force)
    except quality.FailedQualityGate as exc:
        raise HeadRejected(f"{artefact.folder}: {exc}") from exc
    return [note] if note else []


@dataclass
class InspectedHead:
    """A validated artefact, exported into ``staging/head_<task>/<version>/``."""

    meta: HeadMeta
    entry: HeadEntry
    canary: dict | None
    staged: Path  # the staged head model folder (``head_<task>``)
    version: str
    canary_diff: float | None = None
    notes: list[str] = field(default_factory=list)
    options: ServingOptions | None = None  # the deployed repository's, which the head was exported with


def compare_canary(got: dict[str, np.ndarray], canary: dict, prefix: str = "") -> float:
    """Max abs difference between served outputs and the canary's reference; raises if over its atol."""
    atol = float(canary.get("atol", CANARY_ATOL))
    worst = 0.0
    for name, ref in canary["outputs"].items():
        ref = np.asarray(ref, dtype=np.float32)
        g = np.asarray(got[prefix + name], dtype=np.float32).reshape(ref.shape)
        diff = float(np.max(np.abs(g - ref))) if ref.size else 0.0
        if not np.isfinite(diff) or diff > atol:
            raise CanaryFailed(f"output {prefix + name} differs from the artefact's canary by {diff:.3e} > atol {atol:g}")
        worst = max(worst, diff)
    return worst


def inspect_head(
    head: str | Path | Artefact,
    repo: str | Path,
    staging: str | Path,
    version: str = VERSION,
    write_config: bool = True,
    trunk: DeployedTrunk | None = None,
) -> InspectedHead:
    """Validate an artefact (a folder, or one ``read_artefact`` read) against the deployed repository and export it into ``staging``.

    Raises ``HeadRejected`` saying what is wrong; ``staging`` is the only thing written.
    """
    art = head if isinstance(head, Artefact) else read_artefact(head)
    repo, staging = Path(repo), Path(staging)
    info = TrunkInfo.read(repo)
    try:
        check_head_fits(art.meta, info)  # depth exposed, hidden size, trunk fingerprint
    except RepositoryError as exc:
        raise HeadRejected(f"{art.folder}: {exc}") from exc
    spec = head_spec(art.meta.task, art.meta.task_type, art.meta.num_labels, info.hidden_size)
    opts = deployed_options(repo)
    if opts.backend == TENSORRT:
        raise HeadRejected("hot-adding heads to a TensorRT repository is not supported (rebuild it with export build)")
    trunk = trunk or DeployedTrunk(repo)
    feeds = trunk.validation_feeds(art.meta.branch_layer)
    onnx_path = _stage_graph(art, spec, info, opts, feeds, staging, version, write_config)
    entry = HeadEntry(art.meta.task, art.meta.task_type, art.meta.num_labels, art.meta.branch_layer)
    out = InspectedHead(art.meta, entry, art.canary, staging / head_model_name(art.meta.task), version, options=opts)
    if out.canary is None:
        out.notes.append("no canary.json in the artefact: served outputs are not checked against a reference")
    else:
        _offline_canary(out, art, spec, onnx_path, trunk)
    return out


def _stage_graph(art: Artefact, spec: GraphSpec, info: TrunkInfo, opts: ServingOptions, feeds: dict[str, np.ndarray],
                 staging: Path, version: str, write_config: bool) -> Path:
    """Export (or take the artefact's own ``head.onnx``) into ``staging`` and check it; the staged graph's path.

    ``feeds`` are the deployed trunk's real outputs at the head's depth (``DeployedTrunk.validation_feeds``).
    """
    supplied = art.folder / HEAD_ONNX
    try:
        if supplied.exists():
            # a pre-exported graph: must pass the checker, match the trunk's interface and the weights' values
            compare_with_torch(supplied, spec, HeadGraph(art.head, served=False), feeds)
        write_head_model(staging, art.folder, info, opts, {art.meta.branch_layer: feeds}, version=version,
                         write_config=write_config, loaded=(art.head, art.meta))
        onnx_path = staging / head_model_name(art.meta.task) / version / MODEL_FILES[PYTHON_ORT]
        if supplied.exists():
            shutil.copy2(supplied, onnx_path)
        check_interface(onnx_path, spec)  # dims incl. the deployed trunk's hidden size
    except (GraphMismatchError, HeadArtifactError) as exc:
        raise HeadRejected(f"{art.folder}: {exc}") from exc
    return onnx_path


def _offline_canary(out: InspectedHead, art: Artefact, spec: GraphSpec, onnx_path: Path, trunk: DeployedTrunk) -> None:
    """The artefact's canary through the deployed trunk + the staged head; on a quantised trunk, the served reference."""
    sess = onnx_session(onnx_path)
    hf = trunk.texts_feeds(out.canary["texts"], art.meta.branch_layer)
    got = dict(zip(spec.output_names, sess.run(spec.output_names, hf)))
    try:
        out.canary_diff = compare_canary(got, out.canary)
    except CanaryFailed as exc:
        raise HeadRejected(f"{art.folder}: offline canary on the deployed trunk failed: {exc}") from exc
    if trunk.quantisation:
        # the server runs the quantised trunk: its checks compare against these graphs' own outputs
        served = trunk.texts_feeds(out.canary["texts"], art.meta.branch_layer, served=True)
        out.canary = served_reference(out.canary, dict(zip(spec.output_names, sess.run(spec.output_names, served))),
                                      trunk.quantisation)
        write_canary(out.staged / out.version, out.canary)
        out.notes.append(f"the deployed trunk is quantised ({trunk.quantisation}): the head was checked on its float32 "
                         "graph; the server's canary is the served graphs' own output")
