"""The ``tritonserver`` launcher: gets out of the way of a system Triton, else prepares the wheel's."""

import os
import sys
from pathlib import Path

import pytest

from trunkserve import launcher


def test_system_triton_gets_args_untouched(monkeypatch, tmp_path):
    fake = tmp_path / "tritonserver"
    monkeypatch.setenv("TRITONSERVER_BIN", str(fake))
    cmd, _ = launcher.command(["--model-repository", "x", "--strict-model-config=false"])
    assert cmd == [str(fake), "--model-repository", "x", "--strict-model-config=false"]


def test_bundled_command(monkeypatch, tmp_path):
    monkeypatch.delenv("TRITONSERVER_BIN", raising=False)
    monkeypatch.setattr(launcher, "SYSTEM_TRITON", tmp_path / "absent")
    cmd, env = launcher.command(["--model-repository", "m"])
    assert cmd[0].endswith("pytriton/tritonserver/bin/tritonserver")
    backend_arg = next(a for a in cmd if a.startswith("--backend-directory="))
    stub = Path(backend_arg.split("=", 1)[1]) / "python" / "triton_python_backend_stub"
    assert stub.exists() and (stub.parent / "libtriton_python.so").exists()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"].split(os.pathsep)[0]
    assert cmd[-2:] == ["--model-repository", "m"]
    cmd2, _ = launcher.command(["--backend-directory=/custom"])
    assert [a for a in cmd2 if a.startswith("--backend-directory")] == ["--backend-directory=/custom"]


def test_the_wheels_response_cache_is_found_unless_a_directory_is_given(monkeypatch, tmp_path):
    monkeypatch.delenv("TRITONSERVER_BIN", raising=False)
    monkeypatch.setattr(launcher, "SYSTEM_TRITON", tmp_path / "absent")
    cmd, _ = launcher.command(["--cache-config=local,size=1048576"])
    caches = Path(next(a for a in cmd if a.startswith("--cache-directory=")).split("=", 1)[1])
    assert (caches / "local" / "libtritoncache_local.so").exists()
    cmd2, _ = launcher.command(["--cache-directory=/custom"])
    assert [a for a in cmd2 if a.startswith("--cache-directory")] == ["--cache-directory=/custom"]


def test_missing_libpython_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TRITONSERVER_BIN", raising=False)
    monkeypatch.setattr(launcher, "SYSTEM_TRITON", tmp_path / "absent")
    # ldd is the boundary: pretend it cannot resolve the system libpython
    monkeypatch.setattr(launcher, "missing_libraries", lambda binary, env: ["libpython3.11.so.1.0"])
    with pytest.raises(launcher.LauncherError, match="apt-get install -y libpython"):
        launcher.command([])
    with pytest.raises(SystemExit) as exc:
        launcher.main([])
    assert exc.value.code == 2 and "libpython3.11.so.1.0" in capsys.readouterr().err


def test_real_ldd_finds_everything_here():
    env = launcher.server_env()
    root = launcher.pytriton_root()
    assert launcher.missing_libraries(root / "bin" / "tritonserver", env) == []
