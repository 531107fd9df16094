"""``finetune-watcher check-config``: validate the configuration, print a summary."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from watcher.commands.base import (
    CONFIG_HELP,
    Subparsers,
    add_command,
    config_path,
    load_configuration,
)
from watcher.errors import EX_OK

if TYPE_CHECKING:
    from watcher.settings import Settings

__all__ = ["CONFIG_HELP", "add_parser", "check_config"]


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "check-config",
        check_config,
        summary="Validate the configuration (and the API key's presence) and print a summary.",
    )


def check_config(args: argparse.Namespace) -> int:
    """``FILE: OK`` and the summary (targets redacted); a bad file raises ``ConfigError``.

    A secret file every user may read draws a ``FILE: warning: ...`` line on stderr
    (still OK: exit 0)."""
    import sys

    from watcher.settings import key_file_warnings, summary_lines

    path = config_path(args)
    settings, api_keys = load_configuration(path)
    for warning in key_file_warnings(settings):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    web_lines = _web_lines(settings)  # a bad token or webhook secret file: ConfigError
    print(f"{path}: OK")
    for line in [*summary_lines(settings, api_keys), *web_lines]:
        print(f"  {line}")
    return EX_OK


def _web_lines(settings: Settings) -> list[str]:
    """Who may read the status page (as the daemon logs it at start), and webhooks in."""
    from watcher.settings import resolve_web_token, resolve_webhook_secret
    from watcher.web.access import access_rule, describe_access

    token = resolve_web_token(settings)
    secret = resolve_webhook_secret(settings)
    if settings.health.host is None:
        return ["status page: off (health.listen is unset)"]
    access = access_rule(settings.health.host, public=settings.web.public,
                         has_token=token is not None)  # fmt: skip
    hooks = "verified with the signing secret" if secret else "off (no signing secret)"
    return [f"status page: {describe_access(access)}", f"webhooks (POST /webhooks/openai): {hooks}"]
