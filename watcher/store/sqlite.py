"""SQLite backend: model states and the notification outbox, atomic together; the lock.

Every SQL statement of the project lives in this package: the queries here, the
schema and its upgrades in :mod:`watcher.store.migrations`. The pure core
(:mod:`watcher.lifecycle`) decides; the store remembers what it decided. A state
change and the notifications it causes are written in *one* transaction
(:meth:`SqliteStore.record_observation`), so a crash -- even ``kill -9`` -- can
never leave a new status without its outbox rows: after a restart the outbox is
delivered, and nothing already seen is announced again.

Decisions
---------
* One connection, used from the event-loop thread only (``check_same_thread``
  stays on, so a violation is loud). Reads are sub-millisecond; a write is one
  small transaction with one fsync, and writes only happen when something
  changed, so a worker thread would cost more than it saves.
* The methods are ``async`` (the :class:`~watcher.store.base.Store` protocol,
  so that a networked backend fits) but still run their statements right there,
  on the loop thread, without a thread hop: the decision above holds. Nothing
  awaits in the middle of a transaction, so no other task ever sees one half done.
* ``isolation_level=None``: we issue ``BEGIN IMMEDIATE`` / ``COMMIT`` ourselves
  (:meth:`SqliteStore._transaction`), so a write never deadlocks half-way on a lock.
* ``journal_mode=WAL`` so ``finetune-watcher status`` (:meth:`SqliteStore.open_readonly`)
  reads while the daemon writes; ``synchronous=FULL`` because the durability of
  the outbox matters more than speed; ``busy_timeout``; foreign keys on.
* The schema version is ``PRAGMA user_version``. A file from a newer version, a
  file that is not a SQLite database, or a SQLite database that is not ours is
  refused with a :class:`~watcher.errors.StateError`; the store never overwrites,
  truncates, migrates down or deletes a file it does not understand.
* A file from an older version is upgraded in place when :meth:`SqliteStore.open`
  opens it, every step in one transaction (:mod:`watcher.store.migrations`):
  the upgrade completes or the file stays as it was. :meth:`SqliteStore.open_readonly`
  never writes: it upgrades a copy in memory, so ``status`` works before the
  daemon has restarted on a new version.
* Exclusive use goes by the file, not by the name it was reached by:
  :meth:`SqliteStore.open` resolves the state path to the real file and takes a
  non-blocking ``flock`` on ``<real file>.lock`` next to it (holding the owner's pid),
  so a symlinked path and the real one meet on one lock; a second daemon gets
  :class:`~watcher.errors.StateLockedError`. A state file with a second hard link is
  refused: its other name would get another lock and another ``-wal`` file. (Not a
  ``flock`` on the database file itself: NFS emulates ``flock`` with record locks,
  which would collide with SQLite's own.)
* The store writes through no symbolic link it did not make: the lock file and a new
  state file are opened ``O_NOFOLLOW``; a state path that is a link is followed only
  to an existing file with contents (which must then be a state file), never to an
  empty file, a missing one or anything but a regular file; a ``-wal``, ``-shm`` or
  ``-journal`` link beside the file is refused. Each refusal is one line naming the
  link (:class:`~watcher.errors.StateError`).
* Owner-only permissions: a missing folder is created ``0700``, the database and
  lock files ``0600`` (SQLite gives its ``-wal``/``-shm`` files the database's mode).
* Damage while running: :meth:`SqliteStore.ping` (``/readyz``) checks, from the
  descriptor the store holds, that the file still has a name and a SQLite header
  (microseconds), and at most every :data:`INTEGRITY_CHECK_INTERVAL` seconds runs
  ``PRAGMA quick_check`` over the whole file on a fresh read-only connection in a
  worker thread (the only statement off the loop thread: it reads every page, about
  50 ms for 10,000 models, and must not see the page cache of the store's own
  connection, which can hide damage on disk). A statement that meets corruption
  (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) is a :class:`~watcher.errors.StateError`
  saying so. Either way the store is *broken* from then on: ``ping()`` is False and
  every statement raises that one line, so the daemon stops (exit 74) at its next write
  instead of writing into a file it cannot trust.
* Times are ISO-8601 UTC text with microseconds (``2024-05-01T12:00:00.000000+00:00``):
  fixed width, so text order is time order in SQL comparisons.
* The store writes the text it is given: callers pass errors and messages that
  are already redacted, and ``target_key`` values that are not secrets.

Schema (version 2)
------------------
``models`` -- one row per model, the core's :class:`~watcher.lifecycle.ModelState`
plus poll bookkeeping:
    ``provider`` TEXT and ``model_id`` TEXT: PRIMARY KEY (``provider``, ``model_id``),
    the :class:`~watcher.lifecycle.ModelKey` (two providers may reuse a job id);
    ``name`` TEXT (label; NULL = none), ``discovered`` 0/1
    (found by listing rather than configured), ``observed`` 0/1 (a state was
    recorded; rows created by poll failures alone are 0 and are not states),
    ``status``, ``status_since``, ``started_at``, ``seen`` (JSON list of
    ``[time, status]``: the seen :class:`~watcher.lifecycle.EventId` set),
    ``floor`` (JSON ``[time, rank, status]`` or NULL: the
    :class:`~watcher.lifecycle.EventKey` at or below which events are history),
    ``last_poll_at``, ``last_success_at``, ``last_error``, ``failures`` (consecutive),
    ``stuck_warnings`` ("still stuck" warnings queued in the current status; a
    status change resets it).

``outbox`` -- notifications to deliver, never deleted:
    ``id`` INTEGER PK AUTOINCREMENT (never reused), ``kind``, ``provider`` and
    ``model_id`` (the model the row is about; both NULL for daemon-wide ops messages),
    then by kind:

    * ``'model'``: the :class:`~watcher.lifecycle.Notice` (``status``,
      ``previous_status``, ``event_at``, ``previous_since``, ``started_at``,
      ``first_observation``), rendered at delivery time;
    * ``'ops'`` (auth failing, model not found, ...) and ``'stuck'`` (a model
      stayed in one status for too long; queued with the model's ``stuck_warnings``
      count in one transaction): a pre-rendered ``title``, ``body``, ``notify_type``;

    then ``created_at``, ``attempts``, ``next_attempt_at``, ``last_error``,
    ``done_at``, ``given_up_at``. Pending = neither done nor given up.

``deliveries`` -- which targets already have an outbox row, so a retry never
sends twice to a target that succeeded:
    ``outbox_id`` REFERENCES outbox, ``target_key``, ``delivered_at``;
    PRIMARY KEY (``outbox_id``, ``target_key``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import structlog

from watcher.errors import StateError, StateLockedError
from watcher.lifecycle import EventId, EventKey, ModelKey, ModelState, Notice, seen_tuple
from watcher.store import migrations
from watcher.store.base import ModelRecord, OutboxCounts, OutboxItem, Store
from watcher.store.migrations import SCHEMA_VERSION

if TYPE_CHECKING:
    from watcher.settings import StateSettings

__all__ = ["INTEGRITY_CHECK_INTERVAL", "SCHEMA_VERSION", "SqliteStore", "open_from_settings"]

log = structlog.get_logger("watcher.store")

_BUSY_TIMEOUT_MS = 5_000

#: Seconds between two whole-file ``quick_check`` runs of :meth:`SqliteStore.ping`
#: (the header and link checks run at every ping). About 50 ms of a worker thread for
#: 10,000 models, so once a minute costs under 0.1 % of a core.
INTEGRITY_CHECK_INTERVAL = 60.0

#: The files SQLite keeps beside a database (it opens them itself, by name).
_COMPANIONS = ("-wal", "-shm", "-journal")

_SQLITE_MAGIC = b"SQLite format 3\x00"

#: Kinds :meth:`SqliteStore.enqueue_message` takes; ``'model'`` and ``'stuck'`` rows
#: come with the writes they belong to.
_MESSAGE_KINDS = ("ops",)

_PENDING = "done_at IS NULL AND given_up_at IS NULL"

_UPSERT_STATE = """
    INSERT INTO models (provider, model_id, name, discovered, observed, status, status_since,
                        started_at, seen, floor, last_poll_at, last_success_at,
                        last_error, failures)
    VALUES (:provider, :model_id, :name, :discovered, 1, :status, :status_since,
            :started_at, :seen, :floor, :polled_at, :polled_at, NULL, 0)
    ON CONFLICT (provider, model_id) DO UPDATE SET
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
    INSERT INTO outbox (kind, provider, model_id, status, previous_status, event_at,
                        previous_since, started_at, first_observation, created_at, attempts,
                        next_attempt_at)
    VALUES ('model', :provider, :model_id, :status, :previous_status, :event_at,
            :previous_since, :started_at, :first_observation, :created_at, 0, :created_at)
