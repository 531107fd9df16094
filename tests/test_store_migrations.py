"""Schema upgrades on real files: every earlier version opens as the current one, nothing lost.

Each earlier version's DDL is copied here *as it was released* (never import it from
the package: the package only knows the current schema and the steps). A file of
that version is filled the way that version's store wrote it, opened by today's
store, and must read back equal: states, records, pending notifications still due,
deliveries remembered, outbox ids never reused. Adding a schema version means
adding the previous one's DDL and writer here; ``test_every_earlier_version_is_tested``
fails until then.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher import lifecycle
from watcher.errors import StateError
from watcher.lifecycle import Event, EventKey, ModelKey, ModelState, Notice, Phase, StatusScheme
from watcher.store import OutboxCounts
from watcher.store.migrations import MIGRATIONS
from watcher.store.sqlite import SCHEMA_VERSION, SqliteStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

QUEUED, FINETUNING, READY, FAILED = (
    "STATUS_QUEUED",
    "STATUS_FINETUNING",
    "STATUS_READY",
    "STATUS_FAILED",
)
# Cohere's statuses: every file before version 2 holds Cohere models only.
SCHEME = StatusScheme(
    provider="cohere",
    table={
        QUEUED: (Phase.QUEUED, 10),
        FINETUNING: (Phase.RUNNING, 20),
        READY: (Phase.READY, 70),
        FAILED: (Phase.FAILED, 80),
    },
    settled=frozenset({READY, FAILED}),
)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def key(model_id: str) -> ModelKey:
    return ModelKey("cohere", model_id)


# --- version 1, exactly as released (watcher/store.py, schema version 1) ---

V1_SCHEMA: tuple[str, ...] = (
    """
    CREATE TABLE models (
        model_id        TEXT PRIMARY KEY NOT NULL,
        name            TEXT,
        discovered      INTEGER NOT NULL DEFAULT 0 CHECK (discovered IN (0, 1)),
        observed        INTEGER NOT NULL DEFAULT 0 CHECK (observed IN (0, 1)),
        status          TEXT,
        status_since    TEXT,
        started_at      TEXT,
        seen            TEXT NOT NULL DEFAULT '[]',
        floor           TEXT,
        last_poll_at    TEXT,
        last_success_at TEXT,
        last_error      TEXT,
        failures        INTEGER NOT NULL DEFAULT 0,
        stuck_warnings  INTEGER NOT NULL DEFAULT 0  -- "still stuck" warnings sent in this status
    )
    """,
    """
    CREATE TABLE outbox (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        kind              TEXT NOT NULL CHECK (kind IN ('model', 'ops', 'test', 'stuck')),
        model_id          TEXT,
        status            TEXT,
        previous_status   TEXT,
        event_at          TEXT,
        previous_since    TEXT,
        started_at        TEXT,
        first_observation INTEGER NOT NULL DEFAULT 0 CHECK (first_observation IN (0, 1)),
        title             TEXT,
        body              TEXT,
        notify_type       TEXT,
        created_at        TEXT NOT NULL,
        attempts          INTEGER NOT NULL DEFAULT 0,
        next_attempt_at   TEXT NOT NULL,
        last_error        TEXT,
        done_at           TEXT,
        given_up_at       TEXT,
        CHECK (kind <> 'model'
               OR (model_id IS NOT NULL AND status IS NOT NULL AND event_at IS NOT NULL)),
        CHECK (kind = 'model'
               OR (title IS NOT NULL AND body IS NOT NULL AND notify_type IS NOT NULL))
    )
    """,
    """
    CREATE INDEX outbox_pending ON outbox (next_attempt_at)
        WHERE done_at IS NULL AND given_up_at IS NULL
    """,
    """
    CREATE TABLE deliveries (
        outbox_id    INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
        target_key   TEXT NOT NULL,
        delivered_at TEXT NOT NULL,
        PRIMARY KEY (outbox_id, target_key)
    ) WITHOUT ROWID
    """,
    "PRAGMA user_version = 1",
)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def _seen(state: ModelState) -> str:
    return json.dumps([[_time(i.created_at), i.status] for i in sorted(state.seen)])


def _floor(floor: EventKey | None) -> str | None:
    if floor is None:
        return None
    return json.dumps([_time(floor.created_at), floor.rank, floor.status])


@dataclass(frozen=True)
class Written:
    """What a file of an earlier version holds, as today's store must read it back."""

    states: dict[ModelKey, ModelState]
    notices: dict[int, Notice]  # pending model notices, by outbox id
    pending_ids: list[int]  # every pending item, in queue order
    counts: OutboxCounts
    delivered: dict[int, set[str]]
    stuck: dict[ModelKey, int]
    high_water: int  # the largest outbox id ever handed out


