"""``finetune-watcher run``: the daemon, until SIGTERM/SIGINT; SIGHUP reloads."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from watcher.commands.base import (
    CONFIG_HELP,
    Subparsers,
    add_command,
    config_path,
    exit_without_waiting_for_senders,
    load_configuration,
)

if TYPE_CHECKING:
    from watcher.settings import Settings

__all__ = ["CONFIG_HELP", "add_parser", "run_daemon"]


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "run",
        run_daemon,
        summary="Run the daemon: watch every configured model until SIGTERM/SIGINT.",
        exit_on_early_sigterm=True,
    )


def run_daemon(args: argparse.Namespace) -> int:
    """Serve until stopped; a reload re-reads the same file (the key stays the same)."""
    import anyio

    from watcher.daemon import serve
    from watcher.settings import load_settings, register_secrets

    path = config_path(args)
    settings, api_keys = load_configuration(path)
    _warn_about_key_files(settings)

    def reload_settings() -> Settings:
        # Blocking (file I/O, a parse of up to settings.MAX_CONFIG_BYTES) and thread-safe:
        # the daemon calls it off the event loop (anyio.to_thread.run_sync).
        new = load_settings(path)
        register_secrets(new, api_keys)
        return new

    code = anyio.run(lambda: serve(settings, api_keys, reload_settings=reload_settings))
    exit_without_waiting_for_senders(code)
    return code


def _warn_about_key_files(settings: Settings) -> None:
    """Log a warning per secret file every user may read (``settings.key_file_warnings``)."""
    import structlog

    from watcher.settings import key_file_warnings

    log = structlog.get_logger("watcher")
    for warning in key_file_warnings(settings):
        log.warning("secret file readable by every user", problem=warning)
