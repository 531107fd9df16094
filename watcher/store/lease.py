"""Leadership: which replica polls and delivers, decided by a lease kept in the database.

Theory of operation
-------------------
Several replicas may share one state database; exactly one of them -- the
*leader* -- may poll providers and deliver notifications. The others are
*standbys*: connected, ready, silent. The database holds one lease row,
``(holder, epoch, expires_at)``, and only the database's clock decides whether it
has expired. Three rules make this safe (docs/ha.md argues each):

1. **Taking the lease** succeeds only when it has expired, and adds one to the
   *epoch*: every leadership term has a number no other term ever had.
2. **Keeping the lease**: the leader renews it every ``ttl / 3``. A renewal names
   its epoch and succeeds only while the lease is still that epoch's, unexpired.
3. **Fencing**: every write the leader makes -- a state change, an outbox claim,
   a delivery record -- runs in a transaction that first locks the lease row
   ``FOR SHARE`` and checks ``holder, epoch`` and ``expires_at > now()``. A
   takeover must update that row, so it waits for every fenced transaction in
   flight and every later one sees the new epoch and is refused
   (:class:`LeaseLostError`). A replica that was paused, partitioned or slow
   cannot write anything after another took over, whatever its own clock says.

On top of that the leader *steps down by itself* before the database would let
anyone take over: each successful renewal is good, on the replica's monotonic
clock, for ``ttl - margin`` from the moment the renewal was *sent* (the database
stamped it later, so its lease lasts longer). A replica that cannot renew in that
time -- database down, network gone -- stops leading (``Term.lost`` is set, the
body of :meth:`Leadership.hold` is cancelled) before a standby can take over.
Only a send already in flight at that instant can still reach its target: the
one duplicate per failover that at-least-once delivery allows.

This module holds the pure timing rules (:class:`LeaseTiming`), the protocols a
backend implements (:class:`LeaseBackend`) and a daemon uses (:class:`Lease`),
and the acquire/renew loop (:class:`Leadership`); the SQL lives in
:mod:`watcher.store.postgres`. :class:`SoleLeadership` is the single-replica
case (SQLite, whose file lock already makes one process the only writer).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import anyio
import structlog

from watcher.errors import StateError

__all__ = [
    "Acquisition",
    "Fence",
    "LeaderInfo",
    "Leadership",
    "Lease",
    "LeaseBackend",
    "LeaseLostError",
    "LeaseTiming",
    "Role",
    "SoleLeadership",
    "Term",
    "default_holder",
]

log = structlog.get_logger("watcher.lease")

Role = Literal["leader", "standby"]


class LeaseLostError(StateError):
    """A write was refused: this replica does not hold the lease (any more).

    Raised by a fenced store when the lease row names another holder or epoch,
    or has expired, or when the replica itself knows it is not leading. Not a
    fault of the database: the daemon stops leading and becomes a standby.
    """


# --- pure: timing -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Every timing rule of the lease, as pure functions of ``ttl`` (seconds).

    Times here are the replica's monotonic clock (``anyio.current_time()``); the
    lease's own expiry is the database's business.
    """

    ttl: float

    def __post_init__(self) -> None:
        if not self.ttl > 0:
            raise ValueError(f"the lease ttl must be positive, not {self.ttl!r}")

    @property
    def renew_every(self) -> float:
        """A leader renews three times per ttl: two renewals may fail before it steps down."""
        return self.ttl / 3

    @property
    def margin(self) -> float:
        """How long before its lease could expire a leader stops acting on it.

        Covers clock-rate differences and the time between checking
        :attr:`Lease.is_leader` and acting; a tenth of the ttl.
        """
        return self.ttl / 10

    def valid_until(self, sent_at: float) -> float:
        """Until when a grant or renewal *sent* at ``sent_at`` lets this replica lead."""
        return sent_at + self.ttl - self.margin

    def next_renewal(self, sent_at: float) -> float:
        """When to renew after a successful renewal sent at ``sent_at``."""
        return sent_at + self.renew_every

    def retry_delay(self, failures: int) -> float:
        """Wait after the ``failures``-th database error in a row (doubling, capped at ttl/3)."""
        return min(self.renew_every, 0.05 * 2.0 ** max(0, failures - 1))

    def standby_wait(self, remaining: float | None) -> float:
        """How long a standby waits before trying again.

        ``remaining`` is what the database said is left of the current lease
        (None: no lease row yet). The standby wakes when it would expire -- a
        takeover within a few milliseconds of the expiry -- but at least every
        ttl/3, so a released lease is noticed soon.
        """
        if remaining is None:
            return 0.0
        return min(self.renew_every, max(0.01, remaining + 0.01))


