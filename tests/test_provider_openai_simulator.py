"""The OpenAI and Azure OpenAI providers against the simulator (``watcher.simulator``) on
loopback, built the way the daemon builds them (registry, settings section, session):
a job's progress over sim time through the core (one notice per outcome, none while
queued or running, the first observation announces only the current status), paging
with pages of one, every fault kind of the simulator, and one provider's outage never
touching the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from watcher.errors import (
    ApiError,
    AuthError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from watcher.lifecycle import ModelState, Notice, observe
from watcher.pacing import RequestPacer
from watcher.providers import open_provider, open_provider_session, scheme_for
from watcher.providers.openai import OpenAIProvider
from watcher.settings import AzureOpenAISettings, OpenAISettings, ProviderSettings
from watcher.simulator import RunningSimulator, Scenario, running_simulator

KEY = "sim-key"
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
MESSAGE = "The job failed due to an invalid training file. Line 1 is not a dictionary."

#: provider -> (ok job, failing job, running job, the ok job's timeline, first status)
JOBS: dict[str, tuple[str, str, str, str]] = {
    "openai": ("ftjob-ok", "ftjob-bad", "ftjob-run", "validating_files"),
    # The simulator wants ids unique across providers.
    "azure-openai": ("ftjob-az-ok", "ftjob-az-bad", "ftjob-az-run", "pending"),
}
PROVIDERS = list(JOBS)


def models(provider: str) -> list[dict[str, Any]]:
    ok, bad, run, first = JOBS[provider]
    return [
        {"id": ok, "provider": provider, "name": "support-bot", "metrics": {"loss": 0.21},
         "timeline": [[0, first], [1, "queued"], [2, "running"], [5, "succeeded"]]},
        {"id": bad, "provider": provider, "name": "intent-router", "error": {"message": MESSAGE},
         "timeline": [[0, first], [4, "failed"]]},
        {"id": run, "provider": provider, "timeline": [[0, "queued"], [1, "running"]]},
    ]  # fmt: skip


def scenario(*providers: str, **overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "api_key": KEY,
        "clock": "manual",
        "start": START.isoformat(),
        "page_size_cap": 50,
        "models": [m for p in providers or PROVIDERS for m in models(p)],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


def section_for(provider: str, base_url: str, **kw: Any) -> ProviderSettings:
    if provider == "azure-openai":
        return AzureOpenAISettings(base_url=base_url, **kw)
    return OpenAISettings(base_url=base_url, **kw)


@asynccontextmanager
async def clients(
    scn: Scenario,
    *providers: str,
    key: str = KEY,
    timeout: float = 5.0,
    page_size: int = 100,
    pacers: dict[str, RequestPacer] | None = None,
) -> AsyncIterator[tuple[dict[str, OpenAIProvider], RunningSimulator]]:
    """One provider per name, each over its own session, all talking to one simulator."""
    async with running_simulator(scn) as sim:
        built: dict[str, OpenAIProvider] = {}
        sessions = []
        try:
            for name in providers or PROVIDERS:
                section = section_for(
                    name, sim.provider_url(name), timeout=timeout, page_size=page_size
                )
                session = open_provider_session(name, section, api_key=key, concurrency=2)
                sessions.append(session)
                pacer = (pacers or {}).get(name)
                provider = open_provider(name, section, session=session, pacer=pacer)
                assert isinstance(provider, OpenAIProvider)
                built[name] = provider
            yield built, sim
        finally:
            for session in sessions:
                await session.close()


@asynccontextmanager
async def client(
    provider: str, scn: Scenario | None = None, **kw: Any
) -> AsyncIterator[tuple[OpenAIProvider, RunningSimulator]]:
    async with clients(scn or scenario(provider), provider, **kw) as (built, sim):
        yield built[provider], sim


async def poll_all(
    provider: OpenAIProvider, job_id: str, sim: RunningSimulator, until: int
) -> list[Notice]:
    """Poll once per sim second from 0 to ``until`` through the core; every notice."""
    state: ModelState | None = None
    digest: bytes | None = None
    notices: list[Notice] = []
    for _ in range(until + 1):
        history = await provider.fetch_history(job_id, unless_digest=digest)
        if not history.unchanged:
            observation = observe(state, job_id, history.events, scheme=provider.scheme)
            state = observation.state
            notices.extend(observation.notices)
            digest = history.digest
        sim.advance(1)
    return notices


@pytest.mark.parametrize("name", PROVIDERS)
class TestLifecycle:
    async def test_one_notice_per_outcome_and_none_while_running(self, name: str) -> None:
        """Polled every sim second: succeeded once, failed once, the running job never."""
        ok, bad, run, _ = JOBS[name]
        async with client(name) as (provider, sim):
            notices = await poll_all(provider, ok, sim, 9)
        async with client(name) as (provider, sim):
            failures = await poll_all(provider, bad, sim, 9)
        async with client(name) as (provider, sim):
            running = await poll_all(provider, run, sim, 9)
        assert [(n.status, n.previous_status, n.first_observation) for n in notices] == [
            ("succeeded", "running", False)
        ]
        assert [(n.status, n.provider) for n in failures] == [("failed", name)]
        assert running == []

    async def test_first_observation_announces_only_the_current_status(self, name: str) -> None:
        """Seen for the first time long after it ended: one notice, the outcome, no replay."""
        ok, bad, run, _ = JOBS[name]
        async with client(name) as (provider, sim):
            sim.advance(9)
            seen = {}
            for job in (ok, bad, run):
                history = await provider.fetch_history(job)
                seen[job] = observe(None, job, history.events, scheme=scheme_for(name)).notices
        assert [(n.status, n.first_observation) for n in seen[ok]] == [("succeeded", True)]
        assert [n.status for n in seen[bad]] == ["failed"]
        assert not seen[run]

    async def test_details_of_the_failure_and_the_success(self, name: str) -> None:
        """The failure's message reaches job_details; the success names its model."""
        ok, bad, _, _ = JOBS[name]
        async with client(name) as (provider, sim):
            sim.advance(9)
            failed = await provider.job_details(bad)
            done = await provider.job_details(ok)
            metrics = await provider.final_metrics(ok)
        assert failed.error_message is not None
        assert failed.error_message.startswith(MESSAGE)
        assert failed.status == "failed"
        assert done.fine_tuned_model
        assert done.base_model
        assert done.name == "support-bot"
        assert done.completed_at is not None
        assert metrics is None or all(isinstance(v, float) for v in metrics.values())

    async def test_digest_skips_the_events_request(self, name: str) -> None:
        """A job body that did not change: one request, unchanged."""
        pacer = RequestPacer(60_000)
        ok = JOBS[name][0]
        async with client(name, pacers={name: pacer}) as (provider, sim):
            sim.advance(3)
            first = await provider.fetch_history(ok)
            before = pacer.requests
            again = await provider.fetch_history(ok, unless_digest=first.digest)
        assert again.unchanged
        assert pacer.requests == before + 1


