"""``finetune-watcher simulate``: serve the fake fine-tuning API until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from pathlib import Path

from watcher.commands.base import Subparsers, add_command
from watcher.errors import EX_OK, WatcherError

__all__ = ["CONFIG_HELP", "add_parser", "serve_simulator"]

CONFIG_HELP: str | None = None  # a scenario file, not a configuration


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "simulate",
        serve_simulator,
        summary="Serve the fake fine-tuning API, to dry-run a real configuration.",
    )
    parser.add_argument(
        "--scenario", type=Path, default=None, help="scenario YAML (default: the demo scenario)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8010, help="port to bind (default 8010)")
    return parser


def serve_simulator(args: argparse.Namespace) -> int:
    """Announce the base URL on stdout, serve until a signal; a busy port is one line."""
    import anyio

    from watcher.signals import first_signal
    from watcher.simulator import demo_scenario, load_scenario, serve_forever

    scenario = load_scenario(args.scenario) if args.scenario else demo_scenario()

    def announce(base_url: str) -> None:
        print(f"simulator listening on {base_url}", flush=True)

    async def serve_until_signal() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_forever(scenario, host=args.host, port=args.port, on_ready=announce)
            )
            await first_signal()  # SIGTERM or SIGINT
            tg.cancel_scope.cancel()

    try:
        anyio.run(serve_until_signal)
    except OSError as exc:
        raise WatcherError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None
    return EX_OK
