"""Leadership: the timing rules, the acquire/renew loop, and the lease on a real PostgreSQL.

The loop is driven first through a hand-written in-memory backend (exact
failures on demand), then against PostgreSQL (tests/pg.py): acquire, renew,
takeover by expiry with a higher epoch, stale writes refused, two holders by
mistake, a PostgreSQL restart mid-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from watcher.errors import StateError
from watcher.lifecycle import ModelKey, ModelState
from watcher.store.base import OutboxCounts
from watcher.store.lease import (
    Acquisition,
    LeaderInfo,
    Leadership,
    LeaseLostError,
    LeaseTiming,
    SoleLeadership,
    default_holder,
)
from watcher.store.postgres import PostgresStore, StateUnavailableError

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest, not here
    from tests.pg import Cluster, Database

pytest_plugins = ["tests.pg"]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


# --- pure timing ------------------------------------------------------------------------


class TestLeaseTiming:
    @pytest.mark.parametrize(
        ("ttl", "renew_every", "margin", "valid_until_from_10"),
        [(15, 5, 1.5, 23.5), (2, 2 / 3, 0.2, 11.8), (0.3, 0.1, 0.03, 10.27)],
    )
    def test_the_numbers_of_a_ttl(
        self, ttl: float, renew_every: float, margin: float, valid_until_from_10: float
    ) -> None:
        """Renew thrice per ttl; lead until ttl minus a tenth after the renewal was sent."""
        timing = LeaseTiming(ttl)
        assert timing.renew_every == pytest.approx(renew_every)
        assert timing.margin == pytest.approx(margin)
        assert timing.valid_until(10) == pytest.approx(valid_until_from_10)
        assert timing.next_renewal(10) == pytest.approx(10 + renew_every)

    @pytest.mark.parametrize(
        ("remaining", "wait"),
        [(None, 0.0), (-3.0, 0.01), (0.0, 0.01), (1.0, 1.01), (4.98, 4.99), (12.0, 5.0)],
    )
    def test_a_standby_wakes_at_the_expiry_or_every_third_of_the_ttl(
        self, remaining: float | None, wait: float
    ) -> None:
        """A standby sleeps until the lease would expire, never longer than ttl/3."""
        assert LeaseTiming(15).standby_wait(remaining) == pytest.approx(wait)

    @pytest.mark.parametrize(("failures", "delay"), [(1, 0.05), (2, 0.1), (4, 0.4), (9, 5.0)])
    def test_retries_double_up_to_a_third_of_the_ttl(self, failures: int, delay: float) -> None:
        """After database errors: 50 ms, doubling, capped at the renewal interval."""
        assert LeaseTiming(15).retry_delay(failures) == pytest.approx(delay)

    @pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
    def test_a_ttl_must_be_positive(self, ttl: float) -> None:
        """A zero, negative or NaN ttl is a bug in the caller."""
        with pytest.raises(ValueError, match="must be positive"):
            LeaseTiming(ttl)

    def test_a_holder_is_unique_per_process_start(self) -> None:
        """host:pid:random -- two leaderships of one process never share a name."""
        first, second = default_holder(), default_holder()
        assert first != second
        assert first.rsplit(":", 1)[0] == second.rsplit(":", 1)[0]


# --- the loop, against a backend in memory ----------------------------------------------


@dataclass
class MemoryLease:
    """The lease row, in memory, on the monotonic clock; faults on demand."""

    holder: str | None = None
    epoch: int = 0
    expires_at: float = 0.0
    renewals: int = 0
    failing: int = 0  # the next N calls raise StateUnavailableError
    stalled: bool = False  # calls never answer

    async def _fault(self) -> None:
        if self.stalled:
            await anyio.sleep_forever()
        if self.failing:
            self.failing -= 1
            raise StateUnavailableError("the database is down (test)")

    async def try_acquire(self, holder: str, ttl: float) -> Acquisition:
        await self._fault()
        now = time.monotonic()
        if self.expires_at <= now:
            self.holder, self.epoch, self.expires_at = holder, self.epoch + 1, now + ttl
            return Acquisition(True, holder, self.epoch, T0, ttl)
        return Acquisition(False, self.holder, self.epoch, T0, self.expires_at - now)

    async def renew(self, holder: str, epoch: int, ttl: float) -> bool:
        await self._fault()
        now = time.monotonic()
        if (self.holder, self.epoch) != (holder, epoch) or self.expires_at <= now:
            return False
        self.expires_at = now + ttl
        self.renewals += 1
        return True

    async def release(self, holder: str, epoch: int) -> None:
        await self._fault()
        if (self.holder, self.epoch) == (holder, epoch):
            self.expires_at = time.monotonic()

    async def leader(self) -> LeaderInfo | None:
        return None

    async def aclose(self) -> None:
        pass


class TestLoop:
    async def test_a_leader_renews_and_releases(self) -> None:
        """Acquired at once when free; renewed every ttl/3; released on leaving."""
        lease = MemoryLease()
        leadership = Leadership(lease, ttl=0.3, holder="a")
        assert (leadership.role, leadership.epoch, leadership.term) == ("standby", None, None)
        async with leadership.hold() as term:
            assert (leadership.role, leadership.epoch, term.epoch) == ("leader", 1, 1)
            await anyio.sleep(0.5)
            assert lease.renewals >= 3
            assert leadership.is_leader
        assert term.lost.is_set()
        assert term.reason == "released"
        assert lease.expires_at <= time.monotonic()  # a standby may take over at once
        assert not leadership.is_leader

    async def test_a_refused_renewal_cancels_the_body(self) -> None:
        """Another holder took the lease: the term ends, the body is cancelled, no error."""
        lease = MemoryLease()
        leadership = Leadership(lease, ttl=0.3, holder="a")
        reached_the_end = False
        async with leadership.hold() as term:
            lease.holder, lease.epoch = "b", 2  # what a takeover does to the row
            await anyio.sleep(1)
            reached_the_end = True
        assert not reached_the_end
        assert term.reason == "another replica holds the lease"
        assert leadership.role == "standby"

    async def test_short_database_faults_are_ridden_out(self) -> None:
        """Renewals failing for less than the ttl: still the leader, same epoch."""
        lease = MemoryLease()
        leadership = Leadership(lease, ttl=0.9, holder="a")  # lead 0.81 s after a renewal
        async with leadership.hold() as term:
            await anyio.sleep(0.35)
            lease.failing = 3  # retried after 50, 100 and 200 ms
            await anyio.sleep(0.8)
            assert lease.failing == 0
            assert leadership.is_leader
            assert leadership.epoch == term.epoch == 1

    async def test_a_silent_database_makes_the_leader_step_down_before_expiry(self) -> None:
        """No answer to renewals: the leader stops before the lease could be taken over."""
        lease = MemoryLease()
        leadership = Leadership(lease, ttl=0.4, holder="a")
        async with leadership.hold() as term:
            lease.stalled = True
            await term.lost.wait()
        # It stopped leading (is_leader reads this) before the row could be taken over.
        assert term.valid_until < lease.expires_at
        assert term.reason == "the database did not answer before the lease ran out"
        assert not leadership.is_leader

    async def test_a_standby_takes_over_after_the_expiry_with_a_higher_epoch(self) -> None:
        """Leader A stops renewing (killed); B takes over within the ttl, epoch 2."""
        lease = MemoryLease()
        a = Leadership(lease, ttl=0.3, holder="a")
        b = Leadership(lease, ttl=0.3, holder="b")
        first = await a.acquire()  # and never renewed: A was killed
        started = time.monotonic()
        second = await b.acquire()
        waited = time.monotonic() - started
        assert (first.epoch, second.epoch) == (1, 2)
        assert 0.2 < waited < 0.3 + 0.25
        assert lease.holder == "b"

    async def test_a_standby_retries_while_the_database_is_down(self) -> None:
        """Database errors while waiting are retried with backoff, then the lease is taken."""
        lease = MemoryLease(failing=3)
        term = await Leadership(lease, ttl=0.3, holder="a").acquire()
        assert term.epoch == 1

    async def test_an_error_in_the_body_comes_out_as_itself(self) -> None:
        """The body's exception is not wrapped in a group; the lease is released."""
        lease = MemoryLease()
        leadership = Leadership(lease, ttl=0.3, holder="a")
        with pytest.raises(KeyError, match="boom"):
            async with leadership.hold():
                raise KeyError("boom")
        assert lease.expires_at <= time.monotonic()

    async def test_hold_cannot_be_entered_twice_at_once(self) -> None:
        """One term at a time per replica."""
        leadership = Leadership(MemoryLease(), ttl=0.3, holder="a")
        async with leadership.hold():
            with pytest.raises(RuntimeError, match="already entered"):
                async with leadership.hold():
                    pass  # pragma: no cover

    async def test_a_single_replica_always_leads(self) -> None:
        """SQLite's case: leader from the start, epoch 1, nothing to renew or lose."""
        sole = SoleLeadership(holder="only")
        assert (sole.is_leader, sole.role, sole.epoch, sole.holder) == (True, "leader", 1, "only")
        async with sole.hold() as term:
            assert term.remaining(time.monotonic()) == float("inf")
        assert await sole.leader() is None


