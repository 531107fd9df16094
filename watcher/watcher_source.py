"""The running daemon as the web layer sees it: ``watcher.web.source.WebSource`` over a
``Watcher``.

It lives outside ``watcher.web`` because the web layer may not import the daemon (an
import-linter contract); the daemon builds one and hands it to ``watcher.web.mount_web``.
The status document is built exactly as ``finetune-watcher status --json`` builds it
(``watcher.views``), from the same store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from watcher.health import liveness, readiness
from watcher.lifecycle import ModelKey, ModelState
from watcher.providers import PROVIDERS, scheme_for
from watcher.redact import SECRETS
from watcher.settings import Settings, resolve_web_token, resolve_webhook_secret
from watcher.views import Stage, iso, stages_from_seen, status_document, status_rows
from watcher.web.options import WebOptions
from watcher.web.source import DaemonFacts, SourceUnavailable

if TYPE_CHECKING:
    from watcher.daemon import Watcher

__all__ = ["STARTING", "WatcherSource", "web_options"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


#: What the page says while the daemon has no ``Watcher`` yet.
STARTING = "waiting for the state database"


class WatcherSource:
    """``WebSource`` for one ``Watcher``.

    The health server (and so the page) starts before the state database is open: then
    build it with ``watcher=None`` and ``attach`` the Watcher once it exists; until then
    documents raise ``SourceUnavailable`` (503) and open streams wait. ``listening_since``
    returns when the HTTP server started (anyio's clock): liveness counts from it until
    the poll loop's first heartbeat, as ``/healthz`` does.
    """

    def __init__(
        self,
        watcher: Watcher | None,
        *,
        listening_since: Callable[[], float],
        stale_after: float | None = None,
        clock: Callable[[], float] = anyio.current_time,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._current = watcher
        self._attached = anyio.Event()
        if watcher is not None:
            self._attached.set()
        self._listening_since = listening_since
        self._stale_after = stale_after
        self._clock = clock
        self._now = now
        self._phases: dict[str, dict[str, str]] | None = None

    def attach(self, watcher: Watcher) -> None:
        """The daemon's Watcher exists now: pages, the API and streams show it."""
        self._current = watcher
        self._attached.set()

    @property
    def _watcher(self) -> Watcher:
        if self._current is None:
            raise SourceUnavailable(STARTING)
        return self._current

    async def status_document(self) -> dict[str, Any]:
        watcher = self._watcher
        store = watcher.store
        records = await store.model_records()
        counts = await store.outbox_counts()
        configured = {m.key: m.name for m in watcher.settings.models}
        rows = status_rows(records, configured)
        return status_document(
            rows, counts, now=self._now(), state_location=store.location,
            leader=await watcher.leading.leader_info(store),
        )  # fmt: skip

    async def model_document(self, provider: str, model_id: str) -> dict[str, Any] | None:
        document = await self.status_document()
        model = next(
            (m for m in document["models"] if m["provider"] == provider and m["id"] == model_id),
            None,
        )
        if model is None:
            return None
        return {
            "generated_at": document["generated_at"],
            "model": model,
            "timeline": self._timeline(ModelKey(provider, model_id), model),
        }

    def _timeline(self, key: ModelKey, model: Mapping[str, Any]) -> list[dict[str, Any]]:
        phases = self.status_phases().get(key.provider, {})
        watched = self._watcher.models.get(key)
        stages = _timeline_of(watched.state, key.provider) if watched is not None else []
        if stages:
            return [
                {
                    "status": stage.status,
                    "phase": phases.get(stage.status, "other"),
                    "since": iso(stage.since),
                    "until": iso(stage.until),
                }
                for stage in stages
            ]
        status = model.get("status")
        if not status or not model.get("status_since"):
            return []
        since = model["status_since"]
        return [{"status": status, "phase": phases.get(status, "other"), "since": since,
                 "until": None}]  # fmt: skip

    def status_phases(self) -> dict[str, dict[str, str]]:
        if self._phases is None:
            self._phases = {}
            for name in PROVIDERS:
                try:
                    scheme = scheme_for(name)
                except (ImportError, AttributeError, KeyError):  # a provider not built yet
                    continue
                self._phases[name] = {s: p.value for s, (p, _) in scheme.table.items()}
        return self._phases

    def changed(self) -> anyio.Event:
        if self._current is None:
            return self._attached  # set by ``attach``: streams then read the documents
        return self._current.progress.changed

    async def request_poll(self, provider: str, model_id: str) -> bool:
        watcher = self._current
        if watcher is None:
            return False
        # Scheduled now; a model in flight is polled once more right after (Schedule.soon).
        return watcher.poll_soon(ModelKey(provider, model_id))

    async def daemon_facts(self) -> DaemonFacts:
        watcher = self._current
        if watcher is None:
            return DaemonFacts(alive=True, ready=False, summary=STARTING, reasons=(STARTING,))
        now = self._clock()
        alive = liveness(
            watcher.progress,
            now=now,
            listening_since=self._listening_since(),
            stale_after=self._stale_after or watcher.liveness_window,
        )
        ready = readiness(
            watcher.progress,
            deadline=watcher.round_deadline,
            database_ok=await watcher.database_ok(),
            now=now,
            role=watcher.role,
        )
        return DaemonFacts(
            alive=alive.healthy,
            ready=ready.healthy,
            summary=watcher.status_line(),
            reasons=tuple(ready.body.get("reasons", ())),
            role=watcher.role if watcher.leading.replicated else None,
            leader=watcher.leading.leader,
        )


def web_options(settings: Settings, environ: Mapping[str, str] | None = None) -> WebOptions:
    """The web layer's options from the settings, secrets read (and registered for
    scrubbing). Raises ``ConfigError`` for an unreadable or bad token or webhook secret."""
    token = resolve_web_token(settings)
    secret = resolve_webhook_secret(settings, environ)
    for value in (token, secret):
        if value is not None:
            SECRETS.add(value.get_secret_value())
    return WebOptions(
        listen_host=settings.health.host or "",
        public=settings.web.public,
        token=token.get_secret_value() if token else None,
        webhook_secret=secret.get_secret_value() if secret else None,
        max_streams=settings.web.max_streams,
    )


#: How many of a model's last statuses the page's timeline shows.
STAGES_SHOWN = 50


def _timeline_of(state: ModelState | None, provider: str) -> list[Stage]:
    """A model's timeline, built when a page asks for it from the identities its state has
    seen (the newest ``SEEN_LIMIT``): nothing is kept per model for it between requests."""
    if state is None or not state.seen or provider not in PROVIDERS:
        return []
    return stages_from_seen(state.seen, scheme=scheme_for(provider))[-STAGES_SHOWN:]
