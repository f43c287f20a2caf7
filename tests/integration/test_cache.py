"""Triton's response cache on the composing models: opt-in, answers identical to the uncached path, never stale."""

from __future__ import annotations

import re
from urllib.request import urlopen

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import DEPTHS
from servertools import infer
from trunkserve.deployment.params import ServingOptions
from trunkserve.export import configs
from trunkserve.export.admin import ServerControl
from trunkserve.export.hotswap import swap_head
from trunkserve.export.repository import build_repository
from trunkserve.server import TritonProcess

pytestmark = pytest.mark.server
OUTPUTS = ["sst2_probabilities", "sst2_logits", "mrpc_logits", "stsb_score"]
TEXTS = ["a fine film", "the plot goes nowhere", "a fine film"]
CACHED_MODELS = ("tokenizer", "trunk", "head_sst2", "head_mrpc", "head_stsb")


@pytest.fixture(scope="module")
def cached(head_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("cached")
    built = build_repository(list(head_dirs.values()), out=root / "repo", depths=list(DEPTHS),
                             options=ServingOptions(response_cache=True))
    proc = TritonProcess(built.repo, root / "log.txt", extra_args=["--model-control-mode=explicit", "--load-model=*",
                                                                  "--cache-config=local,size=16777216"])
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log_tail()


def _metric(srv: TritonProcess, name: str, model: str) -> float:
    text = urlopen(f"http://localhost:{srv.metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(rf'^{name}{{model="{model}",version="\d+"}} (\S+)', text, re.M))


def _answers(url: str, texts=TEXTS) -> dict[str, np.ndarray]:
    c = httpclient.InferenceServerClient(url)
    results = [infer(c, "multitask", [t], OUTPUTS) for t in texts]
    return {o: np.concatenate([r.as_numpy(o) for r in results]) for o in OUTPUTS}


def test_only_the_composing_models_are_cached(cached):
    for model in CACHED_MODELS:
        assert configs.read_config(cached.repository / model).response_cache.enable, model
    for ensemble in ("multitask", "sst2"):
        assert not configs.read_config(cached.repository / ensemble).response_cache.enable, ensemble
    assert not configs.read_config(cached.repository / "trunk").dynamic_batching.preferred_batch_size


def test_cached_answers_equal_the_uncached_server_bit_for_bit_and_hits_are_counted(cached, server):
    hits_before = _metric(cached, "nv_cache_num_hits_per_model", "trunk")
    first = _answers(cached.http_url)
    again = _answers(cached.http_url)  # every input seen before: served from the cache
    plain = _answers(server.http_url)  # the session's uncached server, same heads
    for o in OUTPUTS:
        assert np.array_equal(first[o], again[o]) and np.array_equal(first[o], plain[o]), o
    hits = _metric(cached, "nv_cache_num_hits_per_model", "trunk") - hits_before
    misses = _metric(cached, "nv_cache_num_misses_per_model", "trunk")
    assert hits >= len(TEXTS) + 1 and misses >= 2, (hits, misses)  # "a fine film" repeats within the first round


def test_a_swapped_head_answers_with_its_new_weights_on_the_next_request(cached, new_heads, backbone, trunk, tmp_path):
    from trunkserve.synthetic import make_untrained_head

    before = _answers(cached.http_url, ["a fine film"])["sst2_logits"]
    v2 = make_untrained_head(backbone, tmp_path / "sst2_v2", "sst2", seed=99, trunk=trunk,
                             labels=["negative", "positive"], branch_layer=min(DEPTHS))
    swap_head(v2, cached.repository, ServerControl(cached.http_url))
    after = _answers(cached.http_url, ["a fine film"])["sst2_logits"]
    assert not np.allclose(before, after), "the cache answered with the old head"
    assert np.array_equal(after, _answers(cached.http_url, ["a fine film"])["sst2_logits"])
