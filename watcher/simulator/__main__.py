"""``python -m watcher.simulator``: run the fake provider APIs standalone (demo, benchmarks).

Prints ``simulator listening on http://HOST:PORT`` once bound, serves until SIGTERM or
SIGINT, then shuts down cleanly and exits 0. A bad scenario exits 78 with one line per problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from watcher.errors import EX_CONFIG, EX_FAILURE, EX_OK, ConfigError
from watcher.simulator.app import serve_forever
from watcher.simulator.scenario import Scenario, demo_scenario, load_scenario


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m watcher.simulator",
        description=(
            "Serve fake fine-tuning APIs from a scenario file: Cohere at the root, OpenAI at "
            "/openai/v1, Azure OpenAI at /azure/openai/v1, Mistral at /mistral, Together at "
            "/together, Fireworks at /fireworks."
        ),
    )
    parser.add_argument(
        "--scenario", type=Path, help="scenario YAML (default: the bundled demo scenario)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: any free)")
    return parser


def _announce(base_url: str) -> None:
    print(f"simulator listening on {base_url}", flush=True)


async def _serve_until_signalled(scenario: Scenario, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = asyncio.create_task(serve_forever(scenario, host=host, port=port, on_ready=_announce))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server  # re-raises a failure to bind


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario) if args.scenario else demo_scenario()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EX_CONFIG
    try:
        asyncio.run(_serve_until_signalled(scenario, args.host, args.port))
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return EX_FAILURE
    return EX_OK


if __name__ == "__main__":
    raise SystemExit(main())
