"""What the daemon has achieved so far, for health checks, systemd and the demo.

Written by the daemon's parts (poll loop, poller, delivery), read by ``watcher.health``,
``watcher.systemd`` and ``watcher.demo``; it imports nothing of theirs, so none of them
needs the daemon to know what "alive" or "ready" means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import anyio

__all__ = ["Progress"]


@dataclass(slots=True)
class Progress:
    """Liveness and readiness facts. Times ending in ``_mono`` are anyio's monotonic clock."""

    started_mono: float = 0.0
    heartbeat_mono: float = 0.0  # the poll loop went round
    last_success_mono: float | None = None
    last_success_wall: datetime | None = None
    rounds_completed: int = 0  # every watched model polled at least once since start
    last_round_mono: float | None = None  # when the last such round completed
    delivered: int = 0  # notifications fully delivered since start
    auth_failing: bool = False  # some provider rejects its key
    changed: anyio.Event = field(default_factory=anyio.Event)

    def bump(self) -> None:
        """Wake whoever waits on a change (the status page's streams, the demo, tests).

        Called after every write that changes what ``status`` shows; O(1)."""
        self.changed.set()
        self.changed = anyio.Event()