@pytest.mark.parametrize("name", PROVIDERS)
class TestPaging:
    async def test_pages_of_one(self, name: str) -> None:
        """limit=1 and a server cap of 1: has_more/after walk every event and every job."""
        ok = JOBS[name][0]
        async with client(name, scenario(name, page_size_cap=1), page_size=1) as (provider, sim):
            sim.advance(9)
            events, malformed = await provider.events(ok)
            jobs = await provider.list_jobs()
            stats = sim.stats()
        assert malformed == 0
        assert len(events) >= 4  # at least one per status change
        times = [e.created_at for e in events]
        assert times == sorted(times, reverse=True)  # newest first
        assert len({e.id for e in events}) == len(events)
        assert sorted(j.id for j in jobs) == sorted(JOBS[name][:3])
        assert stats  # the simulator counted the requests

    @pytest.mark.parametrize("endpoint", ["events", "list"])
    @pytest.mark.parametrize(
        # The simulator's endless pages cycle through the jobs: the repeat guard fires first.
        ("kind", "match"),
        [("repeat_token", "repeated"), ("endless_pages", "repeated|pages")],
    )
    async def test_cursor_guards(self, name: str, kind: str, match: str, endpoint: str) -> None:
        """A cursor that repeats or pages that never end: BadResponseError, bounded."""
        faults = [{"kind": kind, "provider": name, "endpoint": endpoint, "times": None}]
        scn = scenario(name, faults=faults, page_size_cap=1)
        async with client(name, scn, page_size=1) as (provider, sim):
            sim.advance(9)
            walk = provider.list_jobs() if endpoint == "list" else provider.events(JOBS[name][0])
            with pytest.raises(BadResponseError, match=match) as info:
                await walk
        assert info.value.provider == name


FAULTS: list[tuple[str, type[ApiError], int | None]] = [
    ("http_401", AuthError, 401),
    ("http_403", AuthError, 403),
    ("http_404", NotFoundError, 404),
    ("http_429", RateLimitedError, 429),
    ("http_500", ServerError, 500),
    ("http_503", ServerError, 503),
    ("malformed_json", BadResponseError, None),
    ("wrong_content_type", BadResponseError, None),
    ("huge_body", BadResponseError, None),
    ("wrong_shape", BadResponseError, None),
    ("reset_connection", TransportError, None),
]


