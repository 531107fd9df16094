"""The delivery loop: due outbox items go to the targets that do not have them yet.

``deliver_due`` is one pass: it sends each due item to the targets that have not had
it yet, many at once (bounded), records every success at once (a target that got an
item never gets it again), and retries the rest on the schedule of
``policy.delivery_retry_delay`` until they are given up. ``Delivery`` runs passes for
the daemon: woken by new notices, at the next retry otherwise, and it pulls retries
forward when the wall clock jumps backwards.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from watcher.messages import Message, given_up_message
from watcher.notify import Notifier, Target, TargetResult, unique_targets
from watcher.policy import DELIVERY_RETRY_CAP, DELIVERY_RETRY_FIRST, delivery_retry_delay
from watcher.templates import TemplateError

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from watcher.lifecycle import ModelKey
    from watcher.metrics import Metrics
    from watcher.progress import Progress
    from watcher.settings import NotifySettings
    from watcher.store.base import Outbox, OutboxItem

__all__ = [
    "CLOCK_JUMP",
    "DELIVERY_BATCH",
    "DELIVERY_CONCURRENCY",
    "MIN_ATTEMPTS",
    "Delivery",
    "DeliveryRound",
    "deliver_due",
]

log = structlog.get_logger("watcher.outbox")

#: Tries a notification gets before it can be given up, however old it is.
MIN_ATTEMPTS = 3
#: A wall clock that moved back by more than this (against the monotonic clock) is a jump.
CLOCK_JUMP = 60.0
#: The delivery loop looks at the outbox at least this often.
IDLE_WAIT = 60.0
#: Sends in flight at once in one pass, over all targets (apprise's own thread pool
#: may run fewer at once: it has min(32, CPUs + 4) workers).
DELIVERY_CONCURRENCY = 16
#: Due items one pass takes on.
DELIVERY_BATCH = 500


@dataclass(frozen=True)
class DeliveryRound:
    """What one pass over the due outbox items did (counts of items)."""

    delivered: int  # every target has it now: marked done
    failed: int  # some target still lacks it: retry scheduled
    given_up: int  # still undelivered after ``give_up_after``: abandoned
    skipped_no_targets: int  # nobody to send it to: marked done, with a warning
    given_up_models: int = 0  # of ``given_up``, model notifications (not the watcher's own)


async def deliver_due(
    store: Outbox,
    notifier: Notifier,
    *,
    targets_for: Callable[[OutboxItem], Sequence[Target]],
    render: Callable[[OutboxItem], Message],
    now: datetime,
    give_up_after: float,
    retry_first: float = DELIVERY_RETRY_FIRST,
    retry_cap: float = DELIVERY_RETRY_CAP,
    rand: Callable[[], float] = random.random,
    concurrency: int = DELIVERY_CONCURRENCY,
    clock: Callable[[], datetime] | None = None,
    log: FilteringBoundLogger | None = None,
    before_send: Callable[[], Awaitable[None]] | None = None,
    hold: Callable[[OutboxItem], bool] | None = None,
) -> DeliveryRound:
    """Deliver every due outbox item to the targets that do not have it yet.

    Up to ``concurrency`` sends are in flight at once. Order is kept where it
    matters: a target gets the items about one model (and the daemon-wide ops
    messages) one after the other, in the order they were queued; a target apprise
    throttles (e-mail, rate-limited chat services) gets every item one at a time, in
    order. Items about different models go to a webhook side by side.

    A success is recorded the moment it happens and is never repeated. A target's
    first send of the pass goes alone: if it fails, the target is not tried again
    for later items of this pass (a dead target costs one timeout per pass, not one
    per item, and gets no item out of order); once one succeeded, its sends overlap.
    One target's failure never holds up another target's copy of the same item.

    An item some target still lacks is retried after ``policy.delivery_retry_delay``
    (counted from ``clock()`` when the pass ends, else from ``now``), or given up
    once ``give_up_after`` has passed since it was queued and it had
    ``MIN_ATTEMPTS`` tries.

    ``before_send`` is awaited before each send (the lease's window,
    ``watcher.leadership.send_window``): it waits until a send cannot outlive this
    replica's lease, and raises (ending the round) when the lease is gone.

    An item ``hold`` is true for (its model's details are being fetched) is left for a
    later pass, without counting an attempt.
    """
    log = log if log is not None else structlog.get_logger()
    retry = _Retrier(store, now, clock, give_up_after, retry_first, retry_cap, rand, log)
    delivered = skipped = 0
    plans: list[_Plan] = []

    for item in await store.due_notifications(now, limit=DELIVERY_BATCH):
        if hold is not None and hold(item):
            continue
        context = _item_context(item)
        try:
            wanted = unique_targets(targets_for(item))
        except Exception as exc:
            log.error(
                "notification targets could not be resolved; will retry",
                **context,
                error=type(exc).__name__,
            )
            await retry(item, context, f"cannot resolve targets ({type(exc).__name__})")
            continue
        if not wanted:
            log.warning("notification has no targets; marked done", **context)
            await store.mark_done(item.id, now)
            skipped += 1
            continue
        already = await store.delivered_targets(item.id)
        pending = [t for t in wanted if t.key not in already]
        if not pending:  # every target had it (a crash before mark_done)
            await store.mark_done(item.id, now)
            delivered += 1
            continue
        try:
            message = render(item)
        except Exception as exc:
            # A template problem is safe to show; other exceptions may quote anything.
            reason = str(exc) if isinstance(exc, TemplateError) else type(exc).__name__
            log.error("notification could not be rendered; will retry", **context, error=reason)
            await retry(item, context, f"cannot render message ({type(exc).__name__})")
            continue
        plans.append(_Plan(item, context, message, pending))

    sender = _Sender(store, notifier, now, max(1, concurrency), before_send, log)
    await sender.send_all(plans)

    for plan in plans:
        missing = [r for r in plan.results.values() if not r.ok]
        if not missing:
            await store.mark_done(plan.item.id, now)
            delivered += 1
            continue
        reasons = "; ".join(f"{r.target.label}: {r.error}" for r in missing)
        await retry(plan.item, plan.context, reasons)

    return DeliveryRound(
        delivered=delivered,
        failed=retry.failed,
        given_up=retry.given_up,
        skipped_no_targets=skipped,
        given_up_models=retry.given_up_models,
    )


@dataclass
class _Plan:
    """One due item with its message and the targets that still lack it."""

    item: OutboxItem
    context: dict[str, Any]
    message: Message
    targets: list[Target]
    results: dict[str, TargetResult] = field(default_factory=dict)  # by target key, in order


@dataclass
class _TargetPass:
    """How one target is doing in this pass."""

    serial: bool  # apprise throttles it: one send at a time, every item in order
    up: bool = False  # a send succeeded in this pass: its sends may overlap
    down: str | None = None  # why a send failed in this pass: no more tries
    probing: bool = False  # its first send is in flight; the others wait for it
    decided: anyio.Event = field(default_factory=anyio.Event)


#: One lane's sends go one after the other, in queue order: (target key, model), the
#: model None for daemon-wide messages, and "*" for every item of a serial target.
_Lane = tuple[str, "ModelKey | str | None"]


class _Sender:
    """Sends one pass's items: lanes side by side (bounded), each lane in order."""

    def __init__(
        self,
        store: Outbox,
        notifier: Notifier,
        now: datetime,
        concurrency: int,
        before_send: Callable[[], Awaitable[None]] | None,
        log: FilteringBoundLogger,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._now = now
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._before_send = before_send
        self._log = log
        self._targets: dict[str, _TargetPass] = {}
        self._errors: list[Exception] = []

    async def send_all(self, plans: Sequence[_Plan]) -> None:
        lanes: dict[_Lane, list[tuple[_Plan, Target]]] = {}
        for plan in plans:
            for target in plan.targets:
                state = self._targets.get(target.key)
                if state is None:
                    state = _TargetPass(serial=await self._notifier.one_at_a_time(target))
                    self._targets[target.key] = state
                lane: _Lane = (target.key, "*" if state.serial else plan.item.model)
                lanes.setdefault(lane, []).append((plan, target))
        async with anyio.create_task_group() as tg:
            for jobs in lanes.values():
                tg.start_soon(self._run_lane, jobs, tg.cancel_scope)
        if self._errors:  # a store or lease failure ends the pass, unwrapped
            raise self._errors[0]

    async def _run_lane(
        self, jobs: Sequence[tuple[_Plan, Target]], scope: anyio.CancelScope
    ) -> None:
        try:
            for plan, target in jobs:
                result = await self._send(plan, target)
                plan.results[target.key] = result
                if result.ok:
                    self._log.info("notification delivered", **plan.context, target=target.label)
                else:
                    self._log.warning(
                        "notification target failed",
                        **plan.context,
                        target=target.label,
                        error=result.error,
                    )
        except Exception as exc:
            self._errors.append(exc)
            scope.cancel()

    async def _send(self, plan: _Plan, target: Target) -> TargetResult:
        state = self._targets[target.key]
        if not state.up and state.down is None:
            if not state.probing:
                state.probing = True
                try:
                    return await self._attempt(plan, target, state)
                finally:
                    state.decided.set()
            await state.decided.wait()
        return await self._attempt(plan, target, state)

    async def _attempt(self, plan: _Plan, target: Target, state: _TargetPass) -> TargetResult:
        async with self._limiter:
            if state.down is not None:
                return TargetResult(target, False, f"not tried: {state.down} earlier in this round")
            if self._before_send is not None:
                await self._before_send()
            (result,) = await self._notifier.send(
                plan.message, [target], on_result=_recorder(self._store, plan.item, self._now)
            )
        if result.ok:
            state.up = True
        elif state.down is None:
            state.down = result.error or "failed"
        return result


def _recorder(
    store: Outbox, item: OutboxItem, now: datetime
) -> Callable[[TargetResult], Awaitable[None]]:
    async def record(result: TargetResult) -> None:
        if result.ok:
            await store.mark_delivered(item.id, result.target.key, now)

    return record


def _item_context(item: OutboxItem) -> dict[str, Any]:
    context: dict[str, Any] = {"outbox_id": item.id, "kind": item.kind}
    if item.model is not None:
        context["model_id"] = item.model.id
        context["provider"] = item.model.provider
    if item.notice is not None:
        context["status"] = item.notice.status
    return context


@dataclass
class _Retrier:
    """Schedules the next attempt of an item, or gives it up; counts both."""

    store: Outbox
    now: datetime
    clock: Callable[[], datetime] | None
    give_up_after: float
    retry_first: float
    retry_cap: float
    rand: Callable[[], float]
    log: FilteringBoundLogger
    failed: int = 0
    given_up: int = 0
    given_up_models: int = 0

    async def __call__(self, item: OutboxItem, context: Mapping[str, Any], error: str) -> None:
        """Giving up also takes ``MIN_ATTEMPTS`` tries: ages are wall-clock (they must
        survive restarts), and a clock jumping forward must not abandon the outbox at once."""
        # Counted from when the attempt ended: a target that timed out took a while.
        now = self.now if self.clock is None else max(self.now, self.clock())
        attempts = item.attempts + 1
        deadline = item.created_at + timedelta(seconds=self.give_up_after)
        if now >= deadline and attempts >= MIN_ATTEMPTS:
            await self.store.give_up(item.id, at=now, reason=error)
            self.log.error("notification given up", **context, attempts=attempts, error=error)
            self.given_up += 1
            self.given_up_models += item.kind == "model"
            return
        delay = delivery_retry_delay(
            attempts, first=self.retry_first, cap=self.retry_cap, rand=self.rand()
        )
        # The last try happens at the deadline, so giving up is not later than promised.
        next_attempt_at = now + timedelta(seconds=delay)
        if now < deadline:
            next_attempt_at = min(next_attempt_at, deadline)
        await self.store.schedule_retry(
            item.id, attempts=attempts, next_attempt_at=next_attempt_at, error=error
        )
        self.log.info(
            "notification retry scheduled",
            **context,
            attempts=attempts,
            retry_in=round((next_attempt_at - now).total_seconds(), 1),
        )
        self.failed += 1


class Delivery:
    """Runs ``deliver_due`` for the daemon and reports what it could not deliver.

    ``notify`` is the current ``notify`` section (a reload replaces it); ``targets_for``
    and ``render`` read the current configuration too, so a delivery always uses it.
    """

    def __init__(
        self,
        store: Outbox,
        notifier: Notifier,
        *,
        notify: NotifySettings,
        targets_for: Callable[[OutboxItem], Sequence[Target]],
        render: Callable[[OutboxItem], Message],
        metrics: Metrics,
        progress: Progress,
        now: Callable[[], datetime],
        rand: Callable[[], float],
        hold: Callable[[OutboxItem], bool] | None = None,
    ) -> None:
        self.notify = notify
        self._hold = hold
        self._store = store
        self._notifier = notifier
        self._targets_for = targets_for
        self._render = render
        self._metrics = metrics
        self._progress = progress
        self._now = now
        self._rand = rand
        #: Awaited before each send (see ``deliver_due``); the daemon sets the lease's window.
        self.before_send: Callable[[], Awaitable[None]] | None = None
        self._wakeup = anyio.Event()
        self._delivering = False
        self._idle = anyio.Event()
        self._wall_offset: float | None = None

    def wake(self) -> None:
        """Deliver now (a notice or an ops message was queued)."""
        self._wakeup.set()

    async def enqueue(self, message: Message, *, kind: str = "ops", **about: Any) -> None:
        """Queue one of the watcher's own messages (pre-rendered) and wake the loop."""
        await self._store.enqueue_message(
            kind=kind,
            title=message.title,
            body=message.body,
            notify_type=message.notify_type,
            created_at=self._now(),
            **about,
        )
        self._progress.bump()  # one more pending: the status page shows it
        self.wake()

    async def deliver_once(self) -> DeliveryRound:
        """One pass over the due outbox items."""
        self._delivering = True
        try:
            result = await deliver_due(
                self._store,
                self._notifier,
                targets_for=self._targets_for,
                render=self._render,
                now=self._now(),
                give_up_after=self.notify.give_up_after,
                rand=self._rand,
                clock=self._now,
                before_send=self.before_send,
                hold=self._hold,
            )
        finally:
            self._delivering = False
            self._idle.set()
            self._idle = anyio.Event()
        self._metrics.notifications.labels("sent").inc(result.delivered)
        self._metrics.notifications.labels("failed").inc(result.failed)
        self._metrics.notifications.labels("given_up").inc(result.given_up)
        if result.given_up_models:
            # Only model notifications: reporting our own given-up reports would loop.
            await self.enqueue(given_up_message(result.given_up_models, self.notify.give_up_after))
        if result.delivered or result.given_up or result.failed:
            self._progress.delivered += result.delivered
            self._progress.bump()  # pending counts or attempts changed: the page follows
        return result

    async def wait_idle(self) -> None:
        """Wait until no delivery is in flight (bound it with ``anyio.move_on_after``)."""
        if self._delivering:
            await self._idle.wait()

    async def run(self) -> None:
        """Deliver until cancelled: now, when woken, and when the next retry is due."""
        while True:
            await self._check_wall_clock()
            await self.deliver_once()
            counts = await self._store.outbox_counts()
            self._metrics.outbox_pending.set(counts.pending)
            self._metrics.oldest_pending_at = counts.oldest_pending_at
            next_due = await self._store.next_due_at()
            wait = IDLE_WAIT
            if next_due is not None:
                wait = min(wait, max(0.05, (next_due - self._now()).total_seconds()))
            with anyio.move_on_after(wait):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()

    async def _check_wall_clock(self) -> None:
        """Pull retries forward when the wall clock jumped backwards (no stalled outbox)."""
        offset = self._now().timestamp() - anyio.current_time()
        if self._wall_offset is not None and offset < self._wall_offset - CLOCK_JUMP:
            moved = await self._store.pull_forward_retries(self._now())
            log.warning(
                "the system clock moved backwards; retrying pending notifications now",
                seconds=round(self._wall_offset - offset),
                rescheduled=moved,
            )
        self._wall_offset = offset
