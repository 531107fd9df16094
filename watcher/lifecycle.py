"""The pure core: what a model's status is now and what must be announced.

Theory of operation
-------------------
Cohere gives us a model's *event history*; its docs contradict themselves on the
order (newest first? ascending?), timestamps tie, pages can be cut anywhere and
``total_size`` is unreliable. So this module never trusts the order it is given:

* Every event is identified by ``(created_at, status)``. Two events with the same
  identity are the same event (a repeated page, a duplicated row).
* Events are ordered by ``EventKey = (created_at, rank(status), status)``. Ties on
  ``created_at`` are broken by the lifecycle rank of the status (QUEUED before
  FINETUNING before READY ...), then by the status string, so the order is total
  and does not depend on how the API sorted, paginated or tied them.
* A model's state remembers the identities it has *seen* (bounded: the newest
  ``SEEN_LIMIT``; anything older than the oldest remembered key is history).
* First observation of a model: record everything as seen, announce only the
  current status (if it is in ``notify_on``) -- never replay old history.
* Afterwards every *unseen* event whose status is in ``notify_on`` and differs from
  the status just before it (in key order) is announced, once, in key order; so
  READY -> DELETED between two polls gives two notices, READY -> OFFLINE -> READY
  announces READY twice, and a repeated READY row announces nothing. A late event
  that only extends a run we already knew backwards (the known event right after
  it has its status: the same READY with another timestamp precision) is not new.
* The current status is that of the newest known event.

Nothing here does I/O, reads a clock or logs: time and randomness are parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

# Statuses as Cohere spells them. An unknown status is data, never an error.
UNSPECIFIED = "STATUS_UNSPECIFIED"
QUEUED = "STATUS_QUEUED"
FINETUNING = "STATUS_FINETUNING"
DEPLOYING_API = "STATUS_DEPLOYING_API"
READY = "STATUS_READY"
FAILED = "STATUS_FAILED"
DELETED = "STATUS_DELETED"
TEMPORARILY_OFFLINE = "STATUS_TEMPORARILY_OFFLINE"
PAUSED = "STATUS_PAUSED"

KNOWN_STATUSES: tuple[str, ...] = (
    UNSPECIFIED,
    QUEUED,
    FINETUNING,
    DEPLOYING_API,
    READY,
    FAILED,
    DELETED,
    TEMPORARILY_OFFLINE,
    PAUSED,
)

#: Statuses after which a model changes rarely: polled at ``settled_interval``.
SETTLED: frozenset[str] = frozenset({READY, FAILED, DELETED})

#: Statuses that end a fine-tune badly (``events --follow`` exits 1 on these).
FAILURES: frozenset[str] = frozenset({FAILED})

#: Default statuses that trigger a notification.
DEFAULT_NOTIFY_ON: frozenset[str] = frozenset({READY, FAILED})

# Tie-break order for events sharing a timestamp: the lifecycle's natural
# progression. Unknown statuses sit after the running stages and before the
# outcomes, so a tie between "something new" and READY still ends on READY.
_RANK: dict[str, int] = {
    UNSPECIFIED: 0,
    QUEUED: 10,
    FINETUNING: 20,
    DEPLOYING_API: 30,
    PAUSED: 40,
    TEMPORARILY_OFFLINE: 50,
    READY: 70,
    FAILED: 80,
    DELETED: 90,
}
_UNKNOWN_RANK = 60

#: How many event identities a state remembers; older events count as history.
SEEN_LIMIT = 64


def status_rank(status: str) -> int:
    """The tie-break rank of ``status`` (see module docstring)."""
    return _RANK.get(status, _UNKNOWN_RANK)


def is_settled(status: str | None) -> bool:
    """True when the model has reached a status that rarely changes."""
    return status in SETTLED


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a model's event history. ``created_at`` is timezone-aware."""

    status: str
    created_at: datetime
    user_id: str | None = None

    @property
    def key(self) -> EventKey:
        return EventKey(self.created_at, status_rank(self.status), self.status)

    @property
    def identity(self) -> EventId:
        return EventId(self.created_at, self.status)


