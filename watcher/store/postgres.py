"""PostgreSQL backend: the state shared by several replicas, the lease, fencing and claims.

The same :class:`~watcher.store.base.Store` as :mod:`watcher.store.sqlite`, for a
state at ``state.url`` (``postgresql://…``), plus what running two or more
replicas needs: the lease (:class:`PostgresLeaseBackend`, driven by
:class:`~watcher.store.lease.Leadership`), fenced writes and claimed outbox rows.
docs/ha.md tells the design and why it is safe.

Decisions
---------
* Driver: psycopg 3 (async), because it is libpq: ``PG*`` variables, the
  passfile, service files, ``sslmode``/``sslrootcert``, several hosts with
  ``target_session_attrs`` all behave as every other PostgreSQL tool (and no
  server-side prepared statements, so PgBouncer in transaction mode works). Our load
  (a few statements per poll) is nowhere near where asyncpg's speed would show.
* Two connections per replica, each reopened on demand after a fault: one for
  the store, one for the lease (renewals never queue behind store statements).
  A store transaction holds an :class:`anyio.Lock`, so tasks never interleave
  statements inside one transaction.
* A transaction is ``BEGIN`` … ``COMMIT`` on an autocommit connection. When
  ``BEGIN`` fails on a connection that died (PostgreSQL restarted), the store
  reconnects and starts again once, transparently: nothing was written. A
  failure after that is a :class:`StateUnavailableError` (the daemon retries);
  the outcome of a ``COMMIT`` whose answer was lost is unknown, so the caller
  reloads what it wrote before deciding again (docs/ha.md). A read is retried once
  on a new connection. A cancelled transaction closes its connection (the server
  rolls back), never reuses it half-way.
* Fencing: when a :class:`~watcher.store.lease.Fence` is attached
  (:meth:`PostgresStore.leadership`), every write transaction first locks the
  lease row ``FOR SHARE`` where ``holder``, ``epoch`` match and
  ``expires_at > clock_timestamp()``; no row -> :class:`LeaseLostError`, nothing
  written. Outbox rows are *claimed* (``FOR UPDATE SKIP LOCKED``) for the epoch
  by :meth:`PostgresStore.due_notifications`; the writes that finish an item only
  touch rows this store may claim, and a delivery records its epoch.
* Every object lives in the PostgreSQL schema ``finetune_watcher``; its version is
  the one row of ``finetune_watcher.schema_version`` and follows the SQLite
  schema's numbering (:mod:`watcher.store.migrations`): the same logical tables,
  in PostgreSQL types. Creating or upgrading it happens in one transaction under
  ``pg_advisory_xact_lock``, so replicas starting together do not race. A newer
  schema, or a ``finetune_watcher`` schema that is not ours, is refused
  (:class:`~watcher.errors.StateError`, exit 74) and left untouched.
* Sessions run in UTC, with ``idle_in_transaction_session_timeout`` (a replica
  frozen inside a transaction must not block a takeover for long),
  ``lock_timeout`` and ``statement_timeout``.
* Secrets: the password (from the URL, ``state.password_file``, ``PGPASSWORD`` or
  the passfile) never appears in :attr:`PostgresStore.location`, an error or a
  log line: ``location`` is the URL without password, and every message built from
  the driver's text is scrubbed of the password.

Schema (version 2, in schema ``finetune_watcher``)
-----------------------------------------------
``models``, ``outbox``, ``deliveries``: the columns of the SQLite schema version 2
(:mod:`watcher.store.sqlite`), times as ``timestamptz``, flags as ``boolean``,
``seen``/``floor`` as ``jsonb`` (the same JSON), ``outbox.id`` an identity
(never reused). For high availability: ``outbox.claim_epoch``,
``outbox.claimed_by``, ``outbox.claimed_at`` (the claim; NULL when free) and
``deliveries.epoch`` (the term that recorded it).

``leader`` -- the lease, one row (``id = 1``): ``holder``, ``epoch`` (one more for
every new term, never reused), ``acquired_at``, ``renewed_at``, ``expires_at``
(all on the database's clock).

``schema_version`` -- one row: ``version``, ``upgraded_at``.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, cast
from urllib.parse import unquote, urlsplit

import anyio
import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from watcher.errors import StateError, StateUnavailableError
from watcher.lifecycle import EventId, EventKey, ModelKey, ModelState, Notice, seen_tuple
from watcher.store.base import ModelRecord, OutboxCounts, OutboxItem
from watcher.store.lease import (
    Acquisition,
    Fence,
    LeaderInfo,
    Leadership,
    LeaseLostError,
)

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "PostgresLeaseBackend",
    "PostgresStore",
    "StateUnavailableError",
    "open_from_settings",
    "read_password_file",
    "redact_url",
]

log = structlog.get_logger("watcher.store")


#: The PostgreSQL schema (namespace) holding every table of the watcher.
SCHEMA = "finetune_watcher"

#: ``pg_advisory_xact_lock`` key serialising schema creation and upgrades (any constant).
_MIGRATION_LOCK = 0x66775F736368656D  # b"fw_schem"


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: run ``statements`` on a schema at ``to_version - 1`` to reach ``to_version``."""

    to_version: int
    summary: str
    statements: tuple[str, ...]


#: PostgreSQL support began at the (SQLite) schema version 2: there is no older one here.
FIRST_VERSION = 2

#: Every step after :data:`FIRST_VERSION`, oldest first (frozen once released, like SQLite's).
MIGRATIONS: tuple[Migration, ...] = ()

#: The version :data:`_CREATE` makes and this code reads and writes (= SQLite's).
SCHEMA_VERSION = FIRST_VERSION + len(MIGRATIONS)

