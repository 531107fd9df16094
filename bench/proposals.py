"""A prototype of the daemon change the benchmarks still propose, to measure it before it lands.

Not the daemon: a subclass of ``watcher.daemon.Watcher`` that the lead can read as a
diff of intent. P1-P8 and P10 of docs/benchmarks.md landed in the daemon, the store and
the metrics (commits 8f84418, a7ca65e); what is left is

* ``pace`` -- with a binding request budget, pick the next model when the budget has a
  slot free (``RequestPacer.seconds_until_free``), one worker at a time, instead of
  letting up to ``poll.concurrency`` polls chosen earlier queue in the pacer (where the
  enrichment requests of a READY model then queue behind them too).

Run the daemon with it:

    .venv/bin/python bench/proposals.py run -c watcher.yaml
"""

from __future__ import annotations

import sys

import anyio

import watcher.daemon as daemon


class ProposedWatcher(daemon.Watcher):
    async def _poll_loop(self) -> None:
        picking = anyio.Lock()

        async def worker() -> None:
            while True:
                # One worker at a time waits for a free slot, then takes the most overdue
                # model; its request reserves that slot before any other task runs (no
                # await between the pick and RequestPacer.reserve). It wakes one spacing
                # early: a late wake-up would leave the slot unused.
                async with picking:
                    wait = self._pacer.seconds_until_free() - self._pacer.spacing
                    if wait > 0:
                        await anyio.sleep(wait)
                    model = await self._next_due()  # refreshes the heartbeat
                await self.poll_model(model)

        async with anyio.create_task_group() as workers:
            for _ in range(self.settings.poll.concurrency):
                workers.start_soon(worker)


def main() -> int:
    daemon.Watcher = ProposedWatcher  # type: ignore[misc]
    from watcher.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
