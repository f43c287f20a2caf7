"""The client library: text in, labels / probabilities / scores out, with clear errors.

A served task ``<t>`` is an ensemble ``<t>`` (tokenizer -> trunk -> head_<t>);
``multitask`` runs one trunk pass and every head. Label names come from Triton's
classification extension (the ``label_filename`` of the ``probabilities``
outputs), so the client needs no copy of the labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .transport import Transport, is_connection_error

MULTITASK = "multitask"
#: The server's name for a task's head model (``trunkserve.specs.head_model_name``). A copy, not an import: the
#: client ships without trunkserve (docker/Dockerfile.locust); tests/unit/test_architecture.py holds the two equal.
HEAD_PREFIX = "head_"


def head_model_name(task: str) -> str:
    return f"{HEAD_PREFIX}{task}"


class ClientError(RuntimeError):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InvalidInput(ClientError):
    exit_code = 2


class ServerUnreachable(ClientError):
    exit_code = 3


class UnknownTask(ClientError):
    exit_code = 4


class ServerError(ClientError):
    exit_code = 5


@dataclass
class _TaskOutputs:
    """How to ask for and read one task's outputs inside an ensemble (prefix '' or '<task>_')."""

    task: str
    prefix: str
    num_labels: int  # 0 for regression

    def requested(self) -> list[tuple[str, int]]:
        if self.num_labels == 0:
            return [(f"{self.prefix}score", 0)]
        return [(f"{self.prefix}logits", 0), (f"{self.prefix}probabilities", self.num_labels)]

    def read(self, result, row: int) -> dict:
        if self.num_labels == 0:
            return {"score": float(result.as_numpy(f"{self.prefix}score")[row][0])}
        logits = result.as_numpy(f"{self.prefix}logits")[row]
        labels = [""] * self.num_labels
        probs = [0.0] * self.num_labels
        for entry in result.as_numpy(f"{self.prefix}probabilities")[row]:
            value, index, label = entry.decode().split(":", 2)
            labels[int(index)], probs[int(index)] = label, float(value)
        best = int(np.argmax(probs))
        return {
            "label": labels[best],
            "probabilities": dict(zip(labels, probs)),
            "logits": [float(x) for x in logits],
        }


#: The head config's parameter that says whether the head was trained on text pairs ("true"/"false").
PAIR_PARAMETER = "pair"


def trained_on_pairs(parameters: Mapping[str, str]) -> bool | None:
    """What a head's config says about pairs: True, False, or None (heads exported before it was recorded)."""
    return {"true": True, "false": False}.get(parameters.get(PAIR_PARAMETER, "").strip().lower())


def _status(exc: BaseException) -> str:
    """tritonclient's status of a failed call ("400" over HTTP, "StatusCode.INVALID_ARGUMENT" over gRPC), or ""."""
    status = getattr(exc, "status", None)
    return str(status() or "") if callable(status) else ""


class TrunkserveClient:
    """``infer(task, texts, pairs)`` against a running trunkserve deployment."""

    def __init__(self, url: str | None = None, protocol: str = "http", timeout_s: float = 30.0):
        try:
            self.transport = Transport(protocol, url, timeout_s)
        except ValueError as exc:  # a malformed URL or protocol, said before any call
            raise InvalidInput(str(exc)) from exc
        self._layouts: dict[str, list[_TaskOutputs]] = {}

    @property
    def url(self) -> str:
        return self.transport.url

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except ClientError:
            raise
        except Exception as exc:
            if _status(exc) in ("400", "StatusCode.INVALID_ARGUMENT"):  # the server says the input is bad
                raise InvalidInput(str(exc)) from exc
            if is_connection_error(exc):
                raise ServerUnreachable(
                    f"cannot reach Triton at {self.url} over {self.transport.protocol}: is tritonserver running? ({exc})"
                ) from exc
            raise ServerError(str(exc)) from exc

    def tasks(self) -> list[str]:
        """Served tasks: ensembles whose ``head_<task>`` is ready, plus ``multitask`` if ready."""
        ready = set(self._call(self.transport.ready_models))
        tasks = sorted(m for m in ready if head_model_name(m) in ready)
        return tasks + ([MULTITASK] if MULTITASK in ready else [])

    def head_trained_on_pairs(self, task: str) -> bool | None:
        """Whether ``head_<task>`` was trained on text pairs, from its served config; None when unknown.

        Why it never raises: it only decides a warning, so a server that cannot say
        (an older head, a restricted config API, an unknown task) must not fail the call.
        ``multitask`` has no head of its own: None.
        """
        if task == MULTITASK:
            return None
        try:
            return trained_on_pairs(self.transport.model_parameters(head_model_name(task)))
        except Exception:
            return None

    def _layout(self, task: str) -> list[_TaskOutputs]:
        if task in self._layouts:
            return self._layouts[task]
        served = self.tasks()
        if task not in served:
            raise UnknownTask(f"unknown task {task!r}; served tasks: {', '.join(served) or '(none)'}")
        shapes = self._call(self.transport.output_shapes, task)
        layout = []
        names = [n for n in shapes if n.endswith(("probabilities", "score"))]
        for name in sorted(names):
            stem = name[: -len("probabilities")] if name.endswith("probabilities") else name[: -len("score")]
            sub = stem[:-1] if stem.endswith("_") else task
            n = 0 if name.endswith("score") else shapes[name][-1]
            layout.append(_TaskOutputs(sub, stem, n))
        self._layouts[task] = layout
        return layout

    def infer(self, task: str, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """One request with all ``texts``; a result per text (``results`` per task for ``multitask``)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise InvalidInput("no text given")
        pairs = list(pairs) if pairs is not None else [""] * len(texts)
        if len(pairs) != len(texts):
            raise InvalidInput(f"{len(texts)} texts but {len(pairs)} pair texts")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InvalidInput(f"text {i + 1} of {len(texts)} is empty")
        layout = self._layout(task)
        inputs = {
            "text": np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1),
            "text_pair": np.array([p.encode() for p in pairs], dtype=object).reshape(-1, 1),
        }
        requested = [r for t in layout for r in t.requested()] + [("truncated", 0)]
        start = time.perf_counter()
        result = self._call(self.transport.infer, task, inputs, requested)
        latency_ms = (time.perf_counter() - start) * 1000.0
        truncated = result.as_numpy("truncated").reshape(-1)
        out = []
        for row, (text, pair) in enumerate(zip(texts, pairs)):
            item: dict = {"task": task, "text": text}
            if pair:
                item["text_pair"] = pair
            if task == MULTITASK:
                item["results"] = {t.task: t.read(result, row) for t in layout}
            else:
                item.update(layout[0].read(result, row))
            item["truncated"] = bool(truncated[row])
            item["latency_ms"] = round(latency_ms, 3)
            out.append(item)
        return out

    def close(self) -> None:
        self.transport.close()
