"""Which Triton server version each NGC ``tritonserver`` container release ships.

Why: docker/Dockerfile serves on the NGC image, everything else on the ``tritonserver`` of the
``nvidia-pytriton`` wheel; the two must run the same server version, or a repository that loads
here may not load in the image. tests/unit/test_docker.py asks the bundled server for its version and
checks the Dockerfile's tag against this table.

A table, not a formula: "2.(12 * YY + MM - 247)" fits every pair checked from 21.02 to 25.03, but
not 2020 (20.11 shipped 2.5.0), and NGC published no 25.07 release, so nothing says it holds after.
Each row was checked against a source; add one (with its source) when the Dockerfile moves:
the container release notes (docs.nvidia.com/deeplearning/triton-inference-server/release-notes/),
the server's GitHub release v2.X.0 that names its NGC release, and TRITON_VERSION_MAP in
triton-inference-server/server's build.py.
"""

from __future__ import annotations

import re

NGC_TRITON_VERSIONS = {
    "23.12": "2.41.0",  # build.py: 2.41.0dev <-> 23.12dev
    "24.02": "2.43.0",  # release notes index: "Triton Inference Server 2.43.0 ... for the 24.02 ... releases"
    "24.08": "2.49.0",  # GitHub release v2.49.0 is the 24.08 container (server issue #7581)
    "24.10": "2.51.0",  # release notes 24.10; the nvidia-pytriton 0.7.0 wheel's server reports 2.51.0
    "25.03": "2.56.0",  # build.py: 2.56.0dev <-> 25.03dev
}

_TAG = re.compile(r"^(?P<release>\d{2}\.\d{2})(?:\.\d+)?(?:-.+)?$")  # 24.10-py3, 24.10-py3-sdk, 20.03.1-py3


class UnknownNgcRelease(LookupError):
    """An image tag names no NGC release in the table (or is no release tag at all)."""


def ngc_release(image: str) -> str:
    """``"24.10"`` from ``nvcr.io/nvidia/tritonserver:24.10-py3`` (or from the tag alone)."""
    tag = image.rsplit(":", 1)[-1]
    match = _TAG.match(tag)
    if not match:
        raise UnknownNgcRelease(f"{image!r}: the tag is not an NGC release (YY.MM[-suffix], e.g. 24.10-py3)")
    return match["release"]


def triton_version(image: str) -> str:
    """The Triton server version the NGC image (or tag) ships, e.g. ``"2.51.0"`` for 24.10."""
    release = ngc_release(image)
    if release not in NGC_TRITON_VERSIONS:
        raise UnknownNgcRelease(f"NGC release {release} is not in trunkserve.ngc.NGC_TRITON_VERSIONS "
                                f"(known: {', '.join(NGC_TRITON_VERSIONS)}): add it from its release notes")
    return NGC_TRITON_VERSIONS[release]
