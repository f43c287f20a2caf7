"""Typed errors of the export side, so callers and the CLI can tell failures apart."""


class ExportError(RuntimeError):
    """Base class for export failures."""


class GraphMismatchError(ExportError):
    """An exported graph's names, shapes or values differ from the PyTorch model."""


class RepositoryError(ExportError):
    """The model repository is missing, inconsistent, or cannot take the requested change."""
