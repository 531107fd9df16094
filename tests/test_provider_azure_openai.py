"""The Azure OpenAI provider: its scheme (OpenAI's plus pending/created/canceled), the
``api-key`` header, ``api-version`` on every request for the dated API, no dashboard
link, and OpenAI's client behaviour against a loopback server with Azure's fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.openai_fake import FakeOpenAI, Fault, fixture, serving
from watcher.errors import AuthError, NotFoundError, RateLimitedError
from watcher.lifecycle import DEFAULT_NOTIFY_ON, Event, Phase, observe
from watcher.providers import PROVIDERS, open_provider, open_provider_session, provider_class
from watcher.providers.azure_openai import (
    AZURE_OPENAI_SCHEME,
    CANCELED,
    CREATED,
    KNOWN_STATUSES,
    NOT_RUNNING,
    PENDING,
    AzureOpenAIProvider,
)
from watcher.providers.openai import (
    CANCELLED,
    FAILED,
    OPENAI_SCHEME,
    PAUSED,
    PAUSING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    VALIDATING_FILES,
)
from watcher.settings import AzureOpenAISettings

KEY = "azure-key-0123"
JOB = "ftjob-0123456789abcdef0123456789abcdef"
PREFIX = "/azure/openai/v1"


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def fake_with(*names: str, **kw: Any) -> FakeOpenAI:
    fake = FakeOpenAI(key=KEY, auth="api-key", prefix=PREFIX, **kw)
    events = fixture("azure-openai-events-page.json")["data"]
    for name in names:
        fake.add_job(fixture(name), events)
    return fake


@asynccontextmanager
async def client_for(
    fake: FakeOpenAI, *, key: str = KEY, api_version: str | None = None, page_size: int = 100
) -> AsyncIterator[AzureOpenAIProvider]:
    """Built the way the daemon builds it: the registry, from a settings section."""
    async with serving(fake) as base_url:
        section = AzureOpenAISettings(
            base_url=base_url, api_version=api_version, page_size=page_size, timeout=5
        )
        session = open_provider_session("azure-openai", section, api_key=key, concurrency=2)
        try:
            provider = open_provider("azure-openai", section, session=session, pacer=None)
            assert isinstance(provider, AzureOpenAIProvider)
            yield provider
        finally:
            await session.close()


SCHEME_TABLE = [
    (CREATED, Phase.QUEUED, False),
    (PENDING, Phase.QUEUED, False),
    (NOT_RUNNING, Phase.QUEUED, False),
    (VALIDATING_FILES, Phase.QUEUED, False),
    (QUEUED, Phase.QUEUED, False),
    (RUNNING, Phase.RUNNING, False),
    (PAUSING, Phase.RUNNING, False),
    (PAUSED, Phase.OTHER, False),
    (SUCCEEDED, Phase.READY, True),
    (FAILED, Phase.FAILED, True),
    (CANCELLED, Phase.CANCELLED, True),
    (CANCELED, Phase.CANCELLED, True),
    ("notAThing", Phase.OTHER, False),
]


class TestScheme:
    @pytest.mark.parametrize(("status", "phase", "settled"), SCHEME_TABLE)
    def test_every_status(self, status: str, phase: Phase, settled: bool) -> None:
        assert AZURE_OPENAI_SCHEME.phase(status) is phase
        assert AZURE_OPENAI_SCHEME.is_settled(status) is settled
        assert AZURE_OPENAI_SCHEME.is_failure(status) is (phase is Phase.FAILED)

    def test_ranks_follow_the_lifecycle(self) -> None:
        """created < pending = notRunning < OpenAI's order; both cancel spellings alike."""
        in_table_order = [s for s, *_ in SCHEME_TABLE[:-1] if s != CANCELED]
        assert (*in_table_order, CANCELED) == KNOWN_STATUSES
        ranks = [AZURE_OPENAI_SCHEME.rank(s) for s, *_ in SCHEME_TABLE[:-1]]
        assert ranks == sorted(ranks)
        assert AZURE_OPENAI_SCHEME.rank(CANCELED) == AZURE_OPENAI_SCHEME.rank(CANCELLED)
        for status in OPENAI_SCHEME.known:  # OpenAI's statuses mean the same on Azure
            assert AZURE_OPENAI_SCHEME.table[status] == OPENAI_SCHEME.table[status]
        assert AZURE_OPENAI_SCHEME.provider == "azure-openai"
        assert AZURE_OPENAI_SCHEME.rank("notAThing") == 60

    def test_defaults_announce_outcomes_only(self) -> None:
        announced = {
            s for s in KNOWN_STATUSES if AZURE_OPENAI_SCHEME.announces(s, DEFAULT_NOTIFY_ON)
        }
        assert announced == {SUCCEEDED, FAILED}
        assert AZURE_OPENAI_SCHEME.announces(CANCELED, frozenset({"cancelled"}))

    def test_registered(self) -> None:
        assert PROVIDERS["azure-openai"].title == "Azure OpenAI"
        assert provider_class("azure-openai") is AzureOpenAIProvider
        assert AzureOpenAIProvider.name == "azure-openai"
        assert AzureOpenAIProvider.scheme is AZURE_OPENAI_SCHEME
        assert AzureOpenAIProvider.supports_discovery is True

    def test_headers_and_dashboard(self) -> None:
        section = AzureOpenAISettings(base_url="https://r.openai.azure.com/openai/v1")
        assert AzureOpenAIProvider.session_headers(section, "k-1") == {"api-key": "k-1"}
        provider = AzureOpenAIProvider.__new__(AzureOpenAIProvider)
        assert provider.dashboard_url(JOB) == ""


