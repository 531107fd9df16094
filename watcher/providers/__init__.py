"""The providers, chosen by name: ``models[].provider`` -> one module of this package.

Like uvicorn's ``HTTP_PROTOCOLS``: :data:`PROVIDERS` maps each name to the class
implementing :class:`~watcher.providers.base.Provider`, as ``"module:Class"``, imported
only when first used. Nothing outside this package picks a provider with an ``if``.

Building one (the caller owns the session and closes it)::

    key = api_keys["cohere"].value.get_secret_value()
    session = open_provider_session("cohere", settings.cohere, api_key=key, concurrency=4)
    provider = open_provider("cohere", settings.cohere, session=session, pacer=pacer)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, cast

from watcher.lifecycle import DEFAULT_PROVIDER, StatusScheme

if TYPE_CHECKING:
    import aiohttp

    from watcher.pacing import RequestPacer
    from watcher.providers.base import Provider

__all__ = [
    "PROVIDERS",
    "ProviderClass",
    "ProviderSpec",
    "open_provider",
    "open_provider_session",
    "provider_class",
    "providers_in_use",
    "scheme_for",
]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One registered provider: its name, how people spell it, and where its class lives."""

    name: str
    title: str
    target: str  # "package.module:Class"


#: Every provider the watcher knows, by the name ``models[].provider`` uses.
PROVIDERS: dict[str, ProviderSpec] = {
    "cohere": ProviderSpec("cohere", "Cohere", "watcher.providers.cohere:CohereProvider"),
    "openai": ProviderSpec("openai", "OpenAI", "watcher.providers.openai:OpenAIProvider"),
    "azure-openai": ProviderSpec(
        "azure-openai", "Azure OpenAI", "watcher.providers.azure_openai:AzureOpenAIProvider"
    ),
    "mistral": ProviderSpec("mistral", "Mistral", "watcher.providers.mistral:MistralProvider"),
    "together": ProviderSpec(
        "together", "Together AI", "watcher.providers.together:TogetherProvider"
    ),
    "fireworks": ProviderSpec(
        "fireworks", "Fireworks AI", "watcher.providers.fireworks:FireworksProvider"
    ),
}


class ProviderClass(Protocol):
    """What a provider class offers besides the :class:`Provider` instance methods."""

    name: str
    title: str
    scheme: StatusScheme

    @staticmethod
    def session_headers(section: Any, api_key: str) -> dict[str, str]: ...

    @classmethod
    def from_settings(
        cls, section: Any, session: aiohttp.ClientSession, pacer: RequestPacer | None
    ) -> Provider: ...


@cache
def provider_class(name: str) -> ProviderClass:
    """The class registered as ``name`` (imported on first use); KeyError if unknown."""
    module_name, _, attribute = PROVIDERS[name].target.partition(":")
    return cast("ProviderClass", getattr(importlib.import_module(module_name), attribute))


def scheme_for(name: str) -> StatusScheme:
    """The status scheme of provider ``name``; KeyError if unknown."""
    return provider_class(name).scheme


class _ModelLike(Protocol):
    @property
    def provider(self) -> str: ...


class _SettingsLike(Protocol):
    @property
    def models(self) -> Iterable[_ModelLike]: ...


def providers_in_use(settings: _SettingsLike, *, discovery: bool = False) -> tuple[str, ...]:
    """The provider names ``settings``' models use, in first-use order.

    ``discovery``: discovery is on, which lists the default provider's jobs, so that
    provider is in use even with no model configured for it.
    """
    names = dict.fromkeys(model.provider for model in settings.models)
    if discovery:
        names.setdefault(DEFAULT_PROVIDER)
    return tuple(names)


def open_provider_session(
    name: str, section: Any, *, api_key: str, concurrency: int
) -> aiohttp.ClientSession:
    """Provider ``name``'s HTTP session: its auth headers, ``section.timeout``, a pool for
    ``concurrency`` requests at once. Call inside the event loop; the caller closes it."""
    from watcher.providers.http import open_session  # deferred: aiohttp only when needed

    headers = provider_class(name).session_headers(section, api_key)
    return open_session(headers=headers, timeout=section.timeout, concurrency=concurrency)


def open_provider(
    name: str, section: Any, *, session: aiohttp.ClientSession, pacer: RequestPacer | None
) -> Provider:
    """Provider ``name`` configured by ``section`` (its settings section), over ``session``.

    Cheap: a reload that changes only the section (base URL, page size, timeout) builds a
    new provider over the same session; a new key needs a new session.
    """
    return provider_class(name).from_settings(section, session, pacer)
