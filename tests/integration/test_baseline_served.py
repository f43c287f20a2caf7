"""One full model per task, served by the real tritonserver (the build checks: tests/unit/test_baseline.py)."""

from __future__ import annotations

import pytest

from trunkserve.bert import BertConfig  # noqa: F401  (import check: full model built from the same blocks)


@pytest.mark.server
def test_baseline_serves_one_request(baseline_repo, tmp_path):
    import tritonclient.http as httpclient

    from trunkserve.loadtest.validation import ExpectedOutputs, check_response
    from tests.servertools import text_inputs
    from trunkserve.server import TritonProcess

    with TritonProcess(baseline_repo.repo, tmp_path / "triton.log") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        for model in ("multitask", "sst2", "stsb"):
            expected = ExpectedOutputs.from_metadata(client.get_model_metadata(model))
            result = client.infer(model, text_inputs(["a fine film", "two"], ["", "pair text"]),
                                  outputs=[httpclient.InferRequestedOutput(n) for n in expected.names])
            check_response({n: result.as_numpy(n) for n in expected.names}, expected, 2)
        client.close()