def write_v1(db: sqlite3.Connection) -> Written:
    """A version-1 file as version 1 wrote it: every kind of row, in every outbox state."""
    for statement in V1_SCHEMA:
        db.execute(statement)
    history = [Event(QUEUED, minutes(0)), Event(FINETUNING, minutes(1)), Event(READY, minutes(30))]
    ready = lifecycle.observe(None, "m-ready", history, scheme=SCHEME)
    many = [Event(QUEUED if i % 2 else FINETUNING, minutes(i)) for i in range(70)]
    bounded = lifecycle.observe(None, "m-bounded", many, scheme=SCHEME).state
    assert bounded.floor is not None
    for state, name, discovered, stuck in (
        (ready.state, "classifier", 0, 0),
        (bounded, None, 1, 2),
    ):
        db.execute(
            "INSERT INTO models (model_id, name, discovered, observed, status, status_since,"
            " started_at, seen, floor, last_poll_at, last_success_at, last_error, failures,"
            " stuck_warnings) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?)",
            (
                state.model_id,
                name,
                discovered,
                state.status,
                _time(state.status_since),
                _time(state.started_at),
                _seen(state),
                _floor(state.floor),
                _time(minutes(40)),
                _time(minutes(40)),
                stuck,
            ),
        )
    db.execute(  # polled, never successfully: a record, not a state
        "INSERT INTO models (model_id, last_poll_at, last_error, failures)"
        " VALUES ('m-failing', ?, 'HTTP 404', 3)",
        (_time(minutes(41)),),
    )

    (notice,) = ready.notices
    notice_row = (
        "INSERT INTO outbox (id, kind, model_id, status, previous_status, event_at,"
        " previous_since, started_at, first_observation, created_at, attempts, next_attempt_at,"
        " last_error, done_at) VALUES (?, 'model', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    notice_values = (
        notice.model_id,
        notice.status,
        notice.previous_status,
        _time(notice.event_at),
        _time(notice.previous_since),
        _time(notice.started_at),
        int(notice.first_observation),
        _time(minutes(40)),
    )
    # 1: pending, one target already has it; 2: done.
    db.execute(notice_row, (1, *notice_values, 1, _time(minutes(42)), "HTTP 500", None))
    db.execute(notice_row, (2, *notice_values, 0, _time(minutes(40)), None, _time(minutes(40))))
    created, given_up = _time(minutes(41)), _time(minutes(41))
    db.executemany(
        "INSERT INTO outbox (id, kind, model_id, title, body, notify_type, created_at,"
        " next_attempt_at, given_up_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [  # id, kind, model, title, body, type; all created now and due at once
            (3, "ops", "m-failing", "Not found", "404", "failure", created, created, None),
            (4, "ops", None, "Cannot authenticate", "401", "failure", created, created, None),
            (5, "stuck", "m-bounded", "Stuck", "2h", "warning", created, created, None),
            (6, "test", None, "Hello", "It works", "info", created, created, None),
            (7, "ops", None, "Old", "x", "info", created, created, given_up),
        ],
    )
    db.execute(
        "INSERT INTO deliveries (outbox_id, target_key, delivered_at) VALUES"
        " (1, 'slack-1', ?), (2, 'slack-1', ?), (2, 'mail-1', ?)",
        (_time(minutes(40)),) * 3,
    )
    # Ids 8 and 9 were handed out by inserts whose rows are gone (AUTOINCREMENT remembers).
    db.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'outbox'")

    return Written(
        states={key("m-ready"): ready.state, key("m-bounded"): bounded},
        notices={1: notice},
        pending_ids=[1, 3, 4, 5, 6],
        counts=OutboxCounts(pending=5, done=1, given_up=1),
        delivered={1: {"slack-1"}, 2: {"slack-1", "mail-1"}, 3: set()},
        stuck={key("m-bounded"): 2},
        high_water=9,
    )


#: Every released version before the current one, and how that version wrote a file.
EARLIER_VERSIONS: dict[int, Callable[[sqlite3.Connection], Written]] = {1: write_v1}


def make_file(path: Path, version: int) -> Written:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        written = EARLIER_VERSIONS[version](db)
        db.execute("COMMIT")
    finally:
        db.close()
    return written


def dump(path: Path) -> list[str]:
    """The file's whole content as SQL text (schema, rows, version)."""
    db = sqlite3.connect(path)
    try:
        return [*db.iterdump(), f"user_version={db.execute('PRAGMA user_version').fetchone()[0]}"]
    finally:
        db.close()


