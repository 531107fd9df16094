"""The ``finetune-watcher`` command: parse the arguments, hand off, map errors.

Each subcommand lives in its own module of :mod:`watcher.commands` (its options, help
and the function that carries it out). This module holds only what they share: the
global options (accepted before and after the subcommand), the entry point, and the
one place where every failure a user can cause becomes one line on stderr and a
documented exit code (see ``watcher.errors``); a traceback is shown only with
``--log-level debug``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from watcher.commands import COMMAND_TABLE
from watcher.commands.base import EXIT_CODES_HELP, CommandModule, Handler, LazySubparsers
from watcher.errors import EX_CONFIG, EX_FAILURE, ConfigError, WatcherError

__all__ = ["build_parser", "main"]

#: Exit code after Ctrl-C, as shells report it.
EX_INTERRUPTED = 130
DEFAULT_LOG_LEVEL = "info"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options, then one subparser per command module.

    A command's module is imported only when that command is parsed (or by
    ``load_every_command``): ``finetune-watcher --help`` lists every command from
    ``COMMAND_TABLE`` alone, ``healthcheck`` imports one small module, not fourteen.
    """
    parser = argparse.ArgumentParser(
        prog="finetune-watcher",
        description="Watch fine-tuned models; notify on any apprise channel "
        "when they become ready or fail.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    _add_global_options(parser, config_help="YAML configuration (see each command's --help)")
    parser.set_defaults(default_log_level=DEFAULT_LOG_LEVEL, exit_on_early_sigterm=False)
    subparsers = parser.add_subparsers(
        action=LazySubparsers, dest="command", metavar="COMMAND", required=True
    )
    assert isinstance(subparsers, LazySubparsers)
    subparsers.on_load = _finish_subparser
    for spec in COMMAND_TABLE:
        subparsers.add_lazy(spec)
    # `completion` and `manpage` describe the whole command line.
    parser.set_defaults(root_parser=parser)
    return parser


def _finish_subparser(sub: argparse.ArgumentParser, command: CommandModule) -> None:
    """The global options of a command's own subparser (added when it is loaded)."""
    # Given after the subcommand, an option overrides the same one given before it;
    # absent there, SUPPRESS leaves the value parsed before the subcommand alone.
    _add_global_options(sub, config_help=command.CONFIG_HELP, default=argparse.SUPPRESS)
    sub.set_defaults(takes_config=command.CONFIG_HELP is not None)


class _VersionAction(argparse._VersionAction):
    """``--version``, with the version looked up only when asked (``watcher.__version__``)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from watcher import __version__

        self.version = f"finetune-watcher {__version__}"
        super().__call__(parser, *args, **kwargs)  # type: ignore[arg-type]


def _add_global_options(
    parser: argparse.ArgumentParser, *, config_help: str | None, default: object = None
) -> None:
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=default,
        help="log format (default: console on a terminal, JSON otherwise)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=default,
        help="lowest level logged (default: info; warning for demo, whose output is the show)",
    )
    if config_help is not None:
        parser.add_argument(
            "-c", "--config", type=Path, default=default, metavar="FILE", help=config_help
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (every error already reported)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None and not args.takes_config:
        parser.error(f"{args.command} reads no configuration: -c/--config does not apply")
    if args.exit_on_early_sigterm:
        # Until the daemon's own handler takes over, SIGTERM (docker stop, systemctl stop
        # right after start) is a clean, early exit: nothing has been half-written.
        from watcher.signals import exit_early_on_sigterm

        exit_early_on_sigterm()
    if args.log_level is None:
        args.log_level = args.default_log_level
    if getattr(args, "needs_logging", True) or args.config is not None:
        from watcher.logs import configure_logging  # structlog: ~50 ms

        configure_logging(fmt=args.log_format, level=args.log_level)
    handler: Handler = args.handler
    try:
        try:
            return handler(args)
        except BaseExceptionGroup as group:
            # anyio task groups wrap what a task raised; report the error itself.
            raise _leading_error(group) from None
    except ConfigError as exc:
        for problem in exc.problems:
            _error(f"{exc.source}: {problem}")
        return EX_CONFIG
    except WatcherError as exc:
        _error(f"finetune-watcher: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, traceback only when asked
        if args.log_level == "debug":
            import traceback

            traceback.print_exc()
        _error(
            f"finetune-watcher: internal error ({type(exc).__name__}: {exc}); "
            "run with --log-level debug for the traceback"
        )
        return EX_FAILURE


def _leading_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first ``WatcherError`` in ``group`` (else its first leaf exception)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    for leaf in leaves:
        if isinstance(leaf, WatcherError):
            return leaf
    return leaves[0] if leaves else group


def _error(line: str) -> None:
    from watcher.redact import SECRETS  # the secrets a command registered (if it loaded any)

    print(SECRETS.scrub(line), file=sys.stderr, flush=True)