_CREATE: tuple[str, ...] = (
    f"CREATE SCHEMA {SCHEMA}",
    f"""
    CREATE TABLE {SCHEMA}.schema_version (
        id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        version     integer NOT NULL,
        upgraded_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )
    """,
    f"""
    CREATE TABLE {SCHEMA}.models (
        provider        text NOT NULL,
        model_id        text NOT NULL,
        name            text,
        discovered      boolean NOT NULL DEFAULT false,
        observed        boolean NOT NULL DEFAULT false,
        status          text,
        status_since    timestamptz,
        started_at      timestamptz,
        seen            jsonb NOT NULL DEFAULT '[]',
        floor           jsonb,
        last_poll_at    timestamptz,
        last_success_at timestamptz,
        last_error      text,
        failures        integer NOT NULL DEFAULT 0,
        stuck_warnings  integer NOT NULL DEFAULT 0,
        PRIMARY KEY (provider, model_id)
    )
    """,
    f"""
    CREATE TABLE {SCHEMA}.outbox (
        id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        kind              text NOT NULL CHECK (kind IN ('model', 'ops', 'stuck')),
        provider          text,
        model_id          text,
        status            text,
        previous_status   text,
        event_at          timestamptz,
        previous_since    timestamptz,
        started_at        timestamptz,
        first_observation boolean NOT NULL DEFAULT false,
        title             text,
        body              text,
        notify_type       text,
        created_at        timestamptz NOT NULL,
        attempts          integer NOT NULL DEFAULT 0,
        next_attempt_at   timestamptz NOT NULL,
        last_error        text,
        done_at           timestamptz,
        given_up_at       timestamptz,
        claim_epoch       bigint,
        claimed_by        text,
        claimed_at        timestamptz,
        CHECK ((provider IS NULL) = (model_id IS NULL)),
        CHECK (kind <> 'model'
               OR (model_id IS NOT NULL AND status IS NOT NULL AND event_at IS NOT NULL)),
        CHECK (kind = 'model'
               OR (title IS NOT NULL AND body IS NOT NULL AND notify_type IS NOT NULL))
    )
    """,
    f"""
    CREATE INDEX outbox_pending ON {SCHEMA}.outbox (next_attempt_at)
        WHERE done_at IS NULL AND given_up_at IS NULL
    """,
    f"""
    CREATE TABLE {SCHEMA}.deliveries (
        outbox_id    bigint NOT NULL REFERENCES {SCHEMA}.outbox (id) ON DELETE CASCADE,
        target_key   text NOT NULL,
        delivered_at timestamptz NOT NULL,
        epoch        bigint,
        PRIMARY KEY (outbox_id, target_key)
    )
    """,
    f"""
    CREATE TABLE {SCHEMA}.leader (
        id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        holder      text,
        epoch       bigint NOT NULL,
        acquired_at timestamptz NOT NULL,
        renewed_at  timestamptz NOT NULL,
        expires_at  timestamptz NOT NULL
    )
    """,
)

# --- statements ---------------------------------------------------------------------

_PENDING = "done_at IS NULL AND given_up_at IS NULL"

#: A fenced store may touch an outbox row that is free, claimed in an older term, or its own.
_CLAIMABLE = "(claim_epoch IS NULL OR claim_epoch < %(epoch)s OR claimed_by = %(claimer)s)"

_SCHEMA_STATE = f"""
    SELECT to_regclass('{SCHEMA}.schema_version') IS NOT NULL AS versioned,
           EXISTS (SELECT FROM pg_namespace WHERE nspname = '{SCHEMA}') AS present,
           (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = '{SCHEMA}') AS objects
"""  # noqa: S608 -- constant text, no input

_SELECT_VERSION = f"SELECT version FROM {SCHEMA}.schema_version"  # noqa: S608

_FENCE = f"""
    SELECT epoch FROM {SCHEMA}.leader
    WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s
      AND expires_at > clock_timestamp()
    FOR SHARE
"""  # noqa: S608 -- constant text, no input

_UPSERT_STATE = f"""
    INSERT INTO {SCHEMA}.models AS m (provider, model_id, name, discovered, observed, status,
                        status_since, started_at, seen, floor, last_poll_at, last_success_at,
                        last_error, failures)
    VALUES (%(provider)s, %(model_id)s, %(name)s, %(discovered)s, true, %(status)s,
            %(status_since)s, %(started_at)s, %(seen)s, %(floor)s, %(polled_at)s, %(polled_at)s,
            NULL, 0)
    ON CONFLICT (provider, model_id) DO UPDATE SET
        name = COALESCE(EXCLUDED.name, m.name),
        discovered = EXCLUDED.discovered,
        observed = true,
        status = EXCLUDED.status,
        status_since = EXCLUDED.status_since,
        started_at = EXCLUDED.started_at,
        seen = EXCLUDED.seen,
        floor = EXCLUDED.floor,
        last_poll_at = EXCLUDED.last_poll_at,
        last_success_at = EXCLUDED.last_success_at,
        last_error = NULL,
        failures = 0,
        stuck_warnings = CASE WHEN m.status IS NOT DISTINCT FROM EXCLUDED.status
                              THEN m.stuck_warnings ELSE 0 END
"""  # noqa: S608 -- constant text, no input

_INSERT_NOTICE = f"""
    INSERT INTO {SCHEMA}.outbox (kind, provider, model_id, status, previous_status, event_at,
                        previous_since, started_at, first_observation, created_at, attempts,
                        next_attempt_at)
    VALUES ('model', %(provider)s, %(model_id)s, %(status)s, %(previous_status)s, %(event_at)s,
            %(previous_since)s, %(started_at)s, %(first_observation)s, %(created_at)s, 0,
            %(created_at)s)
    RETURNING id
"""  # noqa: S608 -- constant text, no input

_INSERT_MESSAGE = f"""
    INSERT INTO {SCHEMA}.outbox (kind, provider, model_id, title, body, notify_type, created_at,
                        attempts, next_attempt_at)
    VALUES (%(kind)s, %(provider)s, %(model_id)s, %(title)s, %(body)s, %(notify_type)s,
            %(created_at)s, 0, %(created_at)s)
    RETURNING id
"""  # noqa: S608 -- constant text, no input

_SET_STUCK_WARNINGS = f"""
    UPDATE {SCHEMA}.models SET stuck_warnings = %(warnings)s
    WHERE provider = %(provider)s AND model_id = %(model_id)s
"""  # noqa: S608 -- constant text, no input

_SELECT_STUCK_WARNINGS = f"""
    SELECT provider, model_id, stuck_warnings FROM {SCHEMA}.models WHERE stuck_warnings > 0
"""  # noqa: S608 -- constant text, no input

_RECORD_POLLS = f"""
    UPDATE {SCHEMA}.models AS m
    SET last_poll_at = p.at, last_success_at = p.at, failures = 0, last_error = NULL
    FROM unnest(%(providers)s::text[], %(ids)s::text[], %(ats)s::timestamptz[])
         AS p (provider, model_id, at)
    WHERE m.provider = p.provider AND m.model_id = p.model_id
"""  # noqa: S608 -- constant text, no input

_UPSERT_FAILURE = f"""
    INSERT INTO {SCHEMA}.models (provider, model_id, last_poll_at, last_error, failures)
    VALUES (%(provider)s, %(model_id)s, %(polled_at)s, %(error)s, %(failures)s)
    ON CONFLICT (provider, model_id) DO UPDATE SET
        last_poll_at = EXCLUDED.last_poll_at,
        last_error = EXCLUDED.last_error,
        failures = EXCLUDED.failures
"""  # noqa: S608 -- constant text, no input

_SELECT_STATES = f"""
    SELECT provider, model_id, status, status_since, started_at, seen, floor
    FROM {SCHEMA}.models WHERE observed
"""  # noqa: S608 -- constant text, no input

