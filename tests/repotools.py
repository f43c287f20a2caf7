"""Helpers shared by the unit and integration tests of repository changes: digests, leftovers, routes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from trunkserve.deployment.reader import read_groups, read_routes, routed_tasks
from trunkserve.export import configs
from trunkserve.export.repo_lock import LOCK_FILE

#: Every way a head can be wrong that the ``bad_heads`` fixture (conftest) builds.
BAD = ["corrupt_onnx", "onnx_wrong_hidden", "wrong_hidden_size", "wrong_fingerprint", "wrong_depth", "illegal_name", "no_labels", "canary_mismatch"]


def tree_digest(repo: Path) -> dict[str, str]:
    """Every file under the repository (the lock file aside) and its content hash."""
    return {
        p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def leftovers(repo: Path) -> list[str]:
    """Staging folders an operation failed to clean up (they live next to the repository)."""
    return [p.name for p in repo.parent.iterdir() if p.name.startswith(f".{repo.name}.hotswap-")]


def multitask_heads(repo: Path) -> list[str]:
    """The head models whose tasks ``multitask`` answers: those it routes to directly (TensorRT) or through their group."""
    return sorted(f"head_{t}" for t in routed_tasks(read_routes(repo), read_groups(repo)))


def multitask_steps(repo: Path) -> dict[str, list[str]]:
    """``multitask``'s steps after the trunk (head groups, or heads) and the tasks whose outputs each step maps."""
    steps = configs.read_config(repo / "multitask").ensemble_scheduling.step
    return {s.model_name: sorted({o.rsplit("_", 1)[0] for o in s.output_map.values()}) for s in steps[2:]}
