"""What people and scripts are shown about the watched models: pure view functions.

``status`` (a table or ``--json``) and the web status page (``/api/status``) show the
same thing: :func:`status_rows` merges the state database's records with the
configured models, :func:`status_document` is the JSON shape both serve. ``events``
shows a model's timeline as :func:`stages`. No I/O, no clock (``now`` is a
parameter), no provider's status names: statuses are shown as their provider spells
them, in text without their scheme's prefix (:func:`short_status`).

Names, statuses and errors come from outside (an API, a discovered job): every row
and stage carries them on one line without control characters and capped
(:func:`watcher.redact.clean_text`; names and statuses ``NAME_LIMIT``, errors
``ERROR_LIMIT`` characters), so no terminal escape, forged line or 10 kB status
reaches a table, a JSON document or the web page. Secrets are scrubbed where text
leaves the process (the command's output, the web layer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from watcher.lifecycle import Event, EventId, ModelKey, StatusScheme, order_events
from watcher.messages import format_duration
from watcher.redact import ERROR_LIMIT, NAME_LIMIT, cap, clean_text

if TYPE_CHECKING:
    from watcher.store.base import ModelRecord, OutboxCounts
    from watcher.store.lease import LeaderInfo

__all__ = [
    "ModelRow",
    "Stage",
    "iso",
    "leader_document",
    "leader_line",
    "one_line",
    "short_status",
    "shorten",
    "stages",
    "stages_from_seen",
    "status_document",
    "status_rows",
    "status_text",
    "time_ago",
]


# --- words and times -------------------------------------------------------------------


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` (``2024-05-01T12:00:00Z``, with a fraction if any)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def time_ago(moment: datetime | None, now: datetime, *, never: str = "never") -> str:
    """``just now``, ``45s ago``, ``2h 14m ago``; ``never`` for None."""
    if moment is None:
        return never
    seconds = (now - moment).total_seconds()
    if seconds < 1:
        return "just now"
    return f"{format_duration(seconds)} ago"


def one_line(text: str | None, limit: int = NAME_LIMIT) -> str | None:
    """Outside text as shown: one line, no control characters, at most ``limit`` characters."""
    if text is None:
        return None
    return cap(clean_text(text), limit)


def shorten(text: str, width: int) -> str:
    """``text`` on one line (no control characters), cut to ``width`` characters with a
    trailing ``…``."""
    text = " ".join(clean_text(text).split())
    return cap(text, width)


def short_status(status: str | None, scheme: StatusScheme | None) -> str:
    """What people read: the status without its scheme's prefix (Cohere's
    ``STATUS_FINETUNING`` -> ``FINETUNING``); ``-`` for None."""
    if not status:
        return "-"
    return status.removeprefix(scheme.prefix) if scheme is not None else status


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model as ``status`` shows it: from the state database and/or the configuration.

    ``polled`` is False for a configured model the daemon has no row for yet.
    """

    key: ModelKey
    name: str | None
    configured: bool
    discovered: bool
    polled: bool
    status: str | None
    status_since: datetime | None
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    failures: int
    pending_notifications: int

    @property
    def model_id(self) -> str:
        return self.key.id

    @property
    def provider(self) -> str:
        return self.key.provider

    @property
    def label(self) -> str:
        return self.name or self.key.id


def status_rows(
    records: Sequence[ModelRecord], configured: Mapping[ModelKey, str | None]
) -> list[ModelRow]:
    """Every model of the database plus the configured ones it does not know yet.

    ``configured`` maps each configured model's key to its configured name (None: no
    name); a configured name wins over the stored one. Ordered by label, then id, then
    provider.
    """
    rows = [
        ModelRow(
            key=_shown_key(record.key),
            name=one_line(configured.get(record.key) or record.name),
            configured=record.key in configured,
            discovered=record.discovered,
            polled=True,
            status=one_line(record.state.status),
            status_since=record.state.status_since,
            last_poll_at=record.last_poll_at,
            last_success_at=record.last_success_at,
            last_error=one_line(record.last_error, ERROR_LIMIT),
            failures=record.failures,
            pending_notifications=record.pending_notifications,
        )
        for record in records
    ]
    known = {record.key for record in records}
    rows.extend(
        ModelRow(
            key=key,
            name=one_line(name),
            configured=True,
            discovered=False,
            polled=False,
            status=None,
            status_since=None,
            last_poll_at=None,
            last_success_at=None,
            last_error=None,
            failures=0,
            pending_notifications=0,
        )
        for key, name in configured.items()
        if key not in known
    )
    return sorted(rows, key=lambda row: (row.label.casefold(), row.key.id, row.key.provider))


def _shown_key(key: ModelKey) -> ModelKey:
    """A stored key as shown (a discovered id is outside text too)."""
    shown = ModelKey(one_line(key.provider) or "", one_line(key.id) or "")
    return key if shown == key else shown


