"""HTTP and gRPC behind one small interface, so the client logic is written once.

tritonclient's two modules differ in how they spell errors, the repository
index and metadata; this module smooths exactly those differences.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}

_CONNECTION_WORDS = (
    "connection refused", "unavailable", "failed to connect", "timed out", "timeout",
    "connection reset", "broken pipe", "remote end closed", "name or service",
    "connection closed",  # geventhttpclient, when a server that went away held our pooled keep-alive connection
)


def is_restricted_error(exc: BaseException) -> bool:
    """True when Triton refused an API that ``--http-restricted-api`` / ``--grpc-restricted-protocol`` locks.

    HTTP answers ``[403] This API is restricted, expecting header ...``; gRPC answers with an
    UNAVAILABLE status and ``This protocol is restricted, expecting header ...``, which must not
    be mistaken for an unreachable server.
    """
    text = str(exc).lower()
    return "restricted" in text and "expecting header" in text


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means "the server could not be reached", whichever protocol raised it.

    tritonclient's HTTP side raises socket errors, its gRPC side ``InferenceServerException``
    with an UNAVAILABLE status; both the client CLI and the hot-swap tools map these to
    "server unreachable" rather than a server-side error. A restricted API also comes back
    UNAVAILABLE over gRPC; that is a refusal, not a connection error.
    """
    if is_restricted_error(exc):
        return False
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, (ConnectionError, OSError)) or any(s in text for s in _CONNECTION_WORDS)


def text_inputs(mod, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list:
    """``InferInput``s for the ensembles' ``text``/``text_pair`` (BYTES, ``[batch, 1]``).

    ``mod`` is ``tritonclient.http`` or ``tritonclient.grpc``; an empty pair means a single sentence.
    """
    pairs = list(pairs) if pairs is not None else [""] * len(texts)
    out = []
    for name, values in (("text", texts), ("text_pair", pairs)):
        arr = np.array([v.encode() for v in values], dtype=object).reshape(-1, 1)
        i = mod.InferInput(name, list(arr.shape), "BYTES")
        i.set_data_from_numpy(arr)
        out.append(i)
    return out


class Transport:
    def __init__(self, protocol: str, url: str | None, timeout_s: float = 30.0):
        if protocol not in DEFAULT_URLS:
            raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        host, colon, port = self.url.rpartition(":")
        if "://" in self.url or (colon and (not host or not port.isdigit())):
            raise ValueError(f"--url must be host:port (e.g. {DEFAULT_URLS[protocol]}), got {self.url!r}")
        self.timeout_s = timeout_s
        if protocol == "http":
            import tritonclient.http as mod

            self.client = mod.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            import tritonclient.grpc as mod

            self.client = mod.InferenceServerClient(self.url)
        self.mod = mod

    def live(self) -> bool:
        return bool(self.client.is_server_live())

    def ready_models(self) -> list[str]:
        """Names of the ready models.

        The repository index says so directly, but a server that guards hot-add with an admin
        key restricts that API (README, "Ship a new task"), and inference must not need the
        key. Triton's statistics API lists exactly the loaded models and stays open, so it
        answers when the index is refused.
        """
        try:
            if self.protocol == "http":
                index = self.client.get_model_repository_index()
            else:
                index = self.client.get_model_repository_index(as_json=True).get("models", [])
        except Exception as exc:
            if not is_restricted_error(exc):
                raise
            return self._loaded_models()
        return sorted({m["name"] for m in index if m.get("state") == "READY"})

    def _loaded_models(self) -> list[str]:
        if self.protocol == "http":
            stats = self.client.get_inference_statistics()
        else:
            stats = self.client.get_inference_statistics(as_json=True)
        return sorted({m["name"] for m in stats.get("model_stats", [])})

    def output_shapes(self, model: str) -> dict[str, list[int]]:
        if self.protocol == "http":
            meta = self.client.get_model_metadata(model)
        else:
            meta = self.client.get_model_metadata(model, as_json=True)
        return {o["name"]: [int(d) for d in o["shape"]] for o in meta["outputs"]}

    def model_parameters(self, model: str) -> dict[str, str]:
        """A model's config parameters (their string values): what the exporter recorded about it, e.g. a head's ``pair``."""
        if self.protocol == "http":
            cfg = self.client.get_model_config(model)
        else:
            cfg = self.client.get_model_config(model, as_json=True, client_timeout=self.timeout_s).get("config", {})
        return {k: str(v.get("string_value", "")) for k, v in (cfg.get("parameters") or {}).items()}

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[tuple[str, int]]):
        """``outputs``: (name, class_count) pairs; class_count 0 means the raw tensor."""
        infer_inputs = []
        for name, value in inputs.items():
            i = self.mod.InferInput(name, list(value.shape), "BYTES")
            i.set_data_from_numpy(value)
            infer_inputs.append(i)
        requested = [self.mod.InferRequestedOutput(n, class_count=c) for n, c in outputs]
        # HTTP's timeout is the connection's (set above); gRPC takes one per call.
        kwargs = {} if self.protocol == "http" else {"client_timeout": self.timeout_s}
        return self.client.infer(model, infer_inputs, outputs=requested, **kwargs)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass
