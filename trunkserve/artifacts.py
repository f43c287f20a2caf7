"""The self-describing head artefact: one folder that says everything about a task head.

Layout of a head folder::

    head.json            architecture, task, labels, branch depth, trunk fingerprint,
                         metrics, training config, format version
    weights.safetensors  the ``Head`` state dict
    canary.json          a few texts with the outputs trunk+head gave in PyTorch,
                         so a deployment can check the served head before routing to it

Like nanoGPT's checkpoints carrying ``model_args``, the export side rebuilds the
head from the folder alone, with no extra arguments.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from .bert import BertConfig
from .modules import CLASSIFICATION, REGRESSION, TASK_TYPES, Head

FORMAT_VERSION = 1
HEAD_JSON = "head.json"
WEIGHTS = "weights.safetensors"
CANARY = "canary.json"

#: Task names become Triton model names (``<task>``, ``head_<task>``) and output prefixes.
TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
#: Names the repository already uses for its own models.
RESERVED_NAMES = ("multitask", "tokenizer", "trunk")
#: Prefixes of the repository's own model names: head models (``head_<task>``), head groups (``heads_d3``).
RESERVED_PREFIXES = ("head_", "heads_")


class HeadArtifactError(ValueError):
    """A head folder is missing files, malformed, or inconsistent with itself."""


def check_task_name(task: str) -> str:
    if not isinstance(task, str) or not TASK_NAME.match(task) or task in RESERVED_NAMES or task.startswith(RESERVED_PREFIXES):
        raise HeadArtifactError(
            f"invalid task name {task!r}: use lower-case letters, digits and '_', starting with a letter "
            f"(at most 48 characters; {', '.join(RESERVED_NAMES)}, head_* and heads_* are reserved for the "
            "repository's own models)"
        )
    return task


@dataclass
class HeadMeta:
    """Everything in ``head.json``."""

    task: str
    task_type: str
    labels: list[str]
    branch_layer: int
    num_layers: int
    trunk_fingerprint: str
    bert_config: dict
    backbone: str = ""
    max_seq_len: int = 128
    pair: bool | None = None  # trained on text pairs (None: not recorded, heads written before it was)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        check_task_name(self.task)
        if self.task_type not in TASK_TYPES:
            raise HeadArtifactError(f"task_type {self.task_type!r} not in {TASK_TYPES}")
        if self.task_type == CLASSIFICATION and len(self.labels) < 2:
            raise HeadArtifactError(f"classification head {self.task!r} needs at least 2 labels")
        if self.task_type == REGRESSION and len(self.labels) != 1:
            raise HeadArtifactError(f"regression head {self.task!r} needs exactly one label (the score's name)")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def quality(self) -> dict | None:
        """The training's quality gate (``metrics["quality"]``): rule, scores, decision, ``passed``."""
        q = self.metrics.get("quality")
        return q if isinstance(q, dict) else None

    @property
    def failed_gate(self) -> bool:
        """True only when the gate ran and the head did not pass it (heads without a gate are not failed)."""
        return self.quality is not None and self.quality.get("passed") is False

    @property
    def config(self) -> BertConfig:
        return BertConfig.from_dict(self.bert_config)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> "HeadMeta":
        if raw.get("format_version") != FORMAT_VERSION:
            raise HeadArtifactError(f"unsupported head format_version {raw.get('format_version')!r}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise HeadArtifactError(f"malformed head.json: {exc}") from exc


def save_head(folder: str | Path, head: Head, meta: HeadMeta, canary: dict | None = None) -> Path:
    """Write a head folder (weights + head.json [+ canary.json])."""
    from safetensors.torch import save_file

    if head.num_layers != meta.num_layers or head.num_labels != meta.num_labels or head.task_type != meta.task_type:
        raise HeadArtifactError("head module and metadata disagree (layers, labels or task type)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, str(folder / WEIGHTS))
    (folder / HEAD_JSON).write_text(meta.to_json() + "\n")
    if canary is not None:
        write_canary(folder, canary)
    return folder


def read_meta(folder: str | Path) -> HeadMeta:
    folder = Path(folder)
    path = folder / HEAD_JSON
    if not path.is_file():
        raise HeadArtifactError(f"{folder}: not a head folder ({HEAD_JSON} missing)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HeadArtifactError(f"{path}: invalid JSON ({exc})") from exc
    return HeadMeta.from_dict(raw)


def load_head(folder: str | Path) -> tuple[Head, HeadMeta]:
    """Rebuild the ``Head`` module from its folder; raise ``HeadArtifactError`` on any mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_meta(folder)
    head = Head(meta.config, meta.num_layers, meta.num_labels, meta.task_type)
    try:
        state = load_file(str(folder / WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise HeadArtifactError(f"{folder}: cannot read {WEIGHTS} ({exc})") from exc
    misfit = weights_misfit(head.state_dict(), state)
    if misfit:
        raise HeadArtifactError(f"{folder}: weights do not fit head.json ({misfit})")
    head.load_state_dict(state)
    head.eval()
    return head, meta


def weights_misfit(expected: dict, found: dict, show: int = 3) -> str:
    """One line saying how ``found`` differs from ``expected`` (names and shapes), or "" when it fits.

    Why not torch's own message: it lists every key, one per line, which buries
    the cause (e.g. ``num_layers`` says 2 but the file has 1 layer) in a page of text.
    """
    def few(items: list[str]) -> str:
        return ", ".join(items[:show]) + (f" and {len(items) - show} more" if len(items) > show else "")

    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    shapes = [f"{k} {tuple(found[k].shape)} instead of {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(found)) if tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(missing)} missing: {few(missing)}" if missing else "",
             f"{len(extra)} unexpected: {few(extra)}" if extra else "",
             f"{len(shapes)} of another shape: {few(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def read_canary(folder: str | Path) -> dict | None:
    path = Path(folder) / CANARY
    return json.loads(path.read_text()) if path.exists() else None


def write_canary(folder: str | Path, canary: dict) -> None:
    (Path(folder) / CANARY).write_text(json.dumps(canary, indent=1) + "\n")