# --- on PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
async def store_a(pg_database: Database) -> AsyncIterator[PostgresStore]:
    async with await PostgresStore.open(
        pg_database.url, password_file=pg_database.password_file
    ) as store:
        yield store


@pytest.fixture
async def store_b(pg_database: Database, store_a: PostgresStore) -> AsyncIterator[PostgresStore]:
    async with await PostgresStore.open(
        pg_database.url, password_file=pg_database.password_file
    ) as store:
        yield store


@dataclass
class ForgedFence:
    """A fence that believes whatever it is told: a paused replica that has not noticed."""

    holder: str
    epoch: int | None


async def queue_messages(store: PostgresStore, count: int) -> list[int]:
    return [
        await store.enqueue_message(
            kind="ops", title=f"m{i}", body="b", notify_type="info", created_at=T0
        )
        for i in range(count)
    ]


class TestOnPostgres:
    async def test_acquire_renew_and_who_leads(self, store_a: PostgresStore) -> None:
        """The first replica leads at once (epoch 1); renewals move expires_at on the DB clock."""
        assert await store_a.leader() is None
        leadership = store_a.leadership(ttl=1.5, holder="replica-a")
        async with leadership.hold() as term:
            first = await store_a.leader()
            assert first is not None
            assert (first.holder, first.epoch, first.live) == ("replica-a", 1, True)
            await anyio.sleep(0.7)
            later = await store_a.leader()
            assert later is not None
            assert later.renewed_at > first.renewed_at
            assert later.expires_at > first.expires_at
            assert later.acquired_at == first.acquired_at
            assert leadership.epoch == term.epoch == 1
        released = await store_a.leader()
        assert released is not None
        assert (released.holder, released.live) == ("replica-a", False)

    async def test_takeover_by_expiry_with_a_higher_epoch(
        self, store_a: PostgresStore, store_b: PostgresStore
    ) -> None:
        """A stops renewing (killed); B is a standby until the expiry, then leads with epoch 2."""
        a = store_a.leadership(ttl=1.0, holder="replica-a")
        b = store_b.leadership(ttl=1.0, holder="replica-b")
        first = await a.acquire()  # never renewed from here on: A died
        started = time.monotonic()
        second = await b.acquire()
        takeover = time.monotonic() - started
        assert (first.epoch, second.epoch) == (1, 2)
        assert 0.8 < takeover < 1.0 + 0.5
        info = await store_a.leader()
        assert info is not None
        assert (info.holder, info.epoch) == ("replica-b", 2)

    async def test_a_released_lease_is_taken_at_once(
        self, store_a: PostgresStore, store_b: PostgresStore
    ) -> None:
        """A graceful stop releases the lease: the standby leads within ttl/3, not ttl."""
        a = store_a.leadership(ttl=3.0, holder="replica-a")
        b = store_b.leadership(ttl=3.0, holder="replica-b")
        async with a.hold():
            pass
        started = time.monotonic()
        term = await b.acquire()
        assert term.epoch == 2
        assert time.monotonic() - started < 1.0 + 0.3

    async def test_a_stale_leaders_writes_are_refused(
        self, store_a: PostgresStore, store_b: PostgresStore
    ) -> None:
        """After a takeover, every write of the old leader is refused and writes nothing."""
        ids = await queue_messages(store_a, 2)
        a = store_a.leadership(ttl=1.0, holder="replica-a")
        b = store_b.leadership(ttl=1.0, holder="replica-b")
        await a.acquire()
        claimed = await store_a.due_notifications(T0, limit=1)
        assert [item.id for item in claimed] == ids[:1]
        await b.acquire()  # A was paused past its ttl; B took over (epoch 2)

        # A does not know yet (a paused process): its fence still says epoch 1.
        store_a.fence = ForgedFence("replica-a", 1)
        model = ModelKey("cohere", "m-1")
        stale_writes: list[Callable[[], Awaitable[object]]] = [
            lambda: store_a.due_notifications(T0),
            lambda: store_a.mark_delivered(ids[0], "slack", T0),
            lambda: store_a.mark_done(ids[0], T0),
            lambda: store_a.schedule_retry(ids[0], attempts=1, next_attempt_at=T0, error="x"),
            lambda: store_a.give_up(ids[0], at=T0, reason="x"),
            lambda: store_a.record_observation(ModelState("m-1"), [], polled_at=T0),
            lambda: store_a.record_polls([(model, T0)]),
            lambda: store_a.record_poll_failure(model, polled_at=T0, error="x", failures=1),
            lambda: store_a.record_stuck_warning(
                model, warnings=1, title="t", body="b", notify_type="info", created_at=T0
            ),
            lambda: store_a.enqueue_message(
                kind="ops", title="t", body="b", notify_type="info", created_at=T0
            ),
            lambda: store_a.pull_forward_retries(T0),
        ]
        for write in stale_writes:
            with pytest.raises(LeaseLostError, match="no longer this replica's"):
                await write()
        # And once A itself knows (its term ended), it does not even ask.
        store_a.fence = a
        with pytest.raises(LeaseLostError, match="does not lead"):
            await store_a.mark_done(ids[0], T0)

        assert await store_b.delivered_targets(ids[0]) == set()
        assert (await store_b.outbox_counts()).pending == 2
        assert await store_b.model_records() == []
        # The new leader gets both rows, including the one A claimed and never finished.
        assert [item.id for item in await store_b.due_notifications(T0)] == ids
        await store_b.mark_delivered(ids[0], "slack", T0)
        async with store_b._link.transaction("peeking") as db:
            cursor = await db.execute("SELECT epoch FROM finetune_watcher.deliveries")
            assert await cursor.fetchall() == [{"epoch": 2}]

    async def test_a_takeover_waits_for_the_fenced_write_in_flight(
        self, store_a: PostgresStore, store_b: PostgresStore
    ) -> None:
        """The old leader's last transaction holds the lease row: no takeover until it ends."""
        a = store_a.leadership(ttl=0.6, holder="replica-a")
        b = store_b.leadership(ttl=0.6, holder="replica-b")
        await a.acquire()  # valid for 0.54 s on A's clock, 0.6 s on the database's
        attempts: list[bool] = []

        async def slow_write() -> None:
            async with store_a._write("a slow write") as (db, _):
                await db.execute(
                    "INSERT INTO finetune_watcher.models (provider, model_id) VALUES ('p', 'slow')"
                )
                await db.execute("SELECT pg_sleep(1.0)")  # busy, not idle, past the expiry

        async def try_takeover() -> None:
            await anyio.sleep(0.8)  # expired on the database's clock
            attempt = await b._backend.try_acquire("replica-b", 0.6)
            attempts.append(attempt.won)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(slow_write)
            tasks.start_soon(try_takeover)
        assert attempts == [False]  # the row was locked FOR SHARE by the write in flight
        # The write committed under epoch 1, before the takeover: it was A's to make.
        term = await b.acquire()
        assert term.epoch == 2
        assert [r.key for r in await store_b.model_records()] == [ModelKey("p", "slow")]

    async def test_a_leader_frozen_inside_a_transaction_does_not_block_the_takeover(
        self, store_a: PostgresStore, store_b: PostgresStore
    ) -> None:
        """SIGSTOP mid-transaction: the server ends the idle transaction; B takes over."""
        a = store_a.leadership(ttl=0.6, holder="replica-a")
        b = store_b.leadership(ttl=0.6, holder="replica-b")
        await a.acquire()
        epochs: list[int] = []

        async def frozen_write() -> None:
            async with store_a._write("a frozen write") as (db, _):
                await db.execute(
                    "INSERT INTO finetune_watcher.models (provider, model_id) VALUES ('p', 'x')"
                )
                # Frozen (no statement) while B waits for the lease.
                epochs.append((await b.acquire()).epoch)

        started = time.monotonic()
        with pytest.raises(StateUnavailableError, match="a frozen write failed"):
            await frozen_write()
        assert epochs == [2]
        assert time.monotonic() - started < 0.6 + 0.5 + 0.3  # ttl + idle timeout + slack
        assert await store_b.model_records() == []  # nothing of A's transaction stayed

    async def test_two_holders_by_mistake_never_claim_one_row(
        self, pg_database: Database, store_a: PostgresStore, store_b: PostgresStore
    ) -> None:
        """Two stores fenced with the same holder and epoch claim disjoint rows (SKIP LOCKED)."""
        ids = set(await queue_messages(store_a, 60))
        term = await store_a.leadership(ttl=30, holder="twin").acquire()
        store_a.fence = store_b.fence = ForgedFence("twin", term.epoch)
        claims: dict[str, list[int]] = {"a": [], "b": []}

        async def deliver(name: str, store: PostgresStore) -> None:
            while batch := await store.due_notifications(T0, limit=3):
                claims[name] += [item.id for item in batch]
                await anyio.sleep(0.001)  # "sending": the other store claims meanwhile
                for item in batch:
                    await store.mark_done(item.id, T0)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(deliver, "a", store_a)
            tasks.start_soon(deliver, "b", store_b)
        assert not set(claims["a"]) & set(claims["b"])
        assert set(claims["a"]) | set(claims["b"]) == ids
        assert claims["a"]
        assert claims["b"]
        assert (await store_a.outbox_counts()).done == 60

    async def test_a_row_claimed_by_the_twin_is_not_finished_by_us(
        self, store_a: PostgresStore, store_b: PostgresStore
    ) -> None:
        """Finishing or recording a delivery of a row another store claimed does nothing."""
        (theirs,) = await queue_messages(store_a, 1)
        term = await store_a.leadership(ttl=30, holder="twin").acquire()
        store_a.fence = store_b.fence = ForgedFence("twin", term.epoch)
        assert [item.id for item in await store_b.due_notifications(T0)] == [theirs]
        assert await store_a.due_notifications(T0) == []
        await store_a.mark_delivered(theirs, "slack", T0)
        await store_a.schedule_retry(theirs, attempts=1, next_attempt_at=T0, error="x")
        await store_a.mark_done(theirs, T0)
        await store_a.give_up(theirs, at=T0, reason="x")
        assert await store_b.delivered_targets(theirs) == set()
        assert await store_b.outbox_counts() == OutboxCounts(pending=1, done=0, given_up=0)
        await store_b.mark_done(theirs, T0)
        assert (await store_b.outbox_counts()).done == 1

    async def test_postgresql_restarted_mid_run(
        self, pg_cluster: Cluster, store_a: PostgresStore
    ) -> None:
        """pg_ctl restart: the leader keeps its lease (or takes a new term); writes go on."""
        leadership = store_a.leadership(ttl=3.0, holder="replica-a")
        async with leadership.hold() as term:
            await store_a.record_observation(ModelState("before"), [], polled_at=T0)
            await anyio.to_thread.run_sync(pg_cluster.restart)
            # The first statement after the restart meets a dead connection: BEGIN is
            # retried on a new one, transparently.
            await store_a.record_observation(ModelState("after"), [], polled_at=T0)
            assert {k.id for k in await store_a.load_states()} == {"before", "after"}
            await anyio.sleep(1.2)  # a renewal or two on the lease's own new connection
            assert leadership.is_leader
            assert leadership.epoch == term.epoch == 1
        assert term.reason == "released"

    async def test_postgresql_down_at_start(self, pg_database: Database) -> None:
        """Nothing listening: one clear line, a StateUnavailableError (retry), no password."""
        url = pg_database.url_with_password.replace(
            f":{pg_database.cluster.port}/", ":1/"
        )  # port 1: nothing listens there
        with pytest.raises(StateUnavailableError) as refused:
            await PostgresStore.open(url)
        message = str(refused.value)
        assert message.startswith("cannot connect to PostgreSQL postgresql://watcher@127.0.0.1:1/")
        assert "\n" not in message
        assert pg_database.password not in message
        assert refused.value.exit_code == 75
        assert isinstance(refused.value, StateError)


