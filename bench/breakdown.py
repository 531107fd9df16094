"""Where a poll's CPU goes: the HTTP loop, the client on top of it, the daemon on top of that.

Two in-process measurements (CPU from ``time.process_time``, so the profiler-free truth):

* **client**: against the simulator (own process, 1,000 training models), 8 requests in
  flight, the same loop driving (a) a bare aiohttp GET + ``json.loads``, (b)
  ``CohereClient.list_events`` as the daemon calls it today, (c) the same with
  ``unless_digest=`` (the answer's digest kept per model, as proposed for the daemon);
* **daemon**: ``Watcher`` running its real poll loop for 1,000 seeded models with a client
  that answers instantly (no HTTP): what the daemon itself costs per poll.

    .venv/bin/python bench/breakdown.py
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

CONCURRENCY = 8


async def _drive(poll: Callable[[str], Awaitable[Any]], ids: list[str], seconds: float) -> int:
    cycle = itertools.cycle(ids)
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await poll(next(cycle))
            done += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done


async def _client_variant(base_url: str, ids: list[str], variant: str, seconds: float) -> float:
    import aiohttp

    from watcher.cohere import CohereClient, open_session
    from watcher.pacing import RequestPacer

    if variant == "bare":
        session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {harness.SIM_KEY}"},
            connector=aiohttp.TCPConnector(limit=CONCURRENCY),
        )
        prefix = base_url + "/v1/finetuning/finetuned-models/"
        params = {"order_by": "created_at", "page_size": "50"}

        async def poll(model_id: str) -> Any:
            async with session.get(prefix + model_id + "/events", params=params) as answer:
                return json.loads(await answer.read())

    else:
        session = open_session(api_key=harness.SIM_KEY, timeout=30, concurrency=CONCURRENCY)
        client = CohereClient(session, base_url=base_url, timeout=30,
                              pacer=RequestPacer(10**9))  # fmt: skip
        digests: dict[str, bytes] = {}

        async def poll(model_id: str) -> Any:
            if variant == "client":
                return await client.list_events(model_id)
            history = await client.list_events(model_id, unless_digest=digests.get(model_id))
            if history.digest is not None:
                digests[model_id] = history.digest
            return history

    try:
        await _drive(poll, ids, 1.0)  # warm-up: connections, caches
        cpu0 = time.process_time()
        done = await _drive(poll, ids, seconds)
        return 1e6 * (time.process_time() - cpu0) / done
    finally:
        await session.close()


def client_costs(workdir: Path, reps: int, seconds: float, log: Any) -> dict[str, list[float]]:
    ids = harness.model_ids(1000)
    results: dict[str, list[float]] = {}
    with harness.running_simulator(harness.scenario(1000), workdir, "sim-breakdown") as sim:
        for _ in range(reps):
            for variant in ("bare", "client", "client+digest"):
                micros = asyncio.run(_client_variant(sim.base_url, ids, variant, seconds))
                results.setdefault(variant, []).append(micros)
    for variant, values in results.items():
        log(f"breakdown: {variant:14s} {harness.median(values):6.1f} us CPU per poll")
    return results


def daemon_costs(workdir: Path, seconds: float, log: Any) -> dict[str, float]:
    """CPU per poll of the real poll loop with an instant client, per proposal set."""
    variants = ["as-is"]
    results: dict[str, float] = {}
    for variant in variants:
        # A fresh interpreter per variant: no state leaks between them.
        done = harness.spawn(
            [harness.PYTHON, __file__, "--daemon-variant", variant, "--seconds", str(seconds),
             "--workdir", str(workdir / f"daemon-{variant.replace(',', '-')}")],
            workdir / f"daemon-{variant.replace(',', '-')}.log",
        )  # fmt: skip
        code = done.process.wait(seconds * 3 + 60)
        text = done.log.read_text()
        if code != 0:
            raise RuntimeError(f"daemon variant {variant} failed:\n{text[-2000:]}")
        results[variant] = float(json.loads(text.strip().splitlines()[-1])["micros"])
        log(f"breakdown: daemon {variant:26s} {results[variant]:6.1f} us CPU per poll")
    return results


def _daemon_variant(variant: str, workdir: Path, seconds: float) -> float:
    import anyio

    import watcher.daemon as daemon
    from watcher.cohere import EventHistory
    from watcher.lifecycle import Event
    from watcher.notify import Notifier
    from watcher.pacing import RequestPacer
    from watcher.settings import load_settings, resolve_api_key
    from watcher.store import Store

    ids = harness.model_ids(1000)
    state = workdir / "watcher.db"
    harness.seed_state(state, ids)
    config = harness.watcher_config(workdir / "watcher.yaml", base_url="http://127.0.0.1:9",
                                    ids=ids, state=state, interval=0.001)  # fmt: skip
    events = [Event(s, harness.SIM_START + timedelta(seconds=o)) for o, s in harness.TRAINING]
    digest = b"0123456789abcdef"

    class InstantClient:
        calls = 0

        async def list_events(
            self, model_id: str, *, unless_digest: bytes | None = None
        ) -> EventHistory:
            InstantClient.calls += 1
            await anyio.lowlevel.checkpoint()
            if unless_digest == digest:
                return EventHistory([], 0, 1, digest, unchanged=True)
            return EventHistory(list(events), 0, 1, digest)

    watcher_class: Any = daemon.Watcher
    if variant == "pace":
        import proposals

        watcher_class = proposals.ProposedWatcher

    async def main() -> float:
        os.environ["CO_API_KEY"] = harness.SIM_KEY
        settings = load_settings(config)
        store = Store.open(state)
        client = InstantClient()
        watcher = watcher_class(
            settings, api_key=resolve_api_key(settings), store=store, client=client,
            notifier=Notifier(), pacer=RequestPacer(10**9),
        )  # fmt: skip
        samples = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            await anyio.sleep(1.0)
            for _ in range(3):
                calls, cpu0 = InstantClient.calls, time.process_time()
                await anyio.sleep(seconds / 3)
                samples.append(1e6 * (time.process_time() - cpu0) / (InstantClient.calls - calls))
            watcher.stop()
        store.close()
        return harness.median(samples)

    result: float = anyio.run(main)
    return result


def run(workdir: Path, *, quick: bool = False, log: Any = print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        "client": client_costs(workdir, 1 if quick else 3, 2.0 if quick else 3.0, log),
        "daemon": daemon_costs(workdir, 3.0 if quick else 6.0, log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/breakdown"))
    parser.add_argument("--daemon-variant", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=6.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.daemon_variant:
        args.workdir.mkdir(parents=True, exist_ok=True)
        micros = _daemon_variant(args.daemon_variant, args.workdir, args.seconds)
        print(json.dumps({"variant": args.daemon_variant, "micros": micros}))
        return 0
    print(json.dumps(run(args.workdir, quick=args.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
