"""Lead while holding the lease: the daemon's side of high availability.

With PostgreSQL (``state.url``) several replicas share one state; the lease
(:mod:`watcher.store.lease`, docs/ha.md) makes exactly one of them the leader. This
module is what the daemon does with it, the same code path for SQLite, whose
:class:`~watcher.store.lease.SoleLeadership` is always the leader:

* :func:`lead_while_holding` -- wait as a standby until the lease is ours, run the
  leader's work (``lead(term)``: load the states *after* taking the lease, then poll
  and deliver) until the lease is lost -- its body is cancelled at once, polls and
  sends included -- or the daemon stops; then stand by again. A
  :class:`~watcher.store.lease.LeaseLostError` from a write means the same as a
  lost renewal. A :class:`~watcher.errors.StateUnavailableError` the leader's work
  lets escape ends the term (the lease is released) and is retried with backoff.
* :func:`send_window` -- the check before every delivery: a send starts only while
  the term has more time left than the send may take, so no send can outlive the
  lease (it waits for the next renewal, or gives up when the term ends).
* :func:`open_store_patiently` -- the store opened at start, retried with backoff
  while the database cannot be reached (one log line, not one per attempt).
* :func:`state_error_in` -- the state error inside an exception group (anyio's
  task groups wrap what their tasks raise).

The rule behind "reload after an unavailable write": a ``COMMIT`` whose answer was
lost may or may not have happened. The leader therefore never trusts what it holds in
memory after a :class:`~watcher.errors.StateUnavailableError`: it reloads the states
from the database before deciding again, so a change that was committed is not
announced twice and one that was not is announced once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio
import structlog

from watcher.errors import StateUnavailableError
from watcher.store import open_store
from watcher.store.lease import LeaseLostError, SoleLeadership

if TYPE_CHECKING:
    from watcher.settings import StateSettings
    from watcher.store.base import Store
    from watcher.store.lease import LeaderInfo, Lease, Term

__all__ = [
    "OPEN_RETRY_CAP",
    "STOP_GRACE",
    "Leading",
    "lead_while_holding",
    "leader_of",
    "lease_for",
    "open_store_patiently",
    "send_timeout",
    "send_window",
    "state_error_in",
]

log = structlog.get_logger("watcher.leadership")

#: The longest wait between two attempts at reaching the database at start (seconds).
OPEN_RETRY_CAP = 5.0
#: The first wait after a failed attempt; doubling up to the cap.
_FIRST_RETRY = 0.25


@runtime_checkable
class _Leads(Protocol):
    """A store shared by replicas (PostgreSQL): it makes a lease that fences its writes."""

    def leadership(self, *, ttl: float, holder: str | None = None) -> Lease: ...

    async def leader(self) -> LeaderInfo | None: ...


def lease_for(store: Store, *, ttl: float) -> Lease:
    """This replica's lease on ``store``: a real one (PostgreSQL), else :class:`SoleLeadership`."""
    if isinstance(store, _Leads):
        return store.leadership(ttl=ttl)
    return SoleLeadership()


async def leader_of(store: Store) -> LeaderInfo | None:
    """Who leads according to ``store`` (None: a single-replica store, or nobody ever led)."""
    if isinstance(store, _Leads):
        return await store.leader()
    return None


def send_timeout(notify_timeout: float, lease: Lease) -> float:
    """How long one send may take: ``notify.timeout``, but under a real lease at most half
    its ttl, so that :func:`send_window` always opens between two renewals (a renewal
    leaves 0.9 ttl, the next comes ttl/3 later: at least 0.56 ttl is always left)."""
    if isinstance(lease, SoleLeadership):
        return notify_timeout
    ttl = getattr(lease, "ttl", None)
    return min(notify_timeout, ttl / 2) if isinstance(ttl, float | int) else notify_timeout


