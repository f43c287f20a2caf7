"""Many Triton replicas on one shared repository, driven as one server: ``FleetControl`` has ``ServerControl``'s interface.

Why one object with the single server's interface: the hot-swap operations
(``export.hotswap``) already validate once, write the repository once under
the lock and record an undo for every load; fanning each call out to every
replica keeps that one code path, and the undo log then undoes on every
replica. What a fleet adds is kept here: unreachable replicas refused (or
skipped) before anything changes, a failure on one replica turning every later
call into undo, canary answers compared across replicas, and a per-replica log
for the report.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from trunkserve.deployment.layout import MULTITASK

from .admin import ServerControl
from .errors import HotswapError, ServerUnavailable
from .replica_urls import is_fleet, replica_urls

#: Largest difference allowed between two replicas' canary answers: they run the same files, so they agree far
#: more closely than any answer agrees with the artefact's reference (whose tolerance the canary applies once).
AGREE_ATOL = 1e-4


class ReplicasUnreachable(ServerUnavailable):
    """Replicas could not be reached when the operation started; nothing was changed."""


class ReplicasDisagree(HotswapError):
    """A replica's canary answer differs from the first replica's: the fleet does not serve one model."""


@dataclass
class Event:
    """One call on one replica: ``phase`` is ``change`` until the operation fails, ``undo`` after."""

    phase: str
    action: str  # load | unload | canary
    model: str
    ok: bool
    detail: str = ""


@dataclass
class Replica:
    """One replica, its state in the operation (active | skipped | lost) and what was done there."""

    server: ServerControl
    status: str = "active"
    events: list[Event] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def done(self, phase: str, action: str) -> list[str]:
        return [e.model for e in self.events if e.phase == phase and e.action == action and e.ok]

    def row(self, failed: bool) -> dict:
        """This replica's line of the report: what it loaded, canaried, whether it switched, what was undone."""
        undone = [f"{e.action} {e.model}" for e in self.events if e.phase == "undo" and e.ok]
        errors = [e.detail for e in self.events if not e.ok]
        changed = any(e.phase == "change" and e.action in ("load", "unload") and e.ok for e in self.events)
        if self.status != "active":
            status = self.status
        elif failed:
            status = "rolled back" if changed else "unchanged"  # an undo where nothing had changed is a no-op
        else:
            status = "switched"
        return {"replica": self.url, "status": status, "loaded": self.done("change", "load"),
                "unloaded": self.done("change", "unload"), "canary": self.done("change", "canary"),
                "switched": MULTITASK in self.done("change", "load") or (status == "switched" and changed),
                "rolled_back": undone, "errors": errors}


