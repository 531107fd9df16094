"""Crash consistency with replicas: the leader SIGKILLed at random moments, and paused once.

Three replicas of ``finetune-watcher run`` share one real PostgreSQL (``tests.pg``,
``state.lease_ttl: 2``) and run against the simulator (manual clock) and a ``json://``
receiver. Thirty models finish (READY or FAILED) at staggered simulator times; the test
moves the clock step by step and, at seeded-random moments, SIGKILLs whichever replica
leads (found by its ``/readyz`` role; ``KILLS`` times, 4 in the suite) and restarts it;
once it SIGSTOPs the leader for 3 x ttl, then SIGCONTs it. At the end every outcome was
delivered (lost = 0) with at most one duplicate per failover (the send in flight at the
kill), the paused replica sent nothing after its successor took over, and every takeover
is timed: from the kill (or the pause) until another replica's ``/readyz`` says ``leader``.
The figures are printed (``pytest tests/test_crash_ha.py -s``); docs/benchmarks.md records
the long run, ten kills: ``CRASH_KILLS=10 pytest tests/test_crash_ha.py -s`` (``CRASH_SEED``
changes the seed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time
from collections import Counter
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import psycopg
import pytest

from tests.conftest import DaemonProcess, daemon, wait_until
from tests.ha import TTL, readyz, replica_config, sender
from tests.receivers import webhook_receiver
from tests.test_crash import (
    MODELS,
    delivered_per_model,
    model_id,
    outcome_at,
)
from tests.test_crash import crash_scenario as scenario
from watcher.simulator import running_simulator

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest
    from tests.pg import Database

pytest_plugins = ["tests.pg"]

SEED = int(os.environ.get("CRASH_SEED", "20261130"))
#: Kills per run: 4 in the suite (plus the pause: 5 failovers, 26-53 s); the benchmark figures
#: come from ``CRASH_KILLS=10`` (11 failovers, ~60 s).
KILLS = int(os.environ.get("CRASH_KILLS", "4"))
REPLICAS = ("a", "b", "c")


class Replicas:
    """The running replicas by name, each restartable on its own configuration."""

    def __init__(self, stack: AsyncExitStack, confs: dict[str, tuple[Path, int]]) -> None:
        self._stack = stack
        self.confs = confs
        self.procs: dict[str, DaemonProcess] = {}

    async def start(self, name: str) -> None:
        self.procs[name] = await self._stack.enter_async_context(daemon(self.confs[name][0]))

    def led_at(self, name: str, after: float) -> float:
        """When (Unix time) replica ``name`` logged that it leads, first after ``after``."""
        for line in self.procs[name].log().splitlines():
            if "this replica leads" not in line:
                continue
            record = json.loads(line)
            at = datetime.fromisoformat(record["timestamp"]).timestamp()
            if at > after:
                return at
        raise AssertionError(f"replica {name} never logged that it leads")

    async def until_standby(self, name: str, timeout: float = 20.0) -> None:
        with anyio.fail_after(timeout):
            while (await readyz(self.confs[name][1]))[1].get("role") != "standby":
                await anyio.sleep(0.05)

    async def roles(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for name, (_, port) in self.confs.items():
            _, body = await readyz(port)
            found[name] = body.get("role")
        return found

    async def leader(self, *, other_than: str | None = None, timeout: float = 15.0) -> str:
        """The replica whose /readyz says ``leader`` (not ``other_than``)."""
        with anyio.move_on_after(timeout):
            while True:
                for name, (_, port) in self.confs.items():
                    if name == other_than:
                        continue
                    _, body = await readyz(port)
                    if body.get("role") == "leader":
                        return name
                await anyio.sleep(0.02)
        raise AssertionError(f"no leader within {timeout}s: {await self.roles()}")


async def wait_until_answers(port: int) -> None:
    with anyio.fail_after(15):
        while (await readyz(port))[0] == 0:
            await anyio.sleep(0.05)


@pytest.mark.realtime
class TestReplicasUnderFire:
    async def test_leader_killed_at_random_moments_and_paused_once(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        """30 models, 3 replicas, the leader SIGKILLed KILLS times at random moments (restarted) and
        SIGSTOPped once for 3 x ttl: lost 0, duplicates <= 1 per failover, the paused one
        silent after the takeover, every takeover within ttl + 1 s."""
        rng = random.Random(SEED)
        steps = outcome_at(MODELS - 1)
        kill_steps = Counter(rng.choices(range(1, steps + 1), k=KILLS))
        pause_step = steps // 2
        takeovers: list[float] = []  # from the kill to the successor's "leads" log line
        seen: list[float] = []  # from the kill to the successor's /readyz saying so
        suspects: set[str] = set()
        started = time.monotonic()
        async with (
            running_simulator(scenario()) as sim,
            webhook_receiver() as hook,
            AsyncExitStack() as stack,
        ):
            confs = {
                name: replica_config(
                    tmp_path,
                    name,
                    base_url=sim.base_url,
                    db=pg_database,
                    models=[model_id(i) for i in range(MODELS)],
                    urls=[hook.url],
                    interval=0.1,
                    settled_interval=1,
                    concurrency=8,
                    max_requests_per_minute=60_000,
                )
                for name in REPLICAS
            }
            replicas = Replicas(stack, confs)
            for name in REPLICAS:
                await replicas.start(name)
            first = await replicas.leader()
            await wait_until(lambda: len(sim.stats()["by_model"]) == MODELS, what="all polled")
            paused_silent = True
            # Started or restarted, not yet seen as a standby.
            starting = [name for name in REPLICAS if name != first]

            async def warm_standbys() -> None:
                # Every replica back as a warm standby before the next fault: a takeover is
                # timed against a running standby, not against a process still starting.
                # (The steps in between go on while a victim restarts.)
                while starting:
                    await replicas.until_standby(starting.pop())

            for step in range(1, steps + 1):
                sim.advance(1)
                for _ in range(kill_steps[step]):
                    await warm_standbys()
                    await anyio.sleep(rng.uniform(0.0, 0.6))  # a random moment of its work
                    victim = await replicas.leader()
                    accepted = len(hook.messages)
                    killed, killed_wall = time.monotonic(), time.time()
                    replicas.procs[victim].send(signal.SIGKILL)
                    await replicas.procs[victim].wait_exit()
                    successor = await replicas.leader(other_than=victim)
                    seen.append(time.monotonic() - killed)
                    takeovers.append(replicas.led_at(successor, killed_wall) - killed_wall)
                    # A duplicate can only be what was accepted around the kill.
                    suspects.update(delivered_per_model(hook, since=accepted - 1))
                    await replicas.start(victim)
                    starting.append(victim)
                if step == pause_step:
                    await warm_standbys()
                    victim = await replicas.leader()
                    accepted = len(hook.messages)
                    paused, paused_wall = time.monotonic(), time.time()
                    replicas.procs[victim].send(signal.SIGSTOP)
                    successor = await replicas.leader(other_than=victim)
                    seen.append(time.monotonic() - paused)
                    takeovers.append(replicas.led_at(successor, paused_wall) - paused_wall)
                    suspects.update(delivered_per_model(hook, since=accepted - 1))
                    await anyio.sleep(max(0.0, 3 * TTL - (time.monotonic() - paused)))
                    after_takeover = len(hook.requests)
                    replicas.procs[victim].send(signal.SIGCONT)
                    await anyio.sleep(TTL)
                    late = [sender(r.payload or {}) for r in hook.requests[after_takeover:]]
                    paused_silent = victim not in late
                    roles = await replicas.roles()
                    assert roles[victim] == "standby", roles
                finishing = {model_id(i) for i in range(MODELS) if outcome_at(i) == step}
                with anyio.move_on_after(10):
                    await wait_until(
                        lambda due=finishing: due <= set(delivered_per_model(hook)), timeout=10
                    )
            with anyio.move_on_after(20):
                await wait_until(lambda: len(delivered_per_model(hook)) == MODELS, timeout=20)
            # A SIGTERM before a restarted replica installed its handler would kill it
            # outright: stop them once each one answers on its health port and stands by.
            # (Answering alone is not enough: a SIGTERM in the moment between its health
            # server and "watcher starting" was seen to be lost, the replica going on.)
            for name in REPLICAS:
                await wait_until_answers(confs[name][1])
            await warm_standbys()
            for proc in replicas.procs.values():
                proc.send(signal.SIGTERM)
            for proc in replicas.procs.values():
                assert await proc.wait_exit() == 0, proc.log()[-3000:]

            delivered = delivered_per_model(hook)
            lost = sorted(model_id(i) for i in range(MODELS) if model_id(i) not in delivered)
            duplicates = sum(count - 1 for count in delivered.values())
            failovers = len(takeovers)
            elapsed = time.monotonic() - started
            median, worst = statistics.median(takeovers), max(takeovers)
            print(
                f"\nHA crash figures (seed {SEED}): replicas={len(REPLICAS)} models={MODELS} "
                f"kills={KILLS} pauses=1 failovers={failovers} delivered={len(delivered)} "
                f"lost={len(lost)} duplicates={duplicates} messages={len(hook.messages)} "
                f"takeover median={median:.2f}s worst={worst:.2f}s (ttl {TTL:g}s, "
                f"target <= {TTL + 1:g}s; seen on /readyz: median={statistics.median(seen):.2f}s "
                f"worst={max(seen):.2f}s) seconds={elapsed:.1f}"
            )
            assert lost == [], lost
            assert duplicates <= failovers
            duplicated = {m for m, count in delivered.items() if count > 1}
            assert duplicated <= suspects, (duplicated, suspects)
            assert paused_silent
            assert worst <= TTL + 1.0, takeovers
            with psycopg.connect(pg_database.url_with_password) as db:
                row = db.execute(
                    "SELECT count(*) FILTER (WHERE done_at IS NOT NULL), "
                    "count(*) FILTER (WHERE done_at IS NULL) FROM finetune_watcher.outbox"
                ).fetchone()
            assert row == (MODELS, 0)  # one outbox row per transition, never two
