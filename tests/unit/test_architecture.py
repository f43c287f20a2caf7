"""Imports run one way: the import-linter contracts in pyproject.toml hold, and export/ hides no cycle.

Why a test: a cycle hidden by an import inside a function, or a client that
starts importing torch, breaks nothing at once; it breaks the next refactor or
the locust image. Here it fails the suite instead.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("trunkserve",)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"  # the venv's, pinned in requirements.txt
    p = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 broken" in p.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("trunkserve/client/api.py", "import torch", "The client stands alone"),
    ("trunkserve/bert.py", "from trunkserve.training import cli", "The core modules"),
    ("trunkserve/export/configs.py", "from trunkserve.export import hotswap", "export: CLI >"),
    ("trunkserve/training/loop.py", "from trunkserve.export import repository", "Parts depend one way"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    """The contracts are not vacuous: one planted import in a copy of the package fails the named one."""
    shutil.copytree(ROOT / "trunkserve", tmp_path / "trunkserve", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # planted by the test\n")
    lint = Path(sys.executable).parent / "lint-imports"
    p = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path)),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "broken" in p.stdout, p.stdout[-3000:]
    broken = p.stdout[p.stdout.index("Broken contracts"):]
    assert contract in broken, broken[:2000]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    parts = module.split(".")
    base = parts[: len(parts) - node.level + package] if node.level else []  # ``from .x`` in a package's __init__
    return [".".join(base + ([node.module] if node.module else []))]


def function_level_imports(path: Path) -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for each import of a project module inside a function of ``path``."""
    module, package, found = _module_name(path), path.name == "__init__.py", []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [(module, name, node.lineno) for name in _imported(node, module, package) if name.split(".")[0] in PROJECT]
    return found


def _is_cli(module: str) -> bool:
    return module == "trunkserve.export.cli" or module.endswith("_cli")


def test_export_has_no_function_level_imports_that_dodge_a_cycle():
    """Library modules of export/ import the project at module level; the CLI modules may defer a heavy
    library (``python -m trunkserve.export --help`` stays torch-free) only where a module-level import would be no cycle.

    Lazy imports of third-party modules (onnxruntime, tritonclient) are not project imports and stay allowed.
    """
    graph = grimp.build_graph(*PROJECT, cache_dir=None)
    lazy = [hit for path in sorted((ROOT / "trunkserve" / "export").glob("*.py")) for hit in function_level_imports(path)]
    in_library = [f"{a} -> {b} (line {n})" for a, b, n in lazy if not _is_cli(a)]
    assert not in_library, f"import these at module level (a cycle? move what both need lower): {in_library}"
    cycles = [f"{a} -> {b} (line {n}): {' -> '.join(chain)}" for a, b, n in lazy
              if (chain := graph.find_shortest_chain(importer=b, imported=a))]
    assert not cycles, f"function-level imports hiding a cycle: {cycles}"


def test_training_library_modules_import_the_project_at_module_level():
    """training/ was split so that nothing imports back (options < prepare < trials < parallel < jobs <
    pipeline < report < ablation); only the CLI defers its imports (``--help`` without torch)."""
    lazy = [f"{a} -> {b} (line {n})" for path in sorted((ROOT / "trunkserve" / "training").rglob("*.py"))
            for a, b, n in function_level_imports(path) if a != "trunkserve.training.cli"]
    assert not lazy, f"import these at module level: {lazy}"


def test_the_check_sees_imports_inside_functions():
    """The AST walk above finds relative and absolute imports nested in functions (not module-level ones)."""
    path = ROOT / "trunkserve" / "export" / "cli.py"
    assert ("trunkserve.export.cli", "trunkserve.export.repository", _line_of(path, "from .repository import build_repository")) in \
        function_level_imports(path)
    assert not [hit for hit in function_level_imports(path) if hit[1] == "trunkserve.export.cli_options"]


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_the_export_cli_starts_without_torch():
    """Why the CLI modules defer the libraries: ``python -m trunkserve.export --help`` answers without importing torch."""
    code = "import sys, trunkserve.export.cli as cli; cli.parser(); assert 'torch' not in sys.modules, 'torch imported'"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_the_client_names_head_models_as_the_server_does():
    """The client keeps its own copy of the head model name (it ships without trunkserve): the two must agree."""
    from trunkserve.client import api as client_api
    from trunkserve.export import names
    from trunkserve import specs

    assert client_api.head_model_name("sst2") == specs.head_model_name("sst2") == names.head_model_name("sst2") == "head_sst2"
    assert client_api.HEAD_PREFIX == specs.HEAD_PREFIX and client_api.MULTITASK == names.MULTITASK
    assert specs.head_task(specs.head_model_name("qnli")) == "qnli" and specs.head_task("multitask") is None
    assert specs.head_spec("sst2", "classification", 2, 8).name == specs.head_model_name("sst2")