def status_text(row: ModelRow, scheme: StatusScheme | None) -> str:
    """The STATUS cell: the short status (see :func:`short_status`), or why there is none."""
    if not row.polled:
        return "not polled yet"
    if row.last_success_at is None:
        return "unknown"  # only failed polls so far; the error says why
    if row.status is None:
        return "no events yet"
    return short_status(row.status, scheme)


def leader_document(leader: LeaderInfo | None) -> dict[str, Any] | None:
    """The ``leader`` object of the status document: who holds the lease, since when.

    ``{"holder": "host:pid:tag", "epoch": int, "since": time, "expires_at": time,
    "live": bool}``; None without a lease (SQLite: the one daemon always leads; or no
    replica ever led). ``live`` is false when the last lease expired and nobody took it.
    """
    if leader is None:
        return None
    return {
        "holder": one_line(leader.holder),
        "epoch": leader.epoch,
        "since": iso(leader.acquired_at),
        "expires_at": iso(leader.expires_at),
        "live": leader.live,
    }


def leader_line(leader: LeaderInfo | None, now: datetime) -> str | None:
    """``leader: HOLDER (epoch N) since 2h 3m ago``, or that nobody leads; None without a lease."""
    if leader is None:
        return None
    holder = one_line(leader.holder) or "?"
    if not leader.live:
        return (
            f"leader: none (the lease of {holder}, epoch {leader.epoch}, expired "
            f"{time_ago(leader.expires_at, now)})"
        )
    return f"leader: {holder} (epoch {leader.epoch}) since {time_ago(leader.acquired_at, now)}"


def status_document(
    rows: Sequence[ModelRow],
    counts: OutboxCounts,
    *,
    now: datetime,
    state_location: str,
    leader: LeaderInfo | None = None,
) -> dict[str, Any]:
    """The ``status --json`` document (its shape is documented in the README).

    ::

        {"generated_at": "2024-05-01T12:00:00Z", "state_path": "/var/lib/.../watcher.db",
         "models": [{"id": str, "provider": str, "name": str | null, "status": str | null,
                     "status_since": time | null, "last_poll_at": time | null,
                     "last_success_at": time | null, "last_error": str | null,
                     "failures": int, "pending_notifications": int,
                     "discovered": bool, "configured": bool}, ...],
         "outbox": {"pending": int, "done": int, "given_up": int},
         "leader": {"holder": str, "epoch": int, "since": time, "expires_at": time,
                    "live": bool} | null}

    Times are ISO-8601 UTC strings ending in ``Z``. ``status`` is the provider's
    spelling (Cohere's ``STATUS_READY``); null when the model has not been polled
    successfully yet. ``state_location`` is where the state lives (an absolute path, or
    a PostgreSQL URL without its password). ``leader`` (:func:`leader_document`) says
    which replica leads (PostgreSQL); null with SQLite.
    """
    return {
        "generated_at": iso(now),
        "state_path": state_location,
        "models": [
            {
                "id": row.model_id,
                "provider": row.provider,
                "name": row.name,
                "status": row.status,
                "status_since": iso(row.status_since),
                "last_poll_at": iso(row.last_poll_at),
                "last_success_at": iso(row.last_success_at),
                "last_error": row.last_error,
                "failures": row.failures,
                "pending_notifications": row.pending_notifications,
                "discovered": row.discovered,
                "configured": row.configured,
            }
            for row in rows
        ],
        "outbox": {"pending": counts.pending, "done": counts.done, "given_up": counts.given_up},
        "leader": leader_document(leader),
    }


# --- a model's timeline ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage:
    """A run of events with the same status: when it began and when the next began."""

    status: str
    since: datetime
    until: datetime | None  # None: the model is still in this status

    @property
    def duration_seconds(self) -> float | None:
        if self.until is None:
            return None
        return max(0.0, (self.until - self.since).total_seconds())

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.status, self.since)


def stages_from_seen(seen: Iterable[EventId], *, scheme: StatusScheme) -> list[Stage]:
    """The timeline of the identities a state has seen (what the status page shows: the
    newest ``SEEN_LIMIT`` events, so a long history is trimmed at its old end)."""
    return stages((Event(i.status, i.created_at) for i in seen), scheme=scheme)


def stages(events: Iterable[Event], *, scheme: StatusScheme) -> list[Stage]:
    """The model's timeline: events in ``order_events`` order (ties broken by ``scheme``'s
    ranks), repeated statuses merged."""
    starts: list[tuple[str, datetime]] = []
    for event in order_events(events, scheme=scheme):
        status = one_line(event.status) or ""
        if not starts or starts[-1][0] != status:
            starts.append((status, event.created_at))
    return [
        Stage(status, since, starts[i + 1][1] if i + 1 < len(starts) else None)
        for i, (status, since) in enumerate(starts)
    ]
