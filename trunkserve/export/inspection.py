"""A head artefact checked against the deployed repository, before anything touches the repository or the server.

Why all of it runs offline first: head.json (task name, labels), depth, hidden
size and trunk fingerprint against the *deployed* trunk, the ONNX graph
(checker, names, dtypes, dims, values against PyTorch on the deployed trunk's
real outputs) and the artefact's canary through the deployed trunk ONNX + the
new head ONNX can each refuse a head while refusing still changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trunkserve.artifacts import HeadArtifactError, HeadMeta, write_canary
from trunkserve.canary import CANARY_ATOL
from trunkserve.deployment.layout import MODEL_FILES, PYTHON_ORT, TENSORRT, VERSION, head_model_name
from trunkserve.deployment.params import HeadEntry, ServingOptions
from trunkserve.deployment.reader import Deployment
from trunkserve.specs import GraphSpec, head_spec

from . import quality
from .deployed import DeployedTrunk, onnx_session
from .errors import CanaryFailed, GraphMismatchError, HeadRejected, RepositoryError
from .fit import check_head_fits
from .quantised import served_reference
from .repository import HEAD_ONNX, Artefact, load_artefact, write_head_model
from .validate import check_interface

__all__ = ["HEAD_ONNX", "Artefact", "InspectedHead", "check_gate", "compare_canary", "inspect_head", "read_artefact"]


def read_artefact(head_dir: str | Path) -> Artefact:
    """The head folder, read once (its ``head.onnx`` too); one that cannot be read, or whose weights do not fit
    head.json, is ``HeadRejected``."""
    try:
        return load_artefact(head_dir, with_graph=True)
    except HeadArtifactError as exc:
        raise HeadRejected(f"{head_dir}: {exc}") from exc


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
    deployment: Deployment | None = None,
) -> InspectedHead:
    """Validate an artefact (a folder, or one ``read_artefact`` read) against the deployed repository and export it into ``staging``.

    ``deployment``: the repository as the operation read it (else read here).
    Raises ``HeadRejected`` saying what is wrong; ``staging`` is the only thing written.
    """
    art = head if isinstance(head, Artefact) else read_artefact(head)
    repo, staging = Path(repo), Path(staging)
    dep = deployment or Deployment.read(repo)
    try:
        check_head_fits(art.meta, dep.trunk)  # depth exposed, hidden size, trunk fingerprint
    except RepositoryError as exc:
        raise HeadRejected(f"{art.folder}: {exc}") from exc
    spec = head_spec(art.meta.task, art.meta.task_type, art.meta.num_labels, dep.trunk.hidden_size)
    if dep.options.backend == TENSORRT:
        raise HeadRejected("hot-adding heads to a TensorRT repository is not supported (rebuild it with export build)")
    trunk = DeployedTrunk(repo, dep)
    feeds = trunk.validation_feeds(art.meta.branch_layer)
    onnx_path, entry = _stage_graph(art, spec, dep, feeds, staging, version, write_config)
    out = InspectedHead(art.meta, entry, art.canary, staging / head_model_name(art.meta.task), version, options=dep.options)
    if out.canary is None:
        out.notes.append("no canary.json in the artefact: served outputs are not checked against a reference")
    else:
        _offline_canary(out, art, spec, onnx_path, trunk)
    return out


def _stage_graph(art: Artefact, spec: GraphSpec, dep: Deployment, feeds: dict[str, np.ndarray],
                 staging: Path, version: str, write_config: bool) -> tuple[Path, HeadEntry]:
    """Export (or write the artefact's own ``head.onnx``) into ``staging`` and check it against PyTorch and the
    deployed trunk's interface; the staged graph's path and the head's entry.

    ``feeds`` are the deployed trunk's real outputs at the head's depth (``DeployedTrunk.validation_feeds``).
    """
    try:
        entry, _ = write_head_model(staging, art, dep.trunk, dep.options, {art.meta.branch_layer: feeds}, version=version,
                                    write_config=write_config)
        onnx_path = staging / head_model_name(art.meta.task) / version / MODEL_FILES[PYTHON_ORT]
        check_interface(onnx_path, spec)  # dims incl. the deployed trunk's hidden size
    except (GraphMismatchError, HeadArtifactError) as exc:
        raise HeadRejected(f"{art.folder}: {exc}") from exc
    return onnx_path, entry


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
