"""The subcommands of ``finetune-watcher``: one module each, listed in :data:`COMMAND_TABLE`.

Each module holds its argparse setup (``add_parser``: options, description, example,
exit codes) and the function that carries the command out; see
:class:`watcher.commands.base.CommandModule`. ``watcher.cli`` builds the parser from
the table, adds the global options and maps errors to exit codes. Adding a command is
one module and one row here.

The table names each command's module and the one line ``--help`` lists it with, so
the parser is built without importing any command module: only the module of the
command that runs is imported (:class:`watcher.commands.base.LazySubparsers`), and
``completion``/``manpage`` load them all. Command modules still import only the
standard library and :mod:`watcher.commands.base` at the top (``healthcheck`` runs
every few seconds in a container), so aiohttp, apprise and pydantic are imported by
the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from watcher.commands.base import CommandSpec

if TYPE_CHECKING:
    from watcher.commands.base import CommandModule

    #: Every command's module (imported on first use: see ``__getattr__``).
    COMMANDS: tuple[CommandModule, ...]

__all__ = ["COMMANDS", "COMMAND_TABLE", "command_modules"]

#: Every subcommand, in the order ``finetune-watcher --help`` lists them: its name, its
#: module, and its line in the command list (None: hidden). tests/test_cli_lazy.py
#: checks each line against the module's own ``add_command(summary=...)``.
COMMAND_TABLE: tuple[CommandSpec, ...] = (
    CommandSpec("run", "watcher.commands.run",
                "Run the daemon: watch every configured model until SIGTERM/SIGINT."),
    CommandSpec("once", "watcher.commands.once",
                "Poll every model once, deliver what is due, exit (for cron/timers)."),
    CommandSpec("check-config", "watcher.commands.check_config",
                "Validate the configuration (and the API key's presence) and print a summary."),
    CommandSpec("init", "watcher.commands.init",
                "Write a commented configuration (and, with --systemd, the unit)."),
    CommandSpec("demo", "watcher.commands.demo",
                "Run the real daemon against the bundled simulator; no key, network or config."),
    CommandSpec("simulate", "watcher.commands.simulate",
                "Serve the fake fine-tuning API, to dry-run a real configuration."),
    CommandSpec("status", "watcher.commands.status",
                "Show every watched model's status from the state database."),
    CommandSpec("migrate", "watcher.commands.migrate",
                "Create or upgrade the state database's schema and print its version."),
    CommandSpec("state", "watcher.commands.state",
                "Work on a state database: `state copy` moves SQLite into PostgreSQL."),
    CommandSpec("events", "watcher.commands.events",
                "Show a model's status timeline from the API; --follow waits for it."),
    CommandSpec("test-notify", "watcher.commands.test_notify",
                "Send a test notification to every target; report each."),
    CommandSpec("healthcheck", "watcher.commands.healthcheck",
                "Check a running daemon's /healthz (container HEALTHCHECK)."),
    CommandSpec("completion", "watcher.commands.completion",
                "Print the shell completion script (bash, zsh or tcsh)."),
    CommandSpec("manpage", "watcher.commands.manpage", None),
)  # fmt: skip


def command_modules() -> tuple[CommandModule, ...]:
    """Every command's module, in the table's order (imports them all)."""
    modules: list[CommandModule] = [importlib.import_module(s.module) for s in COMMAND_TABLE]
    return tuple(modules)


def __getattr__(name: str) -> tuple[CommandModule, ...]:
    """``COMMANDS``: every command's module (the old eager tuple), imported on first use."""
    if name != "COMMANDS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    modules = command_modules()
    globals()["COMMANDS"] = modules
    return modules
