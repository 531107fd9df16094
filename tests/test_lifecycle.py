"""The pure core: tables of polls and notices, and properties that must hold for any history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher import lifecycle
from watcher.lifecycle import (
    DEFAULT_NOTIFY_ON,
    DEFAULT_PROVIDER,
    PHASE_WORDS,
    SEEN_LIMIT,
    Event,
    EventKey,
    ModelKey,
    ModelState,
    Notice,
    Observation,
    Phase,
    StatusScheme,
    backoff_delay,
    jittered,
    poll_interval,
    seen_tuple,
    stuck_warnings_due,
)
from watcher.providers.cohere import (
    COHERE_SCHEME,
    DELETED,
    DEPLOYING_API,
    FAILED,
    FINETUNING,
    KNOWN_STATUSES,
    PAUSED,
    QUEUED,
    READY,
    SETTLED,
    TEMPORARILY_OFFLINE,
    UNSPECIFIED,
)

MODEL = "7a317d97-4d05-427d-9396-f31b9fb92c55"
NEW = "STATUS_SOMETHING_NEW"
T0 = datetime(2024, 1, 17, 20, 11, 45, 267960, tzinfo=UTC)


# Every table runs on Cohere's scheme: its statuses are the ones the API examples use.
SCHEME = COHERE_SCHEME
key = SCHEME.event_key


def observe(
    previous: ModelState | None,
    model_id: str,
    events: Sequence[Event],
    notify_on: frozenset[str] = DEFAULT_NOTIFY_ON,
) -> Observation:
    """The core's ``observe`` with ``scheme=COHERE_SCHEME``."""
    return lifecycle.observe(previous, model_id, events, notify_on, scheme=SCHEME)


def order_events(events: Sequence[Event]) -> list[Event]:
    """The core's ``order_events`` with ``scheme=COHERE_SCHEME``."""
    return lifecycle.order_events(events, scheme=SCHEME)


def at(seconds: float) -> datetime:
    """The instant ``seconds`` after ``T0``."""
    return T0 + timedelta(seconds=seconds)


def ev(status: str, seconds: float, user_id: str | None = None) -> Event:
    """An event of ``status`` ``seconds`` after ``T0``."""
    return Event(status=status, created_at=at(seconds), user_id=user_id)


# (status, previous_status, seconds after T0, first_observation): what a table expects.
Brief = tuple[str, str | None, float, bool]


def brief(notice: Notice) -> Brief:
    return (
        notice.status,
        notice.previous_status,
        (notice.event_at - T0).total_seconds(),
        notice.first_observation,
    )


def run_polls(
    polls: Sequence[Sequence[Event]],
    notify_on: frozenset[str] = DEFAULT_NOTIFY_ON,
    state: ModelState | None = None,
) -> tuple[ModelState | None, list[Notice], list[Observation]]:
    """Feed each poll's events to ``observe`` in turn; every notice, in order."""
    notices: list[Notice] = []
    observations: list[Observation] = []
    for events in polls:
        observation = observe(state, MODEL, events, notify_on)
        observations.append(observation)
        notices.extend(observation.notices)
        state = observation.state
    return state, notices, observations


# The API reference's own example: four events, all with the same created_at.
API_EXAMPLE = [ev(QUEUED, 0), ev(FINETUNING, 0), ev(DEPLOYING_API, 0), ev(READY, 0)]


class TestObserveFirstObservation:
    @pytest.mark.parametrize(
        ("history", "expected"),
        [
            ([ev(QUEUED, 0), ev(FINETUNING, 10), ev(READY, 100)], [(READY, FINETUNING, 100, True)]),
            ([ev(QUEUED, 0), ev(FINETUNING, 10)], []),
            ([ev(QUEUED, 0), ev(FINETUNING, 10), ev(FAILED, 50)], [(FAILED, FINETUNING, 50, True)]),
            ([ev(READY, 5)], [(READY, None, 5, True)]),
            ([ev(FINETUNING, 0), ev(READY, 1), ev(DELETED, 2)], []),
            (API_EXAMPLE, [(READY, DEPLOYING_API, 0, True)]),
            (list(reversed(API_EXAMPLE)), [(READY, DEPLOYING_API, 0, True)]),
        ],
        ids=[
            "ready",
            "finetuning",
            "failed",
            "ready-alone",
            "deleted-not-in-notify-on",
            "api-example-ties",
            "api-example-ties-reversed",
        ],
    )
    def test_announces_only_the_current_status(
        self, history: list[Event], expected: list[Brief]
    ) -> None:
        """A first observation announces the current status if it is in notify_on, never history."""
        observation = observe(None, MODEL, history)

        assert [brief(n) for n in observation.notices] == expected
        assert observation.changed is True
        assert observation.new_events == len(history)

    def test_empty_history(self) -> None:
        """A model without events is remembered with no status and announces nothing."""
        observation = observe(None, MODEL, [])

        assert observation.notices == ()
        assert observation.state == ModelState(MODEL)
        assert observation.state.status is None
        assert observation.changed is True

    def test_notice_describes_the_current_run(self) -> None:
        """The notice dates the current run's start and measures the run before it."""
        history = [ev(QUEUED, 0), ev(FINETUNING, 10), ev(FINETUNING, 40), ev(READY, 100)]
        history += [ev(READY, 130)]

        (notice,) = observe(None, MODEL, history).notices

        assert notice.model_id == MODEL
        assert notice.event_at == at(100)
        assert notice.previous_since == at(10)
        assert notice.started_at == at(0)
        assert notice.duration_seconds == 100
        assert notice.previous_duration_seconds == 90

    def test_state_records_everything_as_seen(self) -> None:
        """The state holds the current status, since when, the first event and every identity."""
        history = [ev(QUEUED, 0), ev(FINETUNING, 10), ev(READY, 100), ev(READY, 130)]

        state = observe(None, MODEL, history).state

        assert state.status == READY
        assert state.status_since == at(100)
        assert state.started_at == at(0)
        assert state.seen == tuple(sorted(e.identity for e in history))
        assert state.floor is None

    def test_api_example_settles_on_ready(self) -> None:
        """Four events sharing one timestamp end on READY whatever order the API sent them in."""
        for history in (API_EXAMPLE, list(reversed(API_EXAMPLE))):
            state = observe(None, MODEL, history).state

            assert state.status == READY
            assert state.status_since == at(0)
            assert state.started_at == at(0)


