"""The ``finetune-watcher`` command: parse arguments, build things, hand off, map errors.

Every failure a user can cause ends here as one line on stderr and a documented
exit code (see ``watcher.errors``); a traceback is shown only with ``--log-level debug``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from watcher import __version__
from watcher.errors import EX_CONFIG, EX_FAILURE, EX_OK, ConfigError, WatcherError
from watcher.redact import SECRETS

if TYPE_CHECKING:
    from watcher.settings import ApiKey, Settings

DEFAULT_CONFIG = Path("config/watcher.yaml")
EXIT_CODES_HELP = """\
exit codes:
  0   success
  1   a fatal error (or, for `once`, every poll failed)
  74  the state database is unusable (corrupt, newer schema, read-only, disk full)
  75  another finetune-watcher holds the state file
  78  the configuration is invalid (systemd does not restart on it)
"""


def default_config() -> Path:
    """``$WATCHER_CONFIG`` if set, else ``./config/watcher.yaml``."""
    return Path(os.environ.get("WATCHER_CONFIG") or DEFAULT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune-watcher",
        description="Watch Cohere fine-tuned models; notify on any apprise channel "
        "when they become ready or fail.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"finetune-watcher {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="log format (default: console on a terminal, JSON otherwise)",
    )
    common.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="lowest level logged (default: info; warning for demo, whose output is the show)",
    )
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML configuration (default: $WATCHER_CONFIG, else ./config/watcher.yaml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
            *, with_config: bool = True) -> argparse.ArgumentParser:  # fmt: skip
        parents = [common, config] if with_config else [common]
        p = sub.add_parser(
            name,
            parents=parents,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    add("run", cmd_run, "Run the daemon: watch every configured model until SIGTERM/SIGINT.")
    add("once", cmd_once, "Poll every model once, deliver what is due, exit (for cron/timers).")
    add(
        "check-config",
        cmd_check_config,
        "Validate the configuration (and the API key's presence) and print a summary.",
    )
    add(
        "demo",
        cmd_demo,
        "Run the real daemon against the bundled Cohere simulator; no key, network or config.",
        with_config=False,
    )
    sim = add(
        "simulate",
        cmd_simulate,
        "Serve the fake Cohere fine-tuning API, to dry-run a real configuration.",
        with_config=False,
    )
    sim.add_argument(
        "--scenario", type=Path, default=None, help="scenario YAML (default: the demo scenario)"
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8010, help="port to bind (default 8010)")
    _add_everyday_commands(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from watcher.logs import configure_logging

    if args.command in ("run", "demo"):
        # Until the daemon's own handler takes over, SIGTERM (docker stop, systemctl stop
        # right after start) is a clean, early exit: nothing has been half-written.
        signal.signal(signal.SIGTERM, _stop_before_started)
    if args.log_level is None:
        args.log_level = "warning" if args.command == "demo" else "info"
    configure_logging(fmt=args.log_format, level=args.log_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
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
        return 130
    except Exception as exc:  # a bug: say so in one line, traceback only when asked
        if args.log_level == "debug":
            import traceback

            traceback.print_exc()
        _error(
            f"finetune-watcher: internal error ({type(exc).__name__}: {exc}); "
            "run with --log-level debug for the traceback"
        )
        return EX_FAILURE


def _stop_before_started(signum: int, frame: object) -> None:
    raise SystemExit(EX_OK)


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
    print(SECRETS.scrub(line), file=sys.stderr, flush=True)


def _config_path(args: argparse.Namespace) -> Path:
    path: Path | None = args.config
    return path if path is not None else default_config()


def _load(args: argparse.Namespace) -> tuple[Path, Settings, ApiKey]:
    from watcher.settings import load_settings, register_secrets, resolve_api_key

    path = _config_path(args)
    settings = load_settings(path)
    api_key = resolve_api_key(settings)
    register_secrets(settings, api_key)
    return path, settings, api_key


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from watcher.daemon import serve
    from watcher.settings import load_settings, register_secrets

    path, settings, api_key = _load(args)

    def reload_settings() -> Settings:
        new = load_settings(path)
        register_secrets(new, api_key)
        return new

    code = anyio.run(lambda: serve(settings, api_key, reload_settings=reload_settings))
    _exit_without_waiting_for_senders(code)
    return code


def cmd_once(args: argparse.Namespace) -> int:
    import anyio

    from watcher.daemon import serve

    _, settings, api_key = _load(args)
    return anyio.run(lambda: serve(settings, api_key, once=True, handle_signals=False))


def _exit_without_waiting_for_senders(code: int) -> None:
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


def cmd_check_config(args: argparse.Namespace) -> int:
    from watcher.settings import summary_lines

    path, settings, api_key = _load(args)
    print(f"{path}: OK")
    for line in summary_lines(settings, api_key):
        print(f"  {line}")
    return EX_OK


def cmd_demo(args: argparse.Namespace) -> int:
    import anyio

    from watcher.demo import run_demo

    return anyio.run(run_demo)


def cmd_simulate(args: argparse.Namespace) -> int:
    import anyio

    from watcher.simulator import demo_scenario, load_scenario, serve_forever

    scenario = load_scenario(args.scenario) if args.scenario else demo_scenario()

    def announce(base_url: str) -> None:
        print(f"simulator listening on {base_url}", flush=True)

    async def serve_until_signal() -> None:
        import signal

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_forever(scenario, host=args.host, port=args.port, on_ready=announce)
            )
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break

    try:
        anyio.run(serve_until_signal)
    except OSError as exc:
        raise WatcherError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from exc
    return EX_OK


# --- everyday commands: status, events, test-notify, healthcheck (see watcher.commands) ---

STATUS_EPILOG = """\
example:
  finetune-watcher status -c /etc/finetune-watcher/watcher.yaml
  finetune-watcher status --json | jq -r '.models[] | select(.status == "STATUS_READY") | .id'