# lower() and "C" order: the SQLite backend's ``COLLATE NOCASE`` then binary order.
_SELECT_RECORDS = f"""
    SELECT m.*, (SELECT count(*) FROM {SCHEMA}.outbox o
                 WHERE o.provider = m.provider AND o.model_id = m.model_id
                   AND o.{_PENDING}) AS pending
    FROM {SCHEMA}.models m
    ORDER BY lower(COALESCE(m.name, m.model_id)) COLLATE "C", m.model_id COLLATE "C",
             m.provider COLLATE "C"
"""  # noqa: S608 -- constant text, no input

_SELECT_DUE = f"""
    SELECT * FROM {SCHEMA}.outbox
    WHERE {_PENDING} AND next_attempt_at <= %(now)s
    ORDER BY id LIMIT %(limit)s
"""  # noqa: S608 -- constant text, no input

_CLAIM_DUE = f"""
    WITH due AS (
        SELECT id FROM {SCHEMA}.outbox
        WHERE {_PENDING} AND next_attempt_at <= %(now)s AND {_CLAIMABLE}
        ORDER BY id LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {SCHEMA}.outbox AS o
    SET claim_epoch = %(epoch)s, claimed_by = %(claimer)s, claimed_at = clock_timestamp()
    FROM due WHERE o.id = due.id
    RETURNING o.*
"""  # noqa: S608 -- constant text, no input

_SELECT_NEXT_DUE = f"SELECT min(next_attempt_at) AS at FROM {SCHEMA}.outbox WHERE {_PENDING}"  # noqa: S608

_PULL_FORWARD = f"""
    UPDATE {SCHEMA}.outbox SET next_attempt_at = %(not_after)s
    WHERE {_PENDING} AND next_attempt_at > %(not_after)s
"""  # noqa: S608 -- constant text, no input

_SELECT_COUNTS = f"""
    SELECT count(*) FILTER (WHERE {_PENDING}) AS pending,
           count(*) FILTER (WHERE done_at IS NOT NULL) AS done,
           count(*) FILTER (WHERE given_up_at IS NOT NULL) AS given_up,
           min(created_at) FILTER (WHERE {_PENDING}) AS oldest_pending_at
    FROM {SCHEMA}.outbox
"""  # noqa: S608 -- constant text, no input

_SELECT_DELIVERED = f"""
    SELECT target_key FROM {SCHEMA}.deliveries WHERE outbox_id = %(id)s
"""  # noqa: S608 -- constant text, no input

# The finishing writes: unfenced, any row; fenced, only rows this store may claim.
_INSERT_DELIVERY = f"""
    INSERT INTO {SCHEMA}.deliveries (outbox_id, target_key, delivered_at, epoch)
    SELECT id, %(target_key)s, %(at)s, %(epoch)s FROM {SCHEMA}.outbox
    WHERE id = %(id)s AND (%(epoch)s::bigint IS NULL OR {_CLAIMABLE})
    ON CONFLICT (outbox_id, target_key) DO NOTHING
"""  # noqa: S608 -- constant text, no input

_RELEASE = "claim_epoch = NULL, claimed_by = NULL, claimed_at = NULL"
_OWN_ROW = f"id = %(id)s AND (%(epoch)s::bigint IS NULL OR {_CLAIMABLE})"

_MARK_DONE = f"""
    UPDATE {SCHEMA}.outbox SET done_at = %(at)s, {_RELEASE}
    WHERE {_OWN_ROW} AND done_at IS NULL
"""  # noqa: S608 -- constant text, no input

_SCHEDULE_RETRY = f"""
    UPDATE {SCHEMA}.outbox SET attempts = %(attempts)s, next_attempt_at = %(next_attempt_at)s,
                      last_error = %(error)s, {_RELEASE}
    WHERE {_OWN_ROW}
"""  # noqa: S608 -- constant text, no input

_GIVE_UP = f"""
    UPDATE {SCHEMA}.outbox SET given_up_at = %(at)s, last_error = %(reason)s, {_RELEASE}
    WHERE {_OWN_ROW} AND given_up_at IS NULL
"""  # noqa: S608 -- constant text, no input

# --- bulk import (``state copy``) ---

_MODEL_COLUMNS = ("provider", "model_id", "name", "discovered", "observed", "status",
                  "status_since", "started_at", "seen", "floor", "last_poll_at",
                  "last_success_at", "last_error", "failures", "stuck_warnings")  # fmt: skip
_OUTBOX_COLUMNS = ("id", "kind", "provider", "model_id", "status", "previous_status",
                   "event_at", "previous_since", "started_at", "first_observation", "title",
                   "body", "notify_type", "created_at", "attempts", "next_attempt_at",
                   "last_error", "done_at", "given_up_at")  # fmt: skip
_DELIVERY_COLUMNS = ("outbox_id", "target_key", "delivered_at")


def _insert_all(table: str, columns: Sequence[str]) -> str:
    names = ", ".join(columns)
    values = ", ".join(f"%({c})s" for c in columns)
    return f"INSERT INTO {SCHEMA}.{table} ({names}) OVERRIDING SYSTEM VALUE VALUES ({values})"  # noqa: S608


_IMPORT_LOCK = f"LOCK TABLE {SCHEMA}.models, {SCHEMA}.outbox, {SCHEMA}.deliveries IN EXCLUSIVE MODE"
_IMPORT_COUNTS = f"""
    SELECT (SELECT count(*) FROM {SCHEMA}.models) AS models,
           (SELECT count(*) FROM {SCHEMA}.outbox) AS outbox,
           (SELECT count(*) FROM {SCHEMA}.deliveries) AS deliveries,
           (SELECT holder FROM {SCHEMA}.leader
            WHERE id = 1 AND expires_at > clock_timestamp()) AS live_holder
"""  # noqa: S608 -- constant text, no input
_IMPORT_CLEAR = f"TRUNCATE {SCHEMA}.deliveries, {SCHEMA}.outbox, {SCHEMA}.models"
_IMPORT_SEQUENCE = f"""
    SELECT setval(pg_get_serial_sequence('{SCHEMA}.outbox', 'id'),
                  COALESCE((SELECT max(id) FROM {SCHEMA}.outbox), 1),
                  (SELECT count(*) > 0 FROM {SCHEMA}.outbox))
"""  # noqa: S608 -- constant text, no input

# --- the lease ---

_ACQUIRE = f"""
    INSERT INTO {SCHEMA}.leader AS l (id, holder, epoch, acquired_at, renewed_at, expires_at)
    VALUES (1, %(holder)s, 1, clock_timestamp(), clock_timestamp(),
            clock_timestamp() + make_interval(secs => %(ttl)s))
    ON CONFLICT (id) DO UPDATE SET
        holder = EXCLUDED.holder,
        epoch = l.epoch + 1,
        acquired_at = clock_timestamp(),
        renewed_at = clock_timestamp(),
        expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)
    WHERE l.expires_at <= clock_timestamp()
    RETURNING epoch, acquired_at
"""  # noqa: S608 -- constant text, no input