class TestObserveLaterPolls:
    @pytest.mark.parametrize(
        ("polls", "notify_on", "expected"),
        [
            (
                [[ev(QUEUED, 0)], [ev(QUEUED, 0), ev(FINETUNING, 10)], [ev(READY, 100)]],
                DEFAULT_NOTIFY_ON,
                [(READY, FINETUNING, 100, False)],
            ),
            (
                [[ev(QUEUED, 0), ev(FINETUNING, 1)], [ev(READY, 2), ev(DELETED, 3)]],
                DEFAULT_NOTIFY_ON | {DELETED},
                [(READY, FINETUNING, 2, False), (DELETED, READY, 3, False)],
            ),
            (
                [[ev(DELETED, 3), ev(READY, 2), ev(FINETUNING, 1)], []],
                DEFAULT_NOTIFY_ON | {DELETED},
                [(DELETED, READY, 3, True)],
            ),
            (
                [[ev(FINETUNING, 0)], [ev(READY, 1), ev(TEMPORARILY_OFFLINE, 2), ev(READY, 3)]],
                DEFAULT_NOTIFY_ON,
                [(READY, FINETUNING, 1, False), (READY, TEMPORARILY_OFFLINE, 3, False)],
            ),
            (
                [
                    [ev(FINETUNING, 0)],
                    [ev(READY, 1)],
                    [ev(TEMPORARILY_OFFLINE, 2)],
                    [ev(READY, 3)],
                ],
                DEFAULT_NOTIFY_ON,
                [(READY, FINETUNING, 1, False), (READY, TEMPORARILY_OFFLINE, 3, False)],
            ),
            (
                [[ev(FINETUNING, 0)], [ev(READY, 1), ev(READY, 1), ev(READY, 1)], [ev(READY, 1)]],
                DEFAULT_NOTIFY_ON,
                [(READY, FINETUNING, 1, False)],
            ),
            (
                [[ev(FINETUNING, 0), ev(READY, 1)], [ev(READY, 5)], [ev(READY, 9)]],
                DEFAULT_NOTIFY_ON,
                [(READY, FINETUNING, 1, True)],
            ),
            (
                [[], [ev(QUEUED, 0), ev(FINETUNING, 1), ev(READY, 2), ev(DELETED, 3)]],
                DEFAULT_NOTIFY_ON | {DELETED},
                [(READY, FINETUNING, 2, False), (DELETED, READY, 3, False)],
            ),
            (
                [[], [ev(QUEUED, 0)], [ev(FAILED, 4)], [ev(READY, 6)]],
                DEFAULT_NOTIFY_ON,
                [(FAILED, QUEUED, 4, False), (READY, FAILED, 6, False)],
            ),
            (
                [[], [ev(READY, 0)]],
                DEFAULT_NOTIFY_ON,
                [(READY, None, 0, False)],
            ),
            (
                [[ev(FINETUNING, 0)], [ev(NEW, 1)], [ev(READY, 2)]],
                DEFAULT_NOTIFY_ON | {NEW},
                [(NEW, FINETUNING, 1, False), (READY, NEW, 2, False)],
            ),
            (
                [[ev(FINETUNING, 0)], [ev(NEW, 1), ev(READY, 1)]],
                DEFAULT_NOTIFY_ON,
                [(READY, NEW, 1, False)],
            ),
            (
                [[ev(QUEUED, 0)], list(reversed(API_EXAMPLE))],
                DEFAULT_NOTIFY_ON,
                [(READY, DEPLOYING_API, 0, False)],
            ),
        ],
        ids=[
            "queued-finetuning-ready-across-polls",
            "ready-then-deleted-between-two-polls",
            "ready-then-deleted-first-seen-together",
            "ready-offline-ready-in-one-poll",
            "ready-offline-ready-across-polls",
            "repeated-identical-rows-are-one-event",
            "repeated-ready-with-new-timestamp-is-no-transition",
            "empty-first-then-whole-history",
            "empty-first-then-event-by-event",
            "empty-first-then-ready-has-no-previous",
            "unknown-status-is-data",
            "unknown-status-ties-before-ready",
            "api-example-ties-after-queued",
        ],
    )
    def test_announces_each_new_transition_once(
        self,
        polls: list[list[Event]],
        notify_on: frozenset[str],
        expected: list[Brief],
    ) -> None:
        """Every unseen event in notify_on that changes the status is announced once, in order."""
        _, notices, _ = run_polls(polls, notify_on)

        assert [brief(n) for n in notices] == expected

    def test_nothing_new(self) -> None:
        """A poll that brings no unseen event returns the same state, unchanged, with no notice."""
        history = [ev(QUEUED, 0), ev(FINETUNING, 10)]
        state = observe(None, MODEL, history).state

        for events in (history, list(reversed(history)), history * 3, history[:1], []):
            observation = observe(state, MODEL, events)

            assert observation == Observation(state, (), 0, changed=False)

    def test_transition_across_polls_carries_durations(self) -> None:
        """A READY notice names the previous status, since when, and how long the fine-tune ran."""
        polls = [[ev(QUEUED, 0)], [ev(QUEUED, 0), ev(FINETUNING, 10)], [ev(READY, 100)]]

        state, notices, observations = run_polls(polls)

        (notice,) = notices
        assert notice == Notice(
            model_id=MODEL,
            status=READY,
            previous_status=FINETUNING,
            event_at=at(100),
            previous_since=at(10),
            started_at=at(0),
        )
        assert notice.duration_seconds == 100
        assert notice.previous_duration_seconds == 90
        assert [o.new_events for o in observations] == [1, 1, 1]
        assert all(o.changed for o in observations)
        assert state is not None
        assert (state.status, state.status_since, state.started_at) == (READY, at(100), at(0))

    def test_previous_since_spans_polls(self) -> None:
        """The previous status's start is found even when its run began in an earlier poll."""
        polls = [[ev(FINETUNING, 10)], [ev(FINETUNING, 20)], [ev(FINETUNING, 30), ev(FAILED, 70)]]

        _, (notice,), _ = run_polls(polls)

        assert (notice.previous_status, notice.previous_since) == (FINETUNING, at(10))
        assert notice.previous_duration_seconds == 60

    def test_status_follows_the_newest_event(self) -> None:
        """The current status and its start follow the newest event, whatever notify_on says."""
        polls = [[ev(READY, 0)], [ev(TEMPORARILY_OFFLINE, 5), ev(TEMPORARILY_OFFLINE, 8)]]

        state, notices, _ = run_polls(polls)

        assert state is not None
        assert (state.status, state.status_since) == (TEMPORARILY_OFFLINE, at(5))
        assert [brief(n) for n in notices] == [(READY, None, 0, True)]

    def test_newest_first_and_oldest_first_are_the_same(self) -> None:
        """The order the API lists events in changes neither the state nor the notices."""
        older = [ev(QUEUED, 0), ev(FINETUNING, 10)]
        newer = [*older, ev(READY, 100), ev(TEMPORARILY_OFFLINE, 200), ev(READY, 300)]
        state = observe(None, MODEL, older).state

        oldest_first = observe(state, MODEL, newer)
        newest_first = observe(state, MODEL, list(reversed(newer)))

        assert oldest_first == newest_first
        assert len(oldest_first.notices) == 2

    def test_late_event_is_announced_if_it_is_a_transition_in_key_order(self) -> None:
        """An unseen event older than the newest known one is placed in key order and announced once
        if it differs from the status just before it; it does not change the current status."""
        state = observe(None, MODEL, [ev(QUEUED, 0), ev(READY, 30)]).state

        late = observe(state, MODEL, [ev(QUEUED, 0), ev(FAILED, 20), ev(READY, 30)])
        again = observe(late.state, MODEL, [ev(QUEUED, 0), ev(FAILED, 20), ev(READY, 30)])

        assert [brief(n) for n in late.notices] == [(FAILED, QUEUED, 20, False)]
        assert late.notices[0].previous_since == at(0)
        assert late.state.status == READY
        assert late.state.status_since == at(30)
        assert again.notices == ()
        assert again.changed is False

    def test_late_event_repeating_its_predecessor_is_silent(self) -> None:
        """A late event with the same status as the event just before it in key order is no
        transition, so it is recorded and not announced."""
        state = observe(None, MODEL, [ev(FINETUNING, 0), ev(READY, 10), ev(READY, 30)]).state

        late = observe(state, MODEL, [ev(READY, 20)])

        assert late.notices == ()
        assert late.new_events == 1
        assert late.changed is True
        assert ev(READY, 20).identity in late.state.seen

    def test_late_copy_of_a_known_status_is_not_announced_again(self) -> None:
        """The READY we announced, re-reported with another timestamp (a precision change,
        a late duplicate), only extends the known READY run backwards: no second notice."""
        first = observe(None, MODEL, [ev(QUEUED, 0), ev(FINETUNING, 10)])
        ready = observe(first.state, MODEL, [ev(QUEUED, 0), ev(FINETUNING, 10), ev(READY, 30)])
        assert [n.status for n in ready.notices] == [READY]

        copy = observe(ready.state, MODEL, [ev(FINETUNING, 10), ev(READY, 20), ev(READY, 30)])

        assert copy.notices == ()
        assert copy.state.status == READY

    def test_late_event_older_than_everything(self) -> None:
        """A late event older than every known one has no predecessor and moves started_at back."""
        state = observe(None, MODEL, [ev(FINETUNING, 10)]).state

        late = observe(state, MODEL, [ev(FAILED, 5), ev(FINETUNING, 10)])

        assert [brief(n) for n in late.notices] == [(FAILED, None, 5, False)]
        assert late.state.started_at == at(5)
        assert late.state.status == FINETUNING

    def test_unknown_status_only_is_data(self) -> None:
        """A history made only of a status nobody knows is kept as the current status."""
        observation = observe(None, MODEL, [ev(NEW, 0), ev(NEW, 1)])

        assert observation.state.status == NEW
        assert observation.state.status_since == at(0)
        assert observation.notices == ()