@dataclass(frozen=True, slots=True, order=True)
class EventKey:
    """Total order of events: time, then lifecycle rank, then status name."""

    created_at: datetime
    rank: int
    status: str


@dataclass(frozen=True, slots=True, order=True)
class EventId:
    """What makes two events the same event."""

    created_at: datetime
    status: str

    @property
    def key(self) -> EventKey:
        return EventKey(self.created_at, status_rank(self.status), self.status)


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the core remembers about one model between polls."""

    model_id: str
    status: str | None = None  # None: observed, but no event yet
    status_since: datetime | None = None  # when the current status began
    started_at: datetime | None = None  # the first event we know of
    seen: frozenset[EventId] = field(default_factory=frozenset)
    # Events at or before this key are history even if not in ``seen``.
    floor: EventKey | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification that must be delivered: a model reached ``status``."""

    model_id: str
    status: str
    previous_status: str | None
    event_at: datetime
    previous_since: datetime | None  # when the previous status began
    started_at: datetime | None  # the model's first known event
    first_observation: bool = False

    @property
    def duration_seconds(self) -> float | None:
        """How long the fine-tune ran from its first event to this one."""
        if self.started_at is None:
            return None
        return max(0.0, (self.event_at - self.started_at).total_seconds())

    @property
    def previous_duration_seconds(self) -> float | None:
        """How long the model spent in its previous status."""
        if self.previous_since is None:
            return None
        return max(0.0, (self.event_at - self.previous_since).total_seconds())


@dataclass(frozen=True, slots=True)
class Observation:
    """The outcome of one poll: the new state and what to announce, in order."""

    state: ModelState
    notices: tuple[Notice, ...]
    new_events: int
    changed: bool  # the state differs from the previous one (worth a write)


def order_events(events: Iterable[Event]) -> list[Event]:
    """Deduplicate by identity and sort by ``EventKey`` (see module docstring)."""
    unique: dict[EventId, Event] = {}
    for event in events:
        unique.setdefault(event.identity, event)
    return sorted(unique.values(), key=lambda e: e.key)


def observe(
    previous: ModelState | None,
    model_id: str,
    events: Sequence[Event],
    notify_on: frozenset[str] = DEFAULT_NOTIFY_ON,
) -> Observation:
    """Fold freshly fetched ``events`` into ``previous`` and decide the notices.

    ``previous`` is None the first time a model is observed.
    """
    ordered = order_events(events)
    if previous is None:
        return _first_observation(model_id, ordered, notify_on)

    fresh = [
        e
        for e in ordered
        if e.identity not in previous.seen and (previous.floor is None or e.key > previous.floor)
    ]
    if not fresh:
        return Observation(previous, (), 0, changed=False)

    # Merge what we knew with what is new, to find each new event's predecessor.
    known_ids = sorted(previous.seen, key=lambda i: i.key)
    timeline: list[EventId] = sorted(
        [*known_ids, *(e.identity for e in fresh)], key=lambda i: i.key
    )
    fresh_ids = {e.identity for e in fresh}
    since = _run_starts(timeline)

    notices: list[Notice] = []
    started_at = _earliest(previous.started_at, timeline[0].created_at)
    # Before the oldest remembered event comes the floor (the newest forgotten
    # event), if the state was ever bounded; else there is no status at all.
    floor_status = previous.floor.status if previous.floor is not None else None
    before: EventId | None = None
    for index, ident in enumerate(timeline):
        if ident in fresh_ids:
            prev_status = before.status if before is not None else floor_status
            after = timeline[index + 1] if index + 1 < len(timeline) else None
            # A late event that only extends a run we already knew (same status as the
            # known event after it) is no new transition: the same READY re-reported with
            # another timestamp precision must not be announced twice.
            extends_known_run = (
                after is not None and after not in fresh_ids and after.status == ident.status
            )
            if ident.status in notify_on and ident.status != prev_status and not extends_known_run:
                notices.append(
                    Notice(
                        model_id=model_id,
                        status=ident.status,
                        previous_status=prev_status,
                        event_at=ident.created_at,
                        previous_since=since.get(before) if before is not None else None,
                        started_at=started_at,
                    )
                )
        before = ident

    latest = timeline[-1]
    state = _bounded(
        ModelState(
            model_id=model_id,
            status=latest.status,
            status_since=since[latest],
            started_at=started_at,
            seen=frozenset(timeline),
            floor=previous.floor,
        )
    )
    return Observation(state, tuple(notices), len(fresh), changed=True)