_CURRENT_LEASE = f"""
    SELECT holder, epoch, acquired_at, renewed_at, expires_at,
           expires_at > clock_timestamp() AS live,
           extract(epoch FROM expires_at - clock_timestamp())::float8 AS remaining
    FROM {SCHEMA}.leader WHERE id = 1
"""  # noqa: S608 -- constant text, no input

_RENEW = f"""
    UPDATE {SCHEMA}.leader
    SET renewed_at = clock_timestamp(),
        expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)
    WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s
      AND expires_at > clock_timestamp()
    RETURNING epoch
"""  # noqa: S608 -- constant text, no input

_RELEASE_LEASE = f"""
    UPDATE {SCHEMA}.leader SET expires_at = clock_timestamp()
    WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s
      AND expires_at > clock_timestamp()
"""  # noqa: S608 -- constant text, no input


# --- URLs and secrets -----------------------------------------------------------------

_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})

#: Connection defaults we add when the URL does not set them (the URL always wins).
_CONNECT_DEFAULTS = {
    "application_name": "finetune-watcher",
    "connect_timeout": "10",  # libpq waits forever by default
    "keepalives_idle": "15",  # notice a dead server or network within a minute
    "keepalives_interval": "5",
    "keepalives_count": "3",
}


def redact_url(url: str) -> str:
    """``url`` without its password (nor any other secret parameter): safe to show.

    ``postgresql://watcher:s3cret@db/watcher?sslmode=require`` ->
    ``postgresql://watcher@db/watcher?sslmode=require``.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{hosts}" if user else hosts
        query = "&".join(
            pair
            for pair in parts.query.split("&")
            if pair and unquote(pair.partition("=")[0]).lower() not in _SECRET_PARAMETERS
        )
        # Not urlunsplit: it drops the empty host of postgresql:///db (a unix socket).
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return f"{url.partition(':')[0]}://(an unreadable URL)"


def read_password_file(path: Path) -> str:
    """The password in ``path`` (its first line, without the line ending)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise StateError(f"cannot read the database password file {path}: {reason}") from exc
    password = text.splitlines()[0] if text else ""
    if not password:
        raise StateError(f"the database password file {path} is empty")
    return password


def _secrets_of(url: str, password: str | None) -> tuple[str, ...]:
    found = [password] if password else []
    with suppress(psycopg.Error):
        given = conninfo_to_dict(url)
        found += [str(v) for k, v in given.items() if k in _SECRET_PARAMETERS and v]
    parts = urlsplit(url)
    if parts.password:
        found.append(parts.password)
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def _conninfo(url: str, password: str | None, location: str, hidden: Sequence[str]) -> str:
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = _scrub(_one_line(str(exc)), hidden)
        raise StateError(f"state.url {location} is not a valid PostgreSQL URL: {reason}") from None
    extra: dict[str, Any] = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}
    if password is not None:
        extra["password"] = password
    return make_conninfo(url, **extra)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _scrub(text: str, hidden: Sequence[str]) -> str:
    for secret in hidden:
        text = text.replace(secret, "***")
    return text


# --- error classification -------------------------------------------------------------

#: SQLSTATEs (or their first two characters) worth retrying: the connection, the
#: server shutting down or starting, timeouts, lock waits, serialization, overload.
_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "57014", "55P03", "40001", "40P01",
                     "53300", "25P03")  # fmt: skip


#: SQLSTATEs of a connection the server refuses for good: authentication, no such database.
_REFUSED_STATES = ("28", "3D000")


