"""``python -m trunkserve.client``: a thin CLI over ``TrunkserveClient``.

    python -m trunkserve.client infer --task sst2 "a great movie"
    python -m trunkserve.client infer --task mrpc "He left." --pair "He went away."
    python -m trunkserve.client infer --task multitask --file inputs.jsonl   # {"text": ..., "text_pair": ...} per line
    python -m trunkserve.client tasks

Prints one JSON object per input (label, probabilities or score, truncated,
latency_ms). Errors go to stderr with a distinct exit code: 2 bad input,
3 server unreachable, 4 unknown task, 5 server-side error (input the server refuses as invalid is 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .api import MULTITASK, ClientError, InvalidInput, TrunkserveClient


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, so ``--help`` says what a bare call does; a required one has none."""

    def _get_help_string(self, action):
        return action.help if action.required else super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trunkserve.client", description="Call a trunkserve Triton deployment.",
                                formatter_class=HelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("TRUNKSERVE_URL"),
                        help="Triton's host:port, from $TRUNKSERVE_URL if set; None: localhost:8000 over http, localhost:8001 over grpc")
    common.add_argument("--protocol", choices=("http", "grpc"), default=os.environ.get("TRUNKSERVE_PROTOCOL", "http"),
                        help="how to call Triton, from $TRUNKSERVE_PROTOCOL if set")
    common.add_argument("--timeout", type=_seconds, default=30.0,
                        help="seconds to wait for the server (> 0): HTTP's connection and network timeouts, each gRPC call's deadline")
    sub = p.add_subparsers(dest="command", required=True)
    inf = sub.add_parser("infer", parents=[common], help="predict for texts", formatter_class=HelpFormatter,
                         description="Predict for texts: one JSON object per input on stdout.")
    inf.add_argument("texts", nargs="*", help="input sentences (or --file)")
    inf.add_argument("--task", required=True, help="a served task (see the 'tasks' command), or 'multitask' for every head")
    inf.add_argument("--pair", action="append", default=None,
                     help="second sentence of a pair task, once per text in their order (a pair head warns without it)")
    inf.add_argument("--file", type=Path, default=None,
                     help="JSONL instead of texts: an object per line with 'text' and optional 'text_pair'")
    inf.add_argument("--batch-size", type=int, default=16, help="texts per request")
    sub.add_parser("tasks", parents=[common], help="list served tasks", formatter_class=HelpFormatter,
                   description="List the served tasks as JSON.")
    return p


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    texts, pairs = [], []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{n}: not JSON ({exc})") from exc
        if not isinstance(row, dict) or "text" not in row:
            raise InvalidInput(f"{path}:{n}: expected an object with a 'text' field")
        text, pair = row["text"], row.get("text_pair")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{path}:{n}: 'text' must be a non-empty string, got {text!r}")
        if pair is not None and not isinstance(pair, str):
            raise InvalidInput(f"{path}:{n}: 'text_pair' must be a string, got {pair!r}")
        texts.append(text)
        pairs.append(pair or "")
    if not texts:
        raise InvalidInput(f"{path}: no inputs")
    return texts, pairs


def missing_pair_warning(task: str, on_pairs: bool | None, pairs: list[str] | None) -> str | None:
    """The warning for a pair head called with an input that has no second text, or None.

    Why: a head trained on pairs still answers for one sentence, silently, and the answer
    means little. Only a head that says it was trained on pairs is warned about
    (``on_pairs`` is None for older heads and for ``multitask``, whose heads differ).
    """
    if task == MULTITASK or on_pairs is not True or (pairs is not None and all(p for p in pairs)):
        return None
    return f"task {task!r} was trained on text pairs; pass --pair (or text_pair in JSONL) or the answer may be meaningless"


def _warn_if_pairs_missing(client: TrunkserveClient, task: str, pairs: list[str] | None) -> None:
    warning = missing_pair_warning(task, client.head_trained_on_pairs(task), pairs)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _infer(client: TrunkserveClient, args) -> int:
    if args.file:
        texts, pairs = read_jsonl(args.file)
    else:
        texts, pairs = list(args.texts), args.pair
    if not texts:
        raise InvalidInput("give texts on the command line or --file")
    if pairs is not None and len(pairs) != len(texts):
        raise InvalidInput(f"{len(texts)} texts but {len(pairs)} --pair values")
    size = max(1, args.batch_size)
    for start in range(0, len(texts), size):
        chunk_pairs = None if pairs is None else pairs[start : start + size]
        items = client.infer(args.task, texts[start : start + size], chunk_pairs)
        if start == 0:  # once, and only once the server has answered (an unknown task or a down server says so first)
            _warn_if_pairs_missing(client, args.task, pairs)
        for n, item in enumerate(items, start=start + 1):
            if item["truncated"]:
                print(f"warning: input {n} was longer than the server's max length and was truncated", file=sys.stderr)
            print(json.dumps(item, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        client = TrunkserveClient(args.url, args.protocol, args.timeout)
        try:
            if args.command == "tasks":
                print(json.dumps({"tasks": client.tasks()}))
                return 0
            return _infer(client, args)
        finally:
            client.close()
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
