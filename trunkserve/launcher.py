"""The ``tritonserver`` command on a machine without the NGC image.

The PyPI wheel ``nvidia-pytriton`` ships a real ``tritonserver`` binary (Python
backend only) and one Python-backend stub per Python version, but not laid out
as Triton expects. This launcher:

1. gets out of the way where a system Triton exists (``$TRITONSERVER_BIN`` or
   ``/opt/tritonserver/bin/tritonserver``, as in the NGC container): it execs it
   with the arguments untouched;
2. otherwise prepares a backend directory (``python/`` with ``libtriton_python.so``,
   the utils module and the stub for *this* Python), checks the stub's shared
   libraries (the system ``libpython3.X.so.1.0``) and says how to install them;
3. puts this environment's ``bin/`` first on ``PATH`` (the stub's embedded Python
   imports from the first ``python3`` there) and the wheel's libraries on
   ``LD_LIBRARY_PATH``, then execs the binary with every argument passed through
   (``--backend-directory`` is added unless given).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SYSTEM_TRITON = Path("/opt/tritonserver/bin/tritonserver")
ENV_BIN = "TRITONSERVER_BIN"


class LauncherError(RuntimeError):
    """The bundled Triton cannot be started here; the message says what to install."""


def system_triton() -> Path | None:
    """A Triton installed outside this environment, if any."""
    if os.environ.get(ENV_BIN):
        return Path(os.environ[ENV_BIN])
    return SYSTEM_TRITON if SYSTEM_TRITON.exists() else None


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise LauncherError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0") from exc
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise LauncherError(f"{root}: no bin/tritonserver in the nvidia-pytriton wheel")
    return root


def libs_dir() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def backend_dir(cache: Path | None = None) -> Path:
    """A backend directory for this Python, made once per environment (``<venv>/var/trunkserve``)."""
    root = pytriton_root()
    stub = root / "python_backend_stubs" / python_tag() / "triton_python_backend_stub"
    if not stub.exists():
        raise LauncherError(f"nvidia-pytriton has no Python-backend stub for Python {python_tag()}")
    target = (cache or Path(sys.prefix) / "var" / "trunkserve" / "backends") / "python"
    target.mkdir(parents=True, exist_ok=True)
    sources = [stub, *(root / "backends" / "python").glob("*.so"), *(root / "backends" / "python").glob("*.py")]
    for src in sources:
        dst = target / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size or dst.stat().st_mtime < src.stat().st_mtime:
            shutil.copy2(src, dst)
    return target.parent


def missing_libraries(binary: Path, env: dict) -> list[str]:
    """Shared libraries ``ldd`` cannot find for ``binary`` (empty when all resolve)."""
    try:
        out = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def server_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(libs_dir()), env.get("LD_LIBRARY_PATH", "")] if p)
    return env


def _given(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(f"{flag}=") for a in args)


def command(argv: list[str]) -> tuple[list[str], dict]:
    """The command and environment that start the server with ``argv``."""
    system = system_triton()
    if system is not None:
        return [str(system), *argv], dict(os.environ)
    root = pytriton_root()
    env = server_env()
    backends = backend_dir()
    stub = backends / "python" / "triton_python_backend_stub"
    for binary in (root / "bin" / "tritonserver", stub):
        missing = missing_libraries(binary, env)
        if missing:
            hint = ""
            if any(m.startswith("libpython") for m in missing):
                hint = f" Install it with: apt-get install -y libpython{python_tag()}"
            raise LauncherError(f"{binary.name} needs {', '.join(missing)}, not found.{hint}")
    args = list(argv)
    if not _given(args, "--backend-directory"):
        args = [f"--backend-directory={backends}", *args]
    if not _given(args, "--cache-directory") and (root / "caches").is_dir():  # the wheel's response-cache library
        args = [f"--cache-directory={root / 'caches'}", *args]
    return [str(root / "bin" / "tritonserver"), *args], env


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cmd, env = command(argv)
    except LauncherError as exc:
        print(f"tritonserver launcher: {exc}", file=sys.stderr)
        raise SystemExit(2)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