"""

_INSERT_MESSAGE = """
    INSERT INTO outbox (kind, provider, model_id, title, body, notify_type, created_at,
                        attempts, next_attempt_at)
    VALUES (:kind, :provider, :model_id, :title, :body, :notify_type, :created_at, 0,
            :created_at)
"""

_SET_STUCK_WARNINGS = """
    UPDATE models SET stuck_warnings = :warnings
    WHERE provider = :provider AND model_id = :model_id
"""

_SELECT_STUCK_WARNINGS = """
    SELECT provider, model_id, stuck_warnings FROM models WHERE stuck_warnings > 0
"""

_RECORD_POLL = """
    UPDATE models SET last_poll_at = :polled_at, last_success_at = :polled_at,
                      failures = 0, last_error = NULL
    WHERE provider = :provider AND model_id = :model_id
"""

_UPSERT_FAILURE = """
    INSERT INTO models (provider, model_id, last_poll_at, last_error, failures)
    VALUES (:provider, :model_id, :polled_at, :error, :failures)
    ON CONFLICT (provider, model_id) DO UPDATE SET
        last_poll_at = excluded.last_poll_at,
        last_error = excluded.last_error,
        failures = excluded.failures
"""

_SELECT_STATES = """
    SELECT provider, model_id, status, status_since, started_at, seen, floor
    FROM models WHERE observed = 1