class TestObserveSeenLimit:
    @staticmethod
    def alternating(count: int, start: int = 0) -> list[Event]:
        """``count`` events one second apart, flapping READY / TEMPORARILY_OFFLINE."""
        return [
            ev(READY if i % 2 == 0 else TEMPORARILY_OFFLINE, i) for i in range(start, start + count)
        ]

    def test_first_observation_is_bounded(self) -> None:
        """More than SEEN_LIMIT events keep the newest SEEN_LIMIT identities and set the floor."""
        history = self.alternating(SEEN_LIMIT + 36)

        state = observe(None, MODEL, history).state

        assert len(state.seen) == SEEN_LIMIT
        assert set(state.seen) == {e.identity for e in history[-SEEN_LIMIT:]}
        assert state.floor == key(history[35])
        assert state.started_at == at(0)

    def test_later_poll_is_bounded(self) -> None:
        """A later poll that takes the state past SEEN_LIMIT drops the oldest identities."""
        history = self.alternating(SEEN_LIMIT + 10)
        state = observe(None, MODEL, history[: SEEN_LIMIT - 4]).state
        assert state.floor is None

        observation = observe(state, MODEL, history)

        assert len(observation.state.seen) == SEEN_LIMIT
        assert observation.state.floor == key(history[9])
        assert observation.new_events == 14
        assert len(observation.notices) == 7  # every new READY follows an OFFLINE

    def test_history_below_the_floor_is_never_announced(self) -> None:
        """Events at or below the floor are history: resent or late, they announce nothing."""
        history = self.alternating(SEEN_LIMIT + 36)
        state = observe(None, MODEL, history).state
        assert state.floor is not None

        replay = observe(state, MODEL, history)
        # FAILED between two forgotten events; QUEUED ties with the floor event but ranks below it.
        late = observe(state, MODEL, [*history, ev(FAILED, 10.5), ev(QUEUED, 35)])

        assert replay == Observation(state, (), 0, changed=False)
        assert late == Observation(state, (), 0, changed=False)

    def test_floor_only_rises(self) -> None:
        """The floor never moves back, however many polls bound the state."""
        history = self.alternating(3 * SEEN_LIMIT)
        state: ModelState | None = None
        floors: list[EventKey] = []

        for end in range(SEEN_LIMIT + 1, len(history) + 1, 7):
            state = observe(state, MODEL, history[:end]).state
            assert state.floor is not None
            floors.append(state.floor)
            assert len(state.seen) <= SEEN_LIMIT

        assert floors == sorted(floors)

    def test_late_event_just_above_the_floor(self) -> None:
        """An unseen event between the floor and the oldest remembered event follows the floor
        event, so repeating the floor's status is no transition."""
        history = [ev(READY, 0), *self.alternating(SEEN_LIMIT, start=10)]
        state = observe(None, MODEL, history).state
        assert state.floor == key(ev(READY, 0))

        same = observe(state, MODEL, [ev(READY, 5)])
        other = observe(state, MODEL, [ev(FAILED, 5)])

        assert same.notices == ()
        assert same.changed is True
        assert [brief(n) for n in other.notices] == [(FAILED, READY, 5, False)]


