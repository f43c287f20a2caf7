"""Typed errors of the export side, so callers and the CLI can tell failures apart."""

from __future__ import annotations

from typing import Sequence

# the two bases sit in the core contract, whose readers raise them too
from trunkserve.deployment.errors import ExportError, RepositoryError


class GraphMismatchError(ExportError):
    """An exported graph's names, shapes or values differ from the PyTorch model."""


class HotswapError(RepositoryError):
    """A hot-swap operation failed; the deployment was rolled back (``rolled_back`` lists the steps undone)."""

    def __init__(self, message: str, rolled_back: Sequence[str] = ()):
        self.rolled_back = list(rolled_back)
        if self.rolled_back:
            message += "; rolled back: " + ", ".join(self.rolled_back)
        super().__init__(message)


class HeadRejected(HotswapError):
    """The head artefact failed validation; nothing was changed."""


class ServerUnavailable(HotswapError):
    """Triton could not be reached (or went away mid-operation)."""


class AccessDenied(HotswapError):
    """Triton refused the model-repository API: the admin key is missing or wrong."""


class AdminKeyMissing(AccessDenied):
    """The repository API is restricted and no admin key was given (neither --admin-key nor the environment)."""


class AdminKeyRefused(AccessDenied):
    """A key was sent and Triton refused it: a wrong key, or a header name the server does not check."""


class CanaryFailed(HotswapError):
    """The served head did not reproduce the artefact's reference outputs."""


class QuantisationError(ExportError):
    """A quantised copy cannot be made as asked (unknown scheme, an already quantised source, a bad target)."""


class TargetNotEmpty(QuantisationError):
    """The target holds something ``quantise`` did not write: replacing it would lose it (``overwrite`` to insist)."""


__all__ = ["AccessDenied", "AdminKeyMissing", "AdminKeyRefused", "CanaryFailed", "ExportError", "GraphMismatchError",
           "HeadRejected", "HotswapError", "QuantisationError", "RepositoryError",
           "ServerUnavailable", "TargetNotEmpty"]
