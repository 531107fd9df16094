"""Moving house: a SQLite state copied into PostgreSQL, nothing seen or owed lost.

``finetune-watcher state copy --from state/watcher.db --to postgresql://…`` reads every
row of the SQLite file -- the models with their states, seen sets, floors, poll
bookkeeping and stuck-warning counts; every outbox row with its id, attempts and
retry time, pending or done or given up; every delivery -- and writes them into the
PostgreSQL schema in one transaction (:meth:`PostgresStore.import_rows`), keeping the
outbox ids (a delivery names its row by id) and moving the id sequence past them.

Decisions
---------
* The source is opened as the daemon opens it (:meth:`SqliteStore.open`): locked, so a
  daemon still running on it is refused (``StateLockedError``, exit 75: stop it first),
  and upgraded to the current schema version, so the columns are the ones below.
* The target must hold no state (no model, outbox or delivery row) and no live lease
  (a replica running on it): copying into a running system would mix two histories.
  ``force`` replaces what the target holds (its lease and epoch are kept, so a fenced
  replica that comes back later is still refused).
* Only SQLite -> PostgreSQL is supported; other directions are refused with one line.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from watcher.errors import StateError

__all__ = ["StateRows", "copy_state", "is_database_url", "read_sqlite_rows"]

_TIMES = {
    "models": ("status_since", "started_at", "last_poll_at", "last_success_at"),
    "outbox": (
        "event_at",
        "previous_since",
        "started_at",
        "created_at",
        "next_attempt_at",
        "done_at",
        "given_up_at",
    ),
    "deliveries": ("delivered_at",),
}
_FLAGS = {"models": ("discovered", "observed"), "outbox": ("first_observation",)}
_JSON = {"models": ("seen", "floor")}


@dataclass(frozen=True, slots=True)
class StateRows:
    """Every row of a state, by table, as column -> value (times aware, flags bool)."""

    models: list[dict[str, Any]]
    outbox: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]

    def counts(self) -> dict[str, int]:
        return {
            "models": len(self.models),
            "outbox": len(self.outbox),
            "pending": sum(1 for r in self.outbox if r["done_at"] is None and not r["given_up_at"]),
            "deliveries": len(self.deliveries),
        }


def is_database_url(location: str) -> bool:
    """True for ``postgresql://`` / ``postgres://`` (else a SQLite path)."""
    return location.split("://", 1)[0].lower() in ("postgresql", "postgres") and "://" in location


def _decode(table: str, row: sqlite3.Row) -> dict[str, Any]:
    values = dict(row)
    for column in _TIMES.get(table, ()):
        text = values.get(column)
        values[column] = datetime.fromisoformat(text) if text else None
    for column in _FLAGS.get(table, ()):
        values[column] = bool(values[column])
    for column in _JSON.get(table, ()):
        text = values.get(column)
        values[column] = json.loads(text) if text else None
    return values


async def read_sqlite_rows(path: Path) -> StateRows:
    """Every row of the SQLite state at ``path`` (locked and upgraded while it is read)."""
    from watcher.store.sqlite import SqliteStore

    store = await SqliteStore.open(path)  # the lock: no daemon may write meanwhile
    try:
        return _read_tables(path)
    finally:
        await store.aclose()


def _read_tables(path: Path) -> StateRows:
    """The rows, through a read-only connection of our own (the store's is private)."""
    try:
        with sqlite3.connect(f"file:{os.path.realpath(path)}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            tables = {
                table: [_decode(table, row) for row in db.execute(query)]
                for table, query in (
                    ("models", "SELECT * FROM models ORDER BY provider, model_id"),
                    ("outbox", "SELECT * FROM outbox ORDER BY id"),
                    ("deliveries", "SELECT * FROM deliveries ORDER BY outbox_id, target_key"),
                )
            }
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"cannot read the state file {path}: {exc}") from exc
    return StateRows(tables["models"], tables["outbox"], tables["deliveries"])


async def copy_state(
    source: str, target: str, *, password_file: Path | None = None, force: bool = False
) -> tuple[StateRows, str]:
    """Copy the SQLite state at ``source`` into the PostgreSQL database at ``target``.

    Returns the rows copied and the target's location (its URL without the password).
    Raises :class:`StateError` when a direction is not supported, the target is not
    empty (without ``force``) or a replica leads on it.
    """
    from watcher.store.postgres import PostgresStore

    if is_database_url(source) or not is_database_url(target):
        raise StateError(
            "state copy moves a SQLite state into PostgreSQL: --from PATH --to postgresql://…"
        )
    rows = await read_sqlite_rows(Path(source))
    store = await PostgresStore.open(target, password_file=password_file)
    try:
        await store.import_rows(rows.models, rows.outbox, rows.deliveries, replace=force)
        return rows, store.location
    finally:
        await store.aclose()
