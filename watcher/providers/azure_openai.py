"""Azure OpenAI's fine-tuning API as a provider: OpenAI's client with Azure's differences.

Azure's v1 API (``https://RESOURCE.openai.azure.com/openai/v1``) has OpenAI's paths,
shapes, pagination and unix-second timestamps, so :class:`AzureOpenAIProvider` is
:class:`~watcher.providers.openai.OpenAIProvider` with:

* the key in an ``api-key`` header (valid for the v1 and the dated API; v1 also takes
  ``Authorization: Bearer``, the dated API does not);
* ``azure_openai.api_version`` (e.g. ``2024-10-21``) sent as ``?api-version=`` on every
  request, for an older deployment's dated API (base URL ``.../openai``); unset for v1,
  which needs none;
* its own status scheme: OpenAI's statuses plus ``created``/``pending`` (queued: the
  dated ``FineTuningState``), ``notRunning`` (queued, defensive) and the legacy
  spelling ``canceled`` (cancelled);
* no dashboard link: no stable per-job portal URL is known (the Azure AI Foundry
  portal has none to link to), so :meth:`dashboard_url` is "" (notices show no link).

Event ``level`` ``warning`` (dated) reads as ``warn`` (v1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from watcher.lifecycle import Phase, StatusScheme
from watcher.providers.base import total
from watcher.providers.openai import OPENAI_TABLE, OpenAIProvider
from watcher.providers.openai import SETTLED as OPENAI_SETTLED

if TYPE_CHECKING:
    import aiohttp

    from watcher.pacing import RequestPacer

__all__ = [
    "AZURE_OPENAI_SCHEME",
    "CANCELED",
    "CREATED",
    "KNOWN_STATUSES",
    "NOT_RUNNING",
    "PENDING",
    "SETTLED",
    "AzureOpenAIProvider",
    "AzureOpenAISection",
]

NAME = "azure-openai"

# Azure's statuses beyond OpenAI's.
CREATED = "created"
PENDING = "pending"
NOT_RUNNING = "notRunning"
CANCELED = "canceled"

#: Statuses after which a job does not change: polled at ``settled_interval``.
SETTLED: frozenset[str] = OPENAI_SETTLED | {CANCELED}

_TABLE: Mapping[str, tuple[Phase, int]] = {
    CREATED: (Phase.QUEUED, 5),
    PENDING: (Phase.QUEUED, 8),
    NOT_RUNNING: (Phase.QUEUED, 8),
    **OPENAI_TABLE,
    CANCELED: (Phase.CANCELLED, 85),
}

AZURE_OPENAI_SCHEME = StatusScheme(provider=NAME, table=_TABLE, settled=SETTLED, unknown_rank=60)

KNOWN_STATUSES: tuple[str, ...] = AZURE_OPENAI_SCHEME.known


class AzureOpenAISection(Protocol):
    """What :meth:`AzureOpenAIProvider.from_settings` reads (``AzureOpenAISettings``)."""

    @property
    def base_url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def page_size(self) -> int: ...
    @property
    def api_version(self) -> str | None: ...


@total
class AzureOpenAIProvider(OpenAIProvider):
    """Typed access to an Azure OpenAI resource's ``/fine_tuning/jobs``."""

    name = NAME
    title = "Azure OpenAI"
    scheme = AZURE_OPENAI_SCHEME
    supports_discovery = True
    dashboard: ClassVar[str] = ""

    @staticmethod
    def session_headers(section: Any, api_key: str) -> dict[str, str]:
        """The key as ``api-key`` (both API generations accept it)."""
        return {"api-key": api_key}

    @classmethod
    def from_settings(
        cls,
        section: Any,
        session: aiohttp.ClientSession,
        pacer: RequestPacer | None,
    ) -> AzureOpenAIProvider:
        """The provider for an ``azure_openai:`` section over ``session``."""
        from watcher.providers.http import ApiTransport  # deferred: keeps aiohttp out of settings

        azure: AzureOpenAISection = section
        transport = ApiTransport(session, provider=NAME, pacer=pacer, timeout=azure.timeout)
        query = {"api-version": azure.api_version} if azure.api_version else None
        return cls(transport, base_url=azure.base_url, page_size=azure.page_size, query=query)


if TYPE_CHECKING:
    from watcher.providers import ProviderClass
    from watcher.providers.base import Provider

    def _conforms(provider: AzureOpenAIProvider) -> tuple[Provider, ProviderClass]:
        return provider, AzureOpenAIProvider  # mypy checks both protocols here
