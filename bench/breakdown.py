"""Where a poll's CPU goes: the HTTP loop, the client on top of it, the daemon on top of that.

Two in-process measurements (CPU from ``time.process_time``, so the profiler-free truth):

* **client**: against the simulator (own process, 1,000 training models), 8 requests in
  flight, the same loop driving (a) a bare aiohttp GET + ``json.loads``, (b)
  ``CohereProvider.fetch_history`` (providers/cohere.py over providers/http.py) with a full
  parse, (c) the same with ``unless_digest=`` (the answer's digest kept per model: what
  the daemon's poller calls);
* **daemon**: ``Watcher`` (``open_watcher``) running its real poll workers, its Cohere
  provider swapped for one that answers instantly (no HTTP): what the daemon itself costs
  per poll (schedule, pick policy, pacer, poller, store batching), saturated (1,000
  seeded models, interval 1 ms, 8 workers) and paced (2,000 models, interval 2 s, 16
  workers: 1,000 polls/s); beside it the paced bare loop's driver around a poll that
  does nothing (its timers and wake-ups).

    .venv/bin/python bench/breakdown.py --daemon-variant paced --seconds 12 \
        --workdir /tmp/bd --cprofile /tmp/bd/paced.prof.txt     # one variant, cProfiled

    .venv/bin/python bench/breakdown.py
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
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

    from watcher.pacing import RequestPacer
    from watcher.providers.cohere import CohereProvider
    from watcher.providers.http import ApiTransport, open_session

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
        session = open_session(
            headers={"Authorization": f"Bearer {harness.SIM_KEY}",
                     "X-Client-Name": "finetune-watcher"},
            timeout=30, concurrency=CONCURRENCY,
        )  # fmt: skip
        transport = ApiTransport(session, provider="cohere", pacer=RequestPacer(10**9),
                                 timeout=30)  # fmt: skip
        client = CohereProvider(transport, base_url=base_url)
        digests: dict[str, bytes] = {}

        async def poll(model_id: str) -> Any:
            if variant == "client":
                return await client.fetch_history(model_id)
            history = await client.fetch_history(model_id, unless_digest=digests.get(model_id))
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


#: Daemon variants: (models, poll.interval, poll.concurrency). "as-is" is saturated (every
#: model always due); "paced" is the paced benchmark's 1,000 polls/s (2,000 models / 2 s).
DAEMON_VARIANTS = {"as-is": (1000, 0.001, 8), "paced": (2000, 2.0, 16)}


def paced_floor(seconds: float, rate: float = 1000.0, concurrency: int = 16) -> float:
    """CPU per poll of the paced bare loop's driver (bench/clients.py) around a poll that
    does nothing: what its timers and wake-ups cost, to set beside the daemon's."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from clients import drive

    async def poll(model_id: str) -> None:
        await asyncio.sleep(0)

    async def main() -> float:
        ids = harness.model_ids(2000)
        await drive(poll, ids, concurrency=concurrency, duration=1.0, max_requests=10**9,
                    rate=rate)  # fmt: skip
        cpu0 = time.process_time()
        done, _ = await drive(poll, ids, concurrency=concurrency, duration=seconds,
                              max_requests=10**9, rate=rate)  # fmt: skip
        return 1e6 * (time.process_time() - cpu0) / done

    return asyncio.run(main())


def daemon_costs(workdir: Path, seconds: float, log: Any) -> dict[str, float]:
    """CPU per poll of the real poll loop with an instant client, saturated and paced."""
    variants = list(DAEMON_VARIANTS)
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


def _daemon_variant(
    variant: str, workdir: Path, seconds: float, cprofile: Path | None = None
) -> float:
    import dataclasses

    import anyio

    from watcher.daemon import open_watcher
    from watcher.lifecycle import Event
    from watcher.providers.base import History
    from watcher.settings import load_settings, resolve_api_keys

    models, interval, concurrency = DAEMON_VARIANTS.get(variant, DAEMON_VARIANTS["as-is"])
    ids = harness.model_ids(models)
    state = workdir / "watcher.db"
    for suffix in ("", "-wal", "-shm", ".lock"):
        (state.parent / (state.name + suffix)).unlink(missing_ok=True)
    harness.seed_state(state, ids)
    config = harness.watcher_config(workdir / "watcher.yaml", base_url="http://127.0.0.1:9",
                                    ids=ids, state=state, interval=interval,
                                    concurrency=concurrency)  # fmt: skip
    events = [Event(s, harness.SIM_START + timedelta(seconds=o)) for o, s in harness.TRAINING]
    digest = b"0123456789abcdef"
    calls = 0

    class InstantProvider:
        """The real provider for everything but the poll, which answers at once."""

        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        async def fetch_history(self, job_id: str, *, unless_digest: bytes | None = None) -> Any:
            nonlocal calls
            calls += 1
            await anyio.lowlevel.checkpoint()
            if unless_digest == digest:
                return History([], 0, 1, digest, unchanged=True)
            return History(list(events), 0, 1, digest)

    pick: Any = None
    if variant not in DAEMON_VARIANTS:
        import proposals

        pick = proposals.POLICIES[variant]()

    async def main() -> float:
        settings = load_settings(config)
        api_keys = resolve_api_keys(settings, {"CO_API_KEY": harness.SIM_KEY})
        samples = []
        async with open_watcher(settings, api_keys, pick=pick) as watcher:
            real = watcher.clients["cohere"]
            watcher.clients._clients["cohere"] = dataclasses.replace(
                real, provider=InstantProvider(real.provider)
            )
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.run)
                await anyio.sleep(1.0 + (interval if interval > 1 else 0))  # round one done
                profiler = None
                if cprofile is not None:
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                for _ in range(3):
                    calls0, cpu0 = calls, time.process_time()
                    await anyio.sleep(seconds / 3)
                    if calls > calls0:
                        samples.append(1e6 * (time.process_time() - cpu0) / (calls - calls0))
                if profiler is not None:
                    profiler.disable()
                    import pstats

                    with cprofile.open("w") as out:
                        stats = pstats.Stats(profiler, stream=out)
                        out.write(f"{calls} polls in all\n")
                        stats.sort_stats("tottime").print_stats(45)
                        stats.sort_stats("cumulative").print_stats(60)
                watcher.stop()
        return harness.median(samples)

    result: float = anyio.run(main)
    return result


def run(workdir: Path, *, quick: bool = False, log: Any = print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    floor = [paced_floor(3.0 if quick else 6.0) for _ in range(1 if quick else 3)]
    log(f"breakdown: paced driver floor {harness.median(floor):6.1f} us CPU per poll")
    return {
        "client": client_costs(workdir, 1 if quick else 3, 2.0 if quick else 3.0, log),
        "daemon": daemon_costs(workdir, 3.0 if quick else 6.0, log),
        "paced_floor": floor,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/breakdown"))
    parser.add_argument("--daemon-variant", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=6.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--cprofile", type=Path, help="with --daemon-variant: cProfile the window into this file"
    )
    args = parser.parse_args()
    if args.daemon_variant:
        args.workdir.mkdir(parents=True, exist_ok=True)
        micros = _daemon_variant(args.daemon_variant, args.workdir, args.seconds, args.cprofile)
        print(json.dumps({"variant": args.daemon_variant, "micros": micros}))
        return 0
    print(json.dumps(run(args.workdir, quick=args.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
