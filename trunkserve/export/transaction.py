"""The undo log of a hot-swap operation, and the file moves and snapshots it undoes.

Why: every step that changes the repository or the server records how to undo
itself before (or right after) it runs, so a failure at any later step puts
the deployment back exactly as it was and the error can say what was undone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import HeadRejected, HotswapError


class Transaction:
    """Undo actions run in reverse on failure; each is best-effort and named for the error message."""

    def __init__(self):
        self.undo: list[tuple[str, Callable[[], None]]] = []

    def on_failure(self, name: str, fn: Callable[[], None]) -> None:
        self.undo.append((name, fn))

    def rollback(self) -> tuple[list[str], list[str]]:
        done, failed = [], []
        for name, fn in reversed(self.undo):
            try:
                fn()
                done.append(name)
            except Exception as exc:  # keep undoing the rest
                failed.append(f"{name} ({exc})")
        self.undo.clear()
        return done, failed


def rolled_back(exc: BaseException, tx: Transaction, step: str) -> HotswapError:
    """Undo ``tx`` and return the error to raise: which step failed, what was undone, what could not be."""
    done, failed = tx.rollback()
    cls = type(exc) if isinstance(exc, HotswapError) else HotswapError
    msg = f"{step} failed: {exc}"
    if failed:
        msg += "; COULD NOT UNDO: " + ", ".join(failed) + " (fix by hand, then run list-heads)"
    return cls(msg, done)


def staging_dir(repo: Path) -> Path:
    """A fresh folder *next to* the repository (a dot-folder inside it would be taken for a model by ``--load-model=*``)."""
    return Path(tempfile.mkdtemp(prefix=f".{repo.name}.hotswap-", dir=repo.parent))


def move_in(staging: Path, repo: Path, name: str, tx: Transaction) -> None:
    """``rename`` a staged model folder into the repository (atomic: Triton sees all of it or nothing)."""
    src, dst = staging / name, repo / name
    if dst.exists():
        raise HeadRejected(f"{dst} already exists")
    os.rename(src, dst)
    tx.on_failure(f"remove {name}/ from the repository", lambda: move_out(dst, src))


def move_out(path: Path, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    if to.exists():
        shutil.rmtree(to)
    os.rename(path, to)


def snapshot(folder: Path) -> dict[str, bytes]:
    """The files of a model folder (not its version folders), to put back with ``restore``."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def restore(folder: Path, snap: dict[str, bytes]) -> None:
    """Put a ``snapshot`` back: files it did not hold removed, ``config.pbtxt`` written last (Triton reads it)."""
    for p in folder.iterdir():
        if p.is_file() and p.name not in snap:
            p.unlink()
    for name, data in sorted(snap.items(), key=lambda kv: kv[0] == "config.pbtxt"):  # config last
        tmp = folder / f".{name}.restore"
        tmp.write_bytes(data)
        tmp.replace(folder / name)
