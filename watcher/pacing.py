"""The request budget: one pacer per provider, shared by every request to it.

A provider's rate limit is per key, so its budget covers every request made with
that key (polls, details, discovery). Requests are spaced evenly (``60 / per_minute``
seconds apart, never a burst) and a 429 pauses every request to that provider.
The clock is a parameter (anyio's monotonic clock by default).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio


class RequestPacer:
    """Hands out request slots at most ``per_minute`` a minute, evenly spaced."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = anyio.current_time) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = per_minute
        self.spacing = 60.0 / per_minute
        self._clock = clock
        self._next_slot = float("-inf")
        self._paused_until = float("-inf")
        self.requests = 0  # slots handed out since start (for metrics)
        # Requests per second of the last minute, as a ring of 60 counters.
        self._ring = [0] * 60
        self._ring_second = 0

    @property
    def paused_until(self) -> float:
        """Monotonic time until which a 429 paused all requests."""
        return self._paused_until

    def reserve(self) -> float:
        """Reserve the next slot; returns how long the caller must wait for it."""
        now = self._clock()
        slot = max(now, self._next_slot, self._paused_until)
        self._next_slot = slot + self.spacing
        self.requests += 1
        self._count(slot)
        return slot - now

    def seconds_until_free(self) -> float:
        """How long a slot reserved now would wait (0 when the budget is not binding).

        Lets a scheduler pick *what* to request at the moment a slot frees, instead of
        queueing requests chosen earlier; it reserves nothing.
        """
        return max(0.0, max(self._next_slot, self._paused_until) - self._clock())

    async def acquire(self) -> None:
        """Wait for the next slot."""
        wait = self.reserve()
        if wait > 0:
            await anyio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Stop handing out slots for ``seconds`` (after a 429; ``policy`` says how long)."""
        until = self._clock() + max(0.0, seconds)
        self._paused_until = max(self._paused_until, until)

    def _advance_ring(self, second: int) -> None:
        """Zero the counters of the seconds that passed since the last count."""
        if second - self._ring_second >= 60:
            self._ring = [0] * 60
        else:
            for s in range(self._ring_second + 1, second + 1):
                self._ring[s % 60] = 0
        self._ring_second = max(self._ring_second, second)

    def _count(self, at: float) -> None:
        self._advance_ring(int(at))
        self._ring[int(at) % 60] += 1

    def recent_requests(self) -> int:
        """Requests handed out in the last 60 seconds (to the second)."""
        self._advance_ring(int(self._clock()))
        return sum(self._ring)
