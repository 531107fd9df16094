"""The store seam: what the daemon, the commands and the web need from persistence.

Two protocols, one per job -- :class:`StateStore` (what the core decided about
each model, plus poll bookkeeping) and :class:`Outbox` (notifications owed, and
which target already has each) -- and the records they exchange. A backend
(``watcher.store.sqlite``, later ``watcher.store.postgres``) implements both on
one object, :class:`Store`, because a state change and the notices it causes are
written in *one* transaction (:meth:`StateStore.record_observation`).

Every method is ``async`` so that a networked backend fits; the SQLite backend
runs its sub-millisecond statements on the event-loop thread (see its module
docstring for why a thread hop would cost more than it saves).

A model is keyed by :class:`~watcher.lifecycle.ModelKey` ``(provider, id)``: two
providers may use the same job id. Nothing here names a provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from watcher.lifecycle import ModelKey, ModelState, Notice

__all__ = ["ModelRecord", "Outbox", "OutboxCounts", "OutboxItem", "StateStore", "Store"]


@dataclass(frozen=True, slots=True)
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

    @property
    def key(self) -> ModelKey:
        return self.state.key


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One pending notification.

    ``kind == "model"``: ``notice`` is set (rendered at delivery time) and the
    pre-rendered fields are None. ``"ops"`` / ``"stuck"``: ``title``, ``body`` and
    ``notify_type`` are set and ``notice`` is None. ``model`` is the model the item
    is about (None for daemon-wide ops messages).
    """

    id: int
    kind: str
    model: ModelKey | None
    notice: Notice | None
    title: str | None
    body: str | None
    notify_type: str | None
    created_at: datetime
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    pending: int
    done: int
    given_up: int
    #: When the oldest pending item was queued (None: nothing pending); the same query.
    #: Not compared: two counts are equal when their numbers are.
    oldest_pending_at: datetime | None = field(default=None, compare=False)


class StateStore(Protocol):
    """Model states as the core last decided them, and poll bookkeeping."""

    async def load_states(self) -> dict[ModelKey, ModelState]:
        """Every model's state, by key. Models that only ever failed to poll are absent."""
        ...

    async def model_records(self) -> list[ModelRecord]:
        """Every known model with its poll bookkeeping, ordered by name (else id)."""
        ...

    async def record_observation(
        self,
        state: ModelState,
        notices: Sequence[Notice],
        *,
        polled_at: datetime,
        name: str | None = None,
        discovered: bool = False,
    ) -> list[int]:
        """The new state and its notices' outbox rows in one transaction; returns the ids."""
        ...

    async def record_polls(self, polled: Sequence[tuple[ModelKey, datetime]]) -> None:
        """Batched successful polls that changed nothing (only models that have a row)."""
        ...

    async def record_poll_failure(
        self, model: ModelKey, *, polled_at: datetime, error: str, failures: int
    ) -> None:
        """A failed poll; ``failures`` is the new count of consecutive failures."""
        ...

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
        ...

    async def stuck_warning_counts(self) -> dict[ModelKey, int]:
        """Models warned as stuck in their current status, and how often."""
        ...


class Outbox(Protocol):
    """Notifications owed, retried with backoff, delivered once per target."""

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
        ...

    async def due_notifications(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Pending items whose next attempt is at or before ``now``, oldest first."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest next attempt among pending items; None when nothing is pending."""
        ...

    async def delivered_targets(self, outbox_id: int) -> set[str]:
        """Keys of the targets that already received item ``outbox_id``."""
        ...

    async def mark_delivered(self, outbox_id: int, target_key: str, at: datetime) -> None:
        """Remember that ``target_key`` received the item. Idempotent."""
        ...

    async def mark_done(self, outbox_id: int, at: datetime) -> None:
        """Every target received the item: it leaves the pending set."""
        ...

    async def schedule_retry(
        self, outbox_id: int, *, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        """Record a failed attempt and when to try again."""
        ...

    async def pull_forward_retries(self, not_after: datetime) -> int:
        """Make every pending retry due no later than ``not_after``; returns how many moved."""
        ...

    async def give_up(self, outbox_id: int, *, at: datetime, reason: str) -> None:
        """Stop retrying the item; it stays, counted as given up."""
        ...

    async def outbox_counts(self) -> OutboxCounts: ...


class Store(StateStore, Outbox, Protocol):
    """One backend's open state: both protocols on one object, plus its lifetime."""

    #: Where the state lives, for logs and ``status`` (a path or a redacted URL).
    location: str

    async def ping(self) -> bool:
        """True when the backend is usable (for ``/readyz``, so cheap enough for every probe).

        At least: it answers a trivial query. A backend that can find damage to its data
        while running says so here (SQLite: a file gone, corrupt or truncated), and then
        keeps answering False and refuses every statement with a ``StateError``.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection and the lock. Idempotent."""
        ...