def test_no_unused_imports():
    """Unused imports hide what a module really depends on (and kept torch in modules that need none)."""
    ruff = Path(sys.executable).parent / "ruff"  # pinned in requirements.txt
    dirs = [d for d in (*PROJECT, "tests", "reports") if (ROOT / d).is_dir()]
    p = subprocess.run([str(ruff), "check", "--isolated", "--select", "F401", "--output-format", "concise", *dirs],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)  # the venv's, pinned in requirements.txt


def test_lint_passes_with_every_pyflakes_rule():
    """ruff with pyproject.toml's [tool.ruff.lint] (all F rules and E9): undefined names, redefinitions, unused variables."""
    dirs = [d for d in (*PROJECT, "tests", "reports") if (ROOT / d).is_dir()]
    p = subprocess.run([_tool("ruff"), "check", "--output-format", "concise", *dirs], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_lint_settings_catch_undefined_and_redefined_names(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef os():\n    return undefined_name\n")
    p = subprocess.run([_tool("ruff"), "check", "--config", str(ROOT / "pyproject.toml"), "--output-format", "json", str(bad)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert {d["code"] for d in json.loads(p.stdout)} >= {"F811", "F821"}


def test_no_dead_code():
    """vulture with pyproject.toml's [tool.vulture] (60% confidence, the whitelist in .ci/): nothing unused."""
    p = subprocess.run([_tool("vulture")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_dead_code_settings_report_an_unused_function(tmp_path):
    dead = tmp_path / "dead.py"
    dead.write_text("def used():\n    return 1\n\n\ndef never_called():\n    return used()\n")
    p = subprocess.run([_tool("vulture"), *PROJECT, ".ci/vulture_whitelist.py", str(dead)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stdout + p.stderr  # vulture's exit status for dead code found
    assert p.stdout.splitlines() == [f"{dead}:5: unused function 'never_called' (60% confidence)"]


CHECK_SIZES = ROOT / ".ci" / "check_sizes.py"


def _check_sizes(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK_SIZES), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_no_module_or_function_over_the_size_limits():
    """trunkserve/: no module over 400 lines, no function over 60, except .ci/check_sizes.py's ALLOWED (with reasons)."""
    p = _check_sizes()
    assert p.returncode == 0, p.stdout + p.stderr


def _body(lines: int, indent: str = "    ") -> str:
    return "\n".join(f"{indent}x{i} = {i}" for i in range(lines))


def test_the_size_check_catches_an_oversize_module_and_functions(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "big.py").write_text("\n".join(f"A{i} = {i}" for i in range(401)) + "\n")
    (pkg / "small.py").write_text("\n".join(f"A{i} = {i}" for i in range(400)) + "\n")
    (pkg / "funcs.py").write_text(
        f"def at_the_limit():\n{_body(59)}\n\n\n"
        f"def too_long():\n{_body(60)}\n\n\n"
        f"class Holder:\n    @staticmethod\n    def method():\n{_body(59, ' ' * 8)}\n\n\n"
        f"def outer():\n    def inner():\n{_body(60, ' ' * 8)}\n    return inner\n"
    )
    p = _check_sizes("--root", str(pkg))
    assert p.returncode == 1
    assert p.stdout.splitlines() == [  # small.py (400 lines) and at_the_limit (60) pass
        "pkg/big.py: 401 lines (module limit 400)",
        "pkg/funcs.py:63 too_long: 61 lines (function limit 60)",
        "pkg/funcs.py:127 Holder.method: 61 lines (function limit 60)",  # from its decorator
        "pkg/funcs.py:190 outer: 63 lines (function limit 60)",
        "pkg/funcs.py:191 outer.inner: 61 lines (function limit 60)",  # nested, on its own
    ]
    (pkg / "big.py").unlink()
    (pkg / "funcs.py").write_text(f"def at_the_limit():\n{_body(59)}\n")
    assert _check_sizes("--root", str(pkg)).returncode == 0


def test_an_allowance_that_excuses_nothing_is_reported(tmp_path):
    spec = importlib.util.spec_from_file_location("check_sizes", CHECK_SIZES)
    check_sizes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_sizes)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "funcs.py").write_text(f"def long():\n{_body(70)}\n\n\ndef short():\n    return 1\n")
    allowed = {"pkg/funcs.py:long": "a reason", "pkg/funcs.py:short": "no longer needed"}
    assert check_sizes.violations(pkg, allowed) == ["pkg/funcs.py:short: allowed but within the limits (or gone): remove it from ALLOWED"]
    assert "trunkserve/training/loop.py:fit" in check_sizes.ALLOWED  # the training loop, the one allowance
