"""The in-memory form every reader produces, so training never cares where data came from."""

from __future__ import annotations

from dataclasses import dataclass, field


class DataError(ValueError):
    """Task data is missing, malformed or inconsistent (the message names the file)."""


@dataclass
class Example:
    text: str
    text_pair: str | None
    label: int | float  # class index, or a float score for regression


@dataclass
class TaskData:
    """One task: its train set and one or more evaluation sets (GLUE dev)."""

    name: str
    task_type: str  # "classification" | "regression"
    labels: list[str]  # class names in index order; ["score"] for regression
    metric: str  # key into training.metrics.TASK_METRICS
    train: list[Example]
    dev: dict[str, list[Example]] = field(default_factory=dict)  # first entry is the headline split

    @property
    def num_labels(self) -> int:
        return len(self.labels)