"""

_SELECT_RECORDS = f"""
    SELECT m.*, (SELECT count(*) FROM outbox o
                 WHERE o.provider = m.provider AND o.model_id = m.model_id
                   AND o.{_PENDING}) AS pending
    FROM models m
    ORDER BY COALESCE(m.name, m.model_id) COLLATE NOCASE, m.model_id, m.provider
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
           count(*) FILTER (WHERE given_up_at IS NOT NULL),
           min(created_at) FILTER (WHERE {_PENDING})
    FROM outbox
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


class SqliteStore:
    """The state database in one SQLite file; a :class:`~watcher.store.base.Store`.

    Build one with :meth:`open` or :meth:`open_readonly`; release it with
    :meth:`aclose` (or ``async with``).
    """

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        lock_fd: int | None,
        *,
        file_fd: int | None = None,
        real_path: Path | None = None,
        upgraded_from: int | None = None,
    ) -> None:
        self.path = path
        #: Where the state lives, for logs and ``status``.
        self.location = str(path)
        #: The schema version this open upgraded the file (or its in-memory copy) from.
        self.upgraded_from = upgraded_from
        #: Seconds between whole-file checks in :meth:`ping` (tests set 0: every ping).
        self.integrity_check_interval = INTEGRITY_CHECK_INTERVAL
        self._db = connection
        self._lock_fd = lock_fd
        # The database file itself, held open by a read-write store for ping()'s checks;
        # closed only after the connection (closing a descriptor of the file while SQLite
        # holds record locks on it would drop those locks: they belong to the process).
        self._file_fd = file_fd
        self._real_path = real_path  # what the state path resolved to
        # A file system that reports no links for a live file cannot tell us it was removed.
        self._has_links = file_fd is not None and os.fstat(file_fd).st_nlink > 0
        self._checked_at = time.monotonic()  # opening ran quick_check already
        self._checking = False
        #: Why the store is unusable (one line), once damage was found; then every
        #: statement raises it and ping() is False.
        self._broken: str | None = None
        self._closed = False

    # --- opening and closing ---

    @classmethod
    async def open(cls, path: Path, *, lock: bool = True) -> Self:
        """Open (creating if missing, upgrading if older) the state file at ``path``.

        Raises :class:`StateLockedError` when another process holds the lock and
        :class:`StateError` when the file or its folder cannot be used.
        """
        return cls._open(path, lock=lock)

    @classmethod
    async def open_readonly(cls, path: Path) -> Self:
        """Open an existing state file for reading, without the lock.

        For ``finetune-watcher status`` while a daemon runs: WAL lets it read a
        consistent snapshot while the daemon writes. Writing through it raises
        :class:`StateError`. A file of an older schema is read from an upgraded
        copy in memory (the file is not touched; that copy does not follow later writes).
        """
        return cls._open_readonly(path)

    # Opening blocks on the file system, on the loop thread like every statement
    # (see "Decisions"): it happens once, before the daemon starts its work.

    @classmethod
    def _open(cls, path: Path, *, lock: bool) -> Self:
        _ensure_folder(path)
        real = _resolve_state_file(path)
        _refuse_linked_companions(path, real)
        # The lock comes first: a refused opener never opens the database file.
        lock_fd = _acquire_lock(path, real) if lock else None
        file_fd: int | None = None
        connection: sqlite3.Connection | None = None
        try:
            file_fd = _open_state_file(path, real)
            connection = _connect(path, str(real), uri=False)
            version = _check_contents(path, connection, readonly=False)
            _check_same_file(path, real, file_fd)
            with _opening_errors(path):
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StateError(
                        f"state file {path}: SQLite cannot use WAL mode here "
                        f"(journal mode stays {mode!r}); put the state on a local filesystem"
                    )
                connection.execute("PRAGMA synchronous = FULL")
            store = cls(path, connection, lock_fd, file_fd=file_fd, real_path=real)
            store._prepare_schema(version)
        except BaseException:
            if connection is not None:
                connection.close()
            if file_fd is not None:
                os.close(file_fd)
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if store.upgraded_from is not None:
            log.info(
                "state file upgraded",
                path=str(path),
                from_schema=store.upgraded_from,
                to_schema=SCHEMA_VERSION,
            )
        return store

    @classmethod
    def _open_readonly(cls, path: Path) -> Self:
        if not path.exists():
            raise StateError(f"no state file at {path} (has the watcher run yet?)")
        connection = _connect(path, path.resolve().as_uri() + "?mode=ro", uri=True)
        upgraded_from: int | None = None
        try:
            version = _check_contents(path, connection, readonly=True)
            if version < SCHEMA_VERSION:
                connection = _upgraded_copy(path, connection, version)
                upgraded_from = version
            with _opening_errors(path):
                connection.execute("PRAGMA query_only = ON")
        except BaseException:
            connection.close()
            raise
        return cls(path, connection, None, upgraded_from=upgraded_from)

    async def ping(self) -> bool:
        """True when the store is usable (for ``/readyz``); cheap enough for every probe.

        The connection answers a trivial query and, for a store opened with :meth:`open`,
        the file still has a name and a SQLite header (a few microseconds); at most every
        :attr:`integrity_check_interval` seconds ``quick_check`` reads the whole file in a
        worker thread. Damage found here or by any statement makes the store *broken*:
        False from then on, and every statement raises a :class:`StateError` naming it.
        """
        if self._closed or self._broken is not None:
            return False
        try:
            self._db.execute("SELECT 1").fetchone()
            problem = self._file_problem()
            real = self._real_path
            if problem is None and real is not None and self._integrity_check_due():
                self._checking = True
                try:
                    problem = await anyio.to_thread.run_sync(_integrity_problem, self.path, real)
                finally:
                    self._checking = False
                self._checked_at = time.monotonic()
        except (sqlite3.Error, OSError):
            return False  # not usable right now, but nothing shows the file is damaged
        if problem is not None:
            self._break(problem)
        return self._broken is None and not self._closed

    def _file_problem(self) -> str | None:
        """Damage visible from the descriptor held on the file: gone, or no SQLite header."""
        fd = self._file_fd
        if fd is None:
            return None
        if self._has_links and os.fstat(fd).st_nlink == 0:
            return (
                f"state file {self.path} was deleted or replaced while the watcher ran; "
                "what it writes now would be lost (restart the watcher)"
            )
        header = os.pread(fd, len(_SQLITE_MAGIC), 0)
        if header != _SQLITE_MAGIC:
            found = "it is empty" if not header else "its first page is not SQLite's any more"
            return (
                f"state file {self.path} is corrupt ({found}: overwritten or truncated while "
                "the watcher ran); move it aside to start afresh"
            )
        return None

    def _integrity_check_due(self) -> bool:
        """Not while one runs (concurrent probes), and at most once per interval."""
        return (
            not self._checking
            and time.monotonic() - self._checked_at >= self.integrity_check_interval
        )

    def _break(self, problem: str) -> None:
        """Remember that the file cannot be trusted; logged once, raised by every statement."""
        if self._broken is None:
            self._broken = problem
            log.error("state database unusable", path=str(self.path), problem=problem)

    async def aclose(self) -> None:
        """Close the database and release the lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._db.close()
        finally:
            if self._file_fd is not None:
                os.close(self._file_fd)
                self._file_fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- model states ---

    async def load_states(self) -> dict[ModelKey, ModelState]:
        """Every model's state as the core last decided it, by key.

        Models that only ever failed to poll have no state and are absent, so the
        core treats their first success as a first observation.
        """
        # Row by row, not fetchall(): at 10,000 models the rows held at once would be
        # megabytes the allocator keeps afterwards (the daemon's RSS; issue 15).
        with self._translated("reading the model states"):
            states = [self._decode_state(row) for row in self._db.execute(_SELECT_STATES)]
        return {state.key: state for state in states}

    async def model_records(self) -> list[ModelRecord]:
        """Every known model with its poll bookkeeping, ordered by name (else id)."""
        with self._translated("reading the models"):  # row by row (see load_states)
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
                for row in self._db.execute(_SELECT_RECORDS)
            ]

    async def record_observation(
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
            "provider": state.provider,
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
                "provider": notice.provider,
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
        with self._transaction(f"recording the state of model {state.key}") as db:
            db.execute(_UPSERT_STATE, state_row)
            for row in notice_rows:
                ids.append(_last_id(db.execute(_INSERT_NOTICE, row)))
        return ids

    async def record_polls(self, polled: Sequence[tuple[ModelKey, datetime]]) -> None:
        """Record successful polls that changed nothing, as one batch.

        Only updates models that already have a row.
        """
        if not polled:
            return
        rows = [
            {
                "provider": key.provider,
                "model_id": key.id,
                # The daemon's clock is UTC already: _encode_time's conversion is skipped.
                "polled_at": (
                    at.isoformat(timespec="microseconds") if at.tzinfo is UTC else _encode_time(at)
                ),
            }
            for key, at in polled
        ]
        # Bookkeeping, not the outbox: committed without waiting for the disk (WAL,
        # synchronous=NORMAL: a crash of the process loses nothing, a power cut at most
        # these poll times; the next FULL commit or checkpoint makes them durable). The
        # fsync cost ~10 ms on the event loop every FLUSH_EVERY (docs/benchmarks.md, P18).
        db = self._db
        with self._translated("recording polls"):
            db.execute("PRAGMA synchronous = NORMAL")
        try:
            with self._transaction("recording polls") as db:
                db.executemany(_RECORD_POLL, rows)
        finally:  # back to FULL for everything else (even after a failed transaction)
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA synchronous = FULL")

    async def record_poll_failure(
        self, model: ModelKey, *, polled_at: datetime, error: str, failures: int
    ) -> None:
        """Record a failed poll; ``failures`` is the new count of consecutive failures."""
        row = {
            "provider": model.provider,
            "model_id": model.id,
            "polled_at": _encode_time(polled_at),
            "error": error,
            "failures": failures,
        }
        with self._transaction(f"recording a poll failure of model {model}") as db:
            db.execute(_UPSERT_FAILURE, row)

    async def record_stuck_warning(
        self,
        model: ModelKey,
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
            "stuck", title, body, notify_type, created_at, model, stuck_warnings=warnings
        )

    async def stuck_warning_counts(self) -> dict[ModelKey, int]:
        """Models that were warned as stuck in their current status, and how often."""
        with self._translated("reading stuck warnings"):
            rows = self._db.execute(_SELECT_STUCK_WARNINGS).fetchall()
        return {ModelKey(provider, model_id): count for provider, model_id, count in rows}

    # --- the outbox ---

    async def enqueue_message(
        self,
        *,
        kind: str,
        title: str,
        body: str,
        notify_type: str,
        created_at: datetime,
        model: ModelKey | None = None,
    ) -> int:
        """Queue a pre-rendered ``"ops"`` message; returns its outbox id."""
        if kind not in _MESSAGE_KINDS:
            raise ValueError(f"enqueue_message takes kind 'ops', not {kind!r}")
        return self._insert_message(kind, title, body, notify_type, created_at, model)

    def _insert_message(
        self,
        kind: str,
        title: str,
        body: str,
        notify_type: str,
        created_at: datetime,
        model: ModelKey | None,
        *,
        stuck_warnings: int | None = None,
    ) -> int:
        row = {
            "kind": kind,
            "provider": model.provider if model is not None else None,
            "model_id": model.id if model is not None else None,
            "title": title,
            "body": body,
            "notify_type": notify_type,
            "created_at": _encode_time(created_at),
        }
        with self._transaction(f"queueing a {kind} message") as db:
            outbox_id = _last_id(db.execute(_INSERT_MESSAGE, row))
            if stuck_warnings is not None:
                db.execute(_SET_STUCK_WARNINGS, row | {"warnings": stuck_warnings})
            return outbox_id

    async def due_notifications(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Pending outbox items whose next attempt is at or before ``now``, oldest first."""
        with self._translated("reading the outbox"):
            rows = self._db.execute(
                _SELECT_DUE, {"now": _encode_time(now), "limit": limit}
            ).fetchall()
        return [self._decode_item(row) for row in rows]

    async def next_due_at(self) -> datetime | None:
        """The earliest next attempt among pending items; None when nothing is pending."""
        with self._translated("reading the outbox"):
            (earliest,) = self._db.execute(_SELECT_NEXT_DUE).fetchone()
        return self._decode_time(earliest)

    async def delivered_targets(self, outbox_id: int) -> set[str]:
        """Keys of the targets that already received outbox item ``outbox_id``."""
        with self._translated("reading deliveries"):
            rows = self._db.execute(_SELECT_DELIVERED, (outbox_id,)).fetchall()
        return {row[0] for row in rows}

    async def mark_delivered(self, outbox_id: int, target_key: str, at: datetime) -> None:
        """Remember that ``target_key`` received the item. Idempotent."""
        with self._transaction("recording a delivery") as db:
            db.execute(_INSERT_DELIVERY, (outbox_id, target_key, _encode_time(at)))

    async def mark_done(self, outbox_id: int, at: datetime) -> None:
        """Every target received the item: it leaves the pending set."""
        with self._transaction("marking a notification done") as db:
            db.execute(_MARK_DONE, (_encode_time(at), outbox_id))

    async def schedule_retry(
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

    async def pull_forward_retries(self, not_after: datetime) -> int:
        """Make every pending retry due no later than ``not_after``; returns how many moved.

        For a wall clock that jumped backwards: retry times written before the
        jump would otherwise lie far in the future and stall delivery.
        """
        with self._transaction("rescheduling notification retries") as db:
            return db.execute(_PULL_FORWARD, {"not_after": _encode_time(not_after)}).rowcount

    async def give_up(self, outbox_id: int, *, at: datetime, reason: str) -> None:
        """Stop retrying the item; it stays in the table, counted as given up."""
        row = {"id": outbox_id, "at": _encode_time(at), "reason": reason}
        with self._transaction("giving up a notification") as db:
            db.execute(_GIVE_UP, row)

    async def outbox_counts(self) -> OutboxCounts:
        """How many items are pending, done and given up."""
        with self._translated("counting the outbox"):
            pending, done, given_up, oldest = self._db.execute(_SELECT_COUNTS).fetchone()
        return OutboxCounts(
            pending=pending,
            done=done,
            given_up=given_up,
            oldest_pending_at=_decode_optional_time(oldest),
        )

    # --- internals ---

    def _prepare_schema(self, version: int) -> None:
        """Create the schema in an empty file, or upgrade an older one, in one transaction.

        ``version`` is the file's version as checked before (for the message).
        Foreign keys are off during it (SQLite's recipe for rebuilding a referenced
        table: dropping the old one must not cascade); :func:`migrations.upgrade`
        checks them before the commit. They are on for everything after.
        """
        if version == 0:
            doing = "creating the schema"
        elif version < SCHEMA_VERSION:
            doing = f"upgrading the schema from version {version} to {SCHEMA_VERSION}"
        else:
            doing = "checking the schema version"
        db = self._db
        with self._translated(doing):
            db.execute("PRAGMA foreign_keys = OFF")
        try:
            with self._transaction(doing) as db:
                # Re-read under the write lock: lock=False openers may race.
                (found,) = db.execute("PRAGMA user_version").fetchone()
                if found > SCHEMA_VERSION:
                    raise _newer_schema(self.path, found)
                if found == 0:
                    migrations.create(db)
                elif migrations.upgrade(db, found):
                    self.upgraded_from = found
        finally:
            with self._translated("turning foreign keys on"):
                db.execute("PRAGMA foreign_keys = ON")

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """The one place where SQLite errors become :class:`StateError`.

        Once damage was found (here or by :meth:`ping`) nothing runs any more.
        """
        if self._broken is not None:
            raise StateError(self._broken)
        try:
            yield
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # misuse of the API (closed store, wrong thread): a bug, not the file
        except sqlite3.Error as exc:
            if _is_corruption(exc):
                message = (
                    f"state file {self.path} is corrupt: {doing} failed ({exc}); "
                    "move it aside to start afresh"
                )
                self._break(message)
                raise StateError(message) from exc
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
                provider=sys.intern(row["provider"]),
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise self._unreadable(f"model {row['provider']}/{row['model_id']}", exc) from exc

    def _decode_item(self, row: sqlite3.Row) -> OutboxItem:
        try:
            provider, model_id = row["provider"], row["model_id"]
            model = ModelKey(provider, model_id) if model_id is not None else None
            notice = None
            if row["kind"] == "model":
                notice = Notice(
                    model_id=model_id,
                    status=row["status"],
                    previous_status=row["previous_status"],
                    event_at=_decode_time_value(row["event_at"]),
                    previous_since=_decode_optional_time(row["previous_since"]),
                    started_at=_decode_optional_time(row["started_at"]),
                    first_observation=bool(row["first_observation"]),
                    provider=provider,
                )
            return OutboxItem(
                id=row["id"],
                kind=row["kind"],
                model=model,
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


async def open_from_settings(state: StateSettings, *, readonly: bool) -> Store:
    """The SQLite backend's :class:`~watcher.store.StoreOpener`: the file at ``state.path``.

    Typed as the protocol, so that mypy checks :class:`SqliteStore` implements it.
    """
    if readonly:
        return await SqliteStore.open_readonly(state.path)
    return await SqliteStore.open(state.path)


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


def _resolve_state_file(path: Path) -> Path:
    """The real file ``path`` names (links resolved); refuses a link the store must not follow.

    A state path that is a symbolic link is followed only to an existing file with
    contents: never to a missing file (which would be created there), an empty one (which
    would become a database) or anything but a regular file.
    """
    try:
        is_link = stat.S_ISLNK(path.lstat().st_mode)
    except FileNotFoundError:
        is_link = False
    except OSError as exc:
        raise StateError(f"cannot inspect state file {path}: {_os_reason(exc)}") from exc
    real = Path(os.path.realpath(path))
    if not is_link:
        return real
    try:
        target = real.stat()
    except FileNotFoundError:
        raise StateError(
            f"state file {path} is a symbolic link to {real}, which does not exist; "
            "refusing to create a file through a link (point state.path at the real file)"
        ) from None
    except OSError as exc:
        raise StateError(
            f"state file {path} is a symbolic link that cannot be followed ({_os_reason(exc)})"
        ) from exc
    if not stat.S_ISREG(target.st_mode):
        raise StateError(
            f"state file {path} is a symbolic link to {real}, which is not a regular file "
            f"({_file_kind(target.st_mode)})"
        )
    if target.st_size == 0:
        raise StateError(
            f"state file {path} is a symbolic link to an empty file ({real}); refusing to "
            "turn a file it points to into a database (point state.path at the real file)"
        )
    return real


def _refuse_linked_companions(path: Path, real: Path) -> None:
    """SQLite opens ``-wal``/``-shm``/``-journal`` by name: none of them may be a link."""
    for suffix in _COMPANIONS:
        companion = Path(f"{real}{suffix}")
        if companion.is_symlink():
            raise StateError(
                f"{companion} is a symbolic link; refusing to follow it "
                f"(SQLite's own file beside state file {path}: remove the link)"
            )


def _open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` that never follows a link in the last component; 0600 when it creates.

    ``O_NONBLOCK``: a FIFO in its place must not hang the open (it is refused after).
    """
    flags |= os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    return os.open(path, flags, 0o600)


def _acquire_lock(path: Path, real: Path) -> int:
    """Lock ``<real>.lock``: one lock per database file, whatever path reached it."""
    lock_path = Path(f"{real}.lock")
    try:
        fd = _open_nofollow(lock_path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(
                f"lock file {lock_path} is a symbolic link; refusing to follow it "
                f"(state file {path}: remove the link)"
            ) from None
        raise StateError(
            f"cannot create the lock file {lock_path} for state file {path}: {_os_reason(exc)}"
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise StateError(
                f"lock file {lock_path} is not a regular file ({_file_kind(mode)}); "
                f"state file {path}: remove it"
            )
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
    except BaseException:
        os.close(fd)
        raise
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


def _open_state_file(path: Path, real: Path) -> int:
    """Open the state file read-write (creating it owner-only); the store holds it open.

    Creating it ourselves (rather than letting SQLite do it) sets the mode regardless
    of the umask; SQLite then gives ``-wal``/``-shm`` the same mode. Refuses anything
    but a regular file with one name.
    """
    try:
        fd = _open_nofollow(real, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        fd = _open_existing(path, real)
    except OSError as exc:
        raise StateError(f"cannot create state file {path}: {_os_reason(exc)}") from exc
    else:
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot create state file {path}: {_os_reason(exc)}") from exc
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"state file {path} is not a regular file ({_file_kind(info.st_mode)})"
    elif info.st_nlink > 1:
        problem = (
            f"state file {path} has {info.st_nlink} hard links; refusing to use it "
            "(under another name it would get another lock and another -wal file): "
            "remove the other links"
        )
    if problem is not None:
        os.close(fd)
        raise StateError(problem)
    return fd


def _open_existing(path: Path, real: Path) -> int:
    try:
        return _open_nofollow(real, os.O_RDWR)
    except IsADirectoryError:
        raise StateError(f"state file {path} is a directory, not a file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # it became a link after it was resolved
            raise StateError(
                f"state file {path} ({real}) is a symbolic link; refusing to follow it"
            ) from None
        raise StateError(
            f"state file {path} cannot be opened for writing ({_os_reason(exc)}); "
            "the watcher must be able to read and write it"
        ) from exc


def _check_same_file(path: Path, real: Path, fd: int) -> None:
    """SQLite opened ``real`` by name: it must still be the file the store holds open."""
    try:
        named, held = os.stat(real), os.fstat(fd)
    except OSError as exc:
        raise StateError(f"state file {path} cannot be opened: {_os_reason(exc)}") from exc
    if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
        raise StateError(f"state file {path} was replaced while it was being opened; try again")


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "an unknown kind of file")


def _connect(path: Path, target: str, *, uri: bool) -> sqlite3.Connection:
    with _opening_errors(path):
        connection = sqlite3.connect(
            target, uri=uri, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000
        )
    connection.row_factory = sqlite3.Row
    return connection


def _check_contents(path: Path, db: sqlite3.Connection, *, readonly: bool) -> int:
    """Refuse a file we must not touch; returns its schema version (0: empty).

    Only reads: the file is unchanged on refusal.
    """
    with _opening_errors(path):
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise _newer_schema(path, version)
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
    return int(version)


def _integrity_problem(path: Path, real: Path) -> str | None:
    """``quick_check`` of the whole file on a fresh read-only connection; None when sound.

    Runs in a worker thread (:meth:`SqliteStore.ping`): its own connection, so no page
    cache hides what is on disk. Raises :class:`sqlite3.Error` when the check itself
    could not run (busy, I/O): that says nothing about damage.
    """
    db = sqlite3.connect(real.as_uri() + "?mode=ro", uri=True, isolation_level=None, timeout=1.0)
    try:
        rows = db.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        if not _is_corruption(exc):
            raise
        rows = [(str(exc),)]
    finally:
        db.close()
    # quick_check reports several lines per problem: fold them into one.
    problems = [" ".join(str(row[0]).split()) for row in rows]
    if problems == ["ok"]:
        return None
    return (
        f"state file {path} is corrupt (quick_check while running: {'; '.join(problems)}); "
        "move it aside to start afresh"
    )


def _newer_schema(path: Path, version: int) -> StateError:
    return StateError(
        f"state file {path} was written by a newer finetune-watcher (schema {version}, "
        f"this one understands {SCHEMA_VERSION}); refusing to touch it"
    )


def _upgraded_copy(path: Path, source: sqlite3.Connection, version: int) -> sqlite3.Connection:
    """An in-memory copy of ``source`` upgraded to the current schema; closes ``source``.

    For :meth:`SqliteStore.open_readonly` on a file the daemon has not upgraded yet.
    """
    copy = sqlite3.connect(":memory:", isolation_level=None)
    copy.row_factory = sqlite3.Row
    try:
        with _opening_errors(path):
            source.backup(copy)
            copy.execute("BEGIN")
            migrations.upgrade(copy, version)
            copy.execute("COMMIT")
    except BaseException:
        copy.close()
        raise
    finally:
        source.close()
    return copy


@contextlib.contextmanager
def _opening_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except sqlite3.Error as exc:
        if _is_corruption(exc):
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


def _is_corruption(exc: sqlite3.Error) -> bool:
    """The file's contents are damaged (not: busy, full, read-only, an I/O error)."""
    return _error_name(exc).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


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


def _encode_seen(seen: Iterable[EventId]) -> str:
    ordered = sorted(seen)  # (time, status): a stable text for the same set
    return json.dumps([[_encode_time(i.created_at), i.status] for i in ordered])


def _shared_time(text: str, times: dict[str, datetime]) -> datetime:
    """The time ``text`` stands for, decoded once per row (``times`` caches it)."""
    value = times.get(text)
    if value is None:
        value = times[text] = _decode_time_value(text)
    return value


def _decode_shared_time(text: str | None, times: dict[str, datetime]) -> datetime | None:
    return None if text is None else _shared_time(text, times)


def _decode_seen(text: str, times: dict[str, datetime]) -> tuple[EventId, ...]:
    items: list[Any] = json.loads(text)
    return seen_tuple(
        {EventId(_shared_time(str(at), times), sys.intern(str(status))) for at, status in items}
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