def _is_refusal(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    if state is None:  # libpq reports some refusals without a SQLSTATE: read its words
        text = str(exc)
        return "authentication failed" in text or "does not exist" in text
    return state.startswith(_REFUSED_STATES)


def _is_transient(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: libpq lost the server (OperationalError) or the connection is closed.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith(_TRANSIENT_STATES)


# --- one connection ---------------------------------------------------------------------


class _Link:
    """One connection to the database, opened on first use and reopened after a fault.

    Every statement goes through :meth:`transaction` or :meth:`fetch`; both hold
    :attr:`lock`, so statements of two tasks never interleave.
    """

    def __init__(
        self, conninfo: str, *, location: str, hidden: Sequence[str], session: dict[str, str]
    ) -> None:
        self._conninfo = conninfo
        self.location = location
        self._hidden = tuple(hidden)
        self.session = dict(session)
        self._conn: psycopg.AsyncConnection[DictRow] | None = None
        self._configured: dict[str, str] = {}
        self.lock = anyio.Lock()
        self.closed = False

    def error(self, exc: psycopg.Error, doing: str) -> StateError:
        """The one place a driver error becomes a :class:`StateError` (scrubbed, one line)."""
        reason = _scrub(_one_line(str(exc)) or type(exc).__name__, self._hidden)
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StateError(f"PostgreSQL {self.location}: {doing} failed: the store is read-only")
        kind = StateUnavailableError if _is_transient(exc) else StateError
        return kind(f"PostgreSQL {self.location}: {doing} failed: {reason}")

    async def connection(self) -> psycopg.AsyncConnection[DictRow]:
        if self.closed:
            raise StateError(f"PostgreSQL {self.location}: the store is closed")
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._conn = None
            try:
                # No server-side prepared statements: they gain nothing at our rate and
                # break behind PgBouncer in transaction mode (before its 1.21).
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, row_factory=dict_row, prepare_threshold=None
                )
            except psycopg.Error as exc:
                reason = _scrub(_one_line(str(exc)), self._hidden)
                # Refused credentials or a missing database will not mend by waiting.
                kind = StateError if _is_refusal(exc) else StateUnavailableError
                raise kind(f"cannot connect to PostgreSQL {self.location}: {reason}") from None
            self._conn = conn
            self._configured = {}
        if self._configured != self.session:
            settings = sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
                for name, value in self.session.items()
            )
            try:
                await conn.execute(sql.SQL("SELECT {}").format(settings))
            except psycopg.Error as exc:
                await self.discard()
                raise self.error(exc, "configuring the session") from exc
            self._configured = dict(self.session)
        return conn

    async def discard(self) -> None:
        """Close the connection after a fault (the server rolls back what was open)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2), suppress(psycopg.Error):
                await conn.close()

    async def aclose(self) -> None:
        self.closed = True
        await self.discard()

    async def fetch(
        self, doing: str, query: str, params: dict[str, Any] | None = None
    ) -> list[DictRow]:
        """Run one statement on its own (autocommit); retried once on a new connection."""
        async with self.lock:
            for attempt in (1, 2):
                conn = await self.connection()
                try:
                    cursor = await conn.execute(query, params)
                    return await cursor.fetchall() if cursor.description else []
                except psycopg.Error as exc:
                    if conn.closed or conn.broken:
                        await self.discard()
                    if attempt == 1 and _is_transient(exc):
                        continue
                    raise self.error(exc, doing) from exc
                except BaseException:
                    await self.discard()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def transaction(self, doing: str) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        """``BEGIN`` … ``COMMIT``; an exception rolls back, a cancellation drops the connection."""
        async with self.lock:
            conn = await self._begin(doing)
            try:
                yield conn
                await conn.execute("COMMIT")
            except psycopg.Error as exc:
                await self._abandon(conn)
                raise self.error(exc, doing) from exc
            except Exception:
                await self._abandon(conn)
                raise
            except BaseException:  # cancelled mid-way: the protocol state is unknown
                await self.discard()
                raise

    async def _begin(self, doing: str) -> psycopg.AsyncConnection[DictRow]:
        for attempt in (1, 2):
            conn = await self.connection()
            try:
                await conn.execute("BEGIN")
            except psycopg.Error as exc:
                await self.discard()
                # Nothing was written yet: a connection that died idle is reopened once.
                if attempt == 1 and _is_transient(exc):
                    continue
                raise self.error(exc, doing) from exc
            except BaseException:
                await self.discard()
                raise
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    async def _abandon(self, conn: psycopg.AsyncConnection[DictRow]) -> None:
        if conn.closed or conn.broken:
            await self.discard()
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(2) as scope:
            try:
                await conn.execute("ROLLBACK")
            except psycopg.Error:
                await self.discard()
        if scope.cancelled_caught:
            await self.discard()


def _session(
    *, idle_in_transaction: float, lock_timeout: float, statement: float
) -> dict[str, str]:
    return {
        "TimeZone": "UTC",
        "idle_in_transaction_session_timeout": f"{max(1, round(idle_in_transaction * 1000))}ms",
        "lock_timeout": f"{max(1, round(lock_timeout * 1000))}ms",
        "statement_timeout": f"{max(1, round(statement * 1000))}ms",
    }


# --- the store ------------------------------------------------------------------------


class PostgresSettings(Protocol):
    """The ``state`` settings this backend reads (``state.url`` is set)."""

    @property
    def url(self) -> str | None: ...

    @property
    def password_file(self) -> Path | None: ...


class PostgresStore:
    """The state in a PostgreSQL database; a :class:`~watcher.store.base.Store`.

    Build one with :meth:`open`; release it with :meth:`aclose` (or ``async with``).
    Several replicas open the same database; :meth:`leadership` makes this one's
    lease and fences every write of this store with it.
    """

    def __init__(
        self,
        link: _Link,
        *,
        conninfo: str,
        hidden: Sequence[str],
        readonly: bool,
        upgraded_from: int | None = None,
    ) -> None:
        self._link = link
        self._conninfo = conninfo
        self._hidden = tuple(hidden)
        self._readonly = readonly
        #: Where the state lives, for logs and ``status``: the URL without its password.
        self.location = link.location
        #: The schema version this open upgraded the database from (None: no upgrade).
        self.upgraded_from = upgraded_from
        #: True when this open created the schema (an empty database).
        self.created = False
        #: Who may write (None: no lease, every write goes through, e.g. one replica).
        self.fence: Fence | None = None
        self._claim_suffix = secrets.token_hex(4)
        self._lease_backend: PostgresLeaseBackend | None = None

    # --- opening and closing ---

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        password_file: Path | None = None,
        readonly: bool = False,
    ) -> Self:
        """Connect to the database at ``url``, creating or upgrading the schema (not readonly).

        ``password_file`` (or ``password``) wins over a password in the URL; without
        either, libpq's own ways apply (``PGPASSWORD``, the passfile). Raises
        :class:`StateUnavailableError` when the database cannot be reached and
        :class:`StateError` when it holds something this version must not touch.
        """
        if password_file is not None:
            password = read_password_file(password_file)
        hidden = _secrets_of(url, password)
        location = _scrub(redact_url(url), hidden)
        conninfo = _conninfo(url, password, location, hidden)
        session = _session(idle_in_transaction=60, lock_timeout=10, statement=60)
        if readonly:
            session["default_transaction_read_only"] = "on"
        link = _Link(conninfo, location=location, hidden=hidden, session=session)
        store = cls(link, conninfo=conninfo, hidden=hidden, readonly=readonly)
        try:
            if readonly:
                await store._check_schema()
            else:
                await store._prepare_schema()
        except BaseException:
            await link.aclose()
            raise
        if store.upgraded_from is not None:
            log.info(
                "state database upgraded",
                location=location,
                from_schema=store.upgraded_from,
                to_schema=SCHEMA_VERSION,
            )
        return store

    def leadership(self, *, ttl: float, holder: str | None = None) -> Leadership:
        """This replica's lease on the database, fencing every write of this store.

        The lease uses a connection of its own (closed by :meth:`aclose`).
        Transactions left idle for a quarter of the ttl are ended by the server,
        so a replica frozen inside one cannot hold a takeover back for long.
        """
        if self._readonly:
            raise StateError(f"PostgreSQL {self.location}: a read-only store cannot lead")
        if self._lease_backend is not None:
            raise RuntimeError("this store already has its leadership")
        backend = PostgresLeaseBackend(
            _Link(
                self._conninfo,
                location=self.location,
                hidden=self._hidden,
                session=_session(
                    idle_in_transaction=max(0.5, ttl / 4),
                    lock_timeout=max(0.1, ttl / 6),
                    statement=max(0.5, ttl / 2),
                ),
            )
        )
        self._lease_backend = backend
        self._link.session.update(
            _session(
                idle_in_transaction=max(0.5, ttl / 4), lock_timeout=max(1.0, ttl), statement=60
            )
        )
        leadership = Leadership(backend, ttl=ttl, holder=holder)
        self.fence = leadership
        return leadership

    async def ping(self) -> bool:
        """True when the database answers a trivial query (for ``/readyz``)."""
        try:
            await self._link.fetch("answering a ping", "SELECT 1")
        except StateError:
            return False
        return True

    async def leader(self) -> LeaderInfo | None:
        """The current (or last) lease: who leads, since when (for ``status``)."""
        rows = await self._link.fetch("reading the lease", _CURRENT_LEASE)
        return _leader_info(rows[0]) if rows else None

    async def aclose(self) -> None:
        """Close both connections. Idempotent."""
        backend, self._lease_backend = self._lease_backend, None
        if backend is not None:
            await backend.aclose()
        await self._link.aclose()

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
        """Every model's state as the core last decided it, by key."""
        rows = await self._link.fetch("reading the model states", _SELECT_STATES)
        states = (self._decode_state(row) for row in rows)
        return {state.key: state for state in states}

    async def model_records(self) -> list[ModelRecord]:
        """Every known model with its poll bookkeeping, ordered by name (else id)."""
        rows = await self._link.fetch("reading the models", _SELECT_RECORDS)
        return [
            ModelRecord(
                state=self._decode_state(row),
                name=row["name"],
                discovered=bool(row["discovered"]),
                last_poll_at=row["last_poll_at"],
                last_success_at=row["last_success_at"],
                last_error=row["last_error"],
                failures=row["failures"],
                pending_notifications=row["pending"],
            )
            for row in rows
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
        """Store a model's new state and its notices in one (fenced) transaction.

        The poll counts as a success (failures reset, error cleared). ``name=None``
        keeps the stored name. Returns the new outbox ids, in ``notices`` order.
        """
        state_row = {
            "provider": state.provider,
            "model_id": state.model_id,
            "name": name,
            "discovered": discovered,
            "status": state.status,
            "status_since": _aware_or_none(state.status_since),
            "started_at": _aware_or_none(state.started_at),
            "seen": Jsonb(_encode_seen(state.seen)),
            "floor": None if state.floor is None else Jsonb(_encode_floor(state.floor)),
            "polled_at": _aware(polled_at),
        }
        notice_rows = [
            {
                "provider": notice.provider,
                "model_id": notice.model_id,
                "status": notice.status,
                "previous_status": notice.previous_status,
                "event_at": _aware(notice.event_at),
                "previous_since": _aware_or_none(notice.previous_since),
                "started_at": _aware_or_none(notice.started_at),
                "first_observation": notice.first_observation,
                "created_at": state_row["polled_at"],
            }
            for notice in notices
        ]
        ids: list[int] = []
        async with self._write(f"recording the state of model {state.key}") as (db, _):
            await db.execute(_UPSERT_STATE, state_row)
            for row in notice_rows:
                cursor = await db.execute(_INSERT_NOTICE, row)
                ids.append(_returned_id(await cursor.fetchone()))
        return ids

    async def record_polls(self, polled: Sequence[tuple[ModelKey, datetime]]) -> None:
        """Record successful polls that changed nothing, as one statement.

        Only updates models that already have a row; the last time given for a model wins.
        """
        if not polled:
            return
        latest = {key: _aware(at) for key, at in polled}
        params = {
            "providers": [key.provider for key in latest],
            "ids": [key.id for key in latest],
            "ats": list(latest.values()),
        }
        async with self._write("recording polls") as (db, _):
            await db.execute(_RECORD_POLLS, params)

    async def record_poll_failure(
        self, model: ModelKey, *, polled_at: datetime, error: str, failures: int
    ) -> None:
        """Record a failed poll; ``failures`` is the new count of consecutive failures."""
        row = {
            "provider": model.provider,
            "model_id": model.id,
            "polled_at": _aware(polled_at),
            "error": error,
            "failures": failures,
        }
        async with self._write(f"recording a poll failure of model {model}") as (db, _):
            await db.execute(_UPSERT_FAILURE, row)

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
        """Queue a "still stuck" warning and count it for the model, in one transaction."""
        return await self._insert_message(
            "stuck", title, body, notify_type, created_at, model, stuck_warnings=warnings
        )

    async def stuck_warning_counts(self) -> dict[ModelKey, int]:
        """Models that were warned as stuck in their current status, and how often."""
        rows = await self._link.fetch("reading stuck warnings", _SELECT_STUCK_WARNINGS)
        return {ModelKey(r["provider"], r["model_id"]): r["stuck_warnings"] for r in rows}

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
        if kind != "ops":
            raise ValueError(f"enqueue_message takes kind 'ops', not {kind!r}")
        return await self._insert_message(kind, title, body, notify_type, created_at, model)

    async def _insert_message(
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
            "created_at": _aware(created_at),
        }
        async with self._write(f"queueing a {kind} message") as (db, _):
            cursor = await db.execute(_INSERT_MESSAGE, row)
            outbox_id = _returned_id(await cursor.fetchone())
            if stuck_warnings is not None:
                await db.execute(_SET_STUCK_WARNINGS, row | {"warnings": stuck_warnings})
        return outbox_id

    async def due_notifications(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Pending items whose next attempt is at or before ``now``, oldest first.

        Fenced (leading), the items are *claimed* for this term: ``FOR UPDATE SKIP
        LOCKED``, so that two stores -- even two leaders by mistake -- never get the
        same row; a row claimed by another store in this term is skipped until it is
        finished (:meth:`mark_done`, :meth:`schedule_retry`, :meth:`give_up`) or a
        new term begins.
        """
        params: dict[str, Any] = {"now": _aware(now), "limit": limit}
        if self.fence is None:
            rows = await self._link.fetch("reading the outbox", _SELECT_DUE, params)
        else:
            async with self._write("claiming due notifications") as (db, claim):
                cursor = await db.execute(_CLAIM_DUE, params | claim)
                rows = await cursor.fetchall()
            rows.sort(key=lambda row: int(row["id"]))
        return [self._decode_item(row) for row in rows]

    async def next_due_at(self) -> datetime | None:
        """The earliest next attempt among pending items; None when nothing is pending."""
        rows = await self._link.fetch("reading the outbox", _SELECT_NEXT_DUE)
        return cast(datetime | None, rows[0]["at"])

    async def delivered_targets(self, outbox_id: int) -> set[str]:
        """Keys of the targets that already received outbox item ``outbox_id``."""
        rows = await self._link.fetch("reading deliveries", _SELECT_DELIVERED, {"id": outbox_id})
        return {row["target_key"] for row in rows}

    async def mark_delivered(self, outbox_id: int, target_key: str, at: datetime) -> None:
        """Remember that ``target_key`` received the item (with this term's epoch). Idempotent."""
        params = {"id": outbox_id, "target_key": target_key, "at": _aware(at)}
        async with self._write("recording a delivery") as (db, claim):
            await db.execute(_INSERT_DELIVERY, params | claim)

    async def mark_done(self, outbox_id: int, at: datetime) -> None:
        """Every target received the item: it leaves the pending set (and its claim)."""
        params = {"id": outbox_id, "at": _aware(at)}
        async with self._write("marking a notification done") as (db, claim):
            await db.execute(_MARK_DONE, params | claim)

    async def schedule_retry(
        self, outbox_id: int, *, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        """Record a failed attempt and when to try again; the claim is released."""
        params = {
            "id": outbox_id,
            "attempts": attempts,
            "next_attempt_at": _aware(next_attempt_at),
            "error": error,
        }
        async with self._write("scheduling a notification retry") as (db, claim):
            await db.execute(_SCHEDULE_RETRY, params | claim)

    async def pull_forward_retries(self, not_after: datetime) -> int:
        """Make every pending retry due no later than ``not_after``; returns how many moved."""
        async with self._write("rescheduling notification retries") as (db, _):
            cursor = await db.execute(_PULL_FORWARD, {"not_after": _aware(not_after)})
            return cursor.rowcount

    async def give_up(self, outbox_id: int, *, at: datetime, reason: str) -> None:
        """Stop retrying the item; it stays, counted as given up."""
        params = {"id": outbox_id, "at": _aware(at), "reason": reason}
        async with self._write("giving up a notification") as (db, claim):
            await db.execute(_GIVE_UP, params | claim)

    async def outbox_counts(self) -> OutboxCounts:
        """How many items are pending, done and given up."""
        (row,) = await self._link.fetch("counting the outbox", _SELECT_COUNTS)
        return OutboxCounts(
            pending=row["pending"],
            done=row["done"],
            given_up=row["given_up"],
            oldest_pending_at=row["oldest_pending_at"],
        )

    # --- moving house ---

    async def import_rows(
        self,
        models: Sequence[Mapping[str, Any]],
        outbox: Sequence[Mapping[str, Any]],
        deliveries: Sequence[Mapping[str, Any]],
        *,
        replace: bool = False,
    ) -> None:
        """Write a whole state (``state copy``) in one transaction, keeping outbox ids.

        Rows are column -> value with the columns of the SQLite schema (times aware,
        ``seen``/``floor`` decoded JSON). The identity sequence of ``outbox.id`` is moved
        past the highest id, so new rows never reuse one. Refused (``StateError``, nothing
        written) while a replica holds the lease, and when the database already holds a
        state unless ``replace`` (which empties it first; the lease row and its epoch stay).
        """
        async with self._write("importing a state") as (db, _):
            await db.execute(_IMPORT_LOCK)
            cursor = await db.execute(_IMPORT_COUNTS)
            found = await cursor.fetchone()
            assert found is not None
            if found["live_holder"] is not None:
                raise StateError(
                    f"PostgreSQL {self.location}: replica {found['live_holder']} is running "
                    "on it (it holds the lease); stop every replica before copying a state in"
                )
            if not replace and (found["models"] or found["outbox"] or found["deliveries"]):
                raise StateError(
                    f"PostgreSQL {self.location} already holds a state ({found['models']} "
                    f"models, {found['outbox']} notifications); refusing to mix two histories "
                    "(--force replaces it)"
                )
            if replace:
                await db.execute(_IMPORT_CLEAR)
            async with db.cursor() as cur:
                if models:
                    await cur.executemany(
                        _insert_all("models", _MODEL_COLUMNS),
                        [_import_model(row) for row in models],
                    )
                if outbox:
                    await cur.executemany(
                        _insert_all("outbox", _OUTBOX_COLUMNS),
                        [{c: row.get(c) for c in _OUTBOX_COLUMNS} for row in outbox],
                    )
                if deliveries:
                    await cur.executemany(
                        _insert_all("deliveries", _DELIVERY_COLUMNS),
                        [{c: row.get(c) for c in _DELIVERY_COLUMNS} for row in deliveries],
                    )
            await db.execute(_IMPORT_SEQUENCE)

    async def schema_version(self) -> int:
        """The schema version the database holds now (for ``migrate``)."""
        return await self._check_schema()

    # --- internals ---

    @asynccontextmanager
    async def _write(
        self, doing: str
    ) -> AsyncIterator[tuple[psycopg.AsyncConnection[DictRow], dict[str, Any]]]:
        """A write transaction, fenced by the lease when one is attached.

        Yields the connection and the claim parameters (``epoch``, ``claimer``;
        both None without a fence) for the statements that honour claims.
        """
        if self._readonly:
            raise StateError(f"PostgreSQL {self.location}: {doing} failed: the store is read-only")
        fence = self.fence
        claim: dict[str, Any] = {"epoch": None, "claimer": None}
        if fence is not None:
            epoch = fence.epoch
            if epoch is None:
                raise LeaseLostError(
                    f"PostgreSQL {self.location}: {doing} refused: this replica does not lead"
                )
            claim = {"epoch": epoch, "claimer": f"{fence.holder}#{self._claim_suffix}"}
        async with self._link.transaction(doing) as db:
            if fence is not None:
                cursor = await db.execute(_FENCE, {"holder": fence.holder, "epoch": claim["epoch"]})
                if await cursor.fetchone() is None:
                    raise LeaseLostError(
                        f"PostgreSQL {self.location}: {doing} refused: the lease of epoch "
                        f"{claim['epoch']} is no longer this replica's"
                    )
            yield db, claim

    async def _check_schema(self) -> int:
        """The database's schema version, refusing what this version must not read."""
        async with self._link.transaction("reading the schema version") as db:
            version = await self._schema_version(db)
        if version is None:
            raise StateError(
                f"PostgreSQL {self.location} holds no finetune-watcher state "
                "(has the watcher run yet?)"
            )
        if version < SCHEMA_VERSION:
            raise StateError(
                f"PostgreSQL {self.location} holds schema {version}; start the daemon (or "
                f"`finetune-watcher migrate`) to upgrade it to {SCHEMA_VERSION}"
            )
        return version

    async def _prepare_schema(self) -> None:
        """Create the schema, or upgrade an older one, in one transaction under the lock."""
        async with self._link.transaction("preparing the schema") as db:
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version = await self._schema_version(db)
            if version is None:
                # A schema a DBA made for us is used as it is: creating it again would need
                # the CREATE privilege on the database, which we then do not need.
                cursor = await db.execute(_SCHEMA_STATE)
                state = await cursor.fetchone()
                for statement in _CREATE[1:] if state and state["present"] else _CREATE:
                    await db.execute(statement)
                await db.execute(
                    f"INSERT INTO {SCHEMA}.schema_version (version) VALUES (%s)",  # noqa: S608
                    (SCHEMA_VERSION,),
                )
                self.created = True
                return
            if version < SCHEMA_VERSION:
                for step in MIGRATIONS[version - FIRST_VERSION :]:
                    for statement in step.statements:
                        await db.execute(statement)
                await db.execute(
                    f"UPDATE {SCHEMA}.schema_version SET version = %s, "  # noqa: S608
                    "upgraded_at = clock_timestamp()",
                    (SCHEMA_VERSION,),
                )
                self.upgraded_from = version

    async def _schema_version(self, db: psycopg.AsyncConnection[DictRow]) -> int | None:
        """The stored version (None: no schema yet); refuses newer and foreign schemas."""
        cursor = await db.execute(_SCHEMA_STATE)
        found = await cursor.fetchone()
        assert found is not None
        if not found["versioned"]:
            if found["objects"]:
                raise StateError(
                    f"PostgreSQL {self.location} has a schema {SCHEMA!r} that is not a "
                    "finetune-watcher one (it has tables and no schema version); refusing to "
                    "touch it"
                )
            return None
        cursor = await db.execute(_SELECT_VERSION)
        row = await cursor.fetchone()
        version = int(row["version"]) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise StateError(
                f"PostgreSQL {self.location} was written by a newer finetune-watcher "
                f"(schema {version}, this one understands {SCHEMA_VERSION}); refusing to touch it"
            )
        if version < FIRST_VERSION:
            raise StateError(
                f"PostgreSQL {self.location} has an unknown schema version {version}; "
                "refusing to touch it"
            )
        return version

    def _decode_state(self, row: DictRow) -> ModelState:
        times: dict[str, datetime] = {}
        try:
            status = row["status"]
            return ModelState(
                model_id=row["model_id"],
                status=sys.intern(status) if status is not None else None,
                status_since=row["status_since"],
                started_at=row["started_at"],
                seen=_decode_seen(row["seen"], times),
                floor=_decode_floor(row["floor"]),
                provider=sys.intern(row["provider"]),
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise self._unreadable(f"model {row['provider']}/{row['model_id']}", exc) from exc

    def _decode_item(self, row: DictRow) -> OutboxItem:
        provider, model_id = row["provider"], row["model_id"]
        model = ModelKey(provider, model_id) if model_id is not None else None
        notice = None
        if row["kind"] == "model":
            notice = Notice(
                model_id=model_id,
                status=row["status"],
                previous_status=row["previous_status"],
                event_at=row["event_at"],
                previous_since=row["previous_since"],
                started_at=row["started_at"],
                first_observation=bool(row["first_observation"]),
                provider=provider,
            )
        return OutboxItem(
            id=int(row["id"]),
            kind=row["kind"],
            model=model,
            notice=notice,
            title=row["title"],
            body=row["body"],
            notify_type=row["notify_type"],
            created_at=row["created_at"],
            attempts=row["attempts"],
            last_error=row["last_error"],
        )

    def _unreadable(self, what: str, exc: Exception) -> StateError:
        return StateError(
            f"PostgreSQL {self.location}: cannot read {what} ({exc}); was it edited by hand?"
        )


async def open_from_settings(state: PostgresSettings, *, readonly: bool) -> PostgresStore:
    """The PostgreSQL backend's :class:`~watcher.store.StoreOpener`: the database at ``state.url``.

    For :data:`watcher.store.BACKENDS` (``"postgresql"``), once the settings have ``state.url``.
    """
    if state.url is None:
        raise StateError("state.url is not set")
    return await PostgresStore.open(state.url, password_file=state.password_file, readonly=readonly)


# --- the lease ------------------------------------------------------------------------


class PostgresLeaseBackend:
    """The lease row's statements, for :class:`~watcher.store.lease.Leadership`.

    Its own connection; a lock wait (a takeover waiting for the old leader's last
    fenced transaction) times out quickly and counts as "not now".
    """

    def __init__(self, link: _Link) -> None:
        self._link = link

    async def try_acquire(self, holder: str, ttl: float) -> Acquisition:
        try:
            async with self._link.transaction("taking the lease") as db:
                cursor = await db.execute(_ACQUIRE, {"holder": holder, "ttl": ttl})
                won = await cursor.fetchone()
                if won is not None:
                    return Acquisition(
                        won=True,
                        holder=holder,
                        epoch=int(won["epoch"]),
                        acquired_at=won["acquired_at"],
                        remaining=ttl,
                    )
                cursor = await db.execute(_CURRENT_LEASE)
                current = await cursor.fetchone()
        except StateUnavailableError as exc:
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                # The old leader's last fenced transaction still runs: try again soon.
                return Acquisition(
                    won=False, holder=None, epoch=None, acquired_at=None, remaining=0.0
                )
            raise
        if current is None:  # pragma: no cover -- the INSERT above creates the row
            return Acquisition(won=False, holder=None, epoch=None, acquired_at=None, remaining=None)
        return Acquisition(
            won=False,
            holder=current["holder"],
            epoch=int(current["epoch"]),
            acquired_at=current["acquired_at"],
            remaining=float(current["remaining"]),
        )

    async def renew(self, holder: str, epoch: int, ttl: float) -> bool:
        # One statement, no transaction around it: a renewal is one round trip.
        params = {"holder": holder, "epoch": epoch, "ttl": ttl}
        return bool(await self._link.fetch("renewing the lease", _RENEW, params))

    async def release(self, holder: str, epoch: int) -> None:
        params = {"holder": holder, "epoch": epoch}
        await self._link.fetch("releasing the lease", _RELEASE_LEASE, params)

    async def leader(self) -> LeaderInfo | None:
        rows = await self._link.fetch("reading the lease", _CURRENT_LEASE)
        return _leader_info(rows[0]) if rows else None

    async def aclose(self) -> None:
        await self._link.aclose()


def _leader_info(row: DictRow) -> LeaderInfo:
    return LeaderInfo(
        holder=row["holder"],
        epoch=int(row["epoch"]),
        acquired_at=row["acquired_at"],
        renewed_at=row["renewed_at"],
        expires_at=row["expires_at"],
        live=bool(row["live"]),
    )


# --- encoding -------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"the store only takes timezone-aware times, not {value!r}")
    return value


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _encode_time(value: datetime) -> str:
    return _aware(value).astimezone(UTC).isoformat(timespec="microseconds")


def _encode_seen(seen: Iterable[EventId]) -> list[list[str]]:
    ordered = sorted(seen, key=lambda ident: (ident.created_at, ident.status))
    return [[_encode_time(i.created_at), i.status] for i in ordered]


def _decode_seen(items: list[Any], times: dict[str, datetime]) -> tuple[EventId, ...]:
    def shared(text: str) -> datetime:
        value = times.get(text)
        if value is None:
            value = times[text] = datetime.fromisoformat(text)
        return value

    return seen_tuple({EventId(shared(str(at)), sys.intern(str(status))) for at, status in items})


def _encode_floor(floor: EventKey) -> list[Any]:
    return [_encode_time(floor.created_at), floor.rank, floor.status]


def _decode_floor(value: list[Any] | None) -> EventKey | None:
    if value is None:
        return None
    at, rank, status = value
    return EventKey(datetime.fromisoformat(str(at)), int(rank), str(status))


def _import_model(row: Mapping[str, Any]) -> dict[str, Any]:
    values = {c: row.get(c) for c in _MODEL_COLUMNS}
    values["seen"] = Jsonb(values["seen"] if values["seen"] is not None else [])
    values["floor"] = Jsonb(values["floor"]) if values["floor"] is not None else None
    values["failures"] = values["failures"] or 0
    values["stuck_warnings"] = values["stuck_warnings"] or 0
    return values


def _returned_id(row: DictRow | None) -> int:
    if row is None:  # pragma: no cover -- INSERT … RETURNING always returns the row
        raise StateError("PostgreSQL returned no id for an INSERT")
    return int(row["id"])
