"""The repository lock, now in the core contract (``trunkserve.deployment.lock``); kept for the tests that import it here."""

from __future__ import annotations

from trunkserve.deployment.lock import LOCK_FILE, RepositoryLock, RepositoryLocked

__all__ = ["LOCK_FILE", "RepositoryLock", "RepositoryLocked"]