# --- Properties --------------------------------------------------------------------------------

STATUSES = (*KNOWN_STATUSES, NEW)

# Few distinct timestamps, so ties are frequent; long histories go past SEEN_LIMIT.
events_st = st.builds(ev, st.sampled_from(STATUSES), st.integers(min_value=0, max_value=12))
long_events_st = st.builds(ev, st.sampled_from(STATUSES), st.integers(min_value=0, max_value=30))
small_histories = st.lists(events_st, max_size=40)
histories = st.one_of(
    small_histories, st.lists(long_events_st, min_size=SEEN_LIMIT + 6, max_size=100)
)
# Provider statuses and common words (a phase) mixed, as notify.on allows.
notify_ons = st.one_of(
    st.just(DEFAULT_NOTIFY_ON),
    st.frozensets(st.sampled_from((*STATUSES, *PHASE_WORDS)), min_size=1),
)

# Scrambling uses a Random seeded by hypothesis: replayable, and far cheaper than recording
# every shuffle step as a hypothesis choice (the histories themselves still shrink).
randoms = st.randoms(use_true_random=True)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


def scrambled(rnd: Random, events: list[Event]) -> list[Event]:
    """``events`` as an API might page them: any order, possibly reversed, rows repeated."""
    shuffled = list(events)
    rnd.shuffle(shuffled)
    if rnd.random() < 0.3:
        shuffled.sort(key=key, reverse=True)  # newest first, as one doc page says
    if shuffled:
        shuffled += rnd.choices(shuffled, k=rnd.randint(0, 5))
    return shuffled


def transitions(ordered: list[Event], notify_on: frozenset[str]) -> list[tuple[str, datetime]]:
    """The events of a key-ordered history that change the status into one notify_on announces."""
    result = []
    previous: str | None = None
    for event in ordered:
        if SCHEME.announces(event.status, notify_on) and event.status != previous:
            result.append((event.status, event.created_at))
        previous = event.status
    return result


