"""The pure core: what a model's status is now and what must be announced.

Theory of operation
-------------------
A provider gives us a model's *event history* (or only its current status, as one
synthetic event); Cohere's docs contradict themselves on the order (newest first?
ascending?), timestamps tie, pages can be cut anywhere and ``total_size`` is
unreliable. So this module never trusts the order it is given:

* A model is named by its ``ModelKey = (provider, id)``: two providers may use the
  same job id. Everything below happens within one model.
* Every provider's statuses are mapped onto one common lifecycle by its
  ``StatusScheme`` (a table: status -> phase and tie-break rank, plus the settled
  statuses). This module names no provider's status; an unknown status is data
  (phase ``OTHER``, the scheme's unknown rank), never an error.
* Every event is identified by ``(created_at, status)``. Two events with the same
  identity are the same event (a repeated page, a duplicated row).
* Events are ordered by ``EventKey = (created_at, rank(status), status)``, the rank
  taken from the scheme. Ties on ``created_at`` are broken by the lifecycle rank of
  the status (queued before running before ready ...), then by the status string,
  so the order is total and does not depend on how the API sorted, paginated or
  tied them.
* A model's state remembers the identities it has *seen* (bounded: the newest
  ``SEEN_LIMIT``; anything older than the oldest remembered key is history), as a
  sorted tuple: one per watched model, and a model has seen a few events (a set of
  two costs four times the tuple's memory; membership is by scan, or by a set built
  for the one poll that compares against it).
* First observation of a model: record everything as seen, announce only the
  current status (if ``notify_on`` announces it) -- never replay old history.
* ``notify_on`` holds common words (``"ready"``, ``"failed"``: a phase) and/or
  provider statuses; a status is announced when it is in ``notify_on`` or its phase
  is (``StatusScheme.announces``).
* Afterwards every *unseen* event whose status ``notify_on`` announces and that
  differs from the status just before it (in key order) is announced, once, in key
  order; so READY -> DELETED between two polls gives two notices, READY -> OFFLINE
  -> READY announces READY twice, and a repeated READY row announces nothing. A late
  event that only extends a run we already knew backwards (the known event right
  after it has its status: the same READY with another timestamp precision) is not
  new.
* The current status is that of the newest known event.
* Time has a horizon: an event dated more than ``FUTURE_TOLERANCE`` (one day) after
  ``now`` -- the poll's wall time, passed in by the caller -- is *quarantined*: not
  folded into the state, never announced, counted in ``Observation.quarantined`` (the
  caller logs it). So one bogus event (``9999-12-31T23:59:59Z``, FINETUNING) cannot pin
  a model's status, keep it from settling or hide a later real READY; the notices for
  the real events are exactly those without it. An identity beyond the horizon that a
  state already remembers (written before this rule) is forgotten the same way, and the
  status recomputed from the rest. Without ``now``, nothing is quarantined.

Nothing here does I/O, reads a clock or logs: time and randomness are parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "DEFAULT_NOTIFY_ON",
    "DEFAULT_PROVIDER",
    "FUTURE_TOLERANCE",
    "SEEN_LIMIT",
    "Event",
    "EventId",
    "EventKey",
    "ModelKey",
    "ModelState",
    "Notice",
    "Observation",
    "Phase",
    "StatusScheme",
    "backoff_delay",
    "jittered",
    "observe",
    "order_events",
    "poll_interval",
    "seen_tuple",
    "stuck_warnings_due",
]

#: What a configuration without ``provider:`` means (and what states stored before
#: there were providers belong to).
DEFAULT_PROVIDER = "cohere"


class ModelKey(NamedTuple):
    """How every layer names a model: the provider, then its id there."""

    provider: str
    id: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.id}"


class Phase(StrEnum):
    """The common lifecycle every provider's statuses map onto.

    The values are the common words a configuration may use in ``notify.on``.
    """

    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"
    OTHER = "other"


#: The phases ``notify.on`` may name, in lifecycle order (OTHER is no word to notify on).
PHASE_WORDS: tuple[str, ...] = tuple(p.value for p in Phase if p is not Phase.OTHER)

#: Default announcements: a fine-tune that ended, well or badly, whatever the provider.
DEFAULT_NOTIFY_ON: frozenset[str] = frozenset({Phase.READY.value, Phase.FAILED.value})

#: How many event identities a state remembers; older events count as history.
SEEN_LIMIT = 64

#: How far after the poll's wall time an event may be dated before it is quarantined.
FUTURE_TOLERANCE = timedelta(days=1)


@dataclass(frozen=True, slots=True, eq=False)
class StatusScheme:
    """One provider's statuses as a table (pure data; one instance per provider).

    ``table`` maps each known status to its phase and its tie-break rank (see the
    module docstring); ``settled`` holds the statuses after which a job changes
    rarely (polled at ``settled_interval``, never "stuck"). An unknown status is
    ``Phase.OTHER`` with ``unknown_rank``. ``prefix`` is what a configuration may
    leave out when it names a status (Cohere's ``READY`` means ``STATUS_READY``).
    Compared by identity.
    """

    provider: str
    table: Mapping[str, tuple[Phase, int]]
    settled: frozenset[str]
    unknown_rank: int = 60
    prefix: str = ""
    #: How people say a status, where spelling it out would not do ("fine-tuning").
    labels: Mapping[str, str] = field(default_factory=dict)
    # Split out of ``table`` once: ranks are looked up for every event of every poll.
    _ranks: dict[str, int] = field(init=False, repr=False)
    _phases: dict[str, Phase] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ranks", {s: rank for s, (_, rank) in self.table.items()})
        object.__setattr__(self, "_phases", {s: phase for s, (phase, _) in self.table.items()})

    @property
    def known(self) -> tuple[str, ...]:
        """Every status the provider documents, in table order."""
        return tuple(self.table)

    def phase(self, status: str | None) -> Phase:
        """The common phase of ``status``; ``OTHER`` when unknown or None (no status yet)."""
        if status is None:
            return Phase.OTHER
        return self._phases.get(status, Phase.OTHER)

    def rank(self, status: str) -> int:
        """The tie-break rank of ``status`` (see module docstring)."""
        return self._ranks.get(status, self.unknown_rank)

    def is_settled(self, status: str | None) -> bool:
        """True when the job has reached a status that rarely changes."""
        return status in self.settled

    def is_failure(self, status: str | None) -> bool:
        """True when ``status`` ends the job badly (``events --follow`` exits 1)."""
        return self.phase(status) is Phase.FAILED

    def announces(self, status: str, notify_on: frozenset[str]) -> bool:
        """True when ``notify_on`` names ``status`` itself or its phase's common word."""
        return status in notify_on or self._phases.get(status, Phase.OTHER).value in notify_on

    def canonical(self, word: str) -> str | None:
        """The known status a configuration means by ``word``, else None.

        Case-insensitive, ``prefix`` optional: for Cohere ``ready``, ``READY`` and
        ``STATUS_READY`` all mean ``STATUS_READY``.
        """
        wanted = word.strip().upper()
        for status in self.table:
            name = status.upper()
            if wanted == name or (self.prefix and self.prefix.upper() + wanted == name):
                return status
        return None

    def event_key(self, event: Event | EventId) -> EventKey:
        """Where ``event`` sits in the total order of events (see module docstring)."""
        status = event.status
        return EventKey(event.created_at, self._ranks.get(status, self.unknown_rank), status)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a model's event history. ``created_at`` is timezone-aware."""

    status: str
    created_at: datetime
    user_id: str | None = None

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


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the core remembers about one model between polls.

    ``seen`` is kept sorted (``EventId`` order) and without repeats, so two states that
    have seen the same identities are equal; any other collection given is made so.
    """

    model_id: str
    status: str | None = None  # None: observed, but no event yet
    status_since: datetime | None = None  # when the current status began
    started_at: datetime | None = None  # the first event we know of
    seen: tuple[EventId, ...] = ()
    # Events at or before this key are history even if not in ``seen``.
    floor: EventKey | None = None
    provider: str = DEFAULT_PROVIDER

    def __post_init__(self) -> None:
        if type(self.seen) is not tuple:  # a set (tests, older callers): canonical form
            object.__setattr__(self, "seen", seen_tuple(set(self.seen)))

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.provider, self.model_id)


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
    provider: str = DEFAULT_PROVIDER

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.provider, self.model_id)

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
    quarantined: int = 0  # events dated beyond the horizon (``now`` + FUTURE_TOLERANCE)


def seen_tuple(identities: Iterable[EventId]) -> tuple[EventId, ...]:
    """``ModelState.seen`` of distinct ``identities``: sorted, as a tuple."""
    return tuple(sorted(identities))


def order_events(events: Iterable[Event], *, scheme: StatusScheme) -> list[Event]:
    """Deduplicate by identity and sort by ``EventKey`` (see module docstring)."""
    unique: dict[EventId, Event] = {}
    for event in events:
        unique.setdefault(event.identity, event)
    return sorted(unique.values(), key=scheme.event_key)


def observe(
    previous: ModelState | None,
    model_id: str,
    events: Sequence[Event],
    notify_on: frozenset[str] = DEFAULT_NOTIFY_ON,
    *,
    scheme: StatusScheme,
    now: datetime | None = None,
) -> Observation:
    """Fold freshly fetched ``events`` into ``previous`` and decide the notices.

    ``previous`` is None the first time a model is observed. ``scheme`` is the
    model's provider's: it orders ties and says what ``notify_on`` announces; the
    new state and the notices carry its ``provider``. ``now`` (timezone-aware, the
    poll's wall time) sets the horizon beyond which events are quarantined (see the
    module docstring); None quarantines nothing.
    """
    horizon = _horizon(now)
    if horizon is None:
        return _observe(previous, model_id, events, notify_on, scheme)
    kept = [e for e in events if e.created_at <= horizon]
    purged = previous is not None and any(i.created_at > horizon for i in previous.seen)
    if previous is not None and purged:
        previous = _forget_beyond(previous, horizon, scheme)
    observation = _observe(previous, model_id, kept, notify_on, scheme)
    if purged or len(kept) < len(events):
        observation = replace(
            observation,
            changed=observation.changed or purged,
            quarantined=len(events) - len(kept),
        )
    return observation


def _horizon(now: datetime | None) -> datetime | None:
    """``now`` + ``FUTURE_TOLERANCE``; None without ``now`` (or at the end of the calendar)."""
    if now is None:
        return None
    try:
        return now + FUTURE_TOLERANCE
    except OverflowError:
        return None


def _forget_beyond(state: ModelState, horizon: datetime, scheme: StatusScheme) -> ModelState:
    """``state`` without the identities dated after ``horizon``, its status recomputed."""
    kept = sorted((i for i in state.seen if i.created_at <= horizon), key=scheme.event_key)
    if not kept:
        status = state.floor.status if state.floor is not None else None
        return replace(state, status=status, status_since=None, seen=())
    latest = kept[-1]
    since = _run_starts(kept)
    return replace(state, status=latest.status, status_since=since[latest], seen=seen_tuple(kept))


def _observe(
    previous: ModelState | None,
    model_id: str,
    events: Sequence[Event],
    notify_on: frozenset[str],
    scheme: StatusScheme,
) -> Observation:
    ordered = order_events(events, scheme=scheme)
    if previous is None:
        return _first_observation(model_id, ordered, notify_on, scheme)

    key = scheme.event_key
    known = frozenset(previous.seen)  # for this poll only: the state keeps a small tuple
    fresh = [
        e
        for e in ordered
        if e.identity not in known and (previous.floor is None or key(e) > previous.floor)
    ]
    if not fresh:
        return Observation(previous, (), 0, changed=False)

    # Merge what we knew with what is new, to find each new event's predecessor.
    timeline: list[EventId] = sorted([*previous.seen, *(e.identity for e in fresh)], key=key)
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
            if (
                ident.status != prev_status
                and not extends_known_run
                and scheme.announces(ident.status, notify_on)
            ):
                notices.append(
                    Notice(
                        model_id=model_id,
                        status=ident.status,
                        previous_status=prev_status,
                        event_at=ident.created_at,
                        previous_since=since.get(before) if before is not None else None,
                        started_at=started_at,
                        provider=scheme.provider,
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
            seen=seen_tuple(timeline),
            floor=previous.floor,
            provider=scheme.provider,
        ),
        scheme,
    )
    return Observation(state, tuple(notices), len(fresh), changed=True)


def _first_observation(
    model_id: str, ordered: list[Event], notify_on: frozenset[str], scheme: StatusScheme
) -> Observation:
    if not ordered:
        return Observation(ModelState(model_id, provider=scheme.provider), (), 0, changed=True)
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
            seen=seen_tuple(timeline),
            provider=scheme.provider,
        ),
        scheme,
    )
    notices: tuple[Notice, ...] = ()
    if scheme.announces(latest.status, notify_on):
        notices = (
            Notice(
                model_id=model_id,
                status=latest.status,
                previous_status=prior.status if prior else None,
                event_at=since[latest],
                previous_since=since[prior] if prior else None,
                started_at=timeline[0].created_at,
                first_observation=True,
                provider=scheme.provider,
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


def _bounded(state: ModelState, scheme: StatusScheme) -> ModelState:
    """Keep the newest ``SEEN_LIMIT`` identities; the rest becomes history."""
    if len(state.seen) <= SEEN_LIMIT:
        return state
    ordered = sorted(state.seen, key=scheme.event_key)
    dropped, kept = ordered[:-SEEN_LIMIT], ordered[-SEEN_LIMIT:]
    floor = scheme.event_key(dropped[-1])
    if state.floor is not None and state.floor > floor:
        floor = state.floor
    return replace(state, seen=seen_tuple(kept), floor=floor)


# --- Scheduling decisions (pure: the caller supplies time and randomness) ---


def poll_interval(settled: bool, interval: float, settled_interval: float) -> float:
    """Seconds between two polls of a healthy model (``settled``: its status rarely changes)."""
    return settled_interval if settled else interval


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
    status: str | None,
    status_since: datetime | None,
    now: datetime,
    stuck_after: float,
    *,
    settled: bool,
) -> int:
    """How many "still stuck" warnings a model should have had by ``now``.

    A model in an unsettled status for ``stuck_after`` seconds earns one warning,
    and one more for every further ``stuck_after``. Settled models (``settled``, from
    the provider's scheme) and models with no status never do. The caller compares
    with the warnings already sent.
    """
    if status is None or status_since is None or settled or stuck_after <= 0:
        return 0
    elapsed = (now - status_since).total_seconds()
    return max(0, int(elapsed // stuck_after))