# --- records and protocols --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acquisition:
    """The answer to one attempt at taking the lease.

    ``won``: it is ours, with ``epoch``. Otherwise ``holder``/``epoch`` describe the
    current lease (None: there was never one) and ``remaining`` is how many
    seconds it still has on the database's clock (<= 0: expired, e.g. released).
    """

    won: bool
    holder: str | None
    epoch: int | None
    acquired_at: datetime | None
    remaining: float | None


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who leads, for ``status``, ``/readyz`` and the logs (times on the database's clock)."""

    holder: str | None
    epoch: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    live: bool  # expires_at is still in the future


class LeaseBackend(Protocol):
    """The statements a lease needs; :class:`~watcher.store.postgres.PostgresLeaseBackend`.

    Every method raises :class:`~watcher.errors.StateError` (usually
    ``StateUnavailableError``) when the database cannot answer; the loop retries.
    """

    async def try_acquire(self, holder: str, ttl: float) -> Acquisition:
        """Take the lease if it has expired (new epoch); else describe the current one."""
        ...

    async def renew(self, holder: str, epoch: int, ttl: float) -> bool:
        """Extend our lease by ``ttl`` from now; False when it is no longer ours."""
        ...

    async def release(self, holder: str, epoch: int) -> None:
        """Let the lease expire now, if it is still ours (a standby may take over at once)."""
        ...

    async def leader(self) -> LeaderInfo | None:
        """The current (or last) lease, None when no replica ever led."""
        ...

    async def aclose(self) -> None: ...


class Fence(Protocol):
    """What a fenced store asks before each write: who we are, and our epoch if leading."""

    @property
    def holder(self) -> str: ...

    @property
    def epoch(self) -> int | None:
        """The epoch of the term this replica leads now; None when it does not lead."""
        ...


class Lease(Fence, Protocol):
    """What the daemon uses: wait to lead, lead until told to stop, and say who leads.

    ::

        while not stopping:
            async with lease.hold() as term:   # a standby until this replica leads
                await lead(term)               # cancelled when the lease is lost
            # lost (term.lost is set) or finished: back to standby
    """

    @property
    def is_leader(self) -> bool: ...

    @property
    def role(self) -> Role: ...

    @property
    def term(self) -> Term | None:
        """The current or last term of this replica (None: it never led)."""
        ...

    def hold(self) -> AbstractAsyncContextManager[Term]:
        """Wait until this replica leads; keep the lease while the body runs.

        The body is cancelled when the lease is lost (``term.lost`` is set, the
        ``async with`` ends normally); on exit a lease still held is released.
        """
        ...

    async def leader(self) -> LeaderInfo | None: ...


@dataclass(eq=False, slots=True)
class Term:
    """One leadership term of this replica.

    ``valid_until`` (monotonic clock) moves forward with every renewal; ``lost``
    is set once, when the term ends for any reason (lost, released, expired).
    """

    holder: str
    epoch: int
    acquired_at: datetime | None  # the database's clock
    valid_until: float
    lost: anyio.Event = field(default_factory=anyio.Event)
    #: Why the term ended (None while it lasts).
    reason: str | None = None

    def remaining(self, now: float) -> float:
        """Seconds this replica may still act as leader (0 once lost or expired)."""
        if self.lost.is_set():
            return 0.0
        return max(0.0, self.valid_until - now)

    def end(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()


def default_holder() -> str:
    """This replica's name in the lease: ``host:pid:random`` -- unique per process.

    The host (a pod's name in Kubernetes) is for people reading ``status``; the
    random part makes a restarted process a new holder, never its predecessor.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# --- the loop ---------------------------------------------------------------------


class Leadership:
    """A :class:`Lease` kept through a :class:`LeaseBackend`: the acquire and renew loops.

    ``clock`` is the monotonic clock (tests pass their own). One instance per
    replica; :meth:`hold` may be entered again after a term ends, never twice at once.
    """

    def __init__(
        self,
        backend: LeaseBackend,
        *,
        ttl: float,
        holder: str | None = None,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.timing = LeaseTiming(ttl)
        self._backend = backend
        self._holder = holder if holder is not None else default_holder()
        self._clock = clock
        self._term: Term | None = None
        self._holding = False

    # --- what the daemon reads ---

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def ttl(self) -> float:
        return self.timing.ttl

    @property
    def term(self) -> Term | None:
        return self._term

    @property
    def is_leader(self) -> bool:
        """True while a term lasts and its last renewal is still good on our clock."""
        term = self._term
        return term is not None and term.remaining(self._clock()) > 0

    @property
    def epoch(self) -> int | None:
        """The epoch this replica leads with now; None as a standby (the :class:`Fence`)."""
        return self._term.epoch if self._term is not None and self.is_leader else None

    @property
    def role(self) -> Role:
        return "leader" if self.is_leader else "standby"

    async def leader(self) -> LeaderInfo | None:
        return await self._backend.leader()

    # --- the loops ---

    async def acquire(self) -> Term:
        """Wait as a standby until the lease is ours; returns the new term."""
        failures = 0
        seen: tuple[str | None, int | None] | None = None
        while True:
            sent = self._clock()
            try:
                attempt = await self._backend.try_acquire(self._holder, self.timing.ttl)
            except LeaseLostError:
                raise
            except StateError as exc:
                failures += 1
                if failures == 1:
                    log.warning("lease: cannot reach the database; retrying", error=str(exc))
                await anyio.sleep(self.timing.retry_delay(failures))
                continue
            if failures:
                log.info("lease: the database answers again", failures=failures)
                failures = 0
            if attempt.won:
                assert attempt.epoch is not None
                term = Term(
                    holder=self._holder,
                    epoch=attempt.epoch,
                    acquired_at=attempt.acquired_at,
                    valid_until=self.timing.valid_until(sent),
                )
                self._term = term
                log.info("lease: this replica leads", holder=self._holder, epoch=term.epoch)
                return term
            if (attempt.holder, attempt.epoch) != seen:
                seen = (attempt.holder, attempt.epoch)
                log.info("lease: standby", leader=attempt.holder, epoch=attempt.epoch)
            await anyio.sleep(self.timing.standby_wait(attempt.remaining))

    async def keep(self, term: Term) -> None:
        """Renew ``term`` until it is lost; returns then, with ``term.lost`` set.

        A renewal the database refuses ends the term at once; one that fails (no
        answer, connection lost) is retried until the term's ``valid_until``.
        """
        timing = self.timing
        renew_at = self._clock() + timing.renew_every
        failures = 0
        while not term.lost.is_set():
            await anyio.sleep(max(0.0, min(renew_at, term.valid_until) - self._clock()))
            sent = self._clock()
            if sent >= term.valid_until:
                self._lose(term, "the lease could not be renewed in time")
                return
            kept: bool | None = None
            with anyio.move_on_after(term.valid_until - sent):
                try:
                    kept = await self._backend.renew(term.holder, term.epoch, timing.ttl)
                except LeaseLostError:
                    kept = False
                except StateError as exc:
                    failures += 1
                    if failures == 1:
                        log.warning(
                            "lease: renewal failed; retrying", epoch=term.epoch, error=str(exc)
                        )
                    renew_at = self._clock() + timing.retry_delay(failures)
                    continue
            if kept is None:
                self._lose(term, "the database did not answer before the lease ran out")
                return
            if not kept:
                self._lose(term, "another replica holds the lease")
                return
            if failures:
                log.info("lease: renewed again", epoch=term.epoch, failures=failures)
                failures = 0
            term.valid_until = timing.valid_until(sent)
            renew_at = timing.next_renewal(sent)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Term]:
        """See :meth:`Lease.hold`."""
        if self._holding:
            raise RuntimeError("Leadership.hold() is already entered")
        self._holding = True
        try:
            term = await self.acquire()
            error: Exception | None = None
            body = anyio.CancelScope()
            try:
                async with anyio.create_task_group() as tasks:

                    async def keep_then_stop() -> None:
                        await self.keep(term)
                        body.cancel()

                    tasks.start_soon(keep_then_stop)
                    try:
                        with body:
                            yield term
                    except Exception as exc:  # re-raised below, not wrapped in a group
                        error = exc
                    finally:
                        tasks.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._release(term)
            if error is not None:
                raise error
        finally:
            self._holding = False

    async def _release(self, term: Term) -> None:
        if term.lost.is_set():
            return
        term.end("released")
        with anyio.move_on_after(max(1.0, self.timing.renew_every)):
            try:
                await self._backend.release(term.holder, term.epoch)
            except StateError as exc:  # it expires by itself within ttl
                log.warning("lease: could not release; it expires by itself", error=str(exc))
                return
            log.info("lease: released", epoch=term.epoch)

    def _lose(self, term: Term, reason: str) -> None:
        term.end(reason)
        log.warning("lease: lost; this replica stops leading", epoch=term.epoch, reason=reason)


class SoleLeadership:
    """The :class:`Lease` of a single replica (SQLite): always the leader, epoch 1.

    The state file's lock already guarantees one writer, so there is nothing to
    renew and nothing to fence; the daemon's code stays the same for both cases.
    """

    def __init__(self, holder: str | None = None) -> None:
        self._holder = holder if holder is not None else default_holder()
        self._term = Term(holder=self._holder, epoch=1, acquired_at=None, valid_until=float("inf"))

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def epoch(self) -> int | None:
        return 1

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def role(self) -> Role:
        return "leader"

    @property
    def term(self) -> Term | None:
        return self._term

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Term]:
        yield self._term

    async def leader(self) -> LeaderInfo | None:
        return None
