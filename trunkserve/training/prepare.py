"""A task's data made ready once for every seed and candidate: read, capped, split, tokenized, cached."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Sequence

from trunkserve.backbone import Backbone
from trunkserve.modules import Trunk
from trunkserve.tokenization import BucketTokenizer

from .cache import HiddenStateCache
from .data.custom import load_custom_task
from .data.encode import Encoded, encode_examples
from .data.glue import GLUE_TASKS, load_glue_task
from .data.types import DataError, Example, TaskData
from .options import CustomTask, HeadOptions
from .quality import majority_score
from .transfer import TransferSet, build_transfer


@dataclass
class Prepared:
    """A task's data, split, tokenized and cached: shared by every seed and candidate."""

    data: TaskData
    train: Encoded
    val: Encoded
    dev: dict[str, Encoded]
    caches: dict[str, HiddenStateCache] = field(default_factory=dict)  # "train", "val", "dev:<split>", "transfer"
    transfer: Encoded | None = None  # the transfer set's rows (``training.transfer``), cached beside the training rows
    transfer_info: TransferSet | None = None
    # Trained teachers by (k, n, seed, schedule): a multi-teacher student on seed s reuses seed s+1's teacher.
    teachers: dict = field(default_factory=dict)
    cache_seconds: float = 0.0
    cache_bytes: int = 0
    majority: dict = field(default_factory=dict)  # "val" / "dev:<split>" -> the majority-class baseline's scores

    def __post_init__(self):
        d, reg = self.data, self.data.task_type == "regression"
        sets = {"val": self.val, **{f"dev:{k}": v for k, v in self.dev.items()}}
        self.majority = {name: majority_score(self.train, enc, d.metric, d.num_labels, reg) for name, enc in sets.items()}

    @property
    def pair(self) -> bool:
        """Trained on text pairs: every served call should send ``text_pair`` too."""
        return any(ex.text_pair is not None for ex in self.data.train)

    def describe(self) -> str:
        """The task type and labels as read from the data, so a surprise (1-5 read as 5 classes) is seen at once."""
        d = self.data
        kind = (f"regression (score {min(self.train.labels):g}..{max(self.train.labels):g})" if d.task_type == "regression"
                else f"classification, {d.num_labels} classes {d.labels}")
        return (f"{kind}, {'text pairs' if self.pair else 'single texts'}; majority-class validation score "
                f"{self.majority['val']['score']:.2f}")


def carve_validation(examples: list[Example], fraction: float, max_val: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded hold-out of ``fraction`` of the rows (at most ``max_val``, at least 1) for every selection."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = min(max_val, max(1, int(round(len(order) * fraction))))
    if n_val >= len(order):
        raise DataError(f"too few training rows ({len(order)}) to hold out a validation split")
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def cap(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    order = list(range(len(examples)))
    random.Random(seed + 7919).shuffle(order)
    return [examples[i] for i in sorted(order[:n])]


def load_task(task: str, glue_dir=None, custom: dict[str, CustomTask] | None = None) -> TaskData:
    if custom and task in custom:
        c = custom[task]
        return load_custom_task(task, c.train, c.dev, c.task_type)
    if task not in GLUE_TASKS:
        raise DataError(f"unknown task {task!r}: not a GLUE task ({', '.join(GLUE_TASKS)}) and no custom file given")
    return load_glue_task(task, glue_dir)


def prepare(task: str, bb: Backbone, opts: HeadOptions, glue_dir=None, custom=None, cache_depths: Sequence[int] = ()) -> Prepared:
    data = load_task(task, glue_dir, custom)
    rows = cap(data.train, opts.max_train, opts.split_seed)
    train_rows, val_rows = carve_validation(rows, opts.val_fraction, opts.max_val, opts.split_seed)
    tok = BucketTokenizer(bb.path, max_length=opts.max_length)
    reg = data.task_type == "regression"
    dev = {k: encode_examples(cap(v, opts.max_dev, opts.split_seed), tok, reg) for k, v in data.dev.items()}
    prep = Prepared(data, encode_examples(train_rows, tok, reg), encode_examples(val_rows, tok, reg), dev)
    if opts.transfer_sources:
        prep.transfer_info = build_transfer(data, train_rows, val_rows, opts.transfer_sources, opts.transfer_max,
                                            opts.split_seed, glue_dir, opts.transfer_text)
        if prep.transfer_info.rows:
            prep.transfer = encode_examples(prep.transfer_info.rows, tok, reg)
    if cache_depths:
        build_caches(prep, bb, opts, cache_depths)
    return prep


def build_caches(prep: Prepared, bb: Backbone, opts: HeadOptions, depths: Sequence[int]) -> Prepared:
    """Run the frozen trunk once over train, validation and dev, keeping the states at ``depths``."""
    task = prep.data.name
    trunk = Trunk.from_state_dict(bb.config, bb.state_dict, sorted(set(depths))).freeze()
    t0 = time.perf_counter()
    extra = [("transfer", prep.transfer)] if prep.transfer is not None else []
    for name, enc in [("train", prep.train), ("val", prep.val)] + [(f"dev:{k}", v) for k, v in prep.dev.items()] + extra:
        c = HiddenStateCache(trunk, enc, max_bytes=opts.cache_max_bytes, progress=opts.progress, desc=f"{task} trunk cache ({name})")
        prep.caches[name] = c
        prep.cache_bytes += c.nbytes
    prep.cache_seconds = time.perf_counter() - t0
    return prep
