"""Task data: GLUE readers (``glue``), user CSV/JSONL tasks (``custom``), tokenization (``encode``)."""

from .types import Example, TaskData, DataError

__all__ = ["Example", "TaskData", "DataError"]
