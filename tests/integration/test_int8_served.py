"""A quantised repository served: swap and rollback through the real server (offline checks: tests/unit/test_int8.py)."""

from __future__ import annotations


import pytest

from trunkserve.export.quantise import quantised_copy
from trunkserve.training.data.glue import default_glue_dir

GLUE = default_glue_dir()
needs_glue = pytest.mark.skipif(not (GLUE / "SST-2/dev.tsv").exists(), reason="shared GLUE data not present")


@pytest.mark.server
def test_swap_and_rollback_on_a_served_quantised_repository(built_repo, tmp_path, sharp_heads):
    """The served canaries pass through the int8 trunk: add, swap and roll back on a real server."""
    from trunkserve.export.hotswap import ServerControl, add_head, rollback_head, swap_head
    from trunkserve.server import TritonProcess

    first, second = sharp_heads
    q = quantised_copy(built_repo.repo, tmp_path / "q")
    proc = TritonProcess(q, tmp_path / "tritonserver.log", extra_args=["--model-control-mode=explicit", "--load-model=*"]).start()
    control = ServerControl(proc.http_url)
    try:
        assert add_head(first, q, control).canary_diff is not None
        swapped = swap_head(second, q, control)
        assert swapped.version == 2 and swapped.canary_diff <= 1e-3
        assert rollback_head("sharp", q, control).version == 1
        assert control.ready("sharp") and control.ready("multitask")
    finally:
        control.close()
        assert proc.stop() == 0, proc.log_tail()
