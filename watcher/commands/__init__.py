"""The subcommands of ``finetune-watcher``: one module each, listed in :data:`COMMANDS`.

Each module holds its argparse setup (``add_parser``: options, description, example,
exit codes) and the function that carries the command out; see
:class:`watcher.commands.base.CommandModule`. ``watcher.cli`` builds the parser from
this tuple, adds the global options and maps errors to exit codes. Adding a command
is one module and one entry here.

Command modules import only the standard library and :mod:`watcher.commands.base` at
the top: every command's module is imported to build the parser, and ``healthcheck``
runs every few seconds in a container, so aiohttp, apprise and pydantic are imported
by the functions that need them.
"""

from __future__ import annotations

from watcher.commands import (
    check_config,
    completion,
    demo,
    events,
    healthcheck,
    init,
    manpage,
    migrate,
    once,
    run,
    simulate,
    state,
    status,
    test_notify,
)
from watcher.commands.base import CommandModule

__all__ = ["COMMANDS"]

#: Every subcommand, in the order ``finetune-watcher --help`` lists them.
COMMANDS: tuple[CommandModule, ...] = (
    run,
    once,
    check_config,
    init,
    demo,
    simulate,
    status,
    migrate,
    state,
    events,
    test_notify,
    healthcheck,
    completion,
    manpage,
)