class TestObserveProperties:
    @PROPERTY_SETTINGS
    @given(history=histories, notify_on=notify_ons, rnd=randoms, data=st.data())
    def test_no_event_announced_twice(
        self, history: list[Event], notify_on: frozenset[str], rnd: Random, data: st.DataObject
    ) -> None:
        """However a growing history is revealed poll by poll, no event is announced twice."""
        cuts = sorted(data.draw(st.lists(st.integers(0, len(history)), min_size=1, max_size=8)))
        polls = [scrambled(rnd, history[:cut]) for cut in [*cuts, len(history)]]

        state, notices, _ = run_polls(polls, notify_on)

        announced = [(n.status, n.event_at) for n in notices]
        assert len(announced) == len(set(announced))
        assert all(SCHEME.announces(n.status, notify_on) for n in notices)
        assert all(n.status != n.previous_status for n in notices)
        assert state is not None
        if history:
            assert state.status == max(history, key=key).status
            assert len(state.seen) <= SEEN_LIMIT

    @PROPERTY_SETTINGS
    @given(history=histories, notify_on=notify_ons, rnd=randoms, data=st.data())
    def test_notice_names_the_true_predecessor(
        self, history: list[Event], notify_on: frozenset[str], rnd: Random, data: st.DataObject
    ) -> None:
        """Each notice's previous status is that of the event just before it in key order among
        all events revealed so far, even once the oldest have been forgotten."""
        cuts = sorted(data.draw(st.lists(st.integers(0, len(history)), min_size=1, max_size=8)))
        state: ModelState | None = None
        revealed: set[EventKey] = set()

        for cut in [*cuts, len(history)]:
            observation = observe(state, MODEL, scrambled(rnd, history[:cut]), notify_on)
            state = observation.state
            revealed.update(key(e) for e in history[:cut])
            for notice in observation.notices:
                at_notice = EventKey(notice.event_at, SCHEME.rank(notice.status), notice.status)
                before = [k for k in revealed if k < at_notice]
                assert notice.previous_status == (max(before).status if before else None)

    @PROPERTY_SETTINGS
    @given(
        history=histories,
        earlier=small_histories,
        notify_on=notify_ons,
        first_poll=st.booleans(),
        rnd=randoms,
    )
    def test_independent_of_order_pagination_and_ties(
        self,
        history: list[Event],
        earlier: list[Event],
        notify_on: frozenset[str],
        first_poll: bool,
        rnd: Random,
    ) -> None:
        """Any permutation of the same rows, with repeats, gives the same state and notices."""
        previous = None if first_poll else observe(None, MODEL, earlier, notify_on).state

        reference = observe(previous, MODEL, history, notify_on)
        other = observe(previous, MODEL, scrambled(rnd, history), notify_on)

        assert other == reference

    @PROPERTY_SETTINGS
    @given(history=histories, notify_on=notify_ons, rnd=randoms)
    def test_nothing_missed(
        self, history: list[Event], notify_on: frozenset[str], rnd: Random
    ) -> None:
        """Revealed one event per poll in key order after an empty first look, every transition
        into notify_on is announced, in order, and nothing else."""
        ordered = order_events(history)
        polls: list[list[Event]] = [[]]
        polls += [scrambled(rnd, ordered[: i + 1]) for i in range(len(ordered))]

        state, notices, observations = run_polls(polls, notify_on)

        assert [(n.status, n.event_at) for n in notices] == transitions(ordered, notify_on)
        assert not any(n.first_observation for n in notices)
        assert [o.new_events for o in observations] == [0] + [1] * len(ordered)
        assert state is not None
        if ordered:
            assert state.started_at == ordered[0].created_at
            assert all(n.started_at == ordered[0].created_at for n in notices)

    @PROPERTY_SETTINGS
    @given(history=histories, rnd=randoms)
    def test_final_state(self, history: list[Event], rnd: Random) -> None:
        """The status is that of the max-key event and started_at the earliest created_at."""
        state = observe(None, MODEL, scrambled(rnd, history)).state

        if not history:
            assert state == ModelState(MODEL)
            return
        newest = max(history, key=key)
        assert state.status == newest.status
        assert state.started_at == min(e.created_at for e in history)
        assert state.status_since is not None
        assert state.status_since <= newest.created_at
        assert len(state.seen) == min(SEEN_LIMIT, len({e.identity for e in history}))
        # The canonical form: a sorted tuple without repeats (equal sets, equal states).
        assert type(state.seen) is tuple
        assert list(state.seen) == sorted(set(state.seen))

    @PROPERTY_SETTINGS
    @given(history=small_histories, notify_on=notify_ons, rnd=randoms, data=st.data())
    def test_final_state_independent_of_polls(
        self,
        history: list[Event],
        notify_on: frozenset[str],
        rnd: Random,
        data: st.DataObject,
    ) -> None:
        """Within SEEN_LIMIT, the state after any sequence of polls equals one look at it all."""
        cuts = sorted(data.draw(st.lists(st.integers(0, len(history)), max_size=6)))
        polls = [scrambled(rnd, history[:cut]) for cut in [*cuts, len(history)]]

        state, _, _ = run_polls(polls, notify_on)

        assert state == observe(None, MODEL, history, notify_on).state


# --- Scheduling --------------------------------------------------------------------------------


class TestBackoffDelay:
    @pytest.mark.parametrize("failures", [0, -1, -100])
    def test_no_failures_no_delay(self, failures: int) -> None:
        """Without consecutive failures there is nothing to wait for."""
        assert backoff_delay(failures, base=1.0, cap=60.0, rand=0.9) == 0.0

    @pytest.mark.parametrize(
        ("failures", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0)]
    )
    def test_doubles_with_each_failure(self, failures: int, expected: float) -> None:
        """The ceiling doubles with each consecutive failure; rand picks a point below it."""
        assert backoff_delay(failures, base=2.0, cap=600.0, rand=0.5) == expected

    @pytest.mark.parametrize("failures", [7, 8, 50, 10**9])
    def test_capped(self, failures: int) -> None:
        """The ceiling never exceeds cap, even after an enormous number of failures."""
        assert backoff_delay(failures, base=1.0, cap=60.0, rand=0.5) == 30.0

    def test_floor_of_a_tenth_of_base(self) -> None:
        """A rand near 0 still waits a tenth of base, so a failing model is not hammered."""
        assert backoff_delay(3, base=5.0, cap=60.0, rand=0.0) == 0.5

    @PROPERTY_SETTINGS
    @given(
        failures=st.integers(1, 10**6),
        base=st.floats(0.01, 100.0),
        cap=st.floats(0.01, 3600.0),
        rand=st.floats(0.0, 1.0, exclude_max=True),
    )
    def test_bounded(self, failures: int, base: float, cap: float, rand: float) -> None:
        """For any rand in [0, 1) the delay lies between base/10 and max(cap, base/10)."""
        delay = backoff_delay(failures, base, cap, rand)

        assert base / 10.0 <= delay <= max(cap, base / 10.0)


class TestJittered:
    @pytest.mark.parametrize(
        ("rand", "expected"), [(0.0, 100.0), (0.25, 95.0), (0.5, 90.0), (0.75, 85.0)]
    )
    def test_only_ever_shortens_the_delay(self, rand: float, expected: float) -> None:
        """rand 0 keeps the delay; towards 1 it shortens by up to the jitter fraction."""
        assert jittered(100.0, 0.2, rand) == pytest.approx(expected)

    def test_no_jitter(self) -> None:
        """A jitter of 0 leaves the delay alone whatever rand is."""
        assert jittered(60.0, 0.0, 0.99) == 60.0

    @PROPERTY_SETTINGS
    @given(
        delay=st.floats(0.0, 1e6),
        jitter=st.floats(0.0, 1.0),
        rand=st.floats(0.0, 1.0, exclude_max=True),
    )
    def test_bounded(self, delay: float, jitter: float, rand: float) -> None:
        """The result never exceeds the delay, is at most jitter shorter, and is never negative."""
        result = jittered(delay, jitter, rand)

        assert delay * (1 - jitter) - 1e-9 <= result <= delay + 1e-9
        assert result >= 0.0