@pytest.mark.parametrize("name", PROVIDERS)
class TestFaults:
    @pytest.mark.parametrize(("kind", "error", "status"), FAULTS)
    async def test_each_kind_is_a_typed_error(
        self, name: str, kind: str, error: type[ApiError], status: int | None
    ) -> None:
        """Every fault the simulator can play on the job endpoint is a typed error naming
        the provider; the key never appears in it."""
        fault = {"kind": kind, "provider": name, "endpoint": "model", "retry_after": 3,
                 "times": None}  # fmt: skip
        async with client(name, scenario(name, faults=[fault])) as (provider, sim):
            sim.advance(9)
            with pytest.raises(error) as info:
                await provider.fetch_history(JOBS[name][0])
        assert info.value.provider == name
        assert KEY not in str(info.value)
        if status is not None:
            assert info.value.status == status
        if kind == "http_429":
            assert isinstance(info.value, RateLimitedError)
            assert info.value.retry_after == 3.0

    @pytest.mark.parametrize("kind", ["unknown_status", "future_timestamp", "missing_fields"])
    async def test_odd_answers_are_data_or_typed(self, name: str, kind: str) -> None:
        """Odd but readable answers: an event (unknown status is data) or a BadResponseError."""
        fault = {"kind": kind, "provider": name, "endpoint": "model", "times": None}
        async with client(name, scenario(name, faults=[fault])) as (provider, sim):
            sim.advance(9)
            history = await provider.fetch_history(JOBS[name][0])
        # The job carries every field the client needs, so none of these is an error.
        assert len(history.events) == 1
        if kind == "unknown_status":
            assert scheme_for(name).phase(history.events[0].status).value == "other"

    async def test_slow_answer_times_out(self, name: str) -> None:
        fault = {"kind": "slow", "delay": 30, "provider": name, "endpoint": "model", "times": None}
        async with client(name, scenario(name, faults=[fault]), timeout=0.3) as (provider, _):
            with pytest.raises(TransportError, match="no answer"):
                await provider.fetch_history(JOBS[name][0])

    async def test_wrong_key(self, name: str) -> None:
        async with client(name, key="not-the-key-42") as (provider, _):
            with pytest.raises(AuthError) as info:
                await provider.fetch_history(JOBS[name][0])
        assert "not-the-key-42" not in str(info.value)

    async def test_events_endpoint_faults(self, name: str) -> None:
        """A broken events answer fails the poll of a running job, typed."""
        fault = {"kind": "http_500", "provider": name, "endpoint": "events", "times": None}
        async with client(name, scenario(name, faults=[fault])) as (provider, sim):
            sim.advance(3)
            with pytest.raises(ServerError):
                await provider.fetch_history(JOBS[name][2])


async def test_one_providers_outage_never_touches_the_other() -> None:
    """OpenAI answers 503 and 429 forever; Azure on the same simulator is unaffected, and
    a 429 names only OpenAI (the policy pauses only its budget)."""
    faults = [
        {"kind": "http_503", "provider": "openai", "endpoint": "any", "times": 1},
        {"kind": "http_429", "provider": "openai", "endpoint": "any", "retry_after": 30,
         "times": None},
    ]  # fmt: skip
    async with clients(scenario(faults=faults)) as (built, sim):
        sim.advance(9)
        with pytest.raises(ServerError):
            await built["openai"].fetch_history("ftjob-ok")
        with pytest.raises(RateLimitedError) as info:
            await built["openai"].fetch_history("ftjob-ok")
        azure = await built["azure-openai"].fetch_history("ftjob-az-ok")
    assert info.value.provider == "openai"
    assert [e.status for e in azure.events] == ["succeeded"]


async def test_the_bundled_mixed_fleet() -> None:
    """The demo's mixed scenario: OpenAI's job fails with its reason and code, Azure's is
    ready; each announced once on first sight."""
    from watcher.simulator import mixed_scenario

    scn = mixed_scenario().model_copy(update={"clock": "manual", "api_key": KEY})
    async with clients(scn) as (built, sim):
        sim.advance(9)
        failed = await built["openai"].fetch_history("ftjob-mixedfailed01")
        details = await built["openai"].job_details("ftjob-mixedfailed01")
        ready = await built["azure-openai"].fetch_history("ftjob-mixedazure01")
    assert details.error_message == (
        "The job failed due to an invalid training file. Line 1 is not a dictionary."
        " (invalid_training_file)"
    )
    for name, job_id, history, status in [
        ("openai", "ftjob-mixedfailed01", failed, "failed"),
        ("azure-openai", "ftjob-mixedazure01", ready, "succeeded"),
    ]:
        notices = observe(None, job_id, history.events, scheme=scheme_for(name)).notices
        assert [(n.status, n.provider) for n in notices] == [(status, name)]
