"""The GLUE tasks in their standard TSV layout (``GLUE_DIR/<folder>/<split>.tsv``): one table for every reader.

Training (``training.data.glue``) reads train and dev files with labels; the load test
(``loadtest.corpus``) reads the dev texts only. Both take the folder, the text columns and
the dev file names from here, so a task added or a column renamed changes both.
Standard library only: the Locust image copies this module without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its files are and which columns hold the text and the label."""

    name: str
    folder: str
    text: str | int  # header name, or column index when there is no header
    text_pair: str | int | None
    label: str | int
    labels: tuple[str, ...]  # class names in index order, ("score",) for regression
    raw_labels: tuple[str, ...] | None  # label strings in the file, in index order
    task_type: str = "classification"
    header: bool = True
    dev_splits: tuple[str, ...] = ("dev",)

    @property
    def dev_files(self) -> tuple[str, ...]:
        """The dev file names inside ``folder`` (MNLI has two)."""
        return tuple(f"{split}.tsv" for split in self.dev_splits)


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("cola", "CoLA", 3, None, 1, ("unacceptable", "acceptable"), ("0", "1"), header=False),
    "sst2": GlueTask("sst2", "SST-2", "sentence", None, "label", ("negative", "positive"), ("0", "1")),
    "mrpc": GlueTask("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent"), ("0", "1")),
    "stsb": GlueTask("stsb", "STS-B", "sentence1", "sentence2", "score", ("score",), None, task_type="regression"),
    "qqp": GlueTask("qqp", "QQP", "question1", "question2", "is_duplicate", ("not_duplicate", "duplicate"), ("0", "1")),
    "mnli": GlueTask(
        "mnli", "MNLI", "sentence1", "sentence2", "gold_label",
        ("contradiction", "entailment", "neutral"), ("contradiction", "entailment", "neutral"),
        dev_splits=("dev_matched", "dev_mismatched"),
    ),
    "qnli": GlueTask("qnli", "QNLI", "question", "sentence", "label", ("entailment", "not_entailment"), ("entailment", "not_entailment")),
    "rte": GlueTask("rte", "RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("entailment", "not_entailment")),
}

#: The same tasks by folder name (``SST-2``), as the load test names them.
GLUE_FOLDERS: dict[str, GlueTask] = {t.folder: t for t in GLUE_TASKS.values()}
