"""The poll schedule: when each watched model is polled next, and which one a worker takes.

``Schedule`` is a heap of due times on anyio's monotonic clock (the wall clock may
jump; poll times never use it). Every reschedule gives the model a new token, so a
stale heap entry (a rescheduled or removed model) is skipped. A new earliest entry
wakes the sleeping workers. The first round is spread over a fraction of the interval.

Slow models do not hold every worker (issue 11, finding 7). A model is polled by one
worker at a time (``take`` marks it in flight, ``release`` ends that; a due entry of a
model in flight is dropped: its poll reschedules it). A model whose last request ran
longer than ``slow_after(timeout)`` (a timeout, a hang, an answer that takes most of the
timeout) is *slow*; it waits in a heap of its own, and at most ``slow_lane_size(
poll.concurrency)`` workers poll slow models at once (a quarter, at least one), so the
others keep polling the healthy models at their interval. After a success the next poll
is planned from the poll's due time (``after_due``: a late poll is made up, not lost);
backoff is counted from the failure (the poller reschedules when the poll ends). The
first round cannot know which models are slow: when more models hang than there are
workers, healthy models listed after them wait one request timeout, once.

Which due model a free worker takes, and when, is a ``PickPolicy`` (the seam for
scheduling experiments, see bench/proposals.py):

* ``PaceThenPick`` (the default): one worker at a time waits until the provider's
  request budget has a slot, and only then takes the most overdue model, so its request
  is the next one out and no poll (nor a READY model's enrichment) queues in the pacer
  behind polls chosen earlier. docs/benchmarks.md, P9: logged -> webhook 108 ms -> 30 ms.
* ``PickThenPace``: take the most overdue model as soon as a worker is free; its
  request then waits in the pacer.

``budget_spread`` is the budget arithmetic: when the models want more requests than
the budget allows, polls are spread evenly (by the pacer) and ``BudgetWatch`` logs the
effective interval once per provider.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import anyio
import structlog

from watcher.fleet import WatchedModel
from watcher.lifecycle import ModelKey
from watcher.pacing import RequestPacer
from watcher.settings import PollSettings

if TYPE_CHECKING:
    from watcher.clients import ProviderClient
    from watcher.metrics import Metrics

__all__ = [
    "HEARTBEAT",
    "SLOW_AFTER_CAP",
    "BudgetWatch",
    "PaceThenPick",
    "PickPolicy",
    "PickThenPace",
    "Schedule",
    "budget_spread",
    "slow_after",
    "slow_lane_size",
]

log = structlog.get_logger("watcher.schedule")

#: The poll loop wakes at least this often, so its heartbeat shows it is alive.
HEARTBEAT = 1.0
#: A request that ran this long (or half its timeout, if less) makes its model slow.
SLOW_AFTER_CAP = 10.0


def slow_after(timeout: float) -> float:
    """Seconds after which a model's request counts as slow: half the timeout, at most 10 s."""
    return min(SLOW_AFTER_CAP, timeout / 2.0)


