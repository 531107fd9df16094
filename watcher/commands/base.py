"""What every command module shares: how it registers, the configuration it reads.

A command module (``watcher.commands.status``, ...) satisfies :class:`CommandModule`:
``add_parser`` adds its subparser (options, description, example, exit codes) with
:func:`add_command`, which records the function that carries the command out.
``watcher.cli`` adds the global options and maps errors; nothing here parses
``sys.argv`` or prints an error.

Only the standard library is imported at the top (``healthcheck`` must start fast).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from watcher.lifecycle import StatusScheme
    from watcher.settings import ApiKey, Settings

__all__ = [
    "EXIT_CODES_HELP",
    "CommandModule",
    "Handler",
    "Subparsers",
    "add_command",
    "config_path",
    "default_config_path",
    "exit_without_waiting_for_senders",
    "load_configuration",
    "load_settings_for_reading",
    "positive_seconds",
    "scheme_for",
]

#: The exit codes every command may end with (a command's own epilog may say more).
EXIT_CODES_HELP = """\
exit codes:
  0   success
  1   a fatal error (or, for `once`, every poll failed)
  74  the state database is unusable (corrupt, newer schema, read-only, disk full)
  75  another finetune-watcher holds the state file, or the PostgreSQL state cannot be
      reached now (try again later)
  78  the configuration is invalid (systemd does not restart on it)
"""

#: What ``-c/--config`` says when a command does not explain it further.
CONFIG_HELP = (
    "YAML configuration (default: $WATCHER_CONFIG, else /etc/finetune-watcher/watcher.yaml "
    "or ~/.config/finetune-watcher/watcher.yaml if present, else ./config/watcher.yaml)"
)

Handler = Callable[[argparse.Namespace], int]
# Generic only to type checkers (a string: not subscriptable at run time).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandModule(Protocol):
    """One subcommand: a module with these names (see ``watcher.commands.COMMANDS``)."""

    @property
    def CONFIG_HELP(self) -> str | None:
        """``-c/--config``'s help for this command; None: the command reads no configuration."""
        ...

    def add_parser(self, subparsers: Subparsers) -> argparse.ArgumentParser:
        """Add the command's subparser (via :func:`add_command`) and return it."""
        ...


def add_command(
    subparsers: Subparsers,
    name: str,
    handler: Handler,
    *,
    summary: str,
    description: str | None = None,
    epilog: str = EXIT_CODES_HELP,
    default_log_level: str | None = None,
    exit_on_early_sigterm: bool = False,
) -> argparse.ArgumentParser:
    """A subparser for ``name`` that runs ``handler``.

    ``summary`` is the one line of the command list (and the description when there is
    no longer one); ``epilog`` holds the example and the exit codes. ``default_log_level``
    replaces ``info`` when ``--log-level`` is not given. ``exit_on_early_sigterm``: a
    SIGTERM before the command installs its own handler exits 0 at once (the daemon:
    nothing has been half-written yet).
    """
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=description or summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler, exit_on_early_sigterm=exit_on_early_sigterm)
    if default_log_level is not None:
        parser.set_defaults(default_log_level=default_log_level)
    return parser


def positive_seconds(text: str) -> float:
    """An argparse ``type=``: a positive number of seconds (``10``, ``0.1``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


# --- the configuration ---------------------------------------------------------------


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file used when ``-c`` is not given (the one place that decides).

    ``$WATCHER_CONFIG``, else the first existing system or per-user file, else
    ``./config/watcher.yaml``: :func:`watcher.paths.default_config_path`.
    """
    from watcher.paths import default_config_path as from_paths

    return from_paths(os.environ if environ is None else environ)


def config_path(args: argparse.Namespace) -> Path:
    """``-c FILE`` if given, else :func:`default_config_path`."""
    path: Path | None = args.config
    return path if path is not None else default_config_path()


def load_configuration(path: Path) -> tuple[Settings, dict[str, ApiKey]]:
    """The configuration at ``path`` and the key of every provider it uses, all registered
    for scrubbing.

    Raises ``ConfigError`` (78) for an invalid file or a missing key.
    """
    from watcher.settings import load_settings, register_secrets, resolve_api_keys

    settings = load_settings(path)
    api_keys = resolve_api_keys(settings)
    register_secrets(settings, api_keys)
    return settings, api_keys


def load_settings_for_reading(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """The configuration at ``path``, its secrets registered; no API key needed.

    For the commands that read the state or send notifications but call no API.
    """
    from watcher.settings import load_settings, register_secrets

    settings = load_settings(path, environ)
    # No key is needed, but every key that can be found is scrubbed (an API error an
    # earlier poll stored may echo it).
    register_secrets(settings, None, environ)
    return settings


def exit_without_waiting_for_senders(code: int) -> None:
    """Exit now even if an apprise worker thread is still stuck in a send.

    apprise sends from threads that cannot be cancelled; Python would join them at
    exit and a hung SMTP server could hold a stopping daemon for many seconds. The
    state is already closed and every outbox row not marked delivered is retried
    on the next start, so abandoning those threads loses nothing.
    """
    import threading

    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon
           for t in threading.enumerate()):  # fmt: skip
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def scheme_for(provider: str) -> StatusScheme | None:
    """The status scheme of the provider registered as ``provider``; None if there is none
    (a model stored by a provider this version no longer has)."""
    from watcher.providers import scheme_for as registered_scheme

    try:
        return registered_scheme(provider)
    except KeyError:
        return None