def _first_observation(
    model_id: str, ordered: list[Event], notify_on: frozenset[str]
) -> Observation:
    if not ordered:
        return Observation(ModelState(model_id), (), 0, changed=True)
    timeline = [e.identity for e in ordered]
    since = _run_starts(timeline)
    latest = timeline[-1]
    # The status before the current run, for the message ("FINETUNING -> READY").
    run_start = timeline.index(_first_of_run(timeline))
    prior = timeline[run_start - 1] if run_start > 0 else None
    state = _bounded(
        ModelState(
            model_id=model_id,
            status=latest.status,
            status_since=since[latest],
            started_at=timeline[0].created_at,
            seen=frozenset(timeline),
        )
    )
    notices: tuple[Notice, ...] = ()
    if latest.status in notify_on:
        notices = (
            Notice(
                model_id=model_id,
                status=latest.status,
                previous_status=prior.status if prior else None,
                event_at=since[latest],
                previous_since=since[prior] if prior else None,
                started_at=timeline[0].created_at,
                first_observation=True,
            ),
        )
    return Observation(state, notices, len(timeline), changed=True)


def _run_starts(timeline: Sequence[EventId]) -> dict[EventId, datetime]:
    """For each event, when the run of equal statuses it belongs to began."""
    since: dict[EventId, datetime] = {}
    run_start: datetime | None = None
    prev: str | None = None
    for ident in timeline:
        if ident.status != prev or run_start is None:
            run_start = ident.created_at
        since[ident] = run_start
        prev = ident.status
    return since


def _first_of_run(timeline: Sequence[EventId]) -> EventId:
    last = timeline[-1]
    first = last
    for ident in reversed(timeline):
        if ident.status != last.status:
            break
        first = ident
    return first


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def _bounded(state: ModelState) -> ModelState:
    """Keep the newest ``SEEN_LIMIT`` identities; the rest becomes history."""
    if len(state.seen) <= SEEN_LIMIT:
        return state
    ordered = sorted(state.seen, key=lambda i: i.key)
    dropped, kept = ordered[:-SEEN_LIMIT], ordered[-SEEN_LIMIT:]
    floor = dropped[-1].key
    if state.floor is not None and state.floor > floor:
        floor = state.floor
    return replace(state, seen=frozenset(kept), floor=floor)


# --- Scheduling decisions (pure: the daemon supplies time and randomness) ---


def poll_interval(status: str | None, interval: float, settled_interval: float) -> float:
    """Seconds between two polls of a healthy model in ``status``."""
    return settled_interval if is_settled(status) else interval


def jittered(delay: float, jitter: float, rand: float) -> float:
    """``delay`` shortened by up to ``jitter`` (a fraction), ``rand`` uniform in [0, 1).

    One-sided, so the configured interval stays the worst case for detection: a
    symmetric ±10 % would stretch some gaps to 1.1 × interval.
    """
    return delay * (1.0 - jitter * rand)


def backoff_delay(failures: int, base: float, cap: float, rand: float) -> float:
    """Full-jitter exponential backoff after ``failures`` consecutive failures.

    ``rand`` is uniform in [0, 1). Never less than a tenth of ``base``, so a
    failing model is not hammered when ``rand`` is close to 0.
    """
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * (2.0 ** min(failures - 1, 32)))
    return max(base / 10.0, ceiling * rand)


def stuck_warnings_due(
    status: str | None, status_since: datetime | None, now: datetime, stuck_after: float
) -> int:
    """How many "still stuck" warnings a model should have had by ``now``.

    A model in an unsettled status for ``stuck_after`` seconds earns one warning,
    and one more for every further ``stuck_after``. Settled models and models with
    no status never do. The caller compares with the warnings already sent.
    """
    if status is None or status_since is None or is_settled(status) or stuck_after <= 0:
        return 0
    elapsed = (now - status_since).total_seconds()
    return max(0, int(elapsed // stuck_after))
