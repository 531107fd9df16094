"""Run the daemon with a chosen poll-pick policy, to measure one policy against another.

Scheduling experiments go through the schedule's seam, ``watcher.schedule.PickPolicy``
(how a free poll worker gets its next model), passed to ``watcher.daemon.serve``: no
subclass, no monkeypatching. P9 of docs/benchmarks.md ("pace, then pick": with a binding
budget, wait for a free request slot, then take the most overdue model) measured better
(logged -> webhook 108 ms -> 30 ms, mean latency 1.06 -> 1.02 x the ideal) and is now the
daemon's default, ``PaceThenPick``; the previous behaviour is ``PickThenPace``.

    .venv/bin/python bench/proposals.py run -c watcher.yaml                  # the default
    .venv/bin/python bench/proposals.py run -c watcher.yaml --pick pick-then-pace
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from watcher.schedule import PaceThenPick, PickPolicy, PickThenPace

#: The policies by the name ``--pick`` takes.
POLICIES: dict[str, Callable[[], PickPolicy]] = {
    "pace-then-pick": PaceThenPick,
    "pick-then-pace": PickThenPace,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proposals.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the daemon (like `finetune-watcher run`)")
    run.add_argument("-c", "--config", type=Path, required=True)
    run.add_argument("--pick", choices=sorted(POLICIES), default="pace-then-pick")
    run.add_argument("--log-format", choices=("json", "console"), default=None)
    run.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    from watcher.daemon import serve
    from watcher.logs import configure_logging
    from watcher.settings import load_settings, register_secrets, resolve_api_keys

    configure_logging(fmt=args.log_format, level=args.log_level)
    settings = load_settings(args.config)
    api_keys = resolve_api_keys(settings)
    register_secrets(settings, api_keys)
    pick = POLICIES[args.pick]()
    return anyio.run(
        lambda: serve(
            settings, api_keys, reload_settings=lambda: load_settings(args.config), pick=pick
        )
    )


if __name__ == "__main__":
    sys.exit(main())
