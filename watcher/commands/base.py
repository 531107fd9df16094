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
import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

if TYPE_CHECKING:
    from watcher.lifecycle import StatusScheme
    from watcher.settings import ApiKey, Settings

__all__ = [
    "EXIT_CODES_HELP",
    "CommandModule",
    "CommandSpec",
    "Handler",
    "LazySubparsers",
    "Subparsers",
    "add_command",
    "config_path",
    "default_config_path",
    "exit_without_waiting_for_senders",
    "load_configuration",
    "load_every_command",
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


class CommandSpec(NamedTuple):
    """One row of ``watcher.commands.COMMAND_TABLE``: enough to list a command in
    ``--help`` without importing its module. (A NamedTuple: ``dataclasses`` imports
    ``inspect``, ~15 ms that ``healthcheck`` need not pay.)"""

    name: str
    #: The module that satisfies :class:`CommandModule` (imported when the command runs).
    module: str
    #: Its line in the command list; None: hidden (not listed, still runs).
    summary: str | None


if TYPE_CHECKING:
    _SubparsersBase = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubparsersBase = argparse._SubParsersAction


class LazySubparsers(_SubparsersBase):
    """The subcommands, each command's module imported only when it is parsed.

    Until then a command is a placeholder: its name is a valid choice and ``--help``
    lists its summary. Parsing ``CMD ...`` replaces the placeholder with the module's
    own subparser (options, description, epilog) in the same place, then parses with
    it; :meth:`load_all` does so for every command (``completion``, ``manpage``).
    ``on_load(parser, module)`` finishes each real subparser (the global options).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._specs: dict[str, CommandSpec] = {}
        self._pending: set[str] = set()
        self.on_load: Callable[[argparse.ArgumentParser, CommandModule], None] | None = None

    def add_lazy(self, spec: CommandSpec) -> None:
        """List ``spec``'s command without importing its module."""
        kwargs: dict[str, Any] = {} if spec.summary is None else {"help": spec.summary}
        self.add_parser(spec.name, add_help=False, **kwargs)
        self._specs[spec.name] = spec
        self._pending.add(spec.name)

    def load(self, name: str) -> argparse.ArgumentParser:
        """The real subparser of ``name`` (its module imported on first use)."""
        if name in self._pending:
            self._pending.discard(name)
            order = list(self._name_parser_map)
            listed = [action.dest for action in self._choices_actions]
            del self._name_parser_map[name]
            self._choices_actions[:] = [a for a in self._choices_actions if a.dest != name]
            module: CommandModule = importlib.import_module(self._specs[name].module)
            sub = module.add_parser(self)
            if self.on_load is not None:
                self.on_load(sub, module)
            # Back in the table's place: --help, completion and the manual keep its order.
            parsers = dict(self._name_parser_map)
            self._name_parser_map.clear()
            self._name_parser_map.update((n, parsers[n]) for n in order)
            by_dest = {action.dest: action for action in self._choices_actions}
            self._choices_actions[:] = [by_dest[d] for d in listed if d in by_dest]
        return self._name_parser_map[name]

    def load_all(self) -> None:
        """Every command's real subparser (imports every command module)."""
        for name in list(self._name_parser_map):
            self.load(name)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, Sequence) and values and values[0] in self._pending:
            self.load(str(values[0]))
        super().__call__(parser, namespace, values, option_string)


def load_every_command(parser: argparse.ArgumentParser) -> None:
    """Import every command of ``parser`` (a whole-command-line view: completion, manual)."""
    for action in parser._actions:
        if isinstance(action, LazySubparsers):
            action.load_all()


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


def load_settings_for_reading(
    path: Path, environ: Mapping[str, str] | None = None, *, parse_targets: bool = True
) -> Settings:
    """The configuration at ``path``, its secrets registered; no API key needed.

    For the commands that read the state or send notifications but call no API.
    ``parse_targets=False``: for a command that sends nothing, the notification URLs
    are taken as written, not parsed by apprise (``settings.targets_unparsed``): apprise
    and requests are most of such a command's start.
    """
    from contextlib import nullcontext

    from watcher.settings import load_settings, register_secrets, targets_unparsed

    with nullcontext() if parse_targets else targets_unparsed():
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
