"""``finetune-watcher once``: poll every model once, deliver what is due, exit."""

from __future__ import annotations

import argparse

from watcher.commands.base import (
    CONFIG_HELP,
    Subparsers,
    add_command,
    config_path,
    load_configuration,
)

__all__ = ["CONFIG_HELP", "add_parser", "poll_once"]


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "once",
        poll_once,
        summary="Poll every model once, deliver what is due, exit (for cron/timers).",
    )


def poll_once(args: argparse.Namespace) -> int:
    """One round; exit 1 when every poll failed (see ``watcher.daemon.serve``)."""
    import anyio

    from watcher.daemon import serve

    settings, api_keys = load_configuration(config_path(args))
    return anyio.run(lambda: serve(settings, api_keys, once=True, handle_signals=False))
