"""The seam between the web layer and the daemon: what the page, the API and webhooks read.

The web layer never touches the store, the scheduler or the providers; it asks a
:class:`WebSource`. The daemon provides one (an adapter over its ``Watcher``), tests
provide a hand-written fake (``tests/web_fakes.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

__all__ = ["DaemonFacts", "SourceUnavailable", "WebSource"]


class SourceUnavailable(Exception):
    """The daemon cannot answer yet (starting: its state database is not open); the
    message says why. Pages and the API answer 503, the stream waits for ``changed``."""


@dataclass(frozen=True, slots=True)
class DaemonFacts:
    """How the daemon is doing, for the page's header and the stream's ``daemon`` event.

    ``alive``/``ready`` are the ``/healthz``/``/readyz`` verdicts and ``reasons`` why it
    is not ready; ``summary`` is its one-line status (systemd's ``STATUS=``). ``role`` is
    ``"leader"`` or ``"replica"`` on a highly available deployment and None where there is
    no such thing (SQLite); ``leader`` names the leading replica when known.
    """

    alive: bool
    ready: bool
    summary: str
    reasons: tuple[str, ...] = ()
    role: str | None = None
    leader: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "ready": self.ready,
            "summary": self.summary,
            "reasons": list(self.reasons),
            "role": self.role,
            "leader": self.leader,
        }


class WebSource(Protocol):
    """What the web layer needs from the daemon. Every method is cheap and never raises
    for a missing model (None / False instead)."""

    async def status_document(self) -> dict[str, Any]:
        """Exactly the ``status --json`` document (``watcher.views.status_document``).

        Raises :class:`SourceUnavailable` while the daemon is starting (so does
        ``model_document``)."""
        ...

    async def model_document(self, provider: str, model_id: str) -> dict[str, Any] | None:
        """One model and its status timeline, or None when the daemon does not know it.

        ::

            {"generated_at": time, "model": <that model's object of the status document>,
             "timeline": [{"status": str, "phase": str | null, "since": time,
                           "until": time | null}, ...]}          # oldest first

        ``until`` is null for the current status.
        """
        ...

    def status_phases(self) -> Mapping[str, Mapping[str, str]]:
        """Every provider's statuses as common lifecycle words, for the icons:
        ``{"cohere": {"STATUS_READY": "ready", ...}, "openai": {...}}`` (a status it
        misses reads as ``other``). Fixed for the process's life."""
        ...

    def changed(self) -> anyio.Event:
        """An event set at the next change the daemon records (a new one is handed out
        after each change: take it *before* reading, then wait on it)."""
        ...

    async def request_poll(self, provider: str, model_id: str) -> bool:
        """Poll that model as soon as the provider's pacing allows (a webhook's hint).

        False when the daemon neither watches the job nor can discover it. Returns once
        the poll is scheduled (a model being polled right now is polled once more after),
        within a few seconds at most.
        """
        ...

    async def daemon_facts(self) -> DaemonFacts:
        """Health and role for the page."""
        ...