class TestPollInterval:
    @pytest.mark.parametrize("status", sorted(SETTLED))
    def test_settled(self, status: str) -> None:
        """Settled models are polled at the settled interval."""
        settled = SCHEME.is_settled(status)
        assert poll_interval(settled, interval=60.0, settled_interval=900.0) == 900.0

    @pytest.mark.parametrize(
        "status",
        [None, UNSPECIFIED, QUEUED, FINETUNING, DEPLOYING_API, TEMPORARILY_OFFLINE, PAUSED, NEW],
    )
    def test_active(self, status: str | None) -> None:
        """Models still moving, unknown or not yet seen are polled at the normal interval."""
        settled = SCHEME.is_settled(status)
        assert poll_interval(settled, interval=60.0, settled_interval=900.0) == 60.0


class TestStuckWarningsDue:
    @pytest.mark.parametrize(
        ("elapsed", "expected"), [(0, 0), (599, 0), (600, 1), (1199, 1), (1200, 2), (6000, 10)]
    )
    def test_one_warning_per_period(self, elapsed: float, expected: int) -> None:
        """An unsettled status earns one warning per full ``stuck_after`` spent in it."""
        due = stuck_warnings_due(FINETUNING, at(0), at(elapsed), 600.0, settled=False)
        assert due == expected

    @pytest.mark.parametrize(
        ("status", "since", "stuck_after", "settled"),
        [
            (READY, at(0), 600.0, True),
            (None, at(0), 600.0, False),
            (FINETUNING, None, 600.0, False),
            (FINETUNING, at(0), 0.0, False),
        ],
        ids=["settled", "no-status", "no-since", "no-stuck-after"],
    )
    def test_never_due(
        self, status: str | None, since: datetime | None, stuck_after: float, settled: bool
    ) -> None:
        """Settled models, models without a status or a start, and stuck_after 0 never warn."""
        assert stuck_warnings_due(status, since, at(86400), stuck_after, settled=settled) == 0


class TestStatusScheme:
    # A made-up provider: lower-case statuses, a prefix, a cancelled phase, a custom rank.
    TOY = StatusScheme(
        provider="toy",
        table={
            "JOB_PENDING": (Phase.QUEUED, 10),
            "JOB_RUNNING": (Phase.RUNNING, 20),
            "JOB_DONE": (Phase.READY, 70),
            "JOB_ERROR": (Phase.FAILED, 80),
            "JOB_EXPIRED": (Phase.FAILED, 81),
            "JOB_CANCELLED": (Phase.CANCELLED, 85),
        },
        settled=frozenset({"JOB_DONE", "JOB_ERROR", "JOB_EXPIRED", "JOB_CANCELLED"}),
        unknown_rank=50,
        prefix="JOB_",
    )

    @pytest.mark.parametrize(
        ("status", "phase", "rank", "settled"),
        [
            (UNSPECIFIED, Phase.OTHER, 0, False),
            (QUEUED, Phase.QUEUED, 10, False),
            (FINETUNING, Phase.RUNNING, 20, False),
            (DEPLOYING_API, Phase.RUNNING, 30, False),
            (PAUSED, Phase.OTHER, 40, False),
            (TEMPORARILY_OFFLINE, Phase.OTHER, 50, False),
            (NEW, Phase.OTHER, 60, False),
            (READY, Phase.READY, 70, True),
            (FAILED, Phase.FAILED, 80, True),
            (DELETED, Phase.OTHER, 90, True),
        ],
    )
    def test_cohere_table(self, status: str, phase: Phase, rank: int, settled: bool) -> None:
        """Cohere's statuses map onto the common lifecycle; an unknown one is OTHER, rank 60."""
        assert SCHEME.phase(status) is phase
        assert SCHEME.rank(status) == rank
        assert SCHEME.is_settled(status) is settled

    def test_known_and_settled(self) -> None:
        """``known`` lists the table in order; READY, FAILED and DELETED are settled."""
        assert SCHEME.known == KNOWN_STATUSES == (
            UNSPECIFIED, QUEUED, FINETUNING, DEPLOYING_API, READY, FAILED, DELETED,
            TEMPORARILY_OFFLINE, PAUSED,
        )  # fmt: skip
        assert {s for s in STATUSES if SCHEME.is_settled(s)} == {READY, FAILED, DELETED}
        assert SCHEME.provider == DEFAULT_PROVIDER == "cohere"

    def test_no_status_yet(self) -> None:
        """A model without a status yet is OTHER, not settled and no failure."""
        assert SCHEME.phase(None) is Phase.OTHER
        assert SCHEME.is_settled(None) is False
        assert SCHEME.is_failure(None) is False

    @pytest.mark.parametrize(
        ("status", "failure"),
        [(FAILED, True), (READY, False), (DELETED, False), (NEW, False),
         ("JOB_ERROR", True), ("JOB_EXPIRED", True), ("JOB_CANCELLED", False)],
    )  # fmt: skip
    def test_failures_are_the_failed_phase(self, status: str, failure: bool) -> None:
        """A failure is any status of the FAILED phase, whichever provider."""
        scheme = self.TOY if status.startswith("JOB_") else SCHEME
        assert scheme.is_failure(status) is failure

    @pytest.mark.parametrize(
        ("status", "notify_on", "announced"),
        [
            (READY, {"ready"}, True),
            (READY, {READY}, True),
            (READY, {"failed"}, False),
            (FAILED, DEFAULT_NOTIFY_ON, True),
            (DELETED, DEFAULT_NOTIFY_ON, False),
            (DELETED, {DELETED}, True),
            (FINETUNING, {"running"}, True),
            (DEPLOYING_API, {"running"}, True),
            (QUEUED, {"queued"}, True),
            (NEW, {"other"}, True),
            (NEW, {NEW}, True),
            (NEW, DEFAULT_NOTIFY_ON, False),
            ("JOB_CANCELLED", {"cancelled"}, True),
            ("JOB_EXPIRED", {"failed"}, True),
            ("JOB_DONE", {READY}, False),
        ],
    )
    def test_announces_status_or_its_phase(
        self, status: str, notify_on: set[str], announced: bool
    ) -> None:
        """notify_on announces a status it names, or whose phase's common word it holds."""
        scheme = self.TOY if status.startswith("JOB_") else SCHEME
        assert scheme.announces(status, frozenset(notify_on)) is announced

    def test_unknown_status_of_another_scheme(self) -> None:
        """An unknown status takes the scheme's own unknown rank and the OTHER phase."""
        assert self.TOY.phase(READY) is Phase.OTHER
        assert self.TOY.rank(READY) == 50
        assert self.TOY.is_settled(READY) is False

    @pytest.mark.parametrize(
        ("word", "status"),
        [("READY", READY), ("ready", READY), ("STATUS_READY", READY), (" Failed ", FAILED),
         ("status_deleted", DELETED), ("FINISHED", None), ("", None), ("STATUS_", None)],
    )  # fmt: skip
    def test_canonical_spelling(self, word: str, status: str | None) -> None:
        """A configuration may drop the prefix and the case; anything else is no status."""
        assert SCHEME.canonical(word) == status

    def test_ties_follow_the_schemes_ranks(self) -> None:
        """Events sharing a timestamp are ordered by the given scheme's ranks."""
        events = [
            Event("JOB_DONE", at(0)),
            Event("JOB_SOMETHING", at(0)),
            Event("JOB_RUNNING", at(0)),
        ]

        ordered = lifecycle.order_events(events, scheme=self.TOY)

        assert [e.status for e in ordered] == ["JOB_RUNNING", "JOB_SOMETHING", "JOB_DONE"]

    def test_observe_carries_the_provider(self) -> None:
        """States and notices take the scheme's provider, so their keys name it."""
        events = [Event("JOB_RUNNING", at(0)), Event("JOB_DONE", at(5))]

        observation = lifecycle.observe(None, "job-1", events, scheme=self.TOY)

        assert observation.state.key == ModelKey("toy", "job-1")
        (notice,) = observation.notices
        assert (notice.status, notice.previous_status) == ("JOB_DONE", "JOB_RUNNING")
        assert notice.key == ModelKey("toy", "job-1")
        assert str(notice.key) == "toy/job-1"