--json prints one object (times: ISO-8601 UTC ending in Z, or null):
  {"generated_at", "state_path",
   "models": [{"id", "name", "status", "status_since", "last_poll_at", "last_success_at",
               "last_error", "failures", "pending_notifications", "discovered", "configured"}],
   "outbox": {"pending", "done", "given_up"}}

exit codes:
  0   success
  74  no state database at state.path yet, or it is unusable
  78  the configuration is invalid
"""
EVENTS_EPILOG = """\
example:
  finetune-watcher events 7a317d97-4d05-427d-9396-f31b9fb92c55 --follow && ./deploy.sh

The key and base URL come from the configuration when -c is given or the default
configuration file exists; else from $CO_API_KEY (or $COHERE_API_KEY) and $CO_API_URL
(default https://api.cohere.com). --json prints JSON Lines: one
{"status", "created_at", "duration_seconds"} per status (duration null while current),
and with --follow a last {"final_status", "exit_code"}. While following, server errors,
timeouts, rate limits and malformed answers are retried with a warning on stderr.

exit codes:
  0   the timeline was printed; with --follow: the model became READY
  1   with --follow: the model became FAILED or DELETED; or an API error
      (key rejected, model not found, ...)
  78  the configuration is invalid, or no API key was found
  130 interrupted (Ctrl-C); 143 terminated (SIGTERM) while following
"""
TEST_NOTIFY_EPILOG = """\
example:
  finetune-watcher test-notify -c config/watcher.yaml --model 7a317d97-4d05-427d-9396-f31b9fb92c55

Without --model: a plain "finetune-watcher test notification" (type info) to every target,
global and per model. With --model: the global targets and that model's own, and the
message its last stored status would send (a sample READY message when nothing is stored),
its title prefixed with "[test]". One line per target: its redacted label, where it is
configured, and ok or why it failed. URLs are never printed.

exit codes:
  0   every target accepted the message
  1   some target failed (or there is no target, or the model is unknown)
  74  the state database is unusable (--model)
  78  the configuration is invalid
"""
HEALTHCHECK_EPILOG = """\
example:
  finetune-watcher healthcheck --url http://127.0.0.1:9464/healthz

The URL: --url; else from health.listen of the configuration given with -c; else from
$WATCHER_HEALTH__LISTEN; else http://127.0.0.1:9464/healthz. Prints one line
(healthy: ... / unhealthy: ...). Used by the container's HEALTHCHECK.

exit codes:
  0   /healthz answered 200
  1   it answered something else, or could not be reached
  78  the configuration (-c) or $WATCHER_HEALTH__LISTEN is invalid
"""


def _add_everyday_commands(
    add: Callable[..., argparse.ArgumentParser],
) -> None:
    from watcher.commands import DEFAULT_FOLLOW_INTERVAL, positive_seconds

    status = add("status", cmd_status, "Show every watched model's status from the state database.")
    status.description = (
        "Show every watched model from the state database: its name, id, current status,\n"
        "since when, the last poll, the last error and its undelivered notifications, then\n"
        "the outbox counts. Makes no API calls and is safe while the daemon runs. Models\n"
        'in the configuration that the daemon has not polled yet show as "not polled yet".'
    )
    status.add_argument("--json", action="store_true", help="print one JSON document (see below)")
    status.epilog = STATUS_EPILOG

    events = add(
        "events", cmd_events, "Show a model's status timeline from the API; --follow waits for it."
    )
    events.description = (
        "Show a fine-tuned model's timeline from the Cohere API: each status, when it began\n"
        "and how long the model spent in it. With --follow, keep polling, print each new\n"
        "status as it arrives (with a live one-line status on a terminal) and exit 0 when\n"
        "the model becomes READY, 1 when it becomes FAILED or DELETED: usable in scripts."
    )
    events.add_argument("model_id", metavar="MODEL_ID", help="the fine-tuned model's id")
    events.add_argument(
        "--follow",
        action="store_true",
        help="keep polling and print each new status; exit 0 on READY, 1 on FAILED/DELETED",
    )
    events.add_argument("--json", action="store_true", help="print JSON Lines (see below)")
    events.add_argument(
        "--interval",
        type=positive_seconds,
        default=DEFAULT_FOLLOW_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between polls with --follow (default {DEFAULT_FOLLOW_INTERVAL:g})",
    )
    events.epilog = EVENTS_EPILOG

    test_notify = add(
        "test-notify", cmd_test_notify, "Send a test notification to every target; report each."
    )
    test_notify.description = (
        "Send a test notification to every configured target (notify.urls and every\n"
        "model's own urls) and print one line per target: ok, or why it failed."
    )
    test_notify.add_argument(
        "--model",
        metavar="ID",
        default=None,
        help="only the global targets and this model's own, with the message its last "
        "stored status would send",
    )
    test_notify.epilog = TEST_NOTIFY_EPILOG

    health = add(
        "healthcheck",
        cmd_healthcheck,
        "Check a running daemon's /healthz (container HEALTHCHECK).",
        with_config=False,
    )
    health.description = (
        "Fetch a running daemon's /healthz endpoint (health.listen must be set) and exit 0\n"
        "when it answers 200, 1 otherwise. Starts fast; makes no API calls."
    )
    health.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="take the address from this configuration's health.listen (only when given)",
    )
    health.add_argument("--url", default=None, help="the /healthz URL (default: see below)")
    health.add_argument(
        "--timeout",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="give up after this many seconds (default 5)",
    )
    health.epilog = HEALTHCHECK_EPILOG


def cmd_status(args: argparse.Namespace) -> int:
    from watcher.commands import status_command

    return status_command(_config_path(args), as_json=args.json)


def cmd_events(args: argparse.Namespace) -> int:
    from watcher.commands import events_command

    return events_command(
        args.model_id,
        config=args.config,
        follow=args.follow,
        as_json=args.json,
        interval=args.interval,
    )


def cmd_test_notify(args: argparse.Namespace) -> int:
    from watcher.commands import send_test_notifications

    code = send_test_notifications(_config_path(args), model_id=args.model)
    _exit_without_waiting_for_senders(code)
    return code


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from watcher.commands import healthcheck_command

    return healthcheck_command(args.url, config=args.config, timeout=args.timeout)
