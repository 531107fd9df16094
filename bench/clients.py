"""The reference clients of the poll-cost benchmarks, each run as its own process.

``bare``: an aiohttp loop that only GETs a model's status and parses the JSON -- the
practical limit of this machine for a Python client. ``sdk``: the loop a user would
write with the official ``cohere`` SDK (``AsyncClient.finetuning.list_events``).

Both poll ``PREFIX00000 .. PREFIX{count-1}`` round-robin with ``concurrency`` workers
until ``--duration`` seconds or ``--max-requests`` requests, whichever comes first
(every loop is bounded in count and time), and only talk to loopback.

Saturated (the default): every worker polls again as soon as its last poll is done.
Paced (``--rate R``): poll k starts at ``t0 + k / R`` (evenly spaced, like a daemon
whose models are due one after the other); a worker claims the next slot, sleeps until
it, then polls; ``concurrency`` bounds the polls in flight.

``--provider`` (bare only) picks the endpoint that provider's client polls on the
simulator (bench/paced.py: PROVIDER_POLL); ``--newest-event`` adds OpenAI's/Azure's
second request (``/events?limit=1``) to every poll.

    python bench/clients.py bare --base-url http://127.0.0.1:PORT --count 1000 \
        --concurrency 8 --duration 30
    python bench/clients.py bare --base-url http://127.0.0.1:PORT --count 2000 \
        --concurrency 16 --rate 1000 --duration 30 --provider openai
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
API_KEY = "sim-key"


def model_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(count)]


#: The simulator's URL prefix and a job's status path at each provider (SDK conventions).
PROVIDER_PATHS = {
    "cohere": ("", "/v1/finetuning/finetuned-models/{id}/events?order_by=created_at&page_size=50"),
    "openai": ("/openai/v1", "/fine_tuning/jobs/{id}"),
    "azure-openai": ("/azure/openai/v1", "/fine_tuning/jobs/{id}"),
    "mistral": ("/mistral", "/v1/fine_tuning/jobs/{id}"),
    "together": ("/together", "/v1/fine-tunes/{id}"),
    "fireworks": ("/fireworks", "/v1/accounts/sim-account/supervisedFineTuningJobs/{id}"),
}


async def drive(
    poll_one: Callable[[str], Awaitable[None]],
    ids: list[str],
    *,
    concurrency: int,
    duration: float,
    max_requests: int,
    rate: float | None = None,
) -> tuple[int, int]:
    """Poll ``ids`` round-robin with ``concurrency`` workers; returns (ok, failed).

    ``rate``: poll k starts at ``t0 + k / rate`` (paced) instead of at once (saturated).
    """
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + duration
    cycle = itertools.cycle(ids)
    issued = 0
    ok = failed = 0
    t0 = loop.time()
    spacing = 1.0 / rate if rate else 0.0

    async def worker() -> None:
        nonlocal issued, ok, failed
        while issued < max_requests and time.monotonic() < deadline:
            slot = issued
            issued += 1
            if spacing:
                wait = t0 + slot * spacing - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                await poll_one(next(cycle))
                ok += 1
            except Exception:  # a benchmark client counts failures, it does not stop
                failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, failed


async def run_bare(args: argparse.Namespace) -> tuple[int, int]:
    import aiohttp

    prefix, path = PROVIDER_PATHS[args.provider]
    base = args.base_url.rstrip("/") + prefix
    auth = (
        {"api-key": API_KEY}
        if args.provider == "azure-openai"
        else {"Authorization": f"Bearer {API_KEY}"}
    )
    headers = {**auth, "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    newest = "/events?limit=1" if args.newest_event else None
    if args.provider == "cohere" and not args.rate:
        # The saturated benchmark's loop as it always was: a params dict per request.
        base += "/v1/finetuning/finetuned-models/"
        params: dict[str, str] | None = {"order_by": "created_at", "page_size": "50"}
        urls = {m: base + m + "/events" for m in model_ids(args.prefix, args.count)}
    else:
        params = None  # one pre-encoded URL string per model, as the daemon's clients do
        urls = {m: base + path.format(id=m) for m in model_ids(args.prefix, args.count)}
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def poll_one(model_id: str) -> None:
            url = urls[model_id]
            async with session.get(url, params=params) as response:
                body = json.loads(await response.read())
                if response.status != 200 or not isinstance(body, dict):
                    raise RuntimeError(f"HTTP {response.status}")
            if newest is not None:
                async with session.get(url + newest) as response:
                    body = json.loads(await response.read())
                    if response.status != 200 or not isinstance(body.get("data"), list):
                        raise RuntimeError(f"HTTP {response.status}")

        return await drive(
            poll_one,
            model_ids(args.prefix, args.count),
            concurrency=args.concurrency,
            duration=args.duration,
            max_requests=args.max_requests,
            rate=args.rate,
        )


async def run_sdk(args: argparse.Namespace) -> tuple[int, int]:
    import cohere
    import httpx

    # The same pool size as the other clients, so only the client's own cost differs.
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    http = httpx.AsyncClient(limits=limits, timeout=30.0)
    client = cohere.AsyncClient(
        api_key=API_KEY, base_url=args.base_url, httpx_client=http, max_retries=0
    )
    try:

        async def poll_one(model_id: str) -> None:
            answer = await client.finetuning.list_events(
                finetuned_model_id=model_id, page_size=50, order_by="created_at"
            )
            if answer.events is None:
                raise RuntimeError("no events")

        return await drive(
            poll_one,
            model_ids(args.prefix, args.count),
            concurrency=args.concurrency,
            duration=args.duration,
            max_requests=args.max_requests,
            rate=args.rate,
        )
    finally:
        await http.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("bare", "sdk"))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="bench-")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, help="polls per second, evenly paced")
    parser.add_argument("--provider", choices=sorted(PROVIDER_PATHS), default="cohere")
    parser.add_argument(
        "--newest-event",
        action="store_true",
        help="OpenAI/Azure: also GET the job's newest event on every poll",
    )
    args = parser.parse_args(argv)
    if urlsplit(args.base_url).hostname not in LOOPBACK_HOSTS:
        parser.error("the benchmark clients only talk to loopback")
    if args.kind == "sdk" and args.provider != "cohere":
        parser.error("the SDK loop is Cohere's")
    runner = run_bare if args.kind == "bare" else run_sdk
    started = time.monotonic()
    ok, failed = asyncio.run(runner(args))
    elapsed = time.monotonic() - started
    print(json.dumps({"ok": ok, "failed": failed, "seconds": round(elapsed, 3)}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
