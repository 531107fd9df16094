"""The provider clients of one watcher: per provider one HTTP session, one request budget
and the provider on them, rebuilt when a reload changes what they are built from.

A client is built from a *recipe* (its settings section, its key, the budget,
``poll.concurrency``); ``update`` compares recipes, so a reload that changes a base URL,
a timeout, a page size, the budget or the concurrency takes effect on the next request.
A session that a new one replaces is closed at shutdown, not at once: polls in flight
finish on it. A new budget keeps a pause a 429 imposed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from watcher.pacing import RequestPacer
from watcher.providers import (
    open_provider,
    open_provider_session,
    provider_class,
)

if TYPE_CHECKING:
    import aiohttp

    from watcher.providers.base import Provider
    from watcher.settings import ApiKey, Settings

__all__ = ["ProviderClient", "ProviderClients"]

log = structlog.get_logger("watcher.clients")


@dataclass(slots=True)
class ProviderClient:
    """One provider, ready to use: the provider, its budget and the session under it."""

    provider: Provider
    pacer: RequestPacer
    session: aiohttp.ClientSession
    timeout: float
    session_recipe: tuple[Any, ...] = field(repr=False)
    recipe: tuple[Any, ...] = field(repr=False)


class ProviderClients:
    """The clients by provider name. Open with ``update`` (inside the event loop)."""

    def __init__(self, api_keys: Mapping[str, ApiKey]) -> None:
        self.api_keys = dict(api_keys)
        self._clients: dict[str, ProviderClient] = {}
        self._retired: list[aiohttp.ClientSession] = []

    def __getitem__(self, provider: str) -> ProviderClient:
        return self._clients[provider]

    def __contains__(self, provider: object) -> bool:
        return provider in self._clients

    def __iter__(self) -> Iterator[ProviderClient]:
        return iter(list(self._clients.values()))

    @property
    def request_timeout(self) -> float:
        """The longest request timeout of any provider (for liveness and readiness)."""
        return max((c.timeout for c in self._clients.values()), default=30.0)

    def update(self, settings: Settings) -> list[str]:
        """Build the client of every provider ``settings`` uses that has a key, or rebuild it
        when its recipe changed; returns the names built or rebuilt."""
        changed: list[str] = []
        for name in settings.providers_in_use():
            key = self.api_keys.get(name)
            if key is None:
                log.error("no API key for this provider; its models are not polled", provider=name)
                continue
            section = settings.provider_section(name)
            concurrency = settings.poll.concurrency
            secret = key.value.get_secret_value()
            headers = provider_class(name).session_headers(section, secret)
            session_recipe = (tuple(sorted(headers.items())), concurrency)
            budget = settings.requests_per_minute(name)
            recipe = (section, budget, concurrency)
            old = self._clients.get(name)
            if old is not None and old.recipe == recipe and old.session_recipe == session_recipe:
                continue
            session = old.session if old is not None else None
            if old is None or old.session_recipe != session_recipe:
                session = open_provider_session(
                    name, section, api_key=secret, concurrency=concurrency
                )
                if old is not None:
                    self._retired.append(old.session)
            assert session is not None
            pacer = RequestPacer(budget)
            if old is not None:  # a 429's pause outlives the reload
                pacer.pause(old.pacer.paused_until - anyio.current_time())
            provider = open_provider(name, section, session=session, pacer=pacer)
            self._clients[name] = ProviderClient(
                provider, pacer, session, float(section.timeout), session_recipe, recipe
            )
            changed.append(name)
        return changed

    async def aclose(self) -> None:
        """Close every session (current and replaced), shielded; failures are logged."""
        sessions = [*self._retired, *(c.session for c in self._clients.values())]
        self._retired.clear()
        self._clients.clear()
        with anyio.CancelScope(shield=True):
            for session in reversed(sessions):
                try:
                    await session.close()
                except Exception as exc:  # cleanup must not mask the real outcome
                    log.error("error while closing", resource="http session", error=str(exc))
