"""The SQLite schema: the current one for a new file, and the steps that upgrade an old one.

A file's version is ``PRAGMA user_version``. :data:`SCHEMA` creates the current
version in an empty file; :data:`MIGRATIONS` is the ordered list of steps from
version 1 upwards, each frozen once released (a later change is a new step, never
an edit of an old one). :mod:`watcher.store.sqlite` runs the steps a file needs in
*one* transaction when it opens the file, so an upgrade either completes or leaves
the file exactly as it was. There is no way down: a file from a newer version is
refused, never rewritten.

Adding a version: append a :class:`Migration` (its statements rebuild what
changes), update :data:`SCHEMA` to the result, and add the previous version's DDL
to ``tests/test_store_migrations.py`` -- the tests open a file of every earlier
version and check that nothing is lost and that the result equals a new file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = ["MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "Migration", "create", "upgrade"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: run ``statements`` on a file at ``to_version - 1`` to reach ``to_version``.

    The runner turns foreign keys off around the step (SQLite's recipe for
    rebuilding a table that others reference) and checks them before committing.
    """

    to_version: int
    summary: str
    statements: tuple[str, ...]


# --- version 1 -> 2 -----------------------------------------------------------------
# Models are keyed by (provider, model_id); every row that existed was a Cohere model.
# Outbox rows name their model's provider too (NULL for daemon-wide ops messages), and
# the never-written 'test' kind goes: a row of it (pre-rendered, like 'ops') becomes 'ops'.
# Both tables are rebuilt (SQLite cannot change a primary key or a CHECK in place); the
# outbox keeps its ids and its AUTOINCREMENT high-water mark, so ids are never reused.

_V2_STEP = Migration(
    to_version=2,
    summary="models keyed by (provider, model_id); outbox.provider; no 'test' kind",
    statements=(
        """
        CREATE TABLE models_v2 (
            provider        TEXT NOT NULL,
            model_id        TEXT NOT NULL,
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
            stuck_warnings  INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (provider, model_id)
        )
        """,
        """
        INSERT INTO models_v2 (provider, model_id, name, discovered, observed, status,
                               status_since, started_at, seen, floor, last_poll_at,
                               last_success_at, last_error, failures, stuck_warnings)
        SELECT 'cohere', model_id, name, discovered, observed, status, status_since,
               started_at, seen, floor, last_poll_at, last_success_at, last_error,
               failures, stuck_warnings
        FROM models
        """,
        "DROP TABLE models",
        "ALTER TABLE models_v2 RENAME TO models",
        """
        CREATE TABLE outbox_v2 (
            id                INTEGER PRIMARY KEY AUTOINCREMENT,
            kind              TEXT NOT NULL CHECK (kind IN ('model', 'ops', 'stuck')),
            provider          TEXT,
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
            CHECK ((provider IS NULL) = (model_id IS NULL)),
            CHECK (kind <> 'model'
                   OR (model_id IS NOT NULL AND status IS NOT NULL AND event_at IS NOT NULL)),
            CHECK (kind = 'model'
                   OR (title IS NOT NULL AND body IS NOT NULL AND notify_type IS NOT NULL))
        )
        """,
        """
        INSERT INTO outbox_v2 (id, kind, provider, model_id, status, previous_status, event_at,
                               previous_since, started_at, first_observation, title, body,
                               notify_type, created_at, attempts, next_attempt_at, last_error,
                               done_at, given_up_at)
        SELECT id, CASE kind WHEN 'test' THEN 'ops' ELSE kind END,
               CASE WHEN model_id IS NULL THEN NULL ELSE 'cohere' END, model_id, status,
               previous_status, event_at, previous_since, started_at, first_observation,
               title, body, notify_type, created_at, attempts, next_attempt_at, last_error,
               done_at, given_up_at
        FROM outbox
        """,
        # The old table's high-water mark moves to the new one (renamed with it below).
        "DELETE FROM sqlite_sequence WHERE name = 'outbox_v2'",
        "UPDATE sqlite_sequence SET name = 'outbox_v2' WHERE name = 'outbox'",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_v2 RENAME TO outbox",
        """
        CREATE INDEX outbox_pending ON outbox (next_attempt_at)
            WHERE done_at IS NULL AND given_up_at IS NULL
        """,
    ),
)

#: Every step, oldest first; step ``i`` reaches version ``i + 2``.
MIGRATIONS: tuple[Migration, ...] = (_V2_STEP,)

#: The version :data:`SCHEMA` creates and this code reads and writes.
SCHEMA_VERSION = 1 + len(MIGRATIONS)

#: The current schema, for an empty file (documented in :mod:`watcher.store.sqlite`).
SCHEMA: tuple[str, ...] = (
    """
    CREATE TABLE models (
        provider        TEXT NOT NULL,
        model_id        TEXT NOT NULL,
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
        stuck_warnings  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (provider, model_id)
    )
    """,
    """
    CREATE TABLE outbox (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        kind              TEXT NOT NULL CHECK (kind IN ('model', 'ops', 'stuck')),
        provider          TEXT,
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
        CHECK ((provider IS NULL) = (model_id IS NULL)),
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
)


def create(db: sqlite3.Connection) -> None:
    """Create the current schema in an empty file. The caller holds the transaction."""
    for statement in SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def upgrade(db: sqlite3.Connection, version: int) -> tuple[Migration, ...]:
    """Run every step after ``version``; returns the steps run (none when current).

    The caller holds the transaction and has turned foreign keys off (SQLite
    ignores that pragma inside a transaction); a step that leaves a dangling
    reference raises :class:`sqlite3.IntegrityError`, so the caller rolls back.
    """
    if not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"no upgrade path from schema version {version}")
    steps = MIGRATIONS[version - 1 :]
    for step in steps:
        for statement in step.statements:
            db.execute(statement)
    if steps:
        dangling = db.execute("PRAGMA foreign_key_check").fetchall()
        if dangling:
            raise sqlite3.IntegrityError(
                f"the upgrade would leave {len(dangling)} dangling reference(s)"
            )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return steps
