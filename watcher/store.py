"""SQLite persistence: model states and the notification outbox, atomic together; the lock.

Every SQL statement of the project lives in this module. The pure core
(:mod:`watcher.lifecycle`) decides; the store remembers what it decided. A state
change and the notifications it causes are written in *one* transaction
(:meth:`Store.record_observation`), so a crash -- even ``kill -9`` -- can never
leave a new status without its outbox rows: after a restart the outbox is
delivered, and nothing already seen is announced again.

Decisions
---------
* One connection, used from the event-loop thread only (``check_same_thread``
  stays on, so a violation is loud). Reads are sub-millisecond; a write is one
  small transaction with one fsync, and writes only happen when something
  changed, so a worker thread would cost more than it saves.
* ``isolation_level=None``: we issue ``BEGIN IMMEDIATE`` / ``COMMIT`` ourselves
  (:meth:`Store._transaction`), so a write never deadlocks half-way on a lock.
* ``journal_mode=WAL`` so ``finetune-watcher status`` (:meth:`Store.open_readonly`)
  reads while the daemon writes; ``synchronous=FULL`` because the durability of
  the outbox matters more than speed; ``busy_timeout``; foreign keys on.
* The schema version is ``PRAGMA user_version``. A file from a newer version, a
  file that is not a SQLite database, or a SQLite database that is not ours is
  refused with a :class:`~watcher.errors.StateError`; the store never overwrites,
  truncates, migrates down or deletes a file it does not understand.
* Exclusive use: :meth:`Store.open` takes a non-blocking ``flock`` on
  ``<path>.lock`` (holding the owner's pid); a second daemon gets
  :class:`~watcher.errors.StateLockedError`.
* Owner-only permissions: a missing folder is created ``0700``, the database and
  lock files ``0600`` (SQLite gives its ``-wal``/``-shm`` files the database's mode).
* Times are ISO-8601 UTC text with microseconds (``2024-05-01T12:00:00.000000+00:00``):
  fixed width, so text order is time order in SQL comparisons.
* The store writes the text it is given: callers pass errors and messages that
  are already redacted, and ``target_key`` values that are not secrets.

Schema (version 1)
------------------
``models`` -- one row per model, the core's :class:`~watcher.lifecycle.ModelState`
plus poll bookkeeping:
    ``model_id`` TEXT PK, ``name`` TEXT (label; NULL = none), ``discovered`` 0/1
    (found by listing rather than configured), ``observed`` 0/1 (a state was
    recorded; rows created by poll failures alone are 0 and are not states),
    ``status``, ``status_since``, ``started_at``, ``seen`` (JSON list of
    ``[time, status]``: the seen :class:`~watcher.lifecycle.EventId` set),
    ``floor`` (JSON ``[time, rank, status]`` or NULL: the
    :class:`~watcher.lifecycle.EventKey` at or below which events are history),
    ``last_poll_at``, ``last_success_at``, ``last_error``, ``failures`` (consecutive).

``outbox`` -- notifications to deliver, never deleted:
    ``id`` INTEGER PK AUTOINCREMENT (never reused), ``kind`` ``'model'`` | ``'ops'`` |
    ``'test'``, ``model_id``; for ``'model'`` the :class:`~watcher.lifecycle.Notice`
    (``status``, ``previous_status``, ``event_at``, ``previous_since``,
    ``started_at``, ``first_observation``), rendered at delivery time; for
    ``'ops'``/``'test'`` a pre-rendered ``title``, ``body``, ``notify_type``;
    then ``created_at``, ``attempts``, ``next_attempt_at``, ``last_error``,
    ``done_at``, ``given_up_at``. Pending = neither done nor given up.

``deliveries`` -- which targets already have an outbox row, so a retry never
sends twice to a target that succeeded:
    ``outbox_id`` REFERENCES outbox, ``target_key``, ``delivered_at``;
    PRIMARY KEY (``outbox_id``, ``target_key``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from watcher.errors import StateError, StateLockedError
from watcher.lifecycle import EventId, EventKey, ModelState, Notice

SCHEMA_VERSION = 1

_BUSY_TIMEOUT_MS = 5_000

_SCHEMA: tuple[str, ...] = (
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
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_PENDING = "done_at IS NULL AND given_up_at IS NULL"

_UPSERT_STATE = """
    INSERT INTO models (model_id, name, discovered, observed, status, status_since,
                        started_at, seen, floor, last_poll_at, last_success_at,
                        last_error, failures)
    VALUES (:model_id, :name, :discovered, 1, :status, :status_since,
            :started_at, :seen, :floor, :polled_at, :polled_at, NULL, 0)
    ON CONFLICT (model_id) DO UPDATE SET
        name = COALESCE(excluded.name, models.name),
        discovered = excluded.discovered,
        observed = 1,
        status = excluded.status,
        status_since = excluded.status_since,
        started_at = excluded.started_at,
        seen = excluded.seen,
        floor = excluded.floor,
        last_poll_at = excluded.last_poll_at,
        last_success_at = excluded.last_success_at,
        last_error = NULL,
        failures = 0,
        stuck_warnings = CASE WHEN models.status IS excluded.status
                              THEN models.stuck_warnings ELSE 0 END
