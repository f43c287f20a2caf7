"""``trunkserve``: one console command over the parts, in the style of ``optimum-cli``.

    trunkserve training train-heads ...   same as  python -m trunkserve.training train-heads ...
    trunkserve export build ...           same as  python -m trunkserve.export build ...
    trunkserve client infer ...           same as  python -m trunkserve.client infer ...
    trunkserve fleet --replicas 3 ...     same as  python -m trunkserve.fleet --replicas 3 ...
    trunkserve loadtest compare ...       same as  python -m trunkserve.loadtest.compare ...

Each part keeps its own parser; this only dispatches, by module name, so
``trunkserve client ...`` never imports torch.
"""

from __future__ import annotations

import runpy
import sys

PARTS = {
    "training": "trunkserve.training",
    "export": "trunkserve.export",
    "client": "trunkserve.client",
    "fleet": "trunkserve.fleet",
}
LOADTEST = ("run", "compare", "breakdown", "report", "int8", "latency")


def usage() -> str:
    lines = ["usage: trunkserve {training,export,client,fleet,loadtest} ...", ""]
    lines += [f"  trunkserve {part} ...       python -m {module} ..." for part, module in PARTS.items()]
    lines += [f"  trunkserve loadtest {{{','.join(LOADTEST)}}} ...   python -m trunkserve.loadtest.<name> ..."]
    return "\n".join(lines)


def module_for(argv: list[str]) -> tuple[str, list[str]]:
    """The module a command line runs and the arguments it keeps; ``SystemExit(2)`` with the usage if unknown."""
    if argv and argv[0] in PARTS:
        return PARTS[argv[0]], argv[1:]
    if len(argv) >= 2 and argv[0] == "loadtest" and argv[1] in LOADTEST:
        return f"trunkserve.loadtest.{argv[1]}", argv[2:]
    print(usage(), file=sys.stderr)
    raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)


def main(argv: list[str] | None = None) -> int:
    module, rest = module_for(list(sys.argv[1:] if argv is None else argv))
    sys.argv = [f"trunkserve {module.rsplit('.', 1)[-1]}", *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0
