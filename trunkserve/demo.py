"""``python -m trunkserve.demo``: start the real server on a repository, call it, stop it.

The last step of ``make demo``: it shows a new user the whole path (launcher,
ensembles, client) on the heads they just trained, then shuts the server down.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trunkserve.client.api import TrunkserveClient

from .server import TritonProcess

SINGLE = [
    "a gripping, beautifully acted film.",
    "the plot is thin and the jokes fall flat.",
]
PAIRS = [
    ("The company said profits rose 5 percent.", "Profits at the company increased by 5 percent."),
    ("A man is playing a guitar.", "A woman is slicing an onion."),
]


def run(repo: Path, log: Path) -> int:
    with TritonProcess(repo, log) as server:
        print(f"tritonserver ready on http://{server.http_url} (grpc {server.grpc_url}); log: {log}")
        client = TrunkserveClient(server.http_url)
        tasks = client.tasks()
        print("served tasks:", ", ".join(tasks))
        for task in [t for t in tasks if t != "multitask"]:
            for item in client.infer(task, SINGLE + [a for a, _ in PAIRS], [""] * len(SINGLE) + [b for _, b in PAIRS]):
                print(json.dumps(item))
        print("multitask (one trunk pass, every head):")
        for item in client.infer("multitask", [PAIRS[0][0]], [PAIRS[0][1]]):
            print(json.dumps(item, indent=1))
        client.close()
    print("server stopped")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trunkserve.demo")
    p.add_argument("--repo", type=Path, default=Path("model_repository"))
    p.add_argument("--log", type=Path, default=Path("build/demo-tritonserver.log"))
    args = p.parse_args(argv)
    if not (args.repo / "multitask" / "config.pbtxt").exists():
        print(f"{args.repo}: no repository; run `python -m trunkserve.export build` first", file=sys.stderr)
        return 2
    return run(args.repo.resolve(), args.log.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