class TestModelKey:
    def test_defaults_and_text(self) -> None:
        """A state built without a provider is Cohere's; a key prints as provider/id."""
        state = ModelState(MODEL)

        assert state.key == ModelKey("cohere", MODEL)
        assert state.key == ("cohere", MODEL)
        assert str(state.key) == f"cohere/{MODEL}"
        assert Notice(MODEL, READY, None, at(0), None, None).key == state.key


class TestOrderEvents:
    def test_sorts_by_time(self) -> None:
        """Events come out oldest first whatever order they came in."""
        events = [ev(READY, 30), ev(QUEUED, 0), ev(FINETUNING, 10)]

        assert order_events(events) == [ev(QUEUED, 0), ev(FINETUNING, 10), ev(READY, 30)]

    def test_ties_follow_the_lifecycle(self) -> None:
        """Events sharing a timestamp are ordered by lifecycle rank, unknowns before outcomes."""
        events = [ev(s, 0) for s in reversed(STATUSES)]

        assert [e.status for e in order_events(events)] == [
            UNSPECIFIED,
            QUEUED,
            FINETUNING,
            DEPLOYING_API,
            PAUSED,
            TEMPORARILY_OFFLINE,
            NEW,
            READY,
            FAILED,
            DELETED,
        ]

    def test_unknown_ties_by_name(self) -> None:
        """Unknown statuses sharing a timestamp are ordered by name, so the order is total."""
        events = [ev("STATUS_ZEBRA", 0), ev("STATUS_ALPHA", 0)]

        assert [e.status for e in order_events(events)] == ["STATUS_ALPHA", "STATUS_ZEBRA"]
        assert SCHEME.rank("STATUS_ZEBRA") == SCHEME.rank("STATUS_ALPHA")

    def test_deduplicates_by_identity(self) -> None:
        """Rows with the same status and time are one event; the first row seen is kept."""
        events = [ev(READY, 5, user_id="alice"), ev(READY, 5, user_id="bob"), ev(READY, 5)]

        assert order_events(events) == [ev(READY, 5, user_id="alice")]

    def test_same_instant_in_another_offset_is_the_same_event(self) -> None:
        """Timestamps are compared as instants, so an offset does not make a new event."""
        plus_one = timezone(timedelta(hours=1))
        events = [ev(READY, 0), Event(READY, at(0).astimezone(plus_one))]

        assert len(order_events(events)) == 1

    def test_empty(self) -> None:
        """No events in, no events out."""
        assert order_events([]) == []


class TestNotice:
    def test_durations_unknown_without_starts(self) -> None:
        """Without a start there is no duration to report."""
        notice = Notice(MODEL, READY, None, at(10), previous_since=None, started_at=None)

        assert notice.duration_seconds is None
        assert notice.previous_duration_seconds is None

    def test_durations_never_negative(self) -> None:
        """A start after the event (a late event) reports zero, not a negative duration."""
        notice = Notice(MODEL, READY, FAILED, at(10), previous_since=at(20), started_at=at(30))

        assert notice.duration_seconds == 0.0
        assert notice.previous_duration_seconds == 0.0


# --- Far-future events (issue 11, finding 12) ---------------------------------------------------

NOW = at(3600)  # the poll's wall time in these tables
FAR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def observe_at(
    previous: ModelState | None,
    events: Sequence[Event],
    now: datetime | None = NOW,
    notify_on: frozenset[str] = DEFAULT_NOTIFY_ON,
) -> Observation:
    return lifecycle.observe(previous, MODEL, events, notify_on, scheme=SCHEME, now=now)


def far(status: str = FINETUNING, when: datetime = FAR) -> Event:
    return Event(status=status, created_at=when)