def slow_lane_size(concurrency: int) -> int:
    """How many workers may poll slow models at once: a quarter of them, at least one."""
    return max(1, concurrency // 4)


class Schedule:
    """Due times of the watched models; ``next_due`` waits for the earliest."""

    def __init__(
        self,
        models: Mapping[ModelKey, WatchedModel],
        *,
        heartbeat: Callable[[], None] = lambda: None,
        slow_lane: Callable[[], int] = lambda: 1,
    ) -> None:
        self._models = models
        self._heartbeat = heartbeat
        self._slow_lane = slow_lane  # how many slow models may be in flight at once
        self._heap: list[tuple[float, int, ModelKey]] = []
        self._slow_heap: list[tuple[float, int, ModelKey]] = []
        self._slow_in_flight = 0
        self._seq = itertools.count()
        # The futures of the workers waiting in ``next_due``; ``wake`` resolves them.
        self._waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._heap) + len(self._slow_heap)

    @property
    def slow_in_flight(self) -> int:
        """Slow models being polled now (at most the slow lane's size)."""
        return self._slow_in_flight

    def at(self, model: WatchedModel, due: float) -> None:
        """Poll ``model`` at monotonic time ``due`` (replacing any earlier plan); a slow
        model waits in the slow lane."""
        model.token = next(self._seq)  # unique across models, so a stale entry never revives
        model.due = due  # the live entry's time: a poll taken from it is planned from it
        heap = self._slow_heap if model.slow else self._heap
        if len(heap) > len(self._models) + len(self._models) // 4 + 64:
            self._compact(heap)  # stale entries of re-planned models (one a plan, at most)
        # (due, token, key): the token is unique and increasing, so it also breaks ties in
        # plan order and the key is never compared (one int less per entry, issue 15).
        heapq.heappush(heap, (due, model.token, model.key))
        if heap[0][1] == model.token:
            self.wake()  # the new entry is the earliest: the sleeping loop must see it

    def _compact(self, heap: list[tuple[float, int, ModelKey]]) -> None:
        """Drop ``heap``'s stale entries (a removed, re-planned or taken model's), in place."""
        models = self._models
        live = []
        for entry in heap:
            model = models.get(entry[2])
            if model is not None and model.token == entry[1] and not model.in_flight:
                live.append(entry)
        heapq.heapify(live)
        heap[:] = live

    def after(self, model: WatchedModel, delay: float) -> None:
        self.at(model, anyio.current_time() + delay)

    def after_due(self, model: WatchedModel, delay: float, now: float | None = None) -> None:
        """Poll ``model`` ``delay`` after the due time of its last poll (``model.due``),
        or now if that has passed: the rate asked is the rate achieved, and a late
        process makes up a missed poll at once (one, never a burst). A model polled
        without being taken from the schedule (``once``, a direct poll) plans from now.
        ``now``: the caller's recent clock reading, if it has one (a time already past
        only means "due at once")."""
        if model.in_flight:
            if now is None or model.due + delay < now:
                now = anyio.current_time()
            self.at(model, max(model.due + delay, now))
        else:
            self.at(model, anyio.current_time() + delay)

    def first_round(self, models: Iterable[WatchedModel], interval: float) -> None:
        """Spread the first round evenly over a fraction of the interval (no thundering
        herd); the first model goes at once."""
        ordered = list(models)
        now = anyio.current_time()
        spread = min(1.0, interval / 4)
        count = max(1, len(ordered))
        for index, model in enumerate(ordered):
            self.at(model, now + spread * index / count)

    def wake(self) -> None:
        """Make the workers waiting in ``next_due`` look at the heaps again."""
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def soon(self, model: WatchedModel) -> None:
        """Poll ``model`` now (a webhook's hint). A model in flight is polled once more
        right after its poll ends (``release``), never twice at once."""
        if model.in_flight:
            model.poll_again = True
        else:
            self.at(model, anyio.current_time())

    def take(self, model: WatchedModel) -> None:
        """Claim ``model`` (returned by ``next_due(take=False)``): its entries go stale and
        it is in flight until ``release``."""
        model.token = next(self._seq)
        model.in_flight = True
        model.in_slow_lane = model.slow
        if model.slow:
            self._slow_in_flight += 1

    def release(self, model: WatchedModel) -> None:
        """``model``'s poll ended (whatever its outcome); a no-op for one never taken."""
        if not model.in_flight:
            return
        model.in_flight = False
        if model.in_slow_lane:
            model.in_slow_lane = False
            self._slow_in_flight -= 1
            self.wake()  # the lane has room again
        if model.poll_again:
            model.poll_again = False
            if self._models.get(model.key) is model:  # not removed by a reload meanwhile
                self.at(model, anyio.current_time())  # replaces the plan its poll made

    def _top(self, heap: list[tuple[float, int, ModelKey]]) -> WatchedModel | None:
        """The model of ``heap``'s earliest live entry (stale ones are dropped), else None."""
        while heap:
            _, token, key = heap[0]
            model = self._models.get(key)
            if model is None or model.token != token or model.in_flight:
                heapq.heappop(heap)  # in flight: its poll reschedules it when it ends
                continue
            return model
        return None

    async def next_due(self, *, take: bool = True) -> WatchedModel:
        """Wait for the most overdue model and return it (taken, unless ``take`` is False).

        A slow model is considered only while the slow lane has room. Refreshes the
        heartbeat at least every ``HEARTBEAT`` seconds while it waits.

        It waits on a bare loop future with one timer (``wake`` resolves it early): nearly
        every paced pick waits, and an anyio cancel scope and ``Event`` cost several times
        that (docs/benchmarks.md, P16). The daemon runs on anyio's asyncio backend; a
        cancellation still ends the wait (the future is cancelled with the task).
        """
        loop = asyncio.get_running_loop()
        while True:
            self._heartbeat()
            candidates = [self._heap]
            if self._slow_in_flight < self._slow_lane():
                candidates.append(self._slow_heap)
            best: list[tuple[float, int, ModelKey]] | None = None
            for heap in candidates:
                if self._top(heap) is not None and (best is None or heap[0] < best[0]):
                    best = heap
            now = loop.time()  # anyio.current_time() on asyncio, without the look-up
            if best is not None and best[0][0] <= now:
                model = self._models[best[0][2]]
                if take:
                    heapq.heappop(best)
                    self.take(model)
                return model
            when = now + HEARTBEAT
            if best is not None and best[0][0] < when:
                when = best[0][0]
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_at(when, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if not waiter.done():  # cancelled while waiting: wake() must not keep it
                    waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    """The wait's timer: end it unless ``wake`` (or a cancellation) did."""
    if not waiter.done():
        waiter.set_result(None)


# --- Which model a free worker takes --------------------------------------------------------

PacerFor = Callable[[WatchedModel], RequestPacer]


class PickPolicy(Protocol):
    """How a free poll worker gets its next model from the schedule."""

    async def pick(self, schedule: Schedule, pacer_for: PacerFor) -> WatchedModel: ...


class PickThenPace:
    """Take the most overdue model at once; its request waits in its provider's pacer."""

    async def pick(self, schedule: Schedule, pacer_for: PacerFor) -> WatchedModel:
        return await schedule.next_due()


class PaceThenPick:
    """One worker at a time waits for a free request slot, then takes the most overdue model.

    The worker returns with no ``await`` between the pick and the poll's first request, so
    that request reserves the slot it waited for. It wakes one spacing early: a late
    wake-up would leave the slot unused. It looks again at least every ``HEARTBEAT``
    (a paused provider does not hide the loop's heartbeat; a more overdue model may
    have become first).

    The one picker is a flag with a queue of waiting workers handed the turn in order
    (docs/benchmarks.md, P15): a free turn costs no lock and no checkpoint (anyio's
    ``Lock`` yields to the loop even when free), and a worker cancelled while queued
    passes on a turn it was handed.
    """

    def __init__(self) -> None:
        self._busy = False  # a worker is picking
        self._queue: deque[asyncio.Future[None]] = deque()  # workers waiting for their turn

    async def pick(self, schedule: Schedule, pacer_for: PacerFor) -> WatchedModel:
        if self._busy:
            await self._wait_turn()
        else:
            self._busy = True
        try:
            while True:
                model = await schedule.next_due(take=False)
                pacer = pacer_for(model)
                wait = pacer.seconds_until_free() - pacer.spacing
                if wait <= 0:
                    schedule.take(model)
                    return model
                await anyio.sleep(min(wait, HEARTBEAT))
        finally:
            self._pass_turn()

    async def _wait_turn(self) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._pass_turn()  # handed the turn, then cancelled: the next one's
            else:
                turn.cancel()
                if turn in self._queue:  # else a passing turn already dropped it
                    self._queue.remove(turn)
            raise

    def _pass_turn(self) -> None:
        """The next queued worker picks (still waiting, not cancelled), else nobody."""
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False


# --- The budget ---------------------------------------------------------------------------


def budget_spread(active: int, settled: int, poll: PollSettings, budget: int) -> float | None:
    """The interval active models actually get when ``budget`` requests/minute is too small.

    None when the budget covers ``active`` models at ``poll.interval`` plus ``settled``
    ones at ``poll.settled_interval``; else the active models share what the settled
    ones leave (at least one request a minute).
    """
    needed = active * 60.0 / poll.interval + settled * 60.0 / poll.settled_interval
    if needed <= budget or not active:
        return None
    spare = max(1.0, budget - settled * 60.0 / poll.settled_interval)
    return active * 60.0 / spare


class BudgetWatch:
    """Says once per provider when its budget cannot poll every model at ``poll.interval``,
    and keeps the budget gauges current."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._warned: set[str] = set()

    def reset(self) -> None:
        """Warn again (after a reload: the numbers changed)."""
        self._warned.clear()

    def check(
        self, models: Iterable[WatchedModel], clients: Iterable[ProviderClient], poll: PollSettings
    ) -> None:
        watched = list(models)
        effective, budgets = poll.interval, 0
        for client in clients:
            name, scheme = client.provider.name, client.provider.scheme
            own = [m for m in watched if m.key.provider == name]
            active = sum(1 for m in own if not scheme.is_settled(m.status))
            budget = client.pacer.per_minute
            budgets += budget
            spread = budget_spread(active, len(own) - active, poll, budget)
            if spread is None:
                continue
            effective = max(effective, spread)
            if name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "request budget too small for the interval; polls are spread out",
                    provider=name,
                    models=len(own),
                    budget_per_minute=budget,
                    interval=poll.interval,
                    effective_interval=round(spread, 2),
                )
        self._metrics.effective_interval.set(effective)
        self._metrics.budget_per_minute.set(budgets)
