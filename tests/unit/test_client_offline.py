"""The client's decisions that need no server: when to warn about a missing pair, and its CLIs' help."""

from __future__ import annotations

import pytest

from trunkserve.client.api import TrunkserveClient, trained_on_pairs
from trunkserve.client.cli import missing_pair_warning


@pytest.mark.parametrize("params, want", [
    ({"pair": "true"}, True), ({"pair": "True "}, True), ({"pair": "false"}, False),
    ({}, None), ({"pair": ""}, None), ({"pair": "maybe"}, None), ({"task_type": "classification"}, None),
])
def test_the_head_config_says_whether_it_was_trained_on_pairs(params, want):
    assert trained_on_pairs(params) is want


@pytest.mark.parametrize("task, on_pairs, pairs, warned", [
    ("mrpc", True, None, True),                  # no --pair
    ("mrpc", True, ["", ""], True),              # JSONL rows without text_pair
    ("mrpc", True, ["B", ""], True),             # one row without: its answer may be meaningless
    ("mrpc", True, ["B", "D"], False),
    ("sst2", False, None, False),
    ("sst2", None, None, False),                 # a head exported before pair was recorded
    ("multitask", True, None, False),            # the ensemble's heads differ: no check
])
def test_a_missing_pair_is_warned_about_only_for_a_pair_head(task, on_pairs, pairs, warned):
    warning = missing_pair_warning(task, on_pairs, pairs)
    if warned:
        assert warning == (f"task {task!r} was trained on text pairs; pass --pair (or text_pair in JSONL) "
                           "or the answer may be meaningless")
    else:
        assert warning is None


class _Transport:
    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def model_parameters(self, model):
        self.asked.append(model)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("answer, want", [
    ({"pair": "true"}, True),
    (ConnectionRefusedError("down"), None),
    (Exception("[403] This API is restricted, expecting header 'x-k'"), None),
    (KeyError("config"), None),
])
def test_reading_the_head_config_never_fails_the_call(answer, want):
    client = TrunkserveClient("localhost:1")
    client.transport = _Transport(answer)
    assert client.head_trained_on_pairs("mrpc") is want and client.transport.asked == ["head_mrpc"]
    assert client.head_trained_on_pairs("multitask") is None and client.transport.asked == ["head_mrpc"]


# ---------------------------------------------------------------- every option says what it does and its default


def _parsers(parser):
    """``parser`` and every subcommand's parser under it."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _cli_parsers():
    from trunkserve.client.cli import _parser as client_parser
    from trunkserve.loadtest.int8 import _parser as int8_parser

    return [("python -m trunkserve.client", client_parser()), ("python -m trunkserve.loadtest.int8", int8_parser())]


@pytest.mark.parametrize("name, root", _cli_parsers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_has_help_that_shows_its_default(name, root):
    import argparse

    for parser in _parsers(root):
        text = "".join(parser.format_help().split())  # argparse wraps lines, even inside a default
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if isinstance(action, argparse._SubParsersAction):
                assert all(c.help for c in action._choices_actions), f"{what}: a subcommand without help"
                continue
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, f"{what}: no help"
            if action.required:
                continue  # a required option has no default to show
            shown = "".join(f"(default: {action.default})".split())
            assert shown in text, f"{what}: default {action.default!r} not shown in --help"