"""

_INSERT_NOTICE = """
    INSERT INTO outbox (kind, model_id, status, previous_status, event_at, previous_since,
                        started_at, first_observation, created_at, attempts, next_attempt_at)
    VALUES ('model', :model_id, :status, :previous_status, :event_at, :previous_since,
            :started_at, :first_observation, :created_at, 0, :created_at)
"""

_INSERT_MESSAGE = """
    INSERT INTO outbox (kind, model_id, title, body, notify_type, created_at, attempts,
                        next_attempt_at)
    VALUES (:kind, :model_id, :title, :body, :notify_type, :created_at, 0, :created_at)
"""

_SET_STUCK_WARNINGS = """
    UPDATE models SET stuck_warnings = :warnings WHERE model_id = :model_id
"""

_SELECT_STUCK_WARNINGS = "SELECT model_id, stuck_warnings FROM models WHERE stuck_warnings > 0"

_RECORD_POLL = """
    UPDATE models SET last_poll_at = :polled_at, last_success_at = :polled_at,
                      failures = 0, last_error = NULL
    WHERE model_id = :model_id
"""

_UPSERT_FAILURE = """
    INSERT INTO models (model_id, last_poll_at, last_error, failures)
    VALUES (:model_id, :polled_at, :error, :failures)
    ON CONFLICT (model_id) DO UPDATE SET
        last_poll_at = excluded.last_poll_at,
        last_error = excluded.last_error,
        failures = excluded.failures
"""

_SELECT_STATES = """
    SELECT model_id, status, status_since, started_at, seen, floor
    FROM models WHERE observed = 1
"""

_SELECT_RECORDS = f"""
    SELECT m.*, (SELECT count(*) FROM outbox o
                 WHERE o.model_id = m.model_id AND o.{_PENDING}) AS pending
    FROM models m
    ORDER BY COALESCE(m.name, m.model_id) COLLATE NOCASE, m.model_id
"""  # noqa: S608 -- constant text, no input

_SELECT_DUE = f"""
    SELECT * FROM outbox
    WHERE {_PENDING} AND next_attempt_at <= :now
    ORDER BY id LIMIT :limit
"""  # noqa: S608 -- constant text, no input

_SELECT_NEXT_DUE = f"SELECT min(next_attempt_at) FROM outbox WHERE {_PENDING}"  # noqa: S608
_PULL_FORWARD = f"""
    UPDATE outbox SET next_attempt_at = :not_after
    WHERE {_PENDING} AND next_attempt_at > :not_after
"""  # noqa: S608

_SELECT_COUNTS = f"""
    SELECT count(*) FILTER (WHERE {_PENDING}),
           count(*) FILTER (WHERE done_at IS NOT NULL),
           count(*) FILTER (WHERE given_up_at IS NOT NULL)
    FROM outbox
"""  # noqa: S608 -- constant text, no input

_SELECT_PENDING_BY_MODEL = f"""
    SELECT model_id, count(*) FROM outbox
    WHERE {_PENDING} AND model_id IS NOT NULL
    GROUP BY model_id
