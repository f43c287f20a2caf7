"""The errors of building, reading or changing a model repository (``export.errors`` derives the rest)."""

from __future__ import annotations


class ExportError(RuntimeError):
    """Base class for export failures (the export CLI reports these without a traceback)."""


class RepositoryError(ExportError):
    """The model repository is missing, inconsistent, or cannot take the requested change."""