PAUSED_LEADER = """
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio

from watcher.store.postgres import PostgresStore


async def main(url: str, password_file: str) -> None:
    store = await PostgresStore.open(url, password_file=Path(password_file))
    lease = store.leadership(ttl=0.5, holder="paused-replica")
    async with lease.hold() as term:
        print("leading", term.epoch, flush=True)
        written = 0
        while True:  # writes as fast as it can, until it is stopped or loses the lease
            try:
                await store.enqueue_message(
                    kind="ops", title=f"w{written}", body="b", notify_type="info",
                    created_at=datetime.now(UTC),
                )
            except Exception as exc:
                print("refused", type(exc).__name__, flush=True)
                break
            written += 1
            await anyio.sleep(0.005)
    print("lost", term.reason, flush=True)
    await store.aclose()


anyio.run(main, *sys.argv[1:])
"""


class TestPausedProcess:
    async def test_a_leader_paused_by_sigstop_writes_nothing_after_the_takeover(
        self, pg_database: Database, store_b: PostgresStore
    ) -> None:
        """SIGSTOP for 3 x ttl: B takes over; after SIGCONT the old leader writes nothing more."""
        child = subprocess.Popen(
            [sys.executable, "-c", PAUSED_LEADER, pg_database.url, str(pg_database.password_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert child.stdout is not None
        try:
            with anyio.fail_after(20):
                line = ""
                while not line.startswith("leading") and child.poll() is None:
                    line = await anyio.to_thread.run_sync(child.stdout.readline)
            assert line == "leading 1\n"
            await anyio.sleep(0.2)
            child.send_signal(signal.SIGSTOP)
            term = await store_b.leadership(ttl=0.5, holder="replica-b").acquire()
            assert term.epoch == 2
            written_before = (await store_b.outbox_counts()).pending
            assert written_before > 0
            await anyio.sleep(1.5 - 0.5)  # paused for 3 x ttl in all
            child.send_signal(signal.SIGCONT)
            rest = await anyio.to_thread.run_sync(lambda: child.communicate(timeout=20)[0])
            assert child.returncode == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert (await store_b.outbox_counts()).pending == written_before
        said = [line for line in rest.splitlines() if line.startswith(("lost ", "refused "))]
        assert said[-1].startswith("lost ")  # it noticed, and stopped leading
