"""A quantised copy of a built repository (``python -m trunkserve.export quantise --repo REPO --out OUT``).

Why a copy, never in place: the float32 repository is what was exported and
validated against PyTorch, and int8 changes outputs (reports/int8-accuracy.md
says by how much), so both stay servable. The copy is built in a staging folder
beside ``out`` and moved into place only when complete; it stays open to
hot-add and swap (``export.quantised``). Every size comes from the repository
(``graph_tuning.repository_sizes``), so any BERT width and head count works.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from trunkserve.deployment.layout import GROUP_PREFIX

from . import graph_tuning, quantised
from .errors import ExportError, QuantisationError, TargetNotEmpty
from .names import TRUNK
from .quant_schemes import DEFAULT_SCHEME, SCHEMES, QuantScheme, scheme_named
from .repo_lock import LOCK_FILE, RepositoryLock

__all__ = ["DEFAULT_SCHEME", "SCHEMES", "QuantScheme", "TargetNotEmpty", "check_target", "earlier_output",
           "quantised_copy", "scheme_named"]


def earlier_output(out: Path) -> str:
    """The scheme recorded by an earlier ``quantise`` run at ``out``, or ``""``.

    Why the trunk's config and no marker file of our own: ``mark_quantised`` records the
    scheme there, only this command writes it, and hot-add or swap on the copy keep it.
    """
    try:
        return quantised.trunk_quantisation(out)
    except (ExportError, OSError, ValueError):  # no trunk, or not a repository at all
        return ""


def check_target(repo: Path, out: Path, overwrite: bool = False) -> None:
    """Refuse an ``out`` whose replacement would lose data, before anything is written.

    An empty or missing folder, or an earlier output of this command, is replaced; any other
    content only with ``overwrite``. A target inside the source, or the source inside the
    target, is refused even then: the copy would recurse, or the swap would delete the source.
    """
    repo, out = Path(repo).resolve(), Path(out).resolve()
    if out == repo:
        raise QuantisationError(f"out {out} is the repository itself: it must differ (the float32 graphs are kept)")
    if repo in out.parents:
        raise QuantisationError(f"out {out} is inside the repository {repo}: the copy would contain itself")
    if out in repo.parents:
        raise QuantisationError(f"out {out} holds the repository {repo}: replacing it would delete the source")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise TargetNotEmpty(f"out {out} exists and is not a folder: refusing to replace it")
    if overwrite or not any(out.iterdir()) or earlier_output(out):
        return
    raise TargetNotEmpty(
        f"out {out} is not empty and is not an earlier output of quantise (its trunk records no "
        "quantisation scheme): refusing to replace it; choose another folder, or pass --overwrite to replace it"
    )


def _copy_source(repo: Path, staging: Path) -> None:
    """Copy ``repo`` into the (empty) staging folder, under the source's lock so no hot-add is copied halfway.

    A read-only source cannot take the lock file, nor a hot-add: it is copied without.
    """
    lock: RepositoryLock | None = RepositoryLock(repo, "quantise (copying)")
    try:
        lock.acquire()
    except PermissionError:
        lock = None
    try:
        shutil.copytree(repo, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK_FILE))
    finally:
        if lock is not None:
            lock.release()


def _quantise_in_place(repo: Path, how: QuantScheme) -> None:
    """Keep the float32 trunk, quantise the graphs, record the scheme, rederive the canaries."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns once per graph about optional pre-processing
    try:
        quantised.keep_float32_trunk(repo)
        models = [d.name for d in repo.iterdir() if d.is_dir()]
        groups = [m for m in models if m.startswith(GROUP_PREFIX)]
        graph_tuning.tune_repository(repo, fuse=False, quantize=True, per_channel=how.per_channel,
                                     models=(TRUNK,) if how.trunk_only else models,
                                     op_types=how.op_types, weights_2d_only=groups)
    finally:
        root.setLevel(level)
    quantised.mark_quantised(repo, how.name)
    quantised.rederive_canaries(repo, how.name)


def _move_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``staging`` folder; if that fails, put the old ``out`` back."""
    old = None
    if out.exists():
        old = out.with_name(f"{staging.name.replace('.staging-', '.old-', 1)}")
        out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def quantised_copy(repo: str | Path, out: str | Path, scheme: str = DEFAULT_SCHEME, overwrite: bool = False) -> Path:
    """A copy of ``repo`` at ``out`` whose graphs are quantised by ``scheme`` (see ``SCHEMES``).

    The copy keeps the float32 trunk for checking new heads, records the scheme, and its
    canaries come from its own graphs. A failed run leaves no servable half-copy and
    ``out`` as it was. What ``out`` may already hold: see ``check_target``.
    """
    how = scheme_named(scheme)  # before anything is written
    repo, out = Path(repo).resolve(), Path(out).resolve()
    check_target(repo, out, overwrite)
    already = quantised.trunk_quantisation(repo)
    if already:  # its trunk is no float32 reference any more
        raise QuantisationError(f"{repo} is already quantised ({already}): quantise its float32 source instead")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        _copy_source(repo, staging)
        _quantise_in_place(staging, how)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
