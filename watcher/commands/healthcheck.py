"""``finetune-watcher healthcheck``: 0 when a running daemon's ``/healthz`` answers 200.

The container's ``HEALTHCHECK`` runs it every few seconds: it imports only what it
needs (the standard library, the settings only with ``-c``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from watcher.commands.base import (
    Subparsers,
    add_command,
    load_settings_for_reading,
    positive_seconds,
)
from watcher.errors import ConfigError

__all__ = ["CONFIG_HELP", "add_parser", "healthcheck_command", "healthcheck_target"]

CONFIG_HELP: str | None = (
    "take the address from this configuration's health.listen (only when given)"
)
DEFAULT_TIMEOUT = 5.0

EPILOG = """\
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


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "healthcheck",
        _from_args,
        summary="Check a running daemon's /healthz (container HEALTHCHECK).",
        description=(
            "Fetch a running daemon's /healthz endpoint (health.listen must be set) and exit 0\n"
            "when it answers 200, 1 otherwise. Starts fast; makes no API calls."
        ),
        epilog=EPILOG,
    )
    # It prints one line and logs nothing: no logging setup (structlog) unless -c is given.
    parser.set_defaults(needs_logging=False)
    parser.add_argument("--url", default=None, help="the /healthz URL (default: see below)")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT:g})",
    )
    return parser


def _from_args(args: argparse.Namespace) -> int:
    return healthcheck_command(args.url, config=args.config, timeout=args.timeout)


def healthcheck_target(url: str | None, config: Path | None, environ: Mapping[str, str]) -> str:
    """The ``/healthz`` URL to check, first match wins.

    ``--url``; the ``health.listen`` of the configuration given with ``-c`` (which
    ``$WATCHER_HEALTH__LISTEN`` overrides); ``$WATCHER_HEALTH__LISTEN``; the default
    ``http://127.0.0.1:9464/healthz``. Raises ``ConfigError`` for an unusable address.
    """
    from watcher.healthprobe import DEFAULT_HEALTHCHECK_URL, healthcheck_url

    if url:
        return url
    source = "$WATCHER_HEALTH__LISTEN"
    listen = environ.get("WATCHER_HEALTH__LISTEN") or None
    if config is not None:
        listen = load_settings_for_reading(config, parse_targets=False).health.listen
        source = f"{config}: health.listen"
    if listen is None:
        return DEFAULT_HEALTHCHECK_URL
    try:
        return healthcheck_url(listen)
    except ValueError as exc:
        raise ConfigError(source, [str(exc)]) from None


def healthcheck_command(
    url: str | None,
    *,
    config: Path | None,
    timeout: float,
    environ: Mapping[str, str] | None = None,
) -> int:
    """0 when the daemon's ``/healthz`` answers 200, else 1; prints one line."""
    from watcher.healthprobe import healthcheck

    target = healthcheck_target(url, config, os.environ if environ is None else environ)
    return healthcheck(target, timeout=timeout)