class FleetControl:
    """Every replica's repository API as one ``ServerControl``: each call on every active replica at once.

    ``check`` reaches every replica first: unreachable ones raise
    ``ReplicasUnreachable`` before anything changes, or are skipped (and
    reported) with ``skip_unreachable``; they load the repository's state when
    they start. A failure on one replica is raised at once (named); from then on
    the calls are the undo log's: made on every replica still reachable, a lost
    replica left to reload the restored repository when it restarts.
    """

    def __init__(self, servers: Sequence[ServerControl], skip_unreachable: bool = False, agree_atol: float = AGREE_ATOL):
        if not servers:
            raise HotswapError("a fleet needs at least one replica")
        self.replicas = [Replica(s) for s in servers]
        self.skip_unreachable, self.agree_atol = skip_unreachable, agree_atol
        self.phase, self.failure = "change", ""
        self.url = ", ".join(r.url for r in self.replicas)
        self.protocol = servers[0].protocol
        self._workers: dict[str, ThreadPoolExecutor] = {}

    def active(self) -> list[Replica]:
        return [r for r in self.replicas if r.status == "active"]

    # ---------------------------------------------------------------- before anything changes

    def check(self) -> None:
        """Every replica reachable, its key accepted and in explicit mode (``ServerControl.check``), or refuse.

        An operation starts here, so the log starts afresh: every replica (one lost before included) is asked again."""
        self.phase, self.failure = "change", ""
        for r in self.replicas:
            r.status, r.events = "active", []
        self._reach(lambda s: s.check())

    def reach(self) -> None:
        """Every replica reachable and its index readable (what ``list-heads`` needs; any control mode)."""
        self._reach(lambda s: s.index())

    def _reach(self, probe: Callable[[ServerControl], object]) -> None:
        down = []
        for r in self.active():
            try:
                probe(r.server)
            except ServerUnavailable as exc:
                down.append((r, exc))
            except HotswapError as exc:
                raise type(exc)(f"replica {r.url}: {exc}") from exc
        if down and not self.skip_unreachable:
            said = "; ".join(f"{r.url} ({exc})" for r, exc in down)
            raise ReplicasUnreachable(f"{len(down)} of {len(self.replicas)} replicas cannot be reached, so nothing was "
                                      f"changed: {said}; --skip-unreachable goes on without them (a replica that "
                                      "starts later loads the repository's state)")
        for r, exc in down:
            r.status = "skipped"
            r.events.append(Event("check", "reach", "", False, f"unreachable at the start ({exc})"))
        if not self.active():
            raise ReplicasUnreachable(f"none of the {len(self.replicas)} replicas can be reached")

    # ---------------------------------------------------------------- the calls the operations make

    def rolling_back(self, step: str, exc: BaseException) -> None:
        """The operation failed at ``step`` (here or elsewhere): what follows is undo (``Operation.changing`` says so)."""
        if self.phase == "change":
            self.phase, self.failure = "undo", f"{step}: {exc}"

    def _each(self, action: str, model: str, call: Callable[[ServerControl], object]) -> list[tuple[Replica, object]]:
        """``call`` on every active replica at once, logged in replica order; while changing, any failure raises
        (the first replica's, named) once every call has returned, so the undo log sees each replica's state;
        while undoing, every replica is tried and a lost one is left to restart from the repository.

        Why at once: a step's loads and canaries are the slow part of a fleet operation, and the replicas are
        separate machines; the steps stay in order, so no replica switches before every one has passed."""
        active, phase = self.active(), self.phase
        outcomes = _fan_out(call, [r.server for r in active], [self._worker(r) for r in active])
        out, failed, first = [], [], None
        for r, (ok, value) in zip(active, outcomes):
            if ok:
                r.events.append(Event(phase, action, model, True))
                out.append((r, value))
                continue
            r.events.append(Event(phase, action, model, False, str(value)))
            if isinstance(value, ServerUnavailable):
                r.status = "lost"
            if phase == "change":
                first = first or (r, value)
            elif r.status != "lost":
                failed.append(f"{r.url}: {value}")
        if first:
            r, exc = first
            self.rolling_back(f"replica {r.url}", exc)
            raise type(exc)(f"replica {r.url}: {exc}") from exc
        if failed:
            raise HotswapError(f"{action} {model} failed on {len(failed)} replica(s): " + "; ".join(failed))
        return out

    def load(self, model: str) -> None:
        self._each("load", model, lambda s: s.load(model))

    def unload(self, model: str, wait: bool = True) -> None:
        self._each("unload", model, lambda s: s.unload(model, wait))

    def ready(self, model: str) -> bool:
        """Ready on *any* active replica: the operations ask "is it in service", and then act on every replica
        (an unload is a no-op where it was not loaded; a canary fails where it is not ready, and rolls back)."""
        return any(r.server.ready(model) for r in self.active())

    def infer(self, model: str, texts, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Every replica answers; one differing from the first raises ``ReplicasDisagree``; the first's answer
        goes to the canary comparison, which so covers the fleet."""
        answers = self._each("canary", model, lambda s: s.infer(model, texts, outputs))
        (first, ref), rest = answers[0], answers[1:]
        for r, got in rest:
            diff = max((_max_diff(got[o], ref[o]) for o in outputs), default=0.0)
            if not np.isfinite(diff) or diff > self.agree_atol:
                r.events[-1] = Event(self.phase, "canary", model, False, f"differs from {first.url} by {diff:.2e}")
                err = ReplicasDisagree(f"canary through {model}: replica {r.url} answers differently from {first.url} "
                                       f"(max abs diff {diff:.2e} > {self.agree_atol:g})")
                self.rolling_back(f"canary through {model}", err)
                raise err
        return ref

    # ---------------------------------------------------------------- what the replicas serve

    def index(self) -> list[dict]:
        return [m | {"replica": r.url} for r in self.active() for m in r.server.index()]

    def replica_states(self) -> dict[str, list[dict]]:
        """Each active replica's repository index (name, version, state), for ``list-heads``."""
        return {r.url: r.server.index() for r in self.active()}

    def states(self) -> dict[str, str]:
        """Model -> its state where every replica agrees, else e.g. ``READY on 2/3`` (drift)."""
        per = [r.server.states() for r in self.active()]
        n, out = len(per), {}
        for name in sorted({m for s in per for m in s}):
            seen = Counter(s.get(name, "not loaded") for s in per)
            if len(seen) == 1:
                out[name] = next(iter(seen))
            else:
                state = "READY" if "READY" in seen else seen.most_common(1)[0][0]
                out[name] = f"{state} on {seen[state]}/{n}"
        return out

    # ---------------------------------------------------------------- the report

    def report(self, error: BaseException | None = None) -> list[dict]:
        failed = error is not None or self.phase == "undo"
        return [r.row(failed) for r in self.replicas]

    def summary(self, error: BaseException | None = None) -> str:
        rows = self.report(error)
        counts = Counter(r["status"] for r in rows)
        said = ", ".join(f"{k} {v}" for k, v in counts.items())
        if error is None and self.phase == "change":
            return f"fleet: {len(rows)} replicas ({said})"
        where = self.failure or str(error)
        return f"fleet: {len(rows)} replicas ({said}); failed at {where}"

    def _worker(self, replica: Replica) -> ThreadPoolExecutor:
        """One thread per replica for the fleet's lifetime, so each replica's calls use one client (``client``)."""
        if replica.url not in self._workers:
            self._workers[replica.url] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"replica-{replica.url}")
        return self._workers[replica.url]

    def close(self) -> None:
        for r in self.replicas:
            w = self._workers.pop(r.url, None)
            if w is not None:
                w.submit(r.server.close).result()  # the worker's own client, closed in its thread
                w.shutdown()
            r.server.close()


