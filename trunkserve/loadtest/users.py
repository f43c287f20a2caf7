"""Locust users for Triton over HTTP and over gRPC (gevent-patched grpc).

Each call is timed here and reported with ``events.request.fire``: name = the
ensemble, ``response_length`` = inputs in the request, and an exception when
the call failed or the response did not pass ``validation.check_response``.
Import this module only inside a Locust process (it is gevent-based).
"""

from __future__ import annotations

import random
import time

from locust import User, constant, task

from .corpus import Sampler, load_corpus
from .errors import LoadTestError
from .traffic import Traffic
from .validation import ExpectedOutputs, check_response

_CORPUS: dict = {}


def corpus_for(path):
    if path not in _CORPUS:
        _CORPUS[path] = load_corpus(path)
    return _CORPUS[path]


def strip_scheme(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


class TritonUser(User):
    """Closed loop by default (no wait): send, validate, report, repeat."""

    abstract = True
    protocol = "http"
    wait_time = constant(0)
    _ids = 0

    def url(self) -> str:
        return strip_scheme(self.host or "localhost:8000")

    def make_client(self):
        raise NotImplementedError

    def metadata(self, model: str) -> dict:
        raise NotImplementedError

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        TritonUser._ids += 1
        self.rng = random.Random(TritonUser._ids)
        self.traffic = Traffic.from_options(opts)
        self.sampler = Sampler(corpus_for(getattr(opts, "corpus", None) or None), seed=TritonUser._ids)
        self.client = self.make_client()
        self.expected: dict[str, ExpectedOutputs] = {}

    def on_stop(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass

    def _expected(self, model: str) -> ExpectedOutputs:
        if model not in self.expected:
            self.expected[model] = ExpectedOutputs.from_metadata(self.metadata(model))
        return self.expected[model]

    @task
    def infer(self) -> None:
        model = self.traffic.pick(self.rng)
        n = self.traffic.batch_size
        texts, pairs = self.sampler.batch(n)
        start_wall, start = time.time(), time.perf_counter()
        exc = None
        try:
            expected = self._expected(model)
            outputs = self.call(model, texts, pairs, expected.names)
            check_response(outputs, expected, n)
        except Exception as e:  # every failure is a failed request, never a crashed user
            exc = e
        self.environment.events.request.fire(
            request_type=self.protocol,
            name=model,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=n,
            exception=exc,
            context={"inputs": n, "start": start_wall},
        )

    def _inputs(self, mod, texts, pairs):
        from trunkserve.client.transport import text_inputs

        return text_inputs(mod, texts, pairs)

    def call(self, model, texts, pairs, names) -> dict:
        mod = self.module
        result = self.client.infer(
            model, self._inputs(mod, texts, pairs), outputs=[mod.InferRequestedOutput(n) for n in names]
        )
        return {n: result.as_numpy(n) for n in names}


class TritonHttpUser(TritonUser):
    """Triton's HTTP/REST protocol (tritonclient.http runs on geventhttpclient)."""

    protocol = "http"

    def make_client(self):
        import tritonclient.http as httpclient

        self.module = httpclient
        return httpclient.InferenceServerClient(self.url(), connection_timeout=30.0, network_timeout=60.0)

    def metadata(self, model: str) -> dict:
        return self.client.get_model_metadata(model)


class TritonGrpcUser(TritonUser):
    """Triton's gRPC protocol; the locustfile calls ``grpc.experimental.gevent.init_gevent()`` first."""

    protocol = "grpc"

    def url(self) -> str:
        grpc_host = getattr(self.environment.parsed_options, "grpc_host", None)
        if grpc_host:
            return strip_scheme(grpc_host)
        if self.host and self.host.startswith("http"):
            raise LoadTestError("TritonGrpcUser needs --grpc-host (or --host grpc://host:port)")
        return strip_scheme(self.host or "localhost:8001")

    def make_client(self):
        import tritonclient.grpc as grpcclient

        self.module = grpcclient
        return grpcclient.InferenceServerClient(self.url())

    def metadata(self, model: str) -> dict:
        return self.client.get_model_metadata(model, as_json=True)

    def call(self, model, texts, pairs, names) -> dict:
        mod = self.module
        result = self.client.infer(
            model, self._inputs(mod, texts, pairs), outputs=[mod.InferRequestedOutput(n) for n in names],
            client_timeout=60.0,
        )
        return {n: result.as_numpy(n) for n in names}
