"""An exclusive, cross-process lock on a model repository folder.

Hot-add, swap and remove read the repository (which heads exist, which version
is newest), then rewrite it (new folders, the ``multitask`` config). Two such
operations interleaving could lose a head from ``multitask`` or write the same
version twice, so every operation holds this lock from its first read to its
last write.

It is ``fcntl.flock`` on ``<repo>/.trunkserve.lock``: the kernel drops the lock
when the holding process dies, so a crashed operation never leaves a stale
lock. A plain *file* at the repository root is harmless to Triton (it only
treats directories as models; a dot-*directory* there would break
``--load-model=*``, which is why staging folders live next to the repository,
not inside it). The holder writes its pid and operation into the file so the
waiting side can say who it waits for.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import RepositoryError

LOCK_FILE = ".trunkserve.lock"


class RepositoryLocked(RepositoryError):
    """Another operation held the repository lock for longer than we were willing to wait."""


class RepositoryLock:
    """``with RepositoryLock(repo, "add-head sst2", timeout_s=60):`` waits, then fails clearly."""

    def __init__(self, repo: str | Path, operation: str = "", timeout_s: float = 120.0, poll_s: float = 0.1):
        self.path = Path(repo) / LOCK_FILE
        self.operation = operation
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self) -> "RepositoryLock":
        if not self.path.parent.is_dir():
            raise RepositoryError(f"{self.path.parent}: no such repository folder")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RepositoryLocked(
                        f"{self.path.parent} is locked by another operation ({self.holder()}); "
                        f"waited {self.timeout_s:g}s. Retry when it finishes (or raise --lock-timeout)."
                    ) from None
                time.sleep(self.poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {self.operation} since {time.strftime('%H:%M:%S')}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "RepositoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
