"""The model-repository API of a running Triton (load, unload, index, canary requests), with the admin key.

Why apart from the operations: reaching the server, sending the key and
telling "unreachable", "refused" and "failed" apart is one job; the
hot-swap operations only say what to load and in which order.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Sequence

import numpy as np

from trunkserve.client.transport import is_connection_error, is_restricted_error, text_inputs

from .errors import AccessDenied, AdminKeyMissing, AdminKeyRefused, HotswapError, ServerUnavailable

ADMIN_KEY_ENV = "TRUNKSERVE_ADMIN_KEY"
ADMIN_HEADER_ENV = "TRUNKSERVE_ADMIN_HEADER"
DEFAULT_ADMIN_HEADER = "x-trunkserve-admin-key"


class ServerControl:
    """The model-repository API of one Triton (HTTP or gRPC), with the admin key header on every call.

    Triton started with ``--http-restricted-api=model-repository:<header>=<key>``
    (gRPC: ``--grpc-restricted-protocol=model-repository:<header>=<key>``)
    refuses load/unload/index without that header; inference stays open.
    The key comes from the caller, or ``$TRUNKSERVE_ADMIN_KEY``; the header name
    from ``$TRUNKSERVE_ADMIN_HEADER`` (default ``x-trunkserve-admin-key``). Over
    gRPC Triton expects the metadata key ``triton-grpc-protocol-<header>``;
    that prefix is added here, so both protocols take the same option.
    """

    def __init__(
        self,
        url: str,
        protocol: str = "http",
        admin_key: str | None = None,
        admin_header: str | None = None,
        timeout_s: float = 120.0,
        wait_s: float = 60.0,
    ):
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
        self.url, self.protocol, self.wait_s = url, protocol, wait_s
        key = admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV)
        header = (admin_header or os.environ.get(ADMIN_HEADER_ENV) or DEFAULT_ADMIN_HEADER).lower()
        # Triton's gRPC endpoint matches restricted-protocol keys as metadata "triton-grpc-protocol-<header>"
        # (HTTP takes the header as written); the server flags name <header> alike for both.
        if protocol == "grpc" and not header.startswith("triton-grpc-protocol-"):
            header = f"triton-grpc-protocol-{header}"
        self.header = header
        self.headers = {header: key} if key else None
        if protocol == "http":
            import tritonclient.http as mod

            self._make = lambda: mod.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            import tritonclient.grpc as mod

            self._make = lambda: mod.InferenceServerClient(url)
        self.mod = mod
        self._local, self._clients, self._lock = threading.local(), [], threading.Lock()
        self.client  # noqa: B018 - made now, so a bad URL fails here as it always did

    @property
    def client(self):
        """This thread's client: the HTTP client (geventhttpclient) must not be used from another thread than the
        one that made it, and a fleet operation calls each replica from its own worker thread."""
        made = getattr(self._local, "client", None)
        if made is None:
            made = self._local.client = self._make()
            with self._lock:
                self._clients.append(made)
        return made

    @client.setter
    def client(self, value) -> None:
        """This thread's client set by hand (a stand-in at the network boundary in unit tests)."""
        self._local.client = value

    # every call goes through here so errors come out typed and say what was attempted
    def _call(self, what: str, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            text = str(exc)
            if is_restricted_error(exc):
                raise self._denied(what, text.strip()) from exc
            if is_connection_error(exc):
                raise ServerUnavailable(f"{what}: cannot reach Triton at {self.url} ({text.strip()})") from exc
            raise HotswapError(f"{what}: Triton said: {text.strip()}") from exc

    def _denied(self, what: str, said: str) -> AccessDenied:
        """Why Triton refused: no key was sent, or the one sent did not match (the two need different fixes)."""
        where = f"{what}: Triton at {self.url} refused the model-repository API ({said})"
        if self.headers is None:
            return AdminKeyMissing(f"{where}: the server's repository API needs the admin key: pass --admin-key "
                                   f"or set {ADMIN_KEY_ENV}")
        return AdminKeyRefused(f"{where}: the admin key was refused by the server (wrong key, or header name differs: "
                               f"--admin-header); it was sent in header {self.header!r}")

    #: A model name no repository holds: unloading it is a no-op in explicit mode and refused in any other.
    PROBE = "__trunkserve_probe__"

    def check(self) -> None:
        """Reachable, live, the repository API accepts our key, and models may be loaded (before touching anything).

        A server in the default or polling mode refuses every load and unload;
        finding that out at the first load would leave a half-applied change to
        roll back, so a harmless unload of a name no repository holds asks first.
        """
        live = self._call("is the server live", self.client.is_server_live)
        if not live:
            raise ServerUnavailable(f"Triton at {self.url} is not live")
        self.index()
        try:
            self._call("check that models can be loaded", self.client.unload_model, self.PROBE, headers=self.headers)
        except (ServerUnavailable, HotswapError) as exc:  # gRPC says UNAVAILABLE for this refusal
            if "not allowed" not in str(exc):
                raise
            raise HotswapError(
                f"Triton at {self.url} does not take model loads ({exc}): start it with "
                "--model-control-mode=explicit --load-model='*' to change a running server, or leave out --url "
                "to change the repository folder only"
            ) from exc

    def index(self) -> list[dict]:
        if self.protocol == "http":
            return self._call("repository index", self.client.get_model_repository_index, headers=self.headers)
        out = self._call("repository index", self.client.get_model_repository_index, headers=self.headers, as_json=True)
        return out.get("models", [])

    def states(self) -> dict[str, str]:
        """Model -> state of its newest listed version (READY, UNAVAILABLE, ...)."""
        out: dict[str, str] = {}
        for m in self.index():
            if m.get("state") == "READY" or m["name"] not in out:
                out[m["name"]] = m.get("state", "")
        return out

    def ready(self, model: str) -> bool:
        try:
            return bool(self.client.is_model_ready(model))
        except Exception:
            return False

    def load(self, model: str) -> None:
        self._call(f"load {model}", self.client.load_model, model, headers=self.headers)

    def unload(self, model: str, wait: bool = True) -> None:
        self._call(f"unload {model}", self.client.unload_model, model, headers=self.headers)
        # Triton unloads asynchronously; wait so the next step sees the model gone.
        deadline = time.monotonic() + self.wait_s
        while wait and self.ready(model) and time.monotonic() < deadline:
            time.sleep(0.05)

    def infer(self, model: str, texts: Sequence[Sequence[str]], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """One request of ``(text[, text_pair])`` rows to ``model``: the served outputs a canary compares."""
        inputs = text_inputs(self.mod, [t[0] if t else "" for t in texts], [t[1] if len(t) > 1 else "" for t in texts])
        requested = [self.mod.InferRequestedOutput(o) for o in outputs]
        result = self._call(f"canary request to {model}", self.client.infer, model, inputs, outputs=requested)
        return {o: result.as_numpy(o) for o in outputs}

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        self._local = threading.local()
        for c in clients:
            try:
                c.close()
            except Exception:
                pass