def _max_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind in "OSU":  # text outputs (labels): equal or not
        return 0.0 if np.array_equal(a, b) else float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def connect(urls: Sequence[str] = (), urls_file=None, protocol: str = "http", admin_key: str | None = None,
            admin_header: str | None = None, wait_s: float = 60.0,
            skip_unreachable: bool = False) -> ServerControl | FleetControl | None:
    """The server an operation drives: none (repository only), one ``ServerControl``, or a ``FleetControl``
    when a set of replicas is named (several ``urls``, ``urls_file``, a ``dns://`` name, ``skip_unreachable``)."""
    urls = list(urls)
    if not urls and urls_file is None:
        return None
    found = replica_urls(urls, urls_file)
    servers = [ServerControl(u, protocol, admin_key, admin_header, wait_s=wait_s) for u in found]
    if not (skip_unreachable or is_fleet(urls, urls_file)):
        return servers[0]
    return FleetControl(servers, skip_unreachable=skip_unreachable)


def _fan_out(call: Callable[[ServerControl], object], servers: Sequence[ServerControl],
             workers: Sequence[ThreadPoolExecutor]) -> list[tuple[bool, object]]:
    """``call`` on each server in its own worker thread: (True, result) or (False, the ``HotswapError`` it raised)."""
    def one(server: ServerControl) -> tuple[bool, object]:
        try:
            return True, call(server)
        except HotswapError as exc:
            return False, exc

    futures = [w.submit(one, s) for s, w in zip(servers, workers)]
    return [f.result() for f in futures]