class TestClient:
    async def test_pending_job_and_api_key_header(self) -> None:
        """A pending job (the SDK's strict enum would reject it) is queued; the key rides
        in ``api-key``, never as a bearer token; no api-version on v1."""
        fake = fake_with("azure-openai-job-pending.json")
        async with client_for(fake) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(PENDING, at(1796025720))]
        first = fake.requests[0]
        assert first.headers["api-key"] == KEY
        assert "Authorization" not in first.headers
        assert "api-version" not in first.query

    async def test_dated_api_sends_api_version_everywhere(self) -> None:
        """With api_version set, the job, events and list requests all carry it."""
        fake = fake_with("azure-openai-job-running.json", require_api_version="2024-10-21",
                         page_size_cap=1)  # fmt: skip
        async with client_for(fake, api_version="2024-10-21", page_size=1) as client:
            history = await client.fetch_history(JOB)
            events, _ = await client.events(JOB)
            jobs = await client.list_jobs()
        assert history.events == [Event(RUNNING, at(1796025720))]
        assert len(events) == 3
        assert [j.id for j in jobs] == [JOB]
        assert all(r.query.get("api-version") == "2024-10-21" for r in fake.requests)
        assert any(r.query.get("after") for r in fake.requests)

    async def test_missing_api_version_on_the_dated_api_is_not_found(self) -> None:
        fake = fake_with("azure-openai-job-running.json", require_api_version="2024-10-21")
        async with client_for(fake) as client:
            with pytest.raises(NotFoundError) as info:
                await client.fetch_history(JOB)
        assert info.value.provider == "azure-openai"

    async def test_failed_job_details_and_first_look(self) -> None:
        """The failure's message and code; first look announces only the failure."""
        fake = fake_with("azure-openai-job-failed.json")
        async with client_for(fake) as client:
            details = await client.job_details(JOB)
            history = await client.fetch_history(JOB)
        assert details.error_message == (
            "The job failed due to an invalid training file. Line 1 is not a valid JSON object."
            " (invalidTrainingFile)"
        )
        assert history.events == [Event(FAILED, at(1796026200))]
        observation = observe(None, JOB, history.events, scheme=AZURE_OPENAI_SCHEME)
        assert [(n.status, n.provider) for n in observation.notices] == [(FAILED, "azure-openai")]

    async def test_discovery_lists_pending_jobs(self) -> None:
        fake = FakeOpenAI(key=KEY, auth="api-key", prefix=PREFIX, page_size_cap=1)
        for row in fixture("azure-openai-list.json")["data"]:
            fake.add_job(row)
        async with client_for(fake, page_size=1) as client:
            jobs = await client.list_jobs()
        assert [j.status for j in jobs] == [RUNNING, PENDING]

    async def test_wrong_key_and_rate_limit_name_azure(self) -> None:
        fake = fake_with(
            "azure-openai-job-running.json",
            faults=[Fault("http_429", retry_after="5", retry_after_ms="4000")],
        )
        async with client_for(fake) as client:
            with pytest.raises(RateLimitedError) as limited:
                await client.fetch_history(JOB)
        assert (limited.value.provider, limited.value.retry_after) == ("azure-openai", 4.0)
        async with client_for(fake_with("azure-openai-job-running.json"), key="nope-9999") as c:
            with pytest.raises(AuthError) as denied:
                await c.fetch_history(JOB)
        assert denied.value.provider == "azure-openai"
        assert "nope-9999" not in str(denied.value)

    async def test_dated_warning_level_reads_as_warn(self) -> None:
        fake = fake_with("azure-openai-job-running.json")
        fake.events[JOB] = [{"id": "e1", "created_at": 1796025600, "level": "warning",
                             "message": "slow", "object": "fine_tuning.job.event"}]  # fmt: skip
        async with client_for(fake) as client:
            events, _ = await client.events(JOB)
        assert [(e.level, e.message) for e in events] == [("warn", "slow")]
