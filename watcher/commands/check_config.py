"""``finetune-watcher check-config``: validate the configuration, print a summary."""

from __future__ import annotations

import argparse

from watcher.commands.base import (
    CONFIG_HELP,
    Subparsers,
    add_command,
    config_path,
    load_configuration,
)
from watcher.errors import EX_OK

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
    print(f"{path}: OK")
    for line in summary_lines(settings, api_keys):
        print(f"  {line}")
    return EX_OK
