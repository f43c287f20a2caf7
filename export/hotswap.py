"""Hot-add, swap and remove task heads on a running Triton without touching the trunk.

Why heads are separate Triton models: a team can ship a new task, or a better
version of one, while every other task keeps answering and the trunk is never
reloaded. These functions make that one safe operation each, on a server in
explicit model-control mode (``server=ServerControl(url, ...)``) or offline on
the repository folder alone (``server=None``).

Every operation:

* holds the repository lock (``export.repo_lock``) from its first read to its
  last write, so two operations cannot interleave;
* validates the head artefact before anything touches the repository or the
  server (``inspect_head``): head.json (task name, labels), depth, hidden size
  and trunk fingerprint against the *deployed* trunk, the ONNX graph (checker,
  names, dtypes, dims incl. the hidden size, values against PyTorch on the
  deployed trunk's real outputs), and the artefact's canary run offline through
  the deployed trunk ONNX + the new head ONNX;
* exports into a staging folder *next to* the repository (a dot-folder inside
  it would be taken for a model by ``--load-model=*``) and moves folders in
  with ``rename``, so Triton never sees a half-written model;
* records an undo action for each step; on any failure the undo actions run in
  reverse (files moved back, models unloaded or reloaded, ``multitask``
  restored) and the error says what failed and what was rolled back.

Triton facts this relies on (checked on 2.51, see tests/test_hotswap_server.py):
loading an ensemble loads its composing models but reloads one only if its
folder changed (the pre-compiled shims keep the trunk's folder unchanged);
(re)loading ``head_<t>`` reloads the ensembles that depend on it, which keep
``model_version: -1`` and so pick up the newest version; with no
``version_policy`` in the config Triton serves ``latest { num_versions: 1 }``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from client.transport import is_connection_error
from trunkserve.artifacts import HeadArtifactError, HeadMeta, check_task_name, load_head, read_canary, read_meta, write_canary
from trunkserve.canary import CANARY_ATOL
from trunkserve.modules import HeadGraph
from trunkserve.specs import head_spec

from . import configs, quality
from .configs import LABELS_FILE, MODEL_FILES, PYTHON_ORT, TENSORRT, ServingOptions
from .deployed import DeployedTrunk, deployed_options, onnx_session
from .errors import GraphMismatchError, RepositoryError
from .repo_lock import RepositoryLock, RepositoryLocked  # noqa: F401  (re-exported)
from .repository import (
    MULTITASK,
    HeadEntry,
    TrunkInfo,
    check_head_fits,
    head_model_name,
    labels_of,
    read_head_entry,
    read_head_pair,
    scan_heads,
    write_head_model,
    write_multitask_ensemble,
    write_task_ensemble,
)
from .quantised import served_reference
from .validate import check_interface, compare_with_torch

#: Optional pre-exported head graph inside an artefact; validated and served instead of re-exporting.
HEAD_ONNX = "head.onnx"
ADMIN_KEY_ENV = "TRUNKSERVE_ADMIN_KEY"
ADMIN_HEADER_ENV = "TRUNKSERVE_ADMIN_HEADER"
DEFAULT_ADMIN_HEADER = "x-trunkserve-admin-key"
KEEP_VERSIONS = 3


# ---------------------------------------------------------------- errors


class HotswapError(RepositoryError):
    """A hot-swap operation failed; the deployment was rolled back (``rolled_back`` lists the steps undone)."""

    def __init__(self, message: str, rolled_back: Sequence[str] = ()):
        self.rolled_back = list(rolled_back)
        if self.rolled_back:
            message += "; rolled back: " + ", ".join(self.rolled_back)
        super().__init__(message)


class HeadRejected(HotswapError):
    """The head artefact failed validation; nothing was changed."""


class ServerUnavailable(HotswapError):
    """Triton could not be reached (or went away mid-operation)."""


class AccessDenied(HotswapError):
    """Triton refused the model-repository API: the admin key is missing or wrong."""


class AdminKeyMissing(AccessDenied):
    """The repository API is restricted and no admin key was given (neither --admin-key nor the environment)."""


class AdminKeyRefused(AccessDenied):
    """A key was sent and Triton refused it: a wrong key, or a header name the server does not check."""


class CanaryFailed(HotswapError):
    """The served head did not reproduce the artefact's reference outputs."""


