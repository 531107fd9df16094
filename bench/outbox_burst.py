"""How fast the outbox drains a burst: N notifications due at once to one webhook.

    .venv/bin/python bench/outbox_burst.py [--items 300] [--delay-ms 50] [--models N]
        [--concurrency N] [--dir /dev/shm]

A real SQLite outbox, the real ``Notifier`` (apprise ``json://``) and a loopback
aiohttp receiver that answers each POST after ``--delay-ms``. Every item is about
its own model unless ``--models`` is smaller (then items cycle over the models, so
some go in order to one (target, model) lane). Passes of ``deliver_due`` run until
the outbox is empty; prints items/s and the time to the last delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web

from watcher.lifecycle import ModelKey
from watcher.messages import Message
from watcher.notify import Notifier, make_target
from watcher.outbox import deliver_due
from watcher.store.base import OutboxItem
from watcher.store.sqlite import SqliteStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def render(item: OutboxItem) -> Message:
    return Message(item.title or "", item.body or "", item.notify_type or "info")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--models", type=int, default=0, help="0: one model per item")
    parser.add_argument("--concurrency", type=int, default=None, help="deliver_due's bound")
    parser.add_argument("--dir", default=None, help="where the state file goes (e.g. /dev/shm)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    received: list[str] = []
    in_flight = [0, 0]  # now, most at once

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(args.delay_ms / 1000)
        in_flight[0] -= 1
        received.append(body["title"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/notify", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target = make_target(f"json://127.0.0.1:{port}/notify")
    models = args.models or args.items
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = await SqliteStore.open(Path(tmp) / "state.db")
        for n in range(args.items):
            await store.enqueue_message(
                kind="ops", title=f"item {n}", body="b", notify_type="info",
                created_at=NOW, model=ModelKey("cohere", f"m{n % models}"),
            )  # fmt: skip
        notifier = Notifier(timeout=10)
        await notifier.send(Message("warm-up", "b", "info"), [target])  # load apprise's plugins
        received.clear()
        started = time.perf_counter()
        passes = 0
        extra = {} if args.concurrency is None else {"concurrency": args.concurrency}
        while (await store.outbox_counts()).pending:
            await deliver_due(
                store, notifier, targets_for=lambda item: [target], render=render,
                now=NOW, give_up_after=3600, **extra,
            )  # fmt: skip
            passes += 1
        elapsed = time.perf_counter() - started
        await notifier.aclose()
        await store.aclose()
    await runner.cleanup()
    assert len(received) == args.items, (len(received), args.items)
    print(
        f"items={args.items} models={models} delay={args.delay_ms:g}ms "
        f"concurrency={args.concurrency or 'default'} passes={passes} "
        f"elapsed={elapsed:.2f}s rate={args.items / elapsed:.1f} items/s "
        f"most_posts_at_once={in_flight[1]}"
    )


if __name__ == "__main__":
    asyncio.run(main())