def send_window(lease: Lease, timeout: Callable[[], float]) -> Callable[[], Awaitable[None]]:
    """The check before each send: returns once the current term has more than
    ``timeout()`` seconds left; raises :class:`LeaseLostError` when the term has ended.

    A send that starts then ends (delivered, failed or timed out) before the lease
    could pass to another replica: only a send in flight when the leader *dies* can be
    repeated by its successor (at most one per failover).
    """

    async def wait_for_window() -> None:
        while True:
            term = lease.term
            if term is None or term.lost.is_set():
                raise LeaseLostError("the lease ended before the notification was sent")
            if term.remaining(anyio.current_time()) > timeout():
                return
            with anyio.move_on_after(0.05):  # the next renewal moves valid_until forward
                await term.lost.wait()

    return wait_for_window


def state_error_in(exc: BaseException) -> LeaseLostError | StateUnavailableError | None:
    """The lease or availability error ``exc`` is or holds (anyio wraps task errors in
    groups): a :class:`LeaseLostError` anywhere wins; else a
    :class:`StateUnavailableError` when *every* error in it is one; else None."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    for leaf in leaves:
        if isinstance(leaf, LeaseLostError):
            return leaf
    errors = [leaf for leaf in leaves if isinstance(leaf, Exception)]  # not cancellations
    if errors and all(isinstance(leaf, StateUnavailableError) for leaf in errors):
        first = errors[0]
        assert isinstance(first, StateUnavailableError)
        return first
    return None


async def lead_while_holding(
    lease: Lease,
    lead: Callable[[Term], Awaitable[None]],
    *,
    stopping: Callable[[], bool],
) -> None:
    """Stand by until ``lease`` is ours, ``await lead(term)`` while it lasts, repeat until
    ``stopping()``. ``lead`` is cancelled when the lease is lost."""
    failures = 0
    while not stopping():
        try:
            async with lease.hold() as term:
                await lead(term)
                failures = 0
        except Exception as exc:
            error = state_error_in(exc)
            if error is None:
                raise
            if isinstance(error, LeaseLostError):
                log.warning("this replica no longer leads; standing by", reason=str(error))
                continue
            failures += 1
            delay = min(OPEN_RETRY_CAP, _FIRST_RETRY * 2 ** (failures - 1))
            log.warning(
                "the state database failed while leading; standing by, then trying again",
                error=str(error),
                retry_in=delay,
            )
            await anyio.sleep(delay)
            continue
        if term.reason not in (None, "released"):
            log.warning("lease lost; standing by", epoch=term.epoch, reason=term.reason)


@asynccontextmanager
async def open_store_patiently(
    state: StateSettings, *, beat: Callable[[], None] = lambda: None
) -> AsyncIterator[Store]:
    """:func:`watcher.store.open_store`, retried while the database cannot be reached.

    The first failure is logged once, in one line (``cannot reach the state database``);
    then the store is tried again with backoff (0.25 s, doubling, at most
    :data:`OPEN_RETRY_CAP`) until it answers or the caller is cancelled (SIGTERM).
    ``beat`` is called while waiting (the liveness heartbeat). Errors that waiting will
    not mend (a wrong password, a newer schema) are raised at once.
    """
    failures = 0
    while True:
        try:
            opened = open_store(state)
            store = await opened.__aenter__()
        except StateUnavailableError as exc:
            failures += 1
            if failures == 1:
                log.error("cannot reach the state database; retrying until it answers",
                          error=str(exc))  # fmt: skip
            delay = min(OPEN_RETRY_CAP, _FIRST_RETRY * 2 ** (failures - 1))
            deadline = anyio.current_time() + delay
            while anyio.current_time() < deadline:
                beat()
                await anyio.sleep(min(1.0, deadline - anyio.current_time()))
            continue
        break
    if failures:
        log.info("the state database answers", attempts=failures + 1, location=store.location)
    try:
        yield store
    finally:
        await opened.__aexit__(None, None, None)


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


#: How long a stopping leader lets its parts finish (polling stops at once, delivery gets
#: a grace inside the parts) before the term is abandoned.
STOP_GRACE = 4.0


class Leading:
    """One replica's leadership as the daemon runs it (``Watcher.run`` delegates here).

    ``load`` reads the states into the daemon (marks them fresh via :attr:`fresh`);
    ``work`` runs the leader's parts until the daemon stops. A standby only beats the
    liveness heartbeat. ``gauge`` is ``finetune_watcher_leader``.
    """

    def __init__(self, lease: Lease, *, gauge: _Gauge, beat: Callable[[], None]) -> None:
        self.lease = lease
        #: The leader's parts are running (the states of this term are loaded).
        self.active = False
        #: The daemon holds the states as the store has them now (set by the daemon's load).
        self.fresh = False
        self._gauge = gauge
        self._beat = beat
        self._leader_seen: str | None = None
        gauge.set(0)

    @property
    def replicated(self) -> bool:
        """True when replicas share the state through a lease (PostgreSQL)."""
        return not isinstance(self.lease, SoleLeadership)

    @property
    def role(self) -> str:
        """``leader`` while this replica polls and delivers, else ``standby``."""
        return "leader" if self.active and self.lease.is_leader else "standby"

    @property
    def leader(self) -> str | None:
        """The replica known to lead (this one's holder while it leads); None if unknown."""
        if not self.replicated:
            return None
        return self.lease.holder if self.role == "leader" else self._leader_seen

    async def leader_info(self, store: Store) -> LeaderInfo | None:
        """The lease as the database has it (None with SQLite), for the status document."""
        info = await leader_of(store)
        if info is not None:
            self._leader_seen = info.holder if info.live else None
        return info

    async def run(
        self,
        *,
        load: Callable[[], Awaitable[None]],
        work: Callable[[], Awaitable[None]],
        stop: anyio.Event,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Stand by and lead (:func:`lead_while_holding`) until ``stop`` is set; then a
        standby stops at once and a leader gets :data:`STOP_GRACE` to finish."""
        async with anyio.create_task_group() as tg:
            leadership = anyio.CancelScope()
            finished = anyio.Event()

            async def lead(term: Term) -> None:
                await self._lead(term, load, work, stop)

            async def hold_and_lead() -> None:
                try:
                    with leadership:
                        await lead_while_holding(self.lease, lead, stopping=stop.is_set)
                finally:
                    finished.set()
                    tg.cancel_scope.cancel()

            tg.start_soon(self._standby_heartbeat)
            tg.start_soon(hold_and_lead)
            task_status.started()
            await stop.wait()
            if not self.active:
                leadership.cancel()  # a standby has nothing to finish
            with anyio.move_on_after(STOP_GRACE):
                await finished.wait()
            tg.cancel_scope.cancel()

    async def _lead(
        self,
        term: Term,
        load: Callable[[], Awaitable[None]],
        work: Callable[[], Awaitable[None]],
        stop: anyio.Event,
    ) -> None:
        """One term: load the states (after the lease; unless fresh), work until ``stop``.

        After a ``StateUnavailableError`` the outcome of the last write is unknown: the
        parts stop, and the states are reloaded before anything is decided again.
        """
        if self.replicated:
            self.fresh = False  # another replica may have led since we last looked
            log.info("this replica leads: polling and delivering", epoch=term.epoch)
        failures = 0
        while not stop.is_set():
            try:
                if not self.fresh:
                    await load()
                self.active = True
                self._gauge.set(1)
                await work()
                return
            except Exception as exc:
                error = state_error_in(exc)
                if not isinstance(error, StateUnavailableError):
                    raise  # a lost lease: lead_while_holding stands by; anything else: fatal
                failures += 1
                self.fresh = False
                delay = min(OPEN_RETRY_CAP, _FIRST_RETRY * 2 ** (failures - 1))
                log.warning("the state database failed; reloading the states, then going on",
                            error=str(error), retry_in=delay)  # fmt: skip
                await anyio.sleep(delay)
            finally:
                self.active = False
                self._gauge.set(0)

    async def _standby_heartbeat(self) -> None:
        """The liveness heartbeat while no poll loop beats it (a standby is alive too)."""
        while True:
            if not self.active:
                self._beat()
            await anyio.sleep(1.0)
