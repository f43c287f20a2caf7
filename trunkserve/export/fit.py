"""Whether heads fit a trunk: the trunk-fit check of one head, and the depths a trunk must expose for a set.

Why apart from the writer: ``build`` checks the depths before any export and
every head before writing it, and hot-add checks a head against the *deployed*
trunk (``inspection``) before anything is staged; all of them ask here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from trunkserve.artifacts import HeadMeta, read_meta
from trunkserve.backbone import Backbone
from trunkserve.defaults import DEFAULT_DEPTHS
from trunkserve.deployment.params import UNKNOWN_BACKBONE, HeadEntry, TrunkInfo

from .errors import RepositoryError


class TrunkMismatch(RepositoryError):
    """A head was trained on another backbone, depth or hidden size than the deployed trunk offers."""


def head_entry(meta: HeadMeta) -> HeadEntry:
    """What a head artefact deploys as: the entry its config records (``HeadEntry.parameters``)."""
    return HeadEntry(meta.task, meta.task_type, meta.num_labels, meta.branch_layer, meta.trunk_fingerprint, meta.pair,
                     meta.num_layers)


def backbone_name(recorded: str) -> str:
    """A head's ``backbone`` as a name: training records ``Backbone.name``, older tools the folder's path."""
    if not recorded:
        return UNKNOWN_BACKBONE
    path = Path(recorded)
    return (path.parent.name if path.name == "model" else path.name) if len(path.parts) > 1 else recorded


def _trained_on(meta: HeadMeta) -> str:
    return (f"head {meta.task!r} was trained on backbone {backbone_name(meta.backbone)!r} (hidden size "
            f"{meta.config.hidden_size}, fingerprint {meta.trunk_fingerprint}, depth {meta.branch_layer})")


def _deployed(trunk: TrunkInfo, depth: int) -> str:
    at = (f"fingerprint {trunk.fingerprints[depth]} at depth {depth}" if depth in trunk.fingerprints
          else f"depths {list(trunk.depths)}, none at {depth}")
    return f"the deployed trunk is {trunk.backbone!r} (hidden size {trunk.hidden_size}, {at})"


def check_head_fits(meta: HeadMeta, trunk: TrunkInfo) -> None:
    """Refuse a head trained on another trunk, depth or hidden size (``TrunkMismatch``), naming both backbones.

    Why both names and fingerprints: "fingerprint differs" alone leaves the
    user guessing whether the backbone, the depth or the tokenizer is wrong.
    """
    d = meta.branch_layer
    retrain = "retrain the head on the deployed backbone (python -m trunkserve.training train-heads --backbone PATH --branch-layer "
    if d not in trunk.depths:
        cause = "the trunk does not branch at that depth"
        remedy = f"{retrain}K, K in {list(trunk.depths)}), or rebuild the repository with --depths including {d}"
    elif meta.config.hidden_size != trunk.hidden_size:
        cause, remedy = "the hidden sizes differ", f"{retrain}{d})"
    elif meta.trunk_fingerprint != trunk.fingerprints[d]:
        cause, remedy = "the fingerprints differ", f"{retrain}{d})"
    else:
        return
    raise TrunkMismatch(f"{_trained_on(meta)}; {_deployed(trunk, d)}: {cause}; {remedy}")


def trunk_depths(heads: Sequence[str | Path], num_layers: int | None = None) -> list[int]:
    """``DEFAULT_DEPTHS`` and the branch depth each head declares: what the trunk must expose to serve them.

    A study that chose k per task (``reports/glue.md``) then deploys without a
    ``--depths`` flag; heads hot-added later can read any of these depths. With
    ``num_layers`` (the backbone's) a default depth is kept only where a head can
    be trained (``0 <= k < num_layers``, training needs a layer above k): a
    2-layer backbone does not get the default 3 forced onto it.
    """
    defaults = [d for d in DEFAULT_DEPTHS if num_layers is None or 0 <= d < num_layers]
    return sorted({*defaults, *(read_meta(h).branch_layer for h in heads)})


def check_depths(depths: Sequence[int], heads: Sequence[str | Path], backbone: Backbone, given: bool) -> list[int]:
    """The trunk's depths, checked against the backbone (``0..num_hidden_layers``) and the heads, before any export.

    Why here: the trunk would refuse them too, but naming neither ``--depths``
    nor the backbone's layer count; and a head whose depth ``--depths`` leaves
    out would only fail after the trunk was exported.
    """
    layers = backbone.config.num_hidden_layers
    has = f"backbone {backbone.name!r} has {layers} layers, so --depths must lie within 0..{layers}"
    depths = sorted({int(d) for d in depths})
    if not depths:
        raise RepositoryError(f"--depths is empty: give at least one branch depth ({has})")
    bad = [d for d in depths if not 0 <= d <= layers]
    read = {m.task: m.branch_layer for m in map(read_meta, heads)}
    if bad and given:
        raise RepositoryError(f"--depths {bad} outside 0..{layers}: {has}")
    if bad:
        who = ", ".join(f"{task} reads {d}" for task, d in read.items() if d in bad)
        raise RepositoryError(f"the heads read depths {bad} outside 0..{layers} ({who}): {has}; "
                              "were they trained on another backbone (--backbone)?")
    missing = sorted({d for d in read.values() if d not in depths})
    if missing:
        raise RepositoryError(f"--depths {depths} leaves out depths {missing} that heads read: add them ({has})")
    return depths