class TestFarFutureQuarantine:
    def test_tolerance_is_one_day(self) -> None:
        assert timedelta(days=1) == lifecycle.FUTURE_TOLERANCE

    @pytest.mark.parametrize(
        ("offset", "quarantined"),
        [
            (timedelta(0), 0),
            (timedelta(hours=23), 0),  # a skewed clock or another time zone: kept
            (timedelta(days=1), 0),  # exactly the tolerance: kept
            (timedelta(days=1, seconds=1), 1),
            (timedelta(days=3650), 1),  # the simulator's future_timestamp
        ],
    )
    def test_the_horizon(self, offset: timedelta, quarantined: int) -> None:
        """Events up to a day after ``now`` count; later ones are quarantined and counted."""
        observation = observe_at(None, [ev(QUEUED, 0), far(FINETUNING, NOW + offset)])
        assert observation.quarantined == quarantined
        assert observation.state.status == (QUEUED if quarantined else FINETUNING)

    def test_far_future_event_does_not_pin_the_status_after_ready(self) -> None:
        """The table of the finding: FINETUNING at 9999-12-31 among real events; READY comes
        later and is announced, the status is READY (settled)."""
        first = observe_at(None, [ev(QUEUED, 0), ev(FINETUNING, 10), far()])
        assert (first.state.status, first.quarantined, first.notices) == (FINETUNING, 1, ())
        second = observe_at(first.state, [ev(QUEUED, 0), ev(FINETUNING, 10), far(), ev(READY, 60)])
        assert [brief(n) for n in second.notices] == [(READY, FINETUNING, 60.0, False)]
        assert second.state.status == READY
        assert SCHEME.is_settled(second.state.status)
        third = observe_at(second.state, [ev(QUEUED, 0), ev(FINETUNING, 10), far(), ev(READY, 60)])
        assert (third.notices, third.changed, third.quarantined) == ((), False, 1)

    def test_only_far_future_events(self) -> None:
        """A first answer of nothing but a far-future event: observed, no status, no notice."""
        observation = observe_at(None, [far(READY)])
        assert observation.state.status is None
        assert observation.notices == ()
        assert observation.quarantined == 1
        assert observation.changed

    def test_a_remembered_far_future_identity_is_forgotten(self) -> None:
        """A state written before the rule (it remembers the 9999 event, status pinned): the
        next poll forgets it, recomputes the status and writes (changed), announcing nothing."""
        pinned = observe_at(None, [ev(QUEUED, 0), ev(READY, 60), far()], now=None).state
        assert pinned.status == FINETUNING  # the old behaviour: pinned
        observation = observe_at(pinned, [ev(QUEUED, 0), ev(READY, 60)])
        assert observation.state.status == READY
        assert observation.state.status_since == at(60)
        assert observation.changed
        assert observation.notices == ()
        assert all(i.created_at < FAR for i in observation.state.seen)

    def test_without_now_nothing_is_quarantined(self) -> None:
        observation = observe_at(None, [ev(QUEUED, 0), far()], now=None)
        assert (observation.state.status, observation.quarantined) == (FINETUNING, 0)

    def test_now_at_the_end_of_the_calendar_quarantines_nothing(self) -> None:
        """``now`` + a day overflows: no horizon, no crash."""
        observation = observe_at(None, [ev(QUEUED, 0), far()], now=FAR)
        assert observation.quarantined == 0

    @PROPERTY_SETTINGS
    @given(
        history=small_histories,
        bogus=st.lists(
            st.tuples(
                st.sampled_from(STATUSES),
                st.datetimes(
                    min_value=datetime(2024, 1, 19), max_value=datetime(9999, 12, 31),
                    timezones=st.just(UTC),
                ),
            ),
            min_size=1, max_size=3,
        ),
        notify_on=notify_ons,
        rnd=randoms,
        data=st.data(),
    )  # fmt: skip
    def test_far_future_events_never_change_the_notices_of_the_real_ones(
        self,
        history: list[Event],
        bogus: list[tuple[str, datetime]],
        notify_on: frozenset[str],
        rnd: Random,
        data: st.DataObject,
    ) -> None:
        """Adding far-future events to any poll of any history (from any poll on) changes neither
        the notices nor the state's status; they are counted as quarantined."""
        extra = [Event(status, when) for status, when in bogus]  # all > NOW + 1 day
        cuts = sorted(data.draw(st.lists(st.integers(0, len(history)), min_size=1, max_size=6)))
        from_poll = data.draw(st.integers(0, len(cuts)))
        clean: ModelState | None = None
        dirty: ModelState | None = None
        for index, cut in enumerate([*cuts, len(history)]):
            events = scrambled(rnd, history[:cut])
            spoiled = scrambled(rnd, [*events, *extra]) if index >= from_poll else events
            reference = observe_at(clean, events, notify_on=notify_on)
            observation = observe_at(dirty, spoiled, notify_on=notify_on)
            assert observation.notices == reference.notices
            assert observation.state == reference.state
            assert observation.quarantined == sum(
                e.created_at > NOW + timedelta(days=1) for e in spoiled
            )
            clean, dirty = reference.state, observation.state


class TestSeenTuple:
    """``ModelState.seen`` is a sorted tuple (memory per watched model, issue 15)."""

    def test_a_set_becomes_the_sorted_tuple(self) -> None:
        ids = [ev(READY, 100).identity, ev(QUEUED, 0).identity, ev(FINETUNING, 10).identity]

        from_set = ModelState(MODEL, seen=frozenset(ids))  # type: ignore[arg-type]

        assert from_set.seen == tuple(sorted(ids))
        assert from_set == ModelState(MODEL, seen=seen_tuple(ids))
        assert hash(from_set) == hash(ModelState(MODEL, seen=seen_tuple(ids)))

    def test_later_polls_keep_it_sorted(self) -> None:
        """A poll that adds events out of order keeps the canonical form."""
        state = observe(None, MODEL, [ev(QUEUED, 0), ev(READY, 100)]).state
        later = observe(state, MODEL, [ev(QUEUED, 0), ev(FINETUNING, 10), ev(READY, 100)]).state

        expected = {ev(QUEUED, 0).identity, ev(FINETUNING, 10).identity, ev(READY, 100).identity}
        assert later.seen == seen_tuple(expected)
        assert observe(later, MODEL, [ev(FINETUNING, 10)]).changed is False