def schema_of(path: Path) -> dict[str, str]:
    """Every table and index as its CREATE statement, normalised for comparison."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    finally:
        db.close()

    def normal(sql: str) -> str:
        sql = re.sub(r"--[^\n]*", "", sql)  # comments
        sql = re.sub(r'CREATE TABLE "?(\w+?)(_v\d+)?"? \(', r"CREATE TABLE \1 (", sql)
        return " ".join(sql.split())

    return {name: normal(sql) for name, sql in rows}


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "watcher.db"


def test_every_earlier_version_is_tested() -> None:
    """A new schema version needs the previous one's DDL and writer in this module."""
    assert set(EARLIER_VERSIONS) == set(range(1, SCHEMA_VERSION))
    assert [step.to_version for step in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", sorted(EARLIER_VERSIONS))
class TestUpgrade:
    async def test_nothing_is_lost(self, state_path: Path, version: int) -> None:
        """States load equal, pending notifications are still due, deliveries are remembered."""
        written = make_file(state_path, version)
        async with await SqliteStore.open(state_path) as store:
            assert store.upgraded_from == version
            assert await store.load_states() == written.states
            assert await store.outbox_counts() == written.counts
            due = await store.due_notifications(minutes(60 * 24))
            assert [item.id for item in due] == written.pending_ids
            for item in due:
                if item.kind == "model":
                    assert item.notice == written.notices[item.id]
                    assert item.model == item.notice.key
            for outbox_id, targets in written.delivered.items():
                assert await store.delivered_targets(outbox_id) == targets
            assert await store.stuck_warning_counts() == written.stuck
            new_id = await store.enqueue_message(
                kind="ops", title="t", body="b", notify_type="info", created_at=minutes(50)
            )
            assert new_id == written.high_water + 1  # ids are never reused
        with sqlite3.connect(state_path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()

    async def test_the_result_is_a_current_file(
        self, state_path: Path, tmp_path: Path, version: int
    ) -> None:
        """An upgraded file has exactly the schema of a new one, and upgrades only once."""
        make_file(state_path, version)
        await (await SqliteStore.open(state_path)).aclose()
        fresh = tmp_path / "fresh" / "watcher.db"
        await (await SqliteStore.open(fresh)).aclose()
        assert schema_of(state_path) == schema_of(fresh)
        async with await SqliteStore.open(state_path) as store:
            assert store.upgraded_from is None

    async def test_records_keep_their_bookkeeping(self, state_path: Path, version: int) -> None:
        """Names, discovery, failures and errors survive; every model is now Cohere's."""
        make_file(state_path, version)
        async with await SqliteStore.open(state_path) as store:
            records = {r.key: r for r in await store.model_records()}
        assert set(records) == {key("m-ready"), key("m-bounded"), key("m-failing")}
        assert (records[key("m-ready")].name, records[key("m-ready")].discovered) == (
            "classifier",
            False,
        )
        assert records[key("m-bounded")].discovered is True
        failing = records[key("m-failing")]
        assert (failing.failures, failing.last_error, failing.last_success_at) == (
            3,
            "HTTP 404",
            None,
        )
        assert failing.last_poll_at == minutes(41)
        assert failing.pending_notifications == 1
        assert records[key("m-ready")].pending_notifications == 1

    async def test_outbox_rows_name_their_provider(self, state_path: Path, version: int) -> None:
        """Rows about a model are Cohere's; daemon-wide ops stay without a model."""
        make_file(state_path, version)
        async with await SqliteStore.open(state_path) as store:
            due = {item.id: item for item in await store.due_notifications(minutes(60 * 24))}
        assert {i: (item.kind, item.model) for i, item in due.items()} == {
            1: ("model", key("m-ready")),
            3: ("ops", key("m-failing")),
            4: ("ops", None),
            5: ("stuck", key("m-bounded")),
            6: ("ops", None),  # version 1's unused 'test' kind: pre-rendered, like ops
        }
        assert (due[6].title, due[6].body, due[6].notify_type) == ("Hello", "It works", "info")

    async def test_a_reader_sees_the_upgrade_without_writing(
        self, state_path: Path, version: int
    ) -> None:
        """open_readonly (``status``) reads an old file through an upgraded copy in memory."""
        written = make_file(state_path, version)
        before = dump(state_path)
        async with await SqliteStore.open_readonly(state_path) as reader:
            assert reader.upgraded_from == version
            assert await reader.load_states() == written.states
            assert await reader.outbox_counts() == written.counts
            with pytest.raises(StateError, match="read-only"):
                await reader.mark_done(1, minutes(50))
        assert dump(state_path) == before

    async def test_a_failed_upgrade_changes_nothing(self, state_path: Path, version: int) -> None:
        """A file that claims the version but does not match it: refused, left as it was."""
        make_file(state_path, version)
        with sqlite3.connect(state_path, isolation_level=None) as db:
            db.execute("ALTER TABLE models DROP COLUMN stuck_warnings")
        db.close()
        before = dump(state_path)
        with pytest.raises(
            StateError,
            match=rf"upgrading the schema from version {version} to {SCHEMA_VERSION} failed: "
            r".*stuck_warnings",
        ):
            await SqliteStore.open(state_path)
        assert dump(state_path) == before
        # Not locked, not half-open: a fixed file opens.
        with sqlite3.connect(state_path, isolation_level=None) as db:
            db.execute("ALTER TABLE models ADD COLUMN stuck_warnings INTEGER NOT NULL DEFAULT 0")
        db.close()
        await (await SqliteStore.open(state_path)).aclose()
