#!/usr/bin/env python3
"""Fail on any module over 400 lines or function over 60 lines in the package (tests aside).

Why: a long module or function hides its structure; a limit checked on every run stops one from
growing back. Functions are measured from their first decorator to their last line, and a nested
function counts on its own (its lines also count towards the function that holds it). Exceptions
are listed below, each with its reason.

    python .ci/check_sizes.py                 # the trunkserve/ package of this checkout
    python .ci/check_sizes.py --root DIR      # any folder of Python files (the tests use a tmp dir)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "trunkserve"

# "path relative to the root's parent[:qualified.function]" -> why it may be longer.
ALLOWED = {
    "trunkserve/training/loop.py:fit": "the training loop: epochs, steps, evaluation, early stopping and "
    "checkpointing share their state; split up, that state would travel through every piece",
}


def _functions(tree: ast.AST, prefix: str = ""):
    """``(qualified name, first line, last line)`` of every function, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield name, first, node.end_lineno
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def violations(root: Path, allowed: dict[str, str] = ALLOWED) -> list[str]:
    """One line per module or function over its limit that ``allowed`` does not excuse, and one per
    entry of ``allowed`` under ``root`` that excuses nothing (so the list cannot outlive its reasons)."""
    root = root.resolve()
    found, used = [], set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            if rel in allowed:
                used.add(rel)
            else:
                found.append(f"{rel}: {lines} lines (module limit {MAX_MODULE_LINES})")
        for name, first, last in _functions(ast.parse(text, filename=str(path))):
            length = last - first + 1
            if length > MAX_FUNCTION_LINES:
                if f"{rel}:{name}" in allowed:
                    used.add(f"{rel}:{name}")
                else:
                    found.append(f"{rel}:{first} {name}: {length} lines (function limit {MAX_FUNCTION_LINES})")
    stale = [key for key in allowed if key.startswith(f"{root.name}/") and key not in used]
    return found + [f"{key}: allowed but within the limits (or gone): remove it from ALLOWED" for key in stale]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder to walk (default: %(default)s)")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        p.error(f"--root {args.root} is not a folder")
    found = violations(args.root)
    for line in found:
        print(line)
    print(f"{len(found)} over the limits" if found else f"sizes ok under {args.root}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
