"""``finetune-watcher demo``: the real daemon against the bundled simulator."""

from __future__ import annotations

import argparse

from watcher.commands.base import Subparsers, add_command

__all__ = ["CONFIG_HELP", "add_parser", "run_demo"]

CONFIG_HELP: str | None = None  # the demo brings its own configuration


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "demo",
        run_demo,
        summary="Run the real daemon against the bundled simulator; no key, network or config.",
        default_log_level="warning",  # its output is the show
        exit_on_early_sigterm=True,
    )


def run_demo(args: argparse.Namespace) -> int:
    import anyio

    from watcher.demo import run_demo as demo

    return anyio.run(demo)