# ---------------------------------------------------------------- server side


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

            self.client = mod.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            import tritonclient.grpc as mod

            self.client = mod.InferenceServerClient(url)
        self.mod = mod

    # every call goes through here so errors come out typed and say what was attempted
    def _call(self, what: str, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            text = str(exc)
            if "403" in text or "restricted" in text.lower() or "PERMISSION_DENIED" in text:
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
        inputs = []
        for i, name in enumerate(("text", "text_pair")):
            arr = np.array([(t[i] if len(t) > i else "").encode() for t in texts], dtype=object).reshape(-1, 1)
            x = self.mod.InferInput(name, list(arr.shape), "BYTES")
            x.set_data_from_numpy(arr)
            inputs.append(x)
        requested = [self.mod.InferRequestedOutput(o) for o in outputs]
        result = self._call(f"canary request to {model}", self.client.infer, model, inputs, outputs=requested)
        return {o: result.as_numpy(o) for o in outputs}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


# ---------------------------------------------------------------- validation


@dataclass
class InspectedHead:
    """A validated artefact, exported into ``staging/head_<task>/<version>/``."""

    meta: HeadMeta
    entry: HeadEntry
    canary: dict | None
    staged: Path  # the staged head model folder (``head_<task>``)
    version: str
    canary_diff: float | None = None
    notes: list[str] = field(default_factory=list)


def compare_canary(got: dict[str, np.ndarray], canary: dict, prefix: str = "") -> float:
    """Max abs difference between served outputs and the canary's reference; raises if over its atol."""
    atol = float(canary.get("atol", CANARY_ATOL))
    worst = 0.0
    for name, ref in canary["outputs"].items():
        ref = np.asarray(ref, dtype=np.float32)
        g = np.asarray(got[prefix + name], dtype=np.float32).reshape(ref.shape)
        diff = float(np.max(np.abs(g - ref))) if ref.size else 0.0
        if not np.isfinite(diff) or diff > atol:
            raise CanaryFailed(f"output {prefix + name} differs from the artefact's canary by {diff:.3e} > atol {atol:g}")
        worst = max(worst, diff)
    return worst


def inspect_head(
    head_dir: str | Path,
    repo: str | Path,
    staging: str | Path,
    version: str = "1",
    write_config: bool = True,
    trunk: DeployedTrunk | None = None,
) -> InspectedHead:
    """Validate an artefact against the deployed repository and export it into ``staging``.

    Raises ``HeadRejected`` saying what is wrong; ``staging`` is the only thing written.
    """
    head_dir, repo, staging = Path(head_dir), Path(repo), Path(staging)
    info = TrunkInfo.read(repo)
    try:
        head, meta = load_head(head_dir)  # head.json: task name, labels, task type; weights fit head.json
        check_head_fits(meta, info)  # depth exposed, hidden size, trunk fingerprint
    except (HeadArtifactError, RepositoryError) as exc:
        raise HeadRejected(f"{head_dir}: {exc}") from exc
    spec = head_spec(meta.task, meta.task_type, meta.num_labels, info.hidden_size)
    opts = deployed_options(repo)
    if opts.backend == TENSORRT:
        raise HeadRejected("hot-adding heads to a TensorRT repository is not supported (rebuild it with export build)")
    trunk = trunk or DeployedTrunk(repo)
    feeds = trunk.validation_feeds(meta.branch_layer)
    supplied = head_dir / HEAD_ONNX
    try:
        if supplied.exists():
            # a pre-exported graph: must pass the checker, match the trunk's interface and the weights' values
            compare_with_torch(supplied, spec, HeadGraph(head, served=False), feeds)
        write_head_model(staging, head_dir, info, opts, {meta.branch_layer: feeds}, version=version, write_config=write_config)
        onnx_path = staging / head_model_name(meta.task) / version / MODEL_FILES[PYTHON_ORT]
        if supplied.exists():
            shutil.copy2(supplied, onnx_path)
        check_interface(onnx_path, spec)  # dims incl. the deployed trunk's hidden size
    except (GraphMismatchError, HeadArtifactError) as exc:
        raise HeadRejected(f"{head_dir}: {exc}") from exc
    entry = HeadEntry(meta.task, meta.task_type, meta.num_labels, meta.branch_layer)
    out = InspectedHead(meta, entry, read_canary(head_dir), staging / head_model_name(meta.task), version)
    if out.canary is None:
        out.notes.append("no canary.json in the artefact: served outputs are not checked against a reference")
    else:
        sess = onnx_session(onnx_path)
        hf = trunk.texts_feeds(out.canary["texts"], meta.branch_layer)
        got = dict(zip(spec.output_names, sess.run(spec.output_names, hf)))
        try:
            out.canary_diff = compare_canary(got, out.canary)
        except CanaryFailed as exc:
            raise HeadRejected(f"{head_dir}: offline canary on the deployed trunk failed: {exc}") from exc
        if trunk.quantisation:
            # the server runs the quantised trunk: its checks compare against these graphs' own outputs
            served = trunk.texts_feeds(out.canary["texts"], meta.branch_layer, served=True)
            out.canary = served_reference(out.canary, dict(zip(spec.output_names, sess.run(spec.output_names, served))),
                                          trunk.quantisation)
            write_canary(out.staged / version, out.canary)
            out.notes.append(f"the deployed trunk is quantised ({trunk.quantisation}): the head was checked on its float32 "
                             "graph; the server's canary is the served graphs' own output")
    return out


# ---------------------------------------------------------------- transactions


class _Transaction:
    """Undo actions run in reverse on failure; each is best-effort and named for the error message."""

    def __init__(self):
        self.undo: list[tuple[str, Callable[[], None]]] = []

    def on_failure(self, name: str, fn: Callable[[], None]) -> None:
        self.undo.append((name, fn))

    def rollback(self) -> tuple[list[str], list[str]]:
        done, failed = [], []
        for name, fn in reversed(self.undo):
            try:
                fn()
                done.append(name)
            except Exception as exc:  # keep undoing the rest
                failed.append(f"{name} ({exc})")
        self.undo.clear()
        return done, failed


def _fail(exc: BaseException, tx: _Transaction, step: str) -> HotswapError:
    done, failed = tx.rollback()
    cls = type(exc) if isinstance(exc, HotswapError) else HotswapError
    msg = f"{step} failed: {exc}"
    if failed:
        msg += "; COULD NOT UNDO: " + ", ".join(failed) + " (fix by hand, then run list-heads)"
    return cls(msg, done)


def _staging_dir(repo: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{repo.name}.hotswap-", dir=repo.parent))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _restore(folder: Path, snap: dict[str, bytes]) -> None:
    for p in folder.iterdir():
        if p.is_file() and p.name not in snap:
            p.unlink()
    for name, data in sorted(snap.items(), key=lambda kv: kv[0] == "config.pbtxt"):  # config last
        tmp = folder / f".{name}.restore"
        tmp.write_bytes(data)
        tmp.replace(folder / name)


def versions_of(repo: Path, task: str) -> list[int]:
    folder = Path(repo) / head_model_name(task)
    return sorted(int(d.name) for d in folder.iterdir() if d.is_dir() and d.name.isdigit()) if folder.exists() else []


@dataclass
class Result:
    """What an operation did, for the CLI and the tests."""

    action: str
    task: str
    version: int | None = None
    online: bool = False
    canary_diff: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    quality: str = ""  # the head's recorded scores and quality gate (``export.quality.describe``)

    def __str__(self) -> str:
        where = "on the server and in the repository" if self.online else "in the repository (offline)"
        v = f" version {self.version}" if self.version is not None else ""
        c = f"; canary max abs diff {self.canary_diff:.2e}" if self.canary_diff is not None else ""
        q = f"\n{self.quality}" if self.quality else ""
        n = "".join(f"\nnote: {x}" for x in self.notes)
        return f"{self.action} {self.task}{v}: done {where} in {self.seconds:.1f}s{c}{q}{n}"


def _served_canary(server: ServerControl, model: str, canary: dict | None, prefix: str = "") -> float | None:
    if canary is None:
        return None
    outputs = [prefix + n for n in canary["outputs"]]
    return compare_canary(server.infer(model, canary["texts"], outputs), canary, prefix)


def _multitask_canary(server, repo, entry, canary):
    # only when the multitask ensemble is actually loaded
    return _served_canary(server, MULTITASK, canary, f"{entry.task}_") if server.ready(MULTITASK) else None


# ---------------------------------------------------------------- operations


def add_head(
    head_dir: str | Path,
    repo: str | Path,
    server: ServerControl | None = None,
    lock_timeout_s: float = 120.0,
    force: bool = False,
) -> Result:
    """Ship a new task: validate, stage, move in, load head then ensemble, canary, then ``multitask``.

    On a failure at any step everything done so far is undone (files and
    loaded models), so the deployment is exactly as before. A head whose
    training failed its quality gate is refused unless ``force``.
    """
    t0 = time.monotonic()
    repo = Path(repo).resolve()
    if server is not None:
        server.check()  # unreachable or wrong key: fail before touching anything
    meta = _read_meta(head_dir)
    forced = _check_gate(head_dir, meta, force)
    task = meta.task
    head_name = head_model_name(task)
    with RepositoryLock(repo, f"add-head {task}", lock_timeout_s):
        if (repo / head_name).exists() or (repo / task).exists():
            raise HeadRejected(f"task {task!r} is already deployed ({repo / head_name}); use swap-head for a new version")
        if server is not None:
            states = server.states()
            if head_name in states or task in states:
                raise HeadRejected(f"task {task!r}: the server already knows a model {head_name!r} or {task!r}")
        staging = _staging_dir(repo)
        try:
            insp = inspect_head(head_dir, repo, staging)
            opts = deployed_options(repo)
            write_task_ensemble(staging, insp.entry, insp.meta.labels, opts)
            tx = _Transaction()
            step = "moving the head into the repository"
            try:
                _move_in(staging, repo, head_name, tx)
                _move_in(staging, repo, task, tx)
                if server is not None:
                    step = f"loading {head_name}"
                    tx.on_failure(f"unload {head_name}", lambda: server.unload(head_name))
                    server.load(head_name)
                    step = f"loading ensemble {task}"
                    tx.on_failure(f"unload {task}", lambda: server.unload(task))
                    server.load(task)
                    step = f"canary through {task}"
                    diff = _served_canary(server, task, insp.canary)
                    insp.canary_diff = diff if diff is not None else insp.canary_diff
                step = "rewriting multitask"
                _rewrite_multitask(repo, opts, server, tx)
                if server is not None:
                    step = "canary through multitask"
                    _multitask_canary(server, repo, insp.entry, insp.canary)
            except Exception as exc:
                raise _fail(exc, tx, step) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Result("add-head", task, 1, server is not None, insp.canary_diff, time.monotonic() - t0,
                  forced + insp.notes, quality.describe(meta))


def _read_meta(head_dir) -> HeadMeta:
    """head.json alone (task name legal, labels present), before anything heavier runs."""
    try:
        return read_meta(head_dir)
    except HeadArtifactError as exc:
        raise HeadRejected(f"{head_dir}: {exc}") from exc


def _check_gate(head_dir, meta: HeadMeta, force: bool) -> list[str]:
    """Refuse a head that failed its training's quality gate (unless ``force``), before anything changes."""
    try:
        note = quality.check_gate(meta, force)
    except quality.FailedQualityGate as exc:
        raise HeadRejected(f"{head_dir}: {exc}") from exc
    return [note] if note else []


def _check_name(task: str) -> str:
    try:
        return check_task_name(task)
    except HeadArtifactError as exc:
        raise HotswapError(str(exc)) from exc


def _move_in(staging: Path, repo: Path, name: str, tx: _Transaction) -> None:
    """``rename`` a staged model folder into the repository (atomic: Triton sees all of it or nothing)."""
    src, dst = staging / name, repo / name
    if dst.exists():
        raise HeadRejected(f"{dst} already exists")
    os.rename(src, dst)
    tx.on_failure(f"remove {name}/ from the repository", lambda: _move_out(dst, src))


def _move_out(path: Path, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    if to.exists():
        shutil.rmtree(to)
    os.rename(path, to)


def _rewrite_multitask(repo: Path, opts: ServingOptions, server: ServerControl | None, tx: _Transaction,
                       entries: Sequence[HeadEntry] | None = None) -> None:
    """Regenerate ``multitask`` (atomic config write) and reload it; undo restores and reloads the old one."""
    folder = repo / MULTITASK
    snap = _snapshot(folder)

    def undo():
        _restore(folder, snap)
        if server is not None:
            server.load(MULTITASK)

    tx.on_failure("restore multitask", undo)
    entries = scan_heads(repo) if entries is None else list(entries)
    write_multitask_ensemble(repo, opts, entries)
    keep = {f"{e.task}_{LABELS_FILE}" for e in entries}
    for stale in folder.glob(f"*_{LABELS_FILE}"):  # a removed task's label file
        if stale.name not in keep:
            stale.unlink()
    if server is not None:
        server.load(MULTITASK)


def swap_head(
    head_dir: str | Path,
    repo: str | Path,
    server: ServerControl | None = None,
    lock_timeout_s: float = 120.0,
    keep: int = KEEP_VERSIONS,
    force: bool = False,
) -> Result:
    """A new version of a deployed task: ``head_<task>/<N+1>/``, canary, keep older versions for rollback.

    The artefact is checked offline on the deployed trunk (its canary included)
    before the version folder enters the repository; after Triton loads it
    (the version policy serves the newest; the dependent ensembles reload
    themselves) the canary runs through the served ``<task>`` ensemble, and a
    mismatch takes the new version out again. A version whose training failed
    its quality gate is refused unless ``force``.
    """
    t0 = time.monotonic()
    repo = Path(repo).resolve()
    if server is not None:
        server.check()
    meta = _read_meta(head_dir)
    forced = _check_gate(head_dir, meta, force)
    task = meta.task
    with RepositoryLock(repo, f"swap-head {task}", lock_timeout_s):
        staging = _staging_dir(repo)
        try:
            if not (repo / head_model_name(task) / "config.pbtxt").exists():
                raise HeadRejected(f"task {task!r} is not deployed in {repo}; use add-head")
            old = versions_of(repo, task)
            new = (old[-1] if old else 0) + 1
            insp = inspect_head(head_dir, repo, staging, version=str(new), write_config=False)
            deployed = read_head_entry(repo, task)
            mismatch = [
                f"{k} {getattr(deployed, k)!r} -> {getattr(insp.entry, k)!r}"
                for k in ("task_type", "num_labels", "branch_layer")
                if getattr(deployed, k) != getattr(insp.entry, k)
            ]
            if insp.meta.labels != labels_of(repo, task):
                mismatch.append(f"labels {labels_of(repo, task)} -> {insp.meta.labels}")
            pair = read_head_pair(repo, task)  # the config (kept on a swap) tells clients whether to send text pairs
            if None not in (pair, insp.meta.pair) and pair != insp.meta.pair:
                mismatch.append(f"pair {pair} -> {insp.meta.pair}")
            if mismatch:
                raise HeadRejected(
                    f"task {task!r}: a new version must keep the interface the ensembles route to ({'; '.join(mismatch)}); "
                    "remove-head then add-head to change it"
                )
            head_name = head_model_name(task)
            tx = _Transaction()
            step = f"moving version {new} into {head_name}"
            try:
                src, dst = staging / head_name / str(new), repo / head_name / str(new)
                os.rename(src, dst)

                def undo_version():
                    _move_out(dst, src)
                    if server is not None:
                        server.load(head_name)  # back to the previous newest version

                tx.on_failure(f"remove {head_name}/{new} and reload version {old[-1] if old else '?'}", undo_version)
                if server is not None:
                    step = f"loading {head_name} version {new}"
                    server.load(head_name)
                    step = f"canary through {task}"
                    if server.ready(task):
                        diff = _served_canary(server, task, insp.canary)
                        insp.canary_diff = diff if diff is not None else insp.canary_diff
                    _multitask_canary(server, repo, insp.entry, insp.canary)
            except Exception as exc:
                raise _fail(exc, tx, step) from exc
            pruned = _prune(repo, task, keep)
            if pruned:
                insp.notes.append(f"pruned old versions {pruned} (keeping {keep})")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Result("swap-head", task, new, server is not None, insp.canary_diff, time.monotonic() - t0,
                  forced + insp.notes, quality.describe(meta))


def _prune(repo: Path, task: str, keep: int) -> list[int]:
    vs = versions_of(repo, task)
    drop = vs[: max(0, len(vs) - max(keep, 2))]
    for v in drop:
        shutil.rmtree(repo / head_model_name(task) / str(v), ignore_errors=True)
    return drop


def rollback_head(
    task: str, repo: str | Path, server: ServerControl | None = None, lock_timeout_s: float = 120.0
) -> Result:
    """Undo the last swap: take the newest version folder out, reload, canary the previous version."""
    t0 = time.monotonic()
    repo = Path(repo).resolve()
    if server is not None:
        server.check()
    _check_name(task)
    with RepositoryLock(repo, f"swap-head --rollback {task}", lock_timeout_s):
        vs = versions_of(repo, task)
        if len(vs) < 2:
            raise HotswapError(f"task {task!r} has versions {vs} on disk: nothing to roll back to")
        head_name = head_model_name(task)
        newest, previous = vs[-1], vs[-2]
        staging = _staging_dir(repo)
        tx = _Transaction()
        step = f"moving version {newest} out of {head_name}"
        canary = read_canary(repo / head_name / str(previous))
        diff = None
        try:
            try:
                src, aside = repo / head_name / str(newest), staging / str(newest)
                os.rename(src, aside)

                def undo_move():
                    os.rename(aside, src)
                    if server is not None:
                        server.load(head_name)

                tx.on_failure(f"restore {head_name}/{newest} and reload it", undo_move)
                if server is not None:
                    step = f"reloading {head_name} at version {previous}"
                    server.load(head_name)
                    step = f"canary through {task}"
                    if server.ready(task):
                        diff = _served_canary(server, task, canary)
            except Exception as exc:
                raise _fail(exc, tx, step) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Result("swap-head --rollback", task, previous, server is not None, diff, time.monotonic() - t0,
                  quality=_version_quality(repo / head_name / str(previous)))


def _version_quality(version_dir: Path) -> str:
    """The recorded scores of a deployed version (its copied head.json), or "" where it cannot be read."""
    try:
        return quality.describe(read_meta(version_dir))
    except HeadArtifactError:
        return ""


def remove_head(
    task: str, repo: str | Path, server: ServerControl | None = None, lock_timeout_s: float = 120.0
) -> Result:
    """Take a task out: ``multitask`` first (so no request is routed to it), then its ensemble, then the head."""
    t0 = time.monotonic()
    repo = Path(repo).resolve()
    if server is not None:
        server.check()
    _check_name(task)
    with RepositoryLock(repo, f"remove-head {task}", lock_timeout_s):
        head_name = head_model_name(task)
        if not (repo / head_name / "config.pbtxt").exists():
            raise HotswapError(f"task {task!r} is not deployed in {repo}")
        remaining = [e for e in scan_heads(repo) if e.task != task]
        if not remaining:
            raise HotswapError(f"{task!r} is the last head: the multitask ensemble needs at least one")
        opts = deployed_options(repo)
        staging = _staging_dir(repo)
        tx = _Transaction()
        step = "rewriting multitask without it"
        try:
            try:
                _rewrite_multitask(repo, opts, server, tx, remaining)
                for name in (task, head_name):
                    if server is not None and server.ready(name):
                        step = f"unloading {name}"
                        tx.on_failure(f"reload {name}", lambda n=name: server.load(n))
                        server.unload(name)
                for name in (task, head_name):
                    if (repo / name).exists():
                        step = f"moving {name}/ out of the repository"
                        src, aside = repo / name, staging / name
                        os.rename(src, aside)
                        tx.on_failure(f"restore {name}/", lambda s=src, a=aside: os.rename(a, s))
            except Exception as exc:
                raise _fail(exc, tx, step) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Result("remove-head", task, None, server is not None, None, time.monotonic() - t0)


def list_heads(repo: str | Path, server: ServerControl | None = None) -> list[dict]:
    """Heads on disk (versions, the one served) and, with a server, each model's state there."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"no model repository at {repo}")
    states = server.states() if server is not None else {}
    rows = []
    for e in scan_heads(repo):
        vs = versions_of(repo, e.task)
        row = {
            "task": e.task,
            "task_type": e.task_type,
            "num_labels": e.num_labels,
            "branch_layer": e.branch_layer,
            "versions": vs,
            "serving_version": vs[-1] if vs else None,
            "in_multitask": _in_multitask(repo, e.task),
        }
        if server is not None:
            row["head_state"] = states.get(head_model_name(e.task), "not loaded")
            row["ensemble_state"] = states.get(e.task, "not loaded")
        rows.append(row)
    return rows


def _in_multitask(repo: Path, task: str) -> bool:
    try:
        cfg = configs.read_config(repo / MULTITASK)
    except OSError:
        return False
    return any(s.model_name == head_model_name(task) for s in cfg.ensemble_scheduling.step)


__all__ = [
    "ADMIN_KEY_ENV",
    "AccessDenied",
    "AdminKeyMissing",
    "AdminKeyRefused",
    "CanaryFailed",
    "DeployedTrunk",
    "HeadRejected",
    "HotswapError",
    "RepositoryLocked",
    "Result",
    "ServerControl",
    "ServerUnavailable",
    "add_head",
    "inspect_head",
    "list_heads",
    "remove_head",
    "rollback_head",
    "swap_head",
]
