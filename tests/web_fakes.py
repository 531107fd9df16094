"""A hand-written ``WebSource`` for the web layer's tests: models in a dict, changes on demand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from watcher.web.source import DaemonFacts, SourceUnavailable

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)

#: Like the providers' schemes: every status a provider has, as a lifecycle word.
SCHEME_PHASES = {
    "cohere": {"STATUS_QUEUED": "queued", "STATUS_FINETUNING": "running",
               "STATUS_READY": "ready", "STATUS_FAILED": "failed", "STATUS_PAUSED": "other"},
    "openai": {"validating_files": "queued", "queued": "queued", "running": "running",
               "succeeded": "ready", "failed": "failed", "cancelled": "cancelled"},
    "mistral": {"QUEUED": "queued", "RUNNING": "running", "SUCCESS": "ready",
                "FAILED": "failed", "CANCELLED": "cancelled"},
}  # fmt: skip


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class FakeSource:
    """Satisfies ``watcher.web.source.WebSource``; tests change models and call ``bump``."""

    def __init__(self, *, now: datetime | None = None, clock_follows: bool = True) -> None:
        self.now = now or datetime.now(UTC)
        self.clock_follows = clock_follows  # generated_at is the real time (browser tests)
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        # As the real daemon: phases come from the providers' schemes, not the document.
        self.phases = {provider: dict(table) for provider, table in SCHEME_PHASES.items()}
        self.timelines: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.outbox = {"pending": 0, "done": 0, "given_up": 0}
        self.facts = DaemonFacts(alive=True, ready=True, summary="watching 0 models")
        self.poll_requests: list[tuple[str, str]] = []
        self.document_reads = 0
        self.starting: str | None = None  # set: documents raise SourceUnavailable(this)
        self._changed = anyio.Event()

    # --- the protocol -----------------------------------------------------------------

    async def status_document(self) -> dict[str, Any]:
        self.document_reads += 1
        if self.starting is not None:
            raise SourceUnavailable(self.starting)
        models = sorted(
            self.models.values(), key=lambda m: ((m["name"] or m["id"]).casefold(), m["id"])
        )
        return {
            "generated_at": iso(self._now()),
            "state_path": "/var/lib/finetune-watcher/watcher.db",
            "models": [dict(m) for m in models],
            "outbox": dict(self.outbox),
        }

    async def model_document(self, provider: str, model_id: str) -> dict[str, Any] | None:
        if self.starting is not None:
            raise SourceUnavailable(self.starting)
        model = self.models.get((provider, model_id))
        if model is None:
            return None
        return {
            "generated_at": iso(self._now()),
            "model": dict(model),
            "timeline": [dict(s) for s in self.timelines.get((provider, model_id), [])],
        }

    def status_phases(self) -> dict[str, dict[str, str]]:
        return self.phases

    def changed(self) -> anyio.Event:
        return self._changed

    async def request_poll(self, provider: str, model_id: str) -> bool:
        self.poll_requests.append((provider, model_id))
        return (provider, model_id) in self.models

    async def daemon_facts(self) -> DaemonFacts:
        return self.facts

    # --- driving it ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.now(UTC) if self.clock_follows else self.now

    def bump(self) -> None:
        """A recorded change: wake whoever waits."""
        self._changed.set()
        self._changed = anyio.Event()

    def add(
        self,
        model_id: str,
        *,
        name: str | None = None,
        provider: str = "cohere",
        status: str | None = None,
        phase: str | None = None,
        since: timedelta | None = timedelta(hours=2, minutes=14),
        polled: timedelta | None = timedelta(seconds=12),
        last_error: str | None = None,
        pending: int = 0,
        failures: int = 0,
        discovered: bool = False,
        configured: bool = True,
    ) -> dict[str, Any]:
        base = self._now()
        model = {
            "id": model_id,
            "provider": provider,
            "name": name,
            "status": status,
            "status_since": iso(base - since) if since is not None and status else None,
            "last_poll_at": iso(base - polled) if polled is not None else None,
            "last_success_at": iso(base - polled) if polled is not None and status else None,
            "last_error": last_error,
            "failures": failures,
            "pending_notifications": pending,
            "discovered": discovered,
            "configured": configured,
        }
        self.models[(provider, model_id)] = model
        if status is not None and phase is not None:
            self.phases.setdefault(provider, {})[status] = phase
        if status is not None and since is not None:
            self.timelines[(provider, model_id)] = [
                {"status": status, "phase": phase, "since": model["status_since"], "until": None}
            ]
        return model

    def set_status(self, provider: str, model_id: str, status: str, phase: str | None) -> None:
        """The model moved to ``status`` now; its timeline grows; then ``bump``.

        ``phase`` goes into the timeline only: the page learns a status's phase from
        ``status_phases`` (fixed at start, as the providers' schemes are)."""
        model = self.models[(provider, model_id)]
        at = iso(self._now())
        model.update(status=status, status_since=at, last_poll_at=at, last_success_at=at)
        timeline = self.timelines.setdefault((provider, model_id), [])
        if timeline:
            timeline[-1]["until"] = at
        timeline.append({"status": status, "phase": phase, "since": at, "until": None})
        self.bump()


def sample_source(**kwargs: Any) -> FakeSource:
    """A fleet worth looking at: several providers and every kind of status."""
    source = FakeSource(**kwargs)
    source.add(
        "ftjob-abc123",
        name="support-classifier",
        provider="openai",
        status="running",
        phase="running",
        since=timedelta(hours=1, minutes=3),
    )
    source.add(
        "4f9d0c1e-7b2a-4c55-9a61-1f0c2b7d9e10",
        name="invoice-extractor",
        status="STATUS_READY",
        phase="ready",
        since=timedelta(minutes=44),
        pending=1,
    )
    source.add(
        "ftjob-zz9",
        name="tone-rewriter",
        provider="openai",
        status="failed",
        phase="failed",
        since=timedelta(minutes=5),
        last_error="training file has 3 malformed lines",
    )
    source.add(
        "b71c-queued",
        name="faq-embedder",
        status="STATUS_QUEUED",
        phase="queued",
        since=timedelta(minutes=2),
        discovered=True,
    )
    source.add(
        "a0a0-paused",
        name=None,
        provider="cohere",
        status="STATUS_PAUSED",
        phase="other",
        since=timedelta(days=1, hours=4),
    )
    source.add("c-new", name="legal-summariser", polled=None, since=None)
    source.add("ft-mistral-1", name="code-review-assistant", provider="mistral",
               status="CANCELLED", phase="cancelled", since=timedelta(hours=3),
               configured=False)  # fmt: skip
    source.outbox = {"pending": 1, "done": 14, "given_up": 0}
    source.facts = DaemonFacts(
        alive=True, ready=True, summary="watching 7 models, 2 in progress, last poll 3s ago"
    )
    return source
