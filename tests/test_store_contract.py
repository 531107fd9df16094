"""The store contract, once per backend: the Store protocol on SQLite and on PostgreSQL.

Each test runs against a real SQLite file and a real PostgreSQL database
(tests/pg.py). What only one backend has -- SQLite's lock and bad files,
PostgreSQL's lease, fencing and reconnects -- is tested in that backend's own
module (tests/test_store.py, tests/test_store_postgres.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.stores import (
    FAILED,
    FINETUNING,
    OTHER_SCHEME,
    QUEUED,
    READY,
    SCHEME,
    T0,
    finished_model,
    key,
    minutes,
    observe,
)
from watcher.errors import StateError
from watcher.lifecycle import (
    SEEN_LIMIT,
    Event,
    ModelState,
    Notice,
    StatusScheme,
)
from watcher.store.base import OutboxCounts, Store
from watcher.store.postgres import PostgresStore
from watcher.store.sqlite import SqliteStore

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest, not here
    from tests.pg import Database

pytest_plugins = ["tests.pg"]


# --- the backends ---------------------------------------------------------------------


class Backend(Protocol):
    """One backend's way to open its store, and to break it from outside for a test."""

    name: str

    async def open(self) -> Store: ...

    async def open_readonly(self) -> Store: ...

    def refuse_outbox_inserts(self, refuse: bool) -> None: ...

    def write_future_schema(self, version: int) -> None: ...


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self) -> Store:
        return await SqliteStore.open(self.path)

    async def open_readonly(self) -> Store:
        return await SqliteStore.open_readonly(self.path)

    def refuse_outbox_inserts(self, refuse: bool) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            if refuse:
                db.execute(
                    "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox "
                    "BEGIN SELECT RAISE(ABORT, 'outbox insert refused by the test'); END"
                )
            else:
                db.execute("DROP TRIGGER fail_outbox")
        finally:
            db.close()

    def write_future_schema(self, version: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("CREATE TABLE models (model_id TEXT, future_column BLOB)")
            db.execute(f"PRAGMA user_version = {version}")
        finally:
            db.close()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, database: Database) -> None:
        self.database = database

    async def open(self) -> Store:
        return await PostgresStore.open(
            self.database.url, password_file=self.database.password_file
        )

    async def open_readonly(self) -> Store:
        return await PostgresStore.open(
            self.database.url, password_file=self.database.password_file, readonly=True
        )

    def refuse_outbox_inserts(self, refuse: bool) -> None:
        with self.database.admin() as db:
            if refuse:
                db.execute(
                    "CREATE FUNCTION finetune_watcher.refuse() RETURNS trigger LANGUAGE plpgsql "
                    "AS $$ BEGIN RAISE EXCEPTION 'outbox insert refused by the test'; END $$"
                )
                db.execute(
                    "CREATE TRIGGER fail_outbox BEFORE INSERT ON finetune_watcher.outbox "
                    "FOR EACH ROW EXECUTE FUNCTION finetune_watcher.refuse()"
                )
            else:
                db.execute("DROP TRIGGER fail_outbox ON finetune_watcher.outbox")

    def write_future_schema(self, version: int) -> None:
        with self.database.admin() as db:
            db.execute("SET ROLE watcher")
            db.execute("CREATE SCHEMA finetune_watcher")
            db.execute(
                "CREATE TABLE finetune_watcher.schema_version "
                "(id integer PRIMARY KEY, version integer NOT NULL, upgraded_at timestamptz)"
            )
            db.execute(
                "INSERT INTO finetune_watcher.schema_version VALUES (1, %s, now())", (version,)
            )
            db.execute("CREATE TABLE finetune_watcher.models (model_id text, future_column bytea)")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend(tmp_path / "state" / "watcher.db")
    return PostgresBackend(request.getfixturevalue("pg_database"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.aclose()


# --- strategies: any state the core can produce ---

offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = st.builds(
    lambda seconds, micros, tz: (T0 + timedelta(seconds=seconds, microseconds=micros)).astimezone(
        tz
    ),
    st.integers(min_value=0, max_value=10 * 24 * 3600),
    st.integers(min_value=0, max_value=999_999),
    offsets,
)


# PostgreSQL text cannot hold NUL: such an id is refused there (tests/test_store_postgres.py).
model_ids = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=20)


def histories(scheme: StatusScheme) -> st.SearchStrategy[list[Event]]:
    statuses = st.sampled_from([*scheme.known, "SOMETHING_NEW"])
    return st.lists(st.builds(Event, statuses, times), max_size=SEEN_LIMIT + 16)


def scenarios() -> st.SearchStrategy[tuple[StatusScheme, list[Event], list[Event]]]:
    return st.sampled_from([SCHEME, OTHER_SCHEME]).flatmap(
        lambda scheme: st.tuples(st.just(scheme), histories(scheme), histories(scheme))
    )


class TestStates:
    def test_observed_states_round_trip(self, backend: Backend) -> None:
        """Any state the core makes (two polls deep) reads back equal, with its notices."""
        with asyncio.Runner() as runner:  # hypothesis drives examples; each one awaits
            store = runner.run(backend.open())

            async def check_example(
                scheme: StatusScheme, first: list[Event], later: list[Event], model_id: str
            ) -> None:
                state: ModelState | None = None
                for batch in (first, first + later):
                    observation = observe(
                        state, model_id, batch, frozenset(scheme.known), scheme=scheme
                    )
                    state = observation.state
                    ids = await store.record_observation(state, observation.notices, polled_at=T0)
                    assert (await store.load_states())[state.key] == state
                    due = await store.due_notifications(T0, 10**6)
                    stored = {item.id: item.notice for item in due}
                    assert [stored[i] for i in ids] == list(observation.notices)
                    for outbox_id in ids:
                        await store.mark_done(outbox_id, T0)

            @settings(
                max_examples=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(scenario=scenarios(), model_id=model_ids)
            def check(
                scenario: tuple[StatusScheme, list[Event], list[Event]], model_id: str
            ) -> None:
                runner.run(check_example(*scenario, model_id))

            try:
                check()
            finally:
                runner.run(store.aclose())

    async def test_a_forgotten_history_keeps_its_floor(self, store: Store) -> None:
        """More events than SEEN_LIMIT: the floor is set and survives the round trip."""
        many = [Event(QUEUED if i % 2 else FINETUNING, minutes(i)) for i in range(SEEN_LIMIT + 6)]
        state = observe(None, "m-1", many).state
        assert state.floor is not None
        await store.record_observation(state, [], polled_at=T0)
        assert await store.load_states() == {key("m-1"): state}

    async def test_a_model_without_events_is_a_state(self, store: Store) -> None:
        """An observed model with an empty history is stored as a state with no status."""
        observation = observe(None, "m-1", [])
        await store.record_observation(observation.state, observation.notices, polled_at=T0)
        assert await store.load_states() == {key("m-1"): ModelState("m-1")}

    async def test_a_model_that_only_failed_has_no_state(self, store: Store) -> None:
        """A failure alone makes a record, not a state: the first success is a first observation."""
        await store.record_poll_failure(key(), polled_at=minutes(1), error="HTTP 503", failures=1)
        await store.record_poll_failure(key(), polled_at=minutes(2), error="timeout", failures=2)
        assert await store.load_states() == {}
        (record,) = await store.model_records()
        assert record.state == ModelState("m-1")
        assert (record.last_poll_at, record.last_success_at) == (minutes(2), None)
        assert (record.last_error, record.failures) == ("timeout", 2)

        observation = finished_model("m-1")
        await store.record_observation(observation.state, observation.notices, polled_at=minutes(3))
        assert await store.load_states() == {key(): observation.state}
        (record,) = await store.model_records()
        assert (record.last_error, record.failures) == (None, 0)
        assert record.last_success_at == minutes(3)

    async def test_a_failure_keeps_the_state_and_the_last_success(self, store: Store) -> None:
        """A failed poll of a known model records the error but forgets nothing."""
        observation = finished_model()
        await store.record_observation(observation.state, [], polled_at=minutes(40))
        await store.record_poll_failure(key(), polled_at=minutes(41), error="HTTP 500", failures=1)
        (record,) = await store.model_records()
        assert record.state == observation.state
        assert (record.last_poll_at, record.last_success_at) == (minutes(41), minutes(40))
        assert (record.last_error, record.failures) == ("HTTP 500", 1)

    async def test_quiet_polls_are_recorded_in_a_batch(self, store: Store) -> None:
        """record_polls moves the poll times, clears failures and never invents models."""
        for model_id in ("a", "b"):
            await store.record_observation(ModelState(model_id), [], polled_at=T0)
        await store.record_poll_failure(
            key("b"), polled_at=minutes(1), error="HTTP 500", failures=3
        )
        await store.record_polls(
            [(key("a"), minutes(5)), (key("b"), minutes(6)), (key("unknown"), minutes(7))]
        )
        records = {r.key: r for r in await store.model_records()}
        assert set(records) == {key("a"), key("b")}
        assert records[key("a")].last_success_at == minutes(5)
        assert (records[key("b")].last_poll_at, records[key("b")].last_success_at) == (
            minutes(6),
            minutes(6),
        )
        assert (records[key("b")].failures, records[key("b")].last_error) == (0, None)
        await store.record_polls([])

    async def test_names_and_discovery(self, store: Store) -> None:
        """A name is kept when the next observation passes none; records sort by name, else id."""
        await store.record_observation(ModelState("zz"), [], polled_at=T0, name="alpha")
        await store.record_observation(ModelState("zz"), [], polled_at=T0)
        await store.record_observation(ModelState("bb"), [], polled_at=T0, discovered=True)
        await store.record_observation(ModelState("cc"), [], polled_at=T0, name="Beta")
        records = await store.model_records()
        assert [(r.state.model_id, r.name, r.discovered) for r in records] == [
            ("zz", "alpha", False),
            ("bb", None, True),
            ("cc", "Beta", False),
        ]

    async def test_naive_times_are_refused(self, store: Store) -> None:
        """A time without a timezone is a bug in the caller, refused before anything is written."""
        with pytest.raises(ValueError, match="timezone-aware"):
            await store.record_observation(ModelState("m-1"), [], polled_at=datetime(2024, 1, 1))
        assert await store.model_records() == []


class TestKeys:
    async def test_two_providers_may_use_the_same_id(self, store: Store) -> None:
        """A model is (provider, id): states, records, failures and notices never mix."""
        cohere = finished_model("job-1")
        other = observe(
            None,
            "job-1",
            [Event("queued", minutes(0)), Event("succeeded", minutes(20))],
            scheme=OTHER_SCHEME,
        )
        (cohere_id,) = await store.record_observation(
            cohere.state, cohere.notices, polled_at=minutes(40), name="same"
        )
        (other_id,) = await store.record_observation(
            other.state, other.notices, polled_at=minutes(40), name="same"
        )
        await store.record_poll_failure(
            key("job-1", "other"), polled_at=minutes(41), error="HTTP 500", failures=1
        )
        assert await store.load_states() == {
            key("job-1"): cohere.state,
            key("job-1", "other"): other.state,
        }
        records = await store.model_records()
        assert [(r.key, r.failures, r.pending_notifications) for r in records] == [
            (key("job-1"), 0, 1),
            (key("job-1", "other"), 1, 1),
        ]
        due = {item.id: item for item in await store.due_notifications(minutes(40))}
        assert due[cohere_id].model == key("job-1")
        assert due[other_id].model == key("job-1", "other")
        assert due[other_id].notice == other.notices[0]
        await store.record_stuck_warning(
            key("job-1", "other"), warnings=2, title="t", body="b", notify_type="warning",
            created_at=minutes(42),
        )  # fmt: skip
        assert await store.stuck_warning_counts() == {key("job-1", "other"): 2}


class TestOutbox:
    async def test_a_notice_from_enqueue_to_done(self, store: Store) -> None:
        """Enqueued with the state, due at once, delivered per target, retried, then done."""
        observation = finished_model()
        (outbox_id,) = await store.record_observation(
            observation.state, observation.notices, polled_at=minutes(40), name="classifier"
        )
        assert await store.due_notifications(minutes(39)) == []
        (item,) = await store.due_notifications(minutes(40))
        assert (item.id, item.kind, item.model) == (outbox_id, "model", key("m-1"))
        assert item.notice == Notice(
            model_id="m-1",
            status=READY,
            previous_status=FINETUNING,
            event_at=minutes(30),
            previous_since=minutes(1),
            started_at=minutes(0),
            first_observation=True,
            provider="cohere",
        )
        assert (item.title, item.body, item.notify_type) == (None, None, None)
        assert (item.created_at, item.attempts, item.last_error) == (minutes(40), 0, None)
        assert await store.next_due_at() == minutes(40)
        assert (await store.model_records())[0].pending_notifications == 1

        assert await store.delivered_targets(outbox_id) == set()
        await store.mark_delivered(outbox_id, "slack-1", minutes(40))
        await store.mark_delivered(outbox_id, "slack-1", minutes(41))  # idempotent
        await store.schedule_retry(
            outbox_id, attempts=1, next_attempt_at=minutes(45), error="HTTP 500"
        )
        assert await store.due_notifications(minutes(44)) == []
        assert await store.next_due_at() == minutes(45)

        (item,) = await store.due_notifications(minutes(45))
        assert (item.attempts, item.last_error) == (1, "HTTP 500")
        assert await store.delivered_targets(outbox_id) == {"slack-1"}
        await store.mark_delivered(outbox_id, "mail-1", minutes(45))
        await store.mark_done(outbox_id, minutes(45))

        assert await store.due_notifications(minutes(100)) == []
        assert await store.next_due_at() is None
        assert await store.outbox_counts() == OutboxCounts(pending=0, done=1, given_up=0)
        assert (await store.model_records())[0].pending_notifications == 0
        assert await store.delivered_targets(outbox_id) == {"slack-1", "mail-1"}

    async def test_pull_forward_retries_after_a_backwards_clock_jump(self, store: Store) -> None:
        """Retries scheduled far ahead are made due at once; done items are untouched."""
        observation = finished_model()
        (outbox_id,) = await store.record_observation(
            observation.state, observation.notices, polled_at=minutes(40)
        )
        await store.schedule_retry(
            outbox_id, attempts=1, next_attempt_at=minutes(600), error="HTTP 500"
        )
        assert await store.due_notifications(minutes(41)) == []
        assert await store.pull_forward_retries(minutes(41)) == 1
        (item,) = await store.due_notifications(minutes(41))
        assert item.id == outbox_id
        assert await store.pull_forward_retries(minutes(41)) == 0
        await store.mark_done(outbox_id, minutes(41))
        assert await store.pull_forward_retries(minutes(0)) == 0

    async def test_stuck_warnings_are_counted_with_their_message_and_reset_on_change(
        self, store: Store
    ) -> None:
        """A stuck warning and its count are one write; a new status resets the count."""
        first = observe(None, "m-1", [Event(FINETUNING, minutes(1))])
        await store.record_observation(first.state, first.notices, polled_at=minutes(2))
        outbox_id = await store.record_stuck_warning(
            key(), warnings=1, title="stuck", body="b", notify_type="warning",
            created_at=minutes(3),
        )  # fmt: skip
        (item,) = await store.due_notifications(minutes(3))
        assert (item.id, item.kind, item.model, item.notice) == (outbox_id, "stuck", key(), None)
        assert (item.title, item.body, item.notify_type) == ("stuck", "b", "warning")
        assert await store.stuck_warning_counts() == {key(): 1}
        again = observe(
            first.state, "m-1", [Event(FINETUNING, minutes(1)), Event(FINETUNING, minutes(4))]
        )
        await store.record_observation(again.state, again.notices, polled_at=minutes(5))
        assert await store.stuck_warning_counts() == {key(): 1}
        later = observe(again.state, "m-1", [Event(READY, minutes(6))])
        await store.record_observation(later.state, later.notices, polled_at=minutes(7))
        assert await store.stuck_warning_counts() == {}

    async def test_messages_are_pre_rendered(self, store: Store) -> None:
        """Ops messages carry their own title, body and type; they have no notice."""
        ops_id = await store.enqueue_message(
            kind="ops", title="Cannot authenticate", body="401 from the provider",
            notify_type="failure", created_at=minutes(1), model=key(),
        )  # fmt: skip
        wide_id = await store.enqueue_message(
            kind="ops", title="Hello", body="It works", notify_type="info", created_at=minutes(2)
        )
        ops, wide = await store.due_notifications(minutes(2))
        assert (ops.id, wide.id) == (ops_id, wide_id)
        assert (ops.kind, ops.model, ops.notice) == ("ops", key(), None)
        assert (ops.title, ops.body, ops.notify_type) == (
            "Cannot authenticate",
            "401 from the provider",
            "failure",
        )
        assert (wide.kind, wide.model, wide.title) == ("ops", None, "Hello")
        assert await store.outbox_counts() == OutboxCounts(pending=2, done=0, given_up=0)

    @pytest.mark.parametrize("kind", ["model", "stuck", "test"])
    async def test_enqueue_message_only_takes_ops(self, store: Store, kind: str) -> None:
        """Notices come with a state, stuck warnings with their count; 'test' is no kind."""
        with pytest.raises(ValueError, match="takes kind 'ops'"):
            await store.enqueue_message(
                kind=kind, title="t", body="b", notify_type="info", created_at=T0
            )
        assert await store.outbox_counts() == OutboxCounts(pending=0, done=0, given_up=0)

    async def test_giving_up(self, store: Store) -> None:
        """A given-up item leaves the pending set, is counted, and is not due any more."""
        kept = await store.enqueue_message(
            kind="ops", title="a", body="a", notify_type="info", created_at=T0
        )
        dropped = await store.enqueue_message(
            kind="ops", title="b", body="b", notify_type="info", created_at=T0
        )
        await store.give_up(dropped, at=minutes(60 * 24), reason="undelivered for 24h")
        due = await store.due_notifications(minutes(60 * 24))
        assert [item.id for item in due] == [kept]
        assert await store.outbox_counts() == OutboxCounts(pending=1, done=0, given_up=1)

    async def test_due_items_come_oldest_first_and_limited(self, store: Store) -> None:
        """Due items are ordered by id (queue order), at most ``limit`` of them."""
        ids = [
            await store.enqueue_message(
                kind="ops", title=str(i), body="", notify_type="info", created_at=minutes(5 - i)
            )
            for i in range(5)
        ]
        due = await store.due_notifications(minutes(10), limit=3)
        assert [item.id for item in due] == ids[:3]
        assert await store.next_due_at() == minutes(1)

    async def test_several_notices_keep_their_order(self, store: Store) -> None:
        """READY then FAILED between two polls: two rows, ids in notice order."""
        first = finished_model()
        await store.record_observation(first.state, first.notices, polled_at=minutes(40))
        later = observe(
            first.state,
            "m-1",
            [Event(READY, minutes(30)), Event(FAILED, minutes(50)), Event(READY, minutes(55))],
        )
        ids = await store.record_observation(later.state, later.notices, polled_at=minutes(60))
        assert len(ids) == 2
        assert ids == sorted(ids)
        due = {item.id: item.notice for item in await store.due_notifications(minutes(60))}
        assert [due[i] for i in ids] == list(later.notices)


class TestAtomicity:
    async def test_a_failed_outbox_insert_leaves_the_state_unchanged(
        self, backend: Backend, store: Store
    ) -> None:
        """If the outbox row cannot be written, the state change is rolled back with it."""
        queued = observe(None, "m-1", [Event(QUEUED, minutes(0))])
        await store.record_observation(queued.state, queued.notices, polled_at=minutes(1))
        backend.refuse_outbox_inserts(True)
        ready = observe(queued.state, "m-1", [Event(QUEUED, minutes(0)), Event(READY, minutes(9))])
        assert ready.notices

        with pytest.raises(StateError, match="outbox insert refused by the test"):
            await store.record_observation(ready.state, ready.notices, polled_at=minutes(10))

        assert await store.load_states() == {key(): queued.state}
        assert (await store.model_records())[0].last_poll_at == minutes(1)
        assert await store.outbox_counts() == OutboxCounts(pending=0, done=0, given_up=0)

        backend.refuse_outbox_inserts(False)
        await store.record_observation(ready.state, ready.notices, polled_at=minutes(11))
        assert await store.load_states() == {key(): ready.state}
        assert (await store.outbox_counts()).pending == 1


class TestLifetime:
    async def test_reopening_keeps_everything(self, backend: Backend) -> None:
        """States, names, failures, pending items, deliveries and counts survive a restart."""
        observation = finished_model()
        store = await backend.open()
        try:
            (notice_id,) = await store.record_observation(
                observation.state, observation.notices, polled_at=minutes(40), name="clf"
            )
            await store.record_poll_failure(
                key("m-2"), polled_at=minutes(41), error="HTTP 404", failures=1
            )
            await store.mark_delivered(notice_id, "slack-1", minutes(41))
            await store.schedule_retry(
                notice_id, attempts=1, next_attempt_at=minutes(42), error="HTTP 500"
            )
            done_id = await store.enqueue_message(
                kind="ops", title="t", body="b", notify_type="info", created_at=minutes(41)
            )
            await store.mark_done(done_id, minutes(41))
            records, counts = await store.model_records(), await store.outbox_counts()
            due = await store.due_notifications(minutes(42))
        finally:
            await store.aclose()

        store = await backend.open()
        try:
            assert await store.load_states() == {key(): observation.state}
            assert await store.model_records() == records
            assert await store.outbox_counts() == counts == OutboxCounts(1, 1, 0)
            assert await store.due_notifications(minutes(42)) == due
            assert await store.delivered_targets(notice_id) == {"slack-1"}
            new_id = await store.enqueue_message(
                kind="ops", title="t", body="b", notify_type="info", created_at=minutes(43)
            )
            assert new_id > done_id  # ids are never reused
        finally:
            await store.aclose()

    async def test_close_is_idempotent_and_ends_ping(self, backend: Backend) -> None:
        """ping() answers while the store is open and not after; closing twice is harmless."""
        store = await backend.open()
        assert await store.ping() is True
        await store.aclose()
        await store.aclose()
        assert await store.ping() is False
        await (await backend.open()).aclose()

    async def test_a_reader_cannot_write(self, backend: Backend, store: Store) -> None:
        """A read-only store reads what the writer wrote; its writes fail saying read-only."""
        await store.record_observation(ModelState("m-1"), [], polled_at=T0)
        reader = await backend.open_readonly()
        try:
            assert set(await reader.load_states()) == {key()}
            with pytest.raises(StateError, match="read-only"):
                await reader.record_polls([(key(), minutes(1))])
            assert await reader.ping()
        finally:
            await reader.aclose()
        assert (await store.model_records())[0].last_poll_at == T0

    async def test_a_newer_schema_is_refused(self, backend: Backend) -> None:
        """State from a newer watcher is refused by both openers (exit 74), untouched."""
        backend.write_future_schema(99)
        for opener in (backend.open, backend.open_readonly):
            with pytest.raises(
                StateError,
                match=r"written by a newer finetune-watcher \(schema 99, this one understands "
                r"\d+\); refusing to touch it",
            ) as refused:
                await opener()
            assert refused.value.exit_code == 74
