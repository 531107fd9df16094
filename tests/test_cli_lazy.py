"""The command line imports a command's module only when that command runs.

``watcher.commands.COMMAND_TABLE`` lists every command (name, module, summary);
``watcher.commands.base.LazySubparsers`` keeps a placeholder per command until it is
parsed. These tests hold the lazy parser to what the eager one did: the same command
list, the same help per command, the same completion scripts and manual page.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.cli import build_parser
from watcher.commands import COMMAND_TABLE, command_modules
from watcher.commands.base import LazySubparsers, load_every_command
from watcher.commands.completion import SHELLS, completion_script
from watcher.commands.manpage import render_manpage

ROOT = Path(__file__).resolve().parent.parent
NAMES = [spec.name for spec in COMMAND_TABLE]


def _subparsers(parser: argparse.ArgumentParser) -> LazySubparsers:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert isinstance(action, LazySubparsers)
    return action


def _help(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        parser.parse_args(argv)
    assert exited.value.code == 0
    return out.getvalue()


def _eager_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    load_every_command(parser)
    return parser


def test_the_table_matches_each_modules_own_registration() -> None:
    """Each row's summary is the line its module registers (hidden: none); order kept."""
    parser = argparse.ArgumentParser(prog="finetune-watcher")
    subparsers = parser.add_subparsers()
    for spec, module in zip(COMMAND_TABLE, command_modules(), strict=True):
        assert module.__name__ == spec.module
        module.add_parser(subparsers)
        assert list(subparsers.choices)[-1] == spec.name
    registered = {action.dest: action.help for action in subparsers._choices_actions}
    assert registered == {s.name: s.summary for s in COMMAND_TABLE if s.summary is not None}


def test_a_fresh_parser_holds_placeholders_and_loads_in_place() -> None:
    parser = build_parser()
    subparsers = _subparsers(parser)
    assert list(subparsers.choices) == NAMES
    assert subparsers._pending == set(NAMES)
    before = [(a.dest, a.help) for a in subparsers._choices_actions]
    args = parser.parse_args(["status", "--json"])
    assert args.json is True
    assert args.command == "status"
    assert subparsers._pending == set(NAMES) - {"status"}
    # the real subparser took the placeholder's place: same order, same listed lines
    assert list(subparsers.choices) == NAMES
    assert [(a.dest, a.help) for a in subparsers._choices_actions] == before
    assert subparsers.choices["status"].get_default("handler") is not None


def test_top_level_help_is_the_eager_parsers() -> None:
    assert _help(build_parser(), ["--help"]) == _help(_eager_parser(), ["--help"])


@pytest.mark.parametrize("command", NAMES)
def test_each_commands_help_is_the_eager_parsers(command: str) -> None:
    """``finetune-watcher CMD --help`` from a fresh parser: options, example, exit codes."""
    lazy = _help(build_parser(), [command, "--help"])
    assert lazy == _help(_eager_parser(), [command, "--help"])
    assert "exit codes:" in lazy
    assert "--log-level" in lazy  # the global options were added to the loaded subparser


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_loads_every_command(shell: str) -> None:
    """A script from a fresh (lazy) parser completes every command's options."""
    script = completion_script(build_parser(), shell)
    assert script == completion_script(_eager_parser(), shell)
    assert "copy" in script  # `state copy`: the state command's module was loaded


def test_manpage_loads_every_command() -> None:
    page = render_manpage(build_parser(), "0.1.0")
    assert page == render_manpage(_eager_parser(), "0.1.0")
    assert "\\-\\-follow" in page


def test_config_before_a_command_that_reads_none_is_still_a_usage_error() -> None:
    """`takes_config` comes from the loaded module, after the placeholder was replaced."""
    result = subprocess.run(
        [sys.executable, "-m", "watcher", "-c", "x.yaml", "completion", "bash"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "completion reads no configuration" in result.stderr


def test_an_unknown_command_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watcher", "nosuch"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert all(repr(name) in result.stderr for name in NAMES)


def test_commands_still_names_every_module() -> None:
    """``watcher.commands.COMMANDS`` (the old tuple of modules) still works, loaded on use."""
    from watcher.commands import COMMANDS

    assert [m.__name__ for m in COMMANDS] == [s.module for s in COMMAND_TABLE]