"""  # noqa: S608 -- constant text, no input

_SELECT_DELIVERED = "SELECT target_key FROM deliveries WHERE outbox_id = ?"

_INSERT_DELIVERY = """
    INSERT OR IGNORE INTO deliveries (outbox_id, target_key, delivered_at) VALUES (?, ?, ?)
"""

_MARK_DONE = "UPDATE outbox SET done_at = ? WHERE id = ? AND done_at IS NULL"

_SCHEDULE_RETRY = """
    UPDATE outbox SET attempts = :attempts, next_attempt_at = :next_attempt_at,
                      last_error = :error
    WHERE id = :id
"""

_GIVE_UP = """
    UPDATE outbox SET given_up_at = :at, last_error = :reason
    WHERE id = :id AND given_up_at IS NULL
"""


@dataclass(frozen=True)
class ModelRecord:
    """What ``status`` shows about one model: its state plus poll bookkeeping.

    A model that never polled successfully has ``state.status is None`` and
    ``last_success_at is None``.
    """

    state: ModelState
    name: str | None
    discovered: bool
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    failures: int
    pending_notifications: int


@dataclass(frozen=True)
class OutboxItem:
    """One pending notification.

    ``kind == "model"``: ``notice`` is set (rendered at delivery time) and the
    pre-rendered fields are None. ``"ops"`` / ``"test"`` / ``"stuck"``: ``title``, ``body`` and
    ``notify_type`` are set and ``notice`` is None.
    """

    id: int
    kind: str
    model_id: str | None
    notice: Notice | None
    title: str | None
    body: str | None
    notify_type: str | None
    created_at: datetime
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    done: int
    given_up: int


class Store:
    """The state database. Build one with :meth:`open` or :meth:`open_readonly`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._db = connection
        self._lock_fd = lock_fd
        self._closed = False

    # --- opening and closing ---

    @classmethod
    def open(cls, path: Path, *, lock: bool = True) -> Store:
        """Open (creating if missing) the state file at ``path`` for reading and writing.

        Raises :class:`StateLockedError` when another process holds the lock and
        :class:`StateError` when the file or its folder cannot be used.
        """
        _ensure_folder(path)
        lock_fd = _acquire_lock(path) if lock else None
        connection: sqlite3.Connection | None = None
        try:
            _ensure_file(path)
            connection = _connect(path, str(path), uri=False)
            _check_contents(path, connection, readonly=False)
            with _opening_errors(path):
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StateError(
                        f"state file {path}: SQLite cannot use WAL mode here "
                        f"(journal mode stays {mode!r}); put the state on a local filesystem"
                    )
                connection.execute("PRAGMA synchronous = FULL")
                connection.execute("PRAGMA foreign_keys = ON")
            store = cls(path, connection, lock_fd)
            store._create_schema()
        except BaseException:
            if connection is not None:
                connection.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """Open an existing state file for reading, without the lock.

        For ``finetune-watcher status`` while a daemon runs: WAL lets it read a
        consistent snapshot while the daemon writes. Writing through it raises
        :class:`StateError`.
        """
        if not path.exists():
            raise StateError(f"no state file at {path} (has the watcher run yet?)")
        connection = _connect(path, path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            _check_contents(path, connection, readonly=True)
            with _opening_errors(path):
                connection.execute("PRAGMA query_only = ON")
        except BaseException:
            connection.close()
            raise
        return cls(path, connection, None)

    def close(self) -> None:
        """Close the database and release the lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._db.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- model states ---

    def load_states(self) -> dict[str, ModelState]:
        """Every model's state as the core last decided it, by model id.

        Models that only ever failed to poll have no state and are absent, so the
        core treats their first success as a first observation.
        """
        with self._translated("reading the model states"):
            rows = self._db.execute(_SELECT_STATES).fetchall()
        return {row["model_id"]: self._decode_state(row) for row in rows}

    def model_records(self) -> list[ModelRecord]:
        """Every known model with its poll bookkeeping, ordered by name (else id)."""
        with self._translated("reading the models"):
            rows = self._db.execute(_SELECT_RECORDS).fetchall()
        return [
            ModelRecord(
                state=self._decode_state(row),
                name=row["name"],
                discovered=bool(row["discovered"]),
                last_poll_at=self._decode_time(row["last_poll_at"]),
                last_success_at=self._decode_time(row["last_success_at"]),
                last_error=row["last_error"],
                failures=row["failures"],
                pending_notifications=row["pending"],
            )
            for row in rows
        ]

    def record_observation(
        self,
        state: ModelState,
        notices: Sequence[Notice],
        *,
        polled_at: datetime,
        name: str | None = None,
        discovered: bool = False,
    ) -> list[int]:
        """Store a model's new state and its notices in one transaction.

        The poll counts as a success (failures reset, error cleared). ``name=None``
        keeps the stored name. Returns the new outbox ids, in ``notices`` order.
        """
        polled = _encode_time(polled_at)
        state_row = {
            "model_id": state.model_id,
            "name": name,
            "discovered": int(discovered),
            "status": state.status,
            "status_since": _encode_optional_time(state.status_since),
            "started_at": _encode_optional_time(state.started_at),
            "seen": _encode_seen(state.seen),
            "floor": _encode_floor(state.floor),
            "polled_at": polled,
        }
        notice_rows = [
            {
                "model_id": notice.model_id,
                "status": notice.status,
                "previous_status": notice.previous_status,
                "event_at": _encode_time(notice.event_at),
                "previous_since": _encode_optional_time(notice.previous_since),
                "started_at": _encode_optional_time(notice.started_at),
                "first_observation": int(notice.first_observation),
                "created_at": polled,
            }
            for notice in notices
        ]
        ids: list[int] = []
        with self._transaction(f"recording the state of model {state.model_id}") as db:
            db.execute(_UPSERT_STATE, state_row)
            for row in notice_rows:
                ids.append(_last_id(db.execute(_INSERT_NOTICE, row)))
        return ids

    def record_polls(self, polled: Sequence[tuple[str, datetime]]) -> None:
        """Record successful polls that changed nothing, as one batch.

        Only updates models that already have a row.
        """
        if not polled:
            return
        rows = [{"model_id": model_id, "polled_at": _encode_time(at)} for model_id, at in polled]
        with self._transaction("recording polls") as db:
            db.executemany(_RECORD_POLL, rows)

    def record_poll_failure(
        self, model_id: str, *, polled_at: datetime, error: str, failures: int
    ) -> None:
        """Record a failed poll; ``failures`` is the new count of consecutive failures."""
        row = {
            "model_id": model_id,
            "polled_at": _encode_time(polled_at),
            "error": error,
            "failures": failures,
        }
        with self._transaction(f"recording a poll failure of model {model_id}") as db:
            db.execute(_UPSERT_FAILURE, row)

    # --- the outbox ---

    def enqueue_message(
        self,
        *,
        kind: str,
        title: str,
        body: str,
        notify_type: str,
        created_at: datetime,
        model_id: str | None = None,
    ) -> int:
        """Queue a pre-rendered ``"ops"`` or ``"test"`` message; returns its outbox id."""
        if kind not in ("ops", "test"):
            raise ValueError(f"enqueue_message takes kind 'ops' or 'test', not {kind!r}")
        return self._insert_message(kind, title, body, notify_type, created_at, model_id)

    def record_stuck_warning(
        self,
        model_id: str,
        *,
        warnings: int,
        title: str,
        body: str,
        notify_type: str,
        created_at: datetime,
    ) -> int:
        """Queue a "still stuck" warning and count it for the model, in one transaction.

        The count resets when the model's status changes (``record_observation``),
        so a restart never repeats a warning and a new status starts afresh.
        """
        return self._insert_message(
            "stuck", title, body, notify_type, created_at, model_id, stuck_warnings=warnings
        )

    def stuck_warning_counts(self) -> dict[str, int]:
        """Models that were warned as stuck in their current status, and how often."""
        with self._translated("reading stuck warnings"):
            return dict(self._db.execute(_SELECT_STUCK_WARNINGS).fetchall())

    def _insert_message(
        self,
        kind: str,
        title: str,
        body: str,
        notify_type: str,
        created_at: datetime,
        model_id: str | None,
        *,
        stuck_warnings: int | None = None,
    ) -> int:
        row = {
            "kind": kind,
            "model_id": model_id,
            "title": title,
            "body": body,
            "notify_type": notify_type,
            "created_at": _encode_time(created_at),
        }
        with self._transaction(f"queueing a {kind} message") as db:
            outbox_id = _last_id(db.execute(_INSERT_MESSAGE, row))
            if stuck_warnings is not None:
                db.execute(_SET_STUCK_WARNINGS, {"model_id": model_id, "warnings": stuck_warnings})
            return outbox_id

    def due_notifications(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Pending outbox items whose next attempt is at or before ``now``, oldest first."""
        with self._translated("reading the outbox"):
            rows = self._db.execute(
                _SELECT_DUE, {"now": _encode_time(now), "limit": limit}
            ).fetchall()
        return [self._decode_item(row) for row in rows]

    def next_due_at(self) -> datetime | None:
        """The earliest next attempt among pending items; None when nothing is pending."""
        with self._translated("reading the outbox"):
            (earliest,) = self._db.execute(_SELECT_NEXT_DUE).fetchone()
        return self._decode_time(earliest)

    def delivered_targets(self, outbox_id: int) -> set[str]:
        """Keys of the targets that already received outbox item ``outbox_id``."""
        with self._translated("reading deliveries"):
            rows = self._db.execute(_SELECT_DELIVERED, (outbox_id,)).fetchall()
        return {row[0] for row in rows}

    def mark_delivered(self, outbox_id: int, target_key: str, at: datetime) -> None:
        """Remember that ``target_key`` received the item. Idempotent."""
        with self._transaction("recording a delivery") as db:
            db.execute(_INSERT_DELIVERY, (outbox_id, target_key, _encode_time(at)))

    def mark_done(self, outbox_id: int, at: datetime) -> None:
        """Every target received the item: it leaves the pending set."""
        with self._transaction("marking a notification done") as db:
            db.execute(_MARK_DONE, (_encode_time(at), outbox_id))

    def schedule_retry(
        self, outbox_id: int, *, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        """Record a failed attempt and when to try again."""
        row = {
            "id": outbox_id,
            "attempts": attempts,
            "next_attempt_at": _encode_time(next_attempt_at),
            "error": error,
        }
        with self._transaction("scheduling a notification retry") as db:
            db.execute(_SCHEDULE_RETRY, row)

    def pull_forward_retries(self, not_after: datetime) -> int:
        """Make every pending retry due no later than ``not_after``; returns how many moved.

        For a wall clock that jumped backwards: retry times written before the
        jump would otherwise lie far in the future and stall delivery.
        """
        with self._transaction("rescheduling notification retries") as db:
            return db.execute(_PULL_FORWARD, {"not_after": _encode_time(not_after)}).rowcount

    def give_up(self, outbox_id: int, *, at: datetime, reason: str) -> None:
        """Stop retrying the item; it stays in the table, counted as given up."""
        row = {"id": outbox_id, "at": _encode_time(at), "reason": reason}
        with self._transaction("giving up a notification") as db:
            db.execute(_GIVE_UP, row)

    def outbox_counts(self) -> OutboxCounts:
        with self._translated("counting the outbox"):
            pending, done, given_up = self._db.execute(_SELECT_COUNTS).fetchone()
        return OutboxCounts(pending=pending, done=done, given_up=given_up)

    def pending_by_model(self) -> dict[str, int]:
        """Pending outbox items per model id (models with none are absent)."""
        with self._translated("counting the outbox"):
            rows = self._db.execute(_SELECT_PENDING_BY_MODEL).fetchall()
        return {row[0]: row[1] for row in rows}

    # --- internals ---

    def _create_schema(self) -> None:
        with self._transaction("creating the schema") as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version == 0:  # re-read under the write lock: lock=False openers may race
                for statement in _SCHEMA:
                    db.execute(statement)

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """The one place where SQLite errors become :class:`StateError`."""
        try:
            yield
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # misuse of the API (closed store, wrong thread): a bug, not the file
        except sqlite3.Error as exc:
            raise StateError(f"state file {self.path}: {doing} failed: {_explain(exc)}") from exc

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception rolls everything back."""
        db = self._db
        with self._translated(doing):
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                # SQLite already rolled back after some errors (disk full, I/O).
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    def _decode_state(self, row: sqlite3.Row) -> ModelState:
        # One object per distinct time text and per status within a row: status_since and
        # started_at are event times, and statuses repeat across models (memory per model).
        times: dict[str, datetime] = {}
        try:
            seen = _decode_seen(row["seen"], times)
            status = row["status"]
            return ModelState(
                model_id=row["model_id"],
                status=sys.intern(status) if status is not None else None,
                status_since=_decode_shared_time(row["status_since"], times),
                started_at=_decode_shared_time(row["started_at"], times),
                seen=seen,
                floor=_decode_floor(row["floor"]),
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise self._unreadable(f"model {row['model_id']!r}", exc) from exc

    def _decode_item(self, row: sqlite3.Row) -> OutboxItem:
        try:
            notice = None
            if row["kind"] == "model":
                notice = Notice(
                    model_id=row["model_id"],
                    status=row["status"],
                    previous_status=row["previous_status"],
                    event_at=_decode_time_value(row["event_at"]),
                    previous_since=_decode_optional_time(row["previous_since"]),
                    started_at=_decode_optional_time(row["started_at"]),
                    first_observation=bool(row["first_observation"]),
                )
            return OutboxItem(
                id=row["id"],
                kind=row["kind"],
                model_id=row["model_id"],
                notice=notice,
                title=row["title"],
                body=row["body"],
                notify_type=row["notify_type"],
                created_at=_decode_time_value(row["created_at"]),
                attempts=row["attempts"],
                last_error=row["last_error"],
            )
        except (ValueError, TypeError) as exc:
            raise self._unreadable(f"outbox item {row['id']}", exc) from exc

    def _decode_time(self, text: str | None) -> datetime | None:
        try:
            return _decode_optional_time(text)
        except (ValueError, TypeError) as exc:
            raise self._unreadable("a time", exc) from exc

    def _unreadable(self, what: str, exc: Exception) -> StateError:
        return StateError(
            f"state file {self.path}: cannot read {what} ({exc}); "
            "was the file edited by hand? Move it aside to start afresh"
        )


# --- opening helpers ---


def _ensure_folder(path: Path) -> None:
    folder = path.parent
    if folder.is_dir():
        return
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise StateError(
            f"cannot create the folder {folder} for state file {path}: {_os_reason(exc)}"
        ) from exc


def _acquire_lock(path: Path) -> int:
    lock_path = Path(f"{path}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot create the lock file {lock_path} for state file {path}: {_os_reason(exc)}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_pid(fd)
        os.close(fd)
        raise StateLockedError(
            f"state file {path} is in use by another finetune-watcher (pid {owner})"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StateError(f"cannot lock state file {path}: {_os_reason(exc)}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StateError(
            f"cannot write the lock file {lock_path} for state file {path}: {_os_reason(exc)}"
        ) from exc
    return fd


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _ensure_file(path: Path) -> None:
    """Create a missing state file owner-only; check an existing one is writable.

    Creating it ourselves (rather than letting SQLite do it) sets the mode
    regardless of the umask; SQLite then gives ``-wal``/``-shm`` the same mode.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateError(f"cannot create state file {path}: {_os_reason(exc)}") from exc
    else:
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except IsADirectoryError:
        raise StateError(f"state file {path} is a directory, not a file") from None
    except OSError as exc:
        raise StateError(
            f"state file {path} cannot be opened for writing ({_os_reason(exc)}); "
            "the watcher must be able to read and write it"
        ) from exc
    os.close(fd)


def _connect(path: Path, target: str, *, uri: bool) -> sqlite3.Connection:
    with _opening_errors(path):
        connection = sqlite3.connect(
            target, uri=uri, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000
        )
    connection.row_factory = sqlite3.Row
    return connection


def _check_contents(path: Path, db: sqlite3.Connection, *, readonly: bool) -> None:
    """Refuse a file we must not touch. Only reads: the file is unchanged on refusal."""
    with _opening_errors(path):
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state file {path} was written by a newer finetune-watcher (schema {version}, "
                f"this one understands {SCHEMA_VERSION}); refusing to touch it"
            )
        if version == 0:
            (objects,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if objects:
                raise StateError(
                    f"state file {path} is a SQLite database but not a finetune-watcher one "
                    "(it has tables and no schema version); refusing to touch it"
                )
            if readonly:
                raise StateError(f"state file {path} is empty (has the watcher run yet?)")
        # quick_check reports several lines per problem: fold them into one.
        problems = [" ".join(str(row[0]).split()) for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StateError(
                f"state file {path} is not a readable SQLite database "
                f"(quick_check: {'; '.join(problems)}); move it aside to start afresh"
            )


@contextlib.contextmanager
def _opening_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except sqlite3.Error as exc:
        if _error_name(exc).startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            message = (
                f"state file {path} is not a readable SQLite database ({exc}); "
                "move it aside to start afresh"
            )
        else:
            message = f"state file {path} cannot be opened: {_explain(exc)}"
        raise StateError(message) from exc


# --- error descriptions ---

_EXPLANATIONS: tuple[tuple[str, str], ...] = (
    ("SQLITE_FULL", "the disk is full"),
    ("SQLITE_READONLY", "it is read-only (check the file, its folder and the filesystem)"),
    ("SQLITE_IOERR", "an I/O error (disk failing, filesystem full or gone?)"),
    ("SQLITE_CORRUPT", "the file is corrupt; move it aside to start afresh"),
    ("SQLITE_NOTADB", "the file is not a SQLite database; move it aside to start afresh"),
    (
        "SQLITE_CANTOPEN",
        "SQLite cannot open it or create its -wal/-shm files next to it "
        "(check the permissions of the file and its folder)",
    ),
    ("SQLITE_BUSY", "another process kept it locked for too long"),
    ("SQLITE_LOCKED", "another process kept it locked for too long"),
    ("SQLITE_PERM", "permission denied"),
)


def _error_name(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", None) or "")


def _explain(exc: sqlite3.Error) -> str:
    name = _error_name(exc)
    for prefix, explanation in _EXPLANATIONS:
        if name.startswith(prefix):
            return f"{explanation} ({exc})"
    return str(exc)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --- encoding: times, seen sets, floors ---


def _encode_time(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"the store only takes timezone-aware times, not {value!r}")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _encode_optional_time(value: datetime | None) -> str | None:
    return None if value is None else _encode_time(value)


def _decode_time_value(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time without a timezone: {text!r}")
    return value


def _decode_optional_time(text: str | None) -> datetime | None:
    return None if text is None else _decode_time_value(text)


def _encode_seen(seen: frozenset[EventId]) -> str:
    ordered = sorted(seen, key=lambda ident: ident.key)
    return json.dumps([[_encode_time(i.created_at), i.status] for i in ordered])


def _shared_time(text: str, times: dict[str, datetime]) -> datetime:
    """The time ``text`` stands for, decoded once per row (``times`` caches it)."""
    value = times.get(text)
    if value is None:
        value = times[text] = _decode_time_value(text)
    return value


def _decode_shared_time(text: str | None, times: dict[str, datetime]) -> datetime | None:
    return None if text is None else _shared_time(text, times)


def _decode_seen(text: str, times: dict[str, datetime]) -> frozenset[EventId]:
    items: list[Any] = json.loads(text)
    return frozenset(
        EventId(_shared_time(str(at), times), sys.intern(str(status))) for at, status in items
    )


def _encode_floor(floor: EventKey | None) -> str | None:
    if floor is None:
        return None
    return json.dumps([_encode_time(floor.created_at), floor.rank, floor.status])


def _decode_floor(text: str | None) -> EventKey | None:
    if text is None:
        return None
    at, rank, status = json.loads(text)
    return EventKey(_decode_time_value(at), int(rank), str(status))


def _last_id(cursor: sqlite3.Cursor) -> int:
    row_id = cursor.lastrowid
    if row_id is None:  # pragma: no cover -- an INSERT always sets it
        raise RuntimeError("SQLite reported no row id for an INSERT")
    return row_id
