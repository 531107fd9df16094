"""High availability end to end: replicas of ``finetune-watcher run`` on one real PostgreSQL.

Every test runs real processes (``tests.conftest.daemon``) against the simulator (manual
clock) and a ``json://`` receiver, with ``state.lease_ttl: 2``. A message tells which
replica rendered it by its dashboard link (``tests.ha.sender``). docs/reliability.md
("High availability") lists what each test proves.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest

from tests.conftest import SIM_KEY, daemon, run_cli, wait_until
from tests.ha import TTL, leader_gauge, readyz, replica_config, sender, wait_for_role
from tests.receivers import WebhookReceiver, webhook_receiver
from watcher.providers.cohere import FINETUNING, QUEUED, READY
from watcher.simulator import Scenario, running_simulator

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest
    from tests.pg import Database

pytest_plugins = ["tests.pg"]
pytestmark = pytest.mark.realtime  # lease ttls of 2 s, takeovers, pauses

#: How long a takeover may take: the lease's ttl plus one second.
TAKEOVER_LIMIT = TTL + 1.0


def scenario(models: int, *, ready_at: int = 10) -> Scenario:
    """``models`` models that are READY at simulator second ``ready_at`` + their index."""
    return Scenario.model_validate(
        {
            "api_key": SIM_KEY,
            "clock": "manual",
            "models": [
                {
                    "id": f"ha-{i:02d}",
                    "timeline": [[0, QUEUED], [1, FINETUNING], [ready_at + i, READY]],
                }
                for i in range(models)
            ],
        }
    )


def per_model(hook: WebhookReceiver) -> Counter[str]:
    found: Counter[str] = Counter()
    for message in hook.messages:
        for word in f"{message['title']} {message['message']}".split():
            if word.startswith("ha-"):
                found[word.strip(".,:;()")] += 1
                break
    return found


def settle(models: int) -> list[str]:
    return [f"ha-{i:02d}" for i in range(models)]


class TestStandby:
    async def test_a_standby_makes_no_request_and_sends_nothing(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        """Replica b, started after a, points at its own simulator and receiver: while a
        leads, b's simulator counts 0 requests and b's receiver 0 messages; b's /readyz is
        200 with role standby, its leader gauge 0 (a's 1); `status --json` names a."""
        async with (
            running_simulator(scenario(3, ready_at=2)) as sim_a,
            running_simulator(scenario(3, ready_at=2)) as sim_b,
            webhook_receiver() as hook_a,
            webhook_receiver() as hook_b,
            AsyncExitStack() as stack,
        ):
            conf_a, port_a = replica_config(
                tmp_path, "a", base_url=sim_a.base_url, db=pg_database, models=settle(3),
                urls=[hook_a.url],
            )  # fmt: skip
            conf_b, port_b = replica_config(
                tmp_path, "b", base_url=sim_b.base_url, db=pg_database, models=settle(3),
                urls=[hook_b.url],
            )  # fmt: skip
            a = await stack.enter_async_context(daemon(conf_a))
            await wait_for_role(port_a, "leader")
            b = await stack.enter_async_context(daemon(conf_b))
            await wait_until(lambda: sim_a.stats()["requests"] > 3, what="a polls")
            status, body = await readyz(port_b)
            while status != 200:  # connected and ready to take over
                await anyio.sleep(0.05)
                status, body = await readyz(port_b)
            assert body["role"] == "standby", body
            sim_a.advance(5)
            sim_b.advance(5)
            await hook_a.wait_for(3)
            await anyio.sleep(3 * TTL)  # several lease periods as a standby
            assert sim_b.stats()["requests"] == 0
            assert hook_b.messages == []
            assert hook_b.requests == []
            assert await leader_gauge(port_a) == 1.0
            assert await leader_gauge(port_b) == 0.0
            answer = run_cli("status", "-c", str(conf_b), "--json")
            assert answer.returncode == 0, answer.stderr
            document = json.loads(answer.stdout)
            leader = document["leader"]
            assert set(leader) >= {"holder", "epoch", "since", "expires_at"}
            assert leader["live"] is True
            assert leader["epoch"] == 1
            assert str(a.process.pid) in leader["holder"]
            text = run_cli("status", "-c", str(conf_b))
            assert f"leader: {leader['holder']} (epoch 1) since" in text.stdout
            # A graceful stop releases the lease: b takes over at its next look.
            stopped = time.monotonic()
            a.send(signal.SIGTERM)
            assert await a.wait_exit() == 0, a.log()
            took = await wait_for_role(port_b, "leader") - stopped
            assert took < TAKEOVER_LIMIT, took
            b.send(signal.SIGTERM)
            assert await b.wait_exit() == 0, b.log()


class TestFailover:
    async def test_leader_killed_the_standby_delivers_what_was_owed_once(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        """a leads, is SIGKILLed with outcomes owed; b takes over within ttl + 1 s and
        delivers every outcome, none twice (at most the one in flight at the kill)."""
        models = 6
        async with (
            running_simulator(scenario(models, ready_at=3)) as sim,
            webhook_receiver() as hook,
            AsyncExitStack() as stack,
        ):
            confs = {
                name: replica_config(
                    tmp_path,
                    name,
                    base_url=sim.base_url,
                    db=pg_database,
                    models=settle(models),
                    urls=[hook.url],
                )
                for name in ("a", "b")
            }
            a = await stack.enter_async_context(daemon(confs["a"][0]))
            await wait_for_role(confs["a"][1], "leader")
            b = await stack.enter_async_context(daemon(confs["b"][0]))
            # A takeover is timed against a running standby, not a process still starting
            # (its interpreter start alone takes 1-3 s on a loaded machine).
            await wait_for_role(confs["b"][1], "standby")
            await wait_until(lambda: polled(sim), timeout=5, what="polls")
            sim.advance(3)  # ha-00 READY
            await hook.wait_for(1)
            sim.advance(models)  # every other one READY: some delivered, some owed
            await anyio.sleep(0.05)
            killed = time.monotonic()
            a.send(signal.SIGKILL)
            await a.wait_exit()
            took = await wait_for_role(confs["b"][1], "leader") - killed
            await wait_until(lambda: len(per_model(hook)) == models, timeout=10, what="all")
            counts = per_model(hook)
            assert sum(counts.values()) - models <= 1, counts
            assert took <= TAKEOVER_LIMIT, took
            print(f"\ntakeover after SIGKILL: {took:.2f}s (ttl {TTL}s)")
            b.send(signal.SIGTERM)
            assert await b.wait_exit() == 0, b.log()

    async def test_a_paused_leader_delivers_nothing_after_the_takeover(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        """a is stopped (SIGSTOP) for 3 x ttl: b takes over and delivers what becomes due;
        after SIGCONT, a sends nothing more (it finds its lease gone and stands by)."""
        models = 4
        async with (
            running_simulator(scenario(models, ready_at=3)) as sim,
            webhook_receiver() as hook,
            AsyncExitStack() as stack,
        ):
            confs = {
                name: replica_config(
                    tmp_path,
                    name,
                    base_url=sim.base_url,
                    db=pg_database,
                    models=settle(models),
                    urls=[hook.url],
                )
                for name in ("a", "b")
            }
            a = await stack.enter_async_context(daemon(confs["a"][0]))
            await wait_for_role(confs["a"][1], "leader")
            b = await stack.enter_async_context(daemon(confs["b"][0]))
            # A takeover is timed against a running standby, not a process still starting
            # (its interpreter start alone takes 1-3 s on a loaded machine).
            await wait_for_role(confs["b"][1], "standby")
            await wait_until(lambda: polled(sim), timeout=5, what="polls")
            a.send(signal.SIGSTOP)
            paused = time.monotonic()
            sim.advance(3 + models)  # every outcome becomes due while a is paused
            took = await wait_for_role(confs["b"][1], "leader", timeout=3 * TTL) - paused
            await wait_until(lambda: len(per_model(hook)) == models, timeout=10, what="all")
            await anyio.sleep(max(0.0, 3 * TTL - (time.monotonic() - paused)))
            before = len(hook.requests)
            a.send(signal.SIGCONT)
            status, body = 0, {}
            with anyio.move_on_after(5):
                while body.get("role") != "standby":
                    status, body = await readyz(confs["a"][1])
                    await anyio.sleep(0.05)
            assert body.get("role") == "standby", (status, body)
            await anyio.sleep(2 * TTL)
            after = [sender(r.payload or {}) for r in hook.requests[before:]]
            assert "a" not in after, after
            assert {sender(m) for m in hook.messages} == {"b"}
            assert sum(per_model(hook).values()) == models
            assert took <= TAKEOVER_LIMIT, took
            for proc in (a, b):
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()


def polled(sim: Any) -> bool:
    """The simulator has answered the leader about at least one model."""
    return bool(len(sim.stats()["by_model"]) >= 1)


class TestDatabaseFaults:
    async def test_postgresql_restarted_mid_run_loses_nothing(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        """PostgreSQL is restarted (every connection dropped) between two outcomes: the
        leader reconnects, keeps or retakes the lease, and every outcome arrives once."""
        models = 4
        async with (
            running_simulator(scenario(models, ready_at=3)) as sim,
            webhook_receiver() as hook,
            AsyncExitStack() as stack,
        ):
            conf, port = replica_config(
                tmp_path, "a", base_url=sim.base_url, db=pg_database, models=settle(models),
                urls=[hook.url],
            )  # fmt: skip
            a = await stack.enter_async_context(daemon(conf))
            await wait_for_role(port, "leader")
            sim.advance(4)  # ha-00, ha-01 READY
            await hook.wait_for(2)
            await anyio.to_thread.run_sync(pg_database.cluster.restart)
            sim.advance(4)  # the rest READY
            await wait_until(lambda: len(per_model(hook)) == models, timeout=15, what="all")
            await wait_for_role(port, "leader")
            assert per_model(hook) == Counter(settle(models))
            a.send(signal.SIGTERM)
            assert await a.wait_exit() == 0, a.log()

    async def test_postgresql_down_at_start_then_up(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        """No database at start: one clear log line, /healthz 200 and /readyz 503 while
        it retries; when the database comes, the replica leads and delivers. Another
        one stopped with SIGTERM while waiting exits 0."""
        async with (
            running_simulator(scenario(1, ready_at=2)) as sim,
            webhook_receiver() as hook,
            AsyncExitStack() as stack,
        ):
            conf, port = replica_config(
                tmp_path, "a", base_url=sim.base_url, db=pg_database, models=settle(1),
                urls=[hook.url],
            )  # fmt: skip
            await anyio.to_thread.run_sync(pg_database.cluster.stop)
            try:
                a = await stack.enter_async_context(daemon(conf))
                status = 0
                with anyio.move_on_after(10):
                    while status != 503:
                        status, _body = await readyz(port)
                        await anyio.sleep(0.05)
                assert status == 503, a.log()
                await anyio.sleep(1.5)
                assert (await readyz(port))[0] == 503
                lines = [json.loads(x) for x in a.log().splitlines() if x.startswith("{")]
                unreachable = [x for x in lines if "cannot reach the state" in x["message"]]
                assert len(unreachable) == 1, lines
                assert pg_database.password not in a.log()
                # SIGTERM while waiting: exit 0.
                conf_b, _ = replica_config(
                    tmp_path, "b", base_url=sim.base_url, db=pg_database,
                    models=settle(1), urls=[hook.url],
                )  # fmt: skip
                b = await stack.enter_async_context(daemon(conf_b))
                await wait_until(lambda: "cannot reach" in b.log(), what="b waits")
                b.send(signal.SIGTERM)
                assert await b.wait_exit() == 0, b.log()
            finally:
                await anyio.to_thread.run_sync(pg_database.cluster.start)
            await wait_for_role(port, "leader", timeout=15)
            sim.advance(2)
            await hook.wait_for(1)
            a.send(signal.SIGTERM)
            assert await a.wait_exit() == 0, a.log()


class TestTwoLeadersByMistake:
    async def test_two_replicas_with_one_identity_send_each_row_once(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        """The lease row is forged so that two running replicas both believe they lead
        (the same holder and epoch): outbox claims still give every row to one of them."""
        from watcher.store.postgres import PostgresStore

        models = 10
        async with webhook_receiver() as hook:
            stores = [await PostgresStore.open(pg_database.url_with_password) for _ in "ab"]
            try:
                leases = [s.leadership(ttl=30, holder="same-holder") for s in stores]
                async with leases[0].hold():
                    # The second takes the same term by hand: two leaders by mistake.
                    leases[1]._term = leases[0].term
                    await _two_leaders_deliver(stores, hook, models)
            finally:
                for store in stores:
                    await store.aclose()
            assert per_model(hook) == Counter(settle(models))


async def _two_leaders_deliver(stores: list[Any], hook: WebhookReceiver, models: int) -> None:
    """Both stores queue nothing twice: rows are queued once, then both deliver at once."""
    from datetime import UTC, datetime

    from watcher.notify import Notifier, make_targets
    from watcher.outbox import deliver_due

    now = datetime.now(UTC)
    for i in range(models):
        await stores[0].enqueue_message(
            kind="ops", title=f"ha-{i:02d} done", body=f"ha-{i:02d}", notify_type="info",
            created_at=now,
        )  # fmt: skip
    targets = make_targets([hook.url])
    notifiers = [Notifier(timeout=5) for _ in stores]
    try:
        from watcher.messages import Message

        def render(item: Any) -> Message:
            return Message(title=item.title, body=item.body, notify_type=item.notify_type)

        async with anyio.create_task_group() as tg:
            for store, notifier in zip(stores, notifiers, strict=True):
                tg.start_soon(
                    lambda s=store, n=notifier: deliver_due(
                        s, n, targets_for=lambda _item: targets, render=render,
                        now=datetime.now(UTC), give_up_after=3600,
                    )
                )  # fmt: skip
    finally:
        for notifier in notifiers:
            await notifier.aclose()
    with psycopg.connect(stores[0]._conninfo) as db:
        row = db.execute(
            "SELECT count(*) FILTER (WHERE done_at IS NOT NULL) FROM finetune_watcher.outbox"
        ).fetchone()
    assert row is not None
    assert row[0] == models


class TestLeaseCost:
    async def test_statements_per_minute_of_a_leader_and_a_standby(
        self, pg_database: Database, monkeypatch: Any
    ) -> None:
        """Counts every statement the lease sends (``BEGIN``/``COMMIT`` included) over 8 s
        with ttl 2, per replica, and scales it to the default ttl of 15 s (the rate is
        proportional to 1/ttl): docs/benchmarks.md quotes the figures."""
        from watcher.store.postgres import PostgresStore

        counts: Counter[int] = Counter()
        original = psycopg.AsyncConnection.execute

        async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[id(self)] += 1
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(psycopg.AsyncConnection, "execute", counting)
        leader_store = await PostgresStore.open(pg_database.url_with_password)
        standby_store = await PostgresStore.open(pg_database.url_with_password)
        seconds = 8.0
        try:
            leader = leader_store.leadership(ttl=TTL, holder="leader")
            standby = standby_store.leadership(ttl=TTL, holder="standby")
            async with leader.hold():
                counts.clear()
                with anyio.move_on_after(seconds):
                    async with standby.hold():
                        raise AssertionError("the standby must not lead")
                links = {
                    "leader": leader._backend._link._conn,
                    "standby": standby._backend._link._conn,
                }
                per_minute = {name: counts[id(conn)] * 60 / seconds for name, conn in links.items()}
        finally:
            await leader_store.aclose()
            await standby_store.aclose()
        at_default = {name: rate * TTL / 15 for name, rate in per_minute.items()}
        print(
            f"\nlease statements per minute (ttl {TTL:g}s, measured over {seconds:g}s): "
            f"leader {per_minute['leader']:.0f}, standby {per_minute['standby']:.0f}; "
            f"at the default ttl 15s: leader {at_default['leader']:.1f}, "
            f"standby {at_default['standby']:.1f}"
        )
        # Renewals every ttl/3 (one statement); a standby looks at most every ttl/3
        # (BEGIN, the attempt, the read, COMMIT).
        assert per_minute["leader"] <= 60 / (TTL / 3) * 1.2
        assert per_minute["standby"] <= 4 * 60 / (TTL / 3) * 1.2
