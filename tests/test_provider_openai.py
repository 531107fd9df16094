"""The OpenAI provider: its status scheme as a table, and its client against a real
loopback server (tests/openai_fake.py, from the fixtures): the synthetic status event,
``has_more``/``after`` paging with pages of one, every fault kind, hostile answers,
enrichment and the core's first observation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.openai_fake import FakeOpenAI, Fault, fixture, serving
from watcher.errors import (
    ApiError,
    AuthError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from watcher.lifecycle import DEFAULT_NOTIFY_ON, Event, Phase, observe
from watcher.pacing import RequestPacer
from watcher.policy import after_failure
from watcher.providers import PROVIDERS, open_provider, open_provider_session, provider_class
from watcher.providers.http import ApiTransport, open_session, retry_after_of
from watcher.providers.openai import (
    CANCELLED,
    FAILED,
    KNOWN_STATUSES,
    OPENAI_SCHEME,
    PAUSED,
    PAUSING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    VALIDATING_FILES,
    OpenAIProvider,
    parse_unix_time,
)
from watcher.settings import OpenAISettings

KEY = "sk-test-key-123"
JOB = "ftjob-abc123"
T0 = 1796025600


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def job(name: str = "openai-job-running.json", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = fixture(name)
    data.update(changes)
    return data


def all_events() -> list[dict[str, Any]]:
    """The eight events of the fixtures' succeeded job, newest first (two pages of fixtures)."""
    return [
        *fixture("openai-events-page.json")["data"],
        *fixture("openai-events-page-2.json")["data"],
    ]


def fake_with(
    *jobs: dict[str, Any], events: list[dict[str, Any]] | None = None, **kw: Any
) -> FakeOpenAI:
    fake = FakeOpenAI(key=KEY, **kw)
    for data in jobs:
        fake.add_job(data, all_events() if events is None else events)
    return fake


@asynccontextmanager
async def client_for(
    fake: FakeOpenAI,
    *,
    key: str = KEY,
    timeout: float = 5.0,
    pacer: RequestPacer | None = None,
    **kw: Any,
) -> AsyncIterator[OpenAIProvider]:
    """An OpenAIProvider over its own session, talking to ``fake`` on loopback."""
    async with serving(fake) as base_url:
        section = OpenAISettings(base_url=base_url, timeout=timeout)
        session = open_session(
            headers=OpenAIProvider.session_headers(section, key), timeout=timeout, concurrency=4
        )
        transport = ApiTransport(session, provider="openai", pacer=pacer, timeout=timeout,
                                 max_body_bytes=1024 * 1024)  # fmt: skip
        try:
            yield OpenAIProvider(transport, base_url=base_url, **kw)
        finally:
            await session.close()


# --- The scheme ------------------------------------------------------------------------

SCHEME_TABLE = [
    # status, phase, settled, failure
    (VALIDATING_FILES, Phase.QUEUED, False, False),
    (QUEUED, Phase.QUEUED, False, False),
    (RUNNING, Phase.RUNNING, False, False),
    (PAUSING, Phase.RUNNING, False, False),
    (PAUSED, Phase.OTHER, False, False),
    (SUCCEEDED, Phase.READY, True, False),
    (FAILED, Phase.FAILED, True, True),
    (CANCELLED, Phase.CANCELLED, True, False),
    ("something_new", Phase.OTHER, False, False),
]


class TestScheme:
    @pytest.mark.parametrize(("status", "phase", "settled", "failure"), SCHEME_TABLE)
    def test_every_status(self, status: str, phase: Phase, settled: bool, failure: bool) -> None:
        """Each status's phase, whether it is settled, whether it is a failure."""
        assert OPENAI_SCHEME.phase(status) is phase
        assert OPENAI_SCHEME.is_settled(status) is settled
        assert OPENAI_SCHEME.is_failure(status) is failure

    def test_known_statuses_in_lifecycle_order(self) -> None:
        """Ranks follow the lifecycle: validating < queued < running < pausing < paused
        < unknown < succeeded < failed < cancelled (fixtures README, decision 9)."""
        assert tuple(s for s, *_ in SCHEME_TABLE[:-1]) == KNOWN_STATUSES
        ranks = [OPENAI_SCHEME.rank(s) for s in KNOWN_STATUSES]
        assert ranks == sorted(ranks)
        assert len(set(ranks)) == len(ranks)
        assert OPENAI_SCHEME.rank("something_new") == 60
        assert OPENAI_SCHEME.rank(PAUSED) < 60 < OPENAI_SCHEME.rank(SUCCEEDED)

    def test_nothing_is_announced_by_default_but_outcomes(self) -> None:
        """Default notify.on: succeeded (ready) and failed only; cancelled is opt-in."""
        announced = {s for s in KNOWN_STATUSES if OPENAI_SCHEME.announces(s, DEFAULT_NOTIFY_ON)}
        assert announced == {SUCCEEDED, FAILED}
        assert OPENAI_SCHEME.announces(CANCELLED, frozenset({"cancelled"}))
        assert OPENAI_SCHEME.announces(PAUSED, frozenset({PAUSED}))
        assert not OPENAI_SCHEME.announces("something_new", DEFAULT_NOTIFY_ON)

    def test_registered(self) -> None:
        assert PROVIDERS["openai"].title == "OpenAI"
        assert provider_class("openai") is OpenAIProvider
        assert (OpenAIProvider.name, OpenAIProvider.scheme) == ("openai", OPENAI_SCHEME)
        assert OpenAIProvider.supports_discovery is True


class TestUnixTime:
    def test_seconds(self) -> None:
        assert parse_unix_time(T0) == at(T0)
        assert parse_unix_time(1.5) == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)

    @pytest.mark.parametrize("bad", [None, True, "1796025600", -1, float("nan"), 1e20, [1]])
    def test_anything_else_is_a_value_error(self, bad: object) -> None:
        with pytest.raises(ValueError):  # noqa: PT011
            parse_unix_time(bad)


# --- The synthetic status event ----------------------------------------------------------


class TestHistory:
    async def test_running_job_takes_the_newest_event_time(self) -> None:
        """Not settled: (newest event's created_at, status); one event asked for."""
        fake = fake_with(job())
        async with client_for(fake) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(RUNNING, at(1796029200))]
        assert history.pages == 2
        assert fake.paths() == [
            f"/openai/v1/fine_tuning/jobs/{JOB}",
            f"/openai/v1/fine_tuning/jobs/{JOB}/events?limit=1",
        ]

    async def test_settled_job_takes_finished_at_without_events(self) -> None:
        """Settled with finished_at: that time, and no events request."""
        fake = fake_with(job("openai-job-succeeded.json"))
        async with client_for(fake) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(SUCCEEDED, at(1796029200))]
        assert len(fake.requests) == 1

    async def test_settled_without_finished_at_falls_back(self) -> None:
        """The cancelled sample has no finished_at: the newest event's time, else created_at."""
        cancelled = job("openai-job-cancelled.json")
        async with client_for(fake_with(cancelled, events=[])) as client:
            history = await client.fetch_history(cancelled["id"])
        assert history.events == [Event(CANCELLED, at(T0))]

    async def test_an_old_event_never_goes_before_created_at(self) -> None:
        """The later of created_at and the newest event: a queued job with older events."""
        queued = job(status=QUEUED, created_at=T0 + 100)
        async with client_for(fake_with(queued)) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(QUEUED, at(1796029200))]
        queued["created_at"] = 1796029300
        async with client_for(fake_with(queued)) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(QUEUED, at(1796029300))]

    async def test_same_job_body_is_unchanged_without_events_request(self) -> None:
        """The digest fast path: same job bytes -> unchanged, one request, nothing decoded."""
        fake = fake_with(job())
        async with client_for(fake) as client:
            first = await client.fetch_history(JOB)
            fake.requests.clear()
            again = await client.fetch_history(JOB, unless_digest=first.digest)
            fake.jobs[JOB]["status"] = SUCCEEDED
            fake.jobs[JOB]["finished_at"] = 1796029300
            later = await client.fetch_history(JOB, unless_digest=first.digest)
        assert first.digest is not None
        assert again.unchanged
        assert again.events == []
        assert len(fake.paths()) == 2  # again: the job only; later: the job only (settled)
        assert not later.unchanged
        assert later.events == [Event(SUCCEEDED, at(1796029300))]

    async def test_pacer_is_charged_per_request(self) -> None:
        pacer = RequestPacer(60_000)
        async with client_for(fake_with(job()), pacer=pacer) as client:
            history = await client.fetch_history(JOB)
        assert pacer.requests == history.pages == 2

    async def test_unknown_status_is_data(self) -> None:
        """A status nobody documented passes through as itself (phase other)."""
        async with client_for(fake_with(job(status="frobnicating"))) as client:
            history = await client.fetch_history(JOB)
        assert [e.status for e in history.events] == ["frobnicating"]

    @pytest.mark.parametrize(
        "changes",
        [{"status": None}, {"status": 7}, {"status": ""}],
        ids=["null-status", "number-status", "empty-status"],
    )
    async def test_job_without_a_status_is_a_bad_response(self, changes: dict[str, Any]) -> None:
        async with client_for(fake_with(job(**changes))) as client:
            with pytest.raises(BadResponseError, match="no status") as info:
                await client.fetch_history(JOB)
        assert info.value.provider == "openai"

    async def test_no_usable_time_is_a_bad_response(self) -> None:
        """Neither created_at nor an event time: nothing to date the status with."""
        broken = job(created_at="yesterday")
        async with client_for(
            fake_with(broken, events=[{"id": "e", "created_at": None}])
        ) as client:
            with pytest.raises(BadResponseError, match="no usable time"):
                await client.fetch_history(JOB)

    async def test_bad_event_rows_are_skipped_and_counted(self) -> None:
        """A malformed newest event is counted; created_at still dates the status."""
        broken = [{"id": "e1", "created_at": "soon"}]
        async with client_for(fake_with(job(), events=broken)) as client:
            history = await client.fetch_history(JOB)
        assert history.malformed == 1
        assert history.events == [Event(RUNNING, at(T0))]


class TestFirstObservation:
    async def test_first_look_announces_only_the_current_status(self) -> None:
        """A job first seen succeeded: one notice (ready), no replay; running: none."""
        async with client_for(fake_with(job("openai-job-succeeded.json"))) as client:
            history = await client.fetch_history(JOB)
        observation = observe(None, JOB, history.events, scheme=OPENAI_SCHEME)
        assert [(n.status, n.first_observation, n.provider) for n in observation.notices] == [
            (SUCCEEDED, True, "openai")
        ]
        async with client_for(fake_with(job())) as client:
            running = await client.fetch_history(JOB)
        first = observe(None, JOB, running.events, scheme=OPENAI_SCHEME)
        assert not first.notices
        assert first.state.status == RUNNING

    async def test_running_then_failed_is_one_failure_notice(self) -> None:
        """Across polls: running, running (new events), failed -> exactly one notice."""
        fake = fake_with(job())
        async with client_for(fake) as client:
            state = observe(None, JOB, (await client.fetch_history(JOB)).events,
                            scheme=OPENAI_SCHEME).state  # fmt: skip
            fake.events[JOB].insert(0, {"id": "ev-new", "created_at": 1796029250})
            second = observe(state, JOB, (await client.fetch_history(JOB)).events,
                             scheme=OPENAI_SCHEME)  # fmt: skip
            assert not second.notices
            fake.jobs[JOB].update(status=FAILED, finished_at=1796029300)
            third = observe(second.state, JOB, (await client.fetch_history(JOB)).events,
                            scheme=OPENAI_SCHEME)  # fmt: skip
            again = observe(third.state, JOB, (await client.fetch_history(JOB)).events,
                            scheme=OPENAI_SCHEME)  # fmt: skip
        assert [(n.status, n.previous_status) for n in third.notices] == [(FAILED, RUNNING)]
        assert not again.notices

    async def test_pause_and_resume_sort_by_event_time(self) -> None:
        """paused -> running -> paused: each status change logs an event, so each synthetic
        event is newer than the last and the current status follows the job."""
        fake = fake_with(job(status=PAUSED), events=[{"id": "e1", "created_at": T0 + 10}])
        async with client_for(fake) as client:
            state = observe(None, JOB, (await client.fetch_history(JOB)).events,
                            scheme=OPENAI_SCHEME).state  # fmt: skip
            for n, status in enumerate([RUNNING, PAUSED], start=2):
                fake.jobs[JOB]["status"] = status
                fake.events[JOB].insert(0, {"id": f"e{n}", "created_at": T0 + 10 * n})
                state = observe(state, JOB, (await client.fetch_history(JOB)).events,
                                scheme=OPENAI_SCHEME).state  # fmt: skip
                assert state.status == status


# --- Paging -------------------------------------------------------------------------------


class TestPaging:
    async def test_events_with_pages_of_one(self) -> None:
        """``after`` = the last id, until has_more is false: all eight, newest first."""
        fake = fake_with(job(), page_size_cap=1)
        async with client_for(fake, page_size=1) as client:
            events, malformed = await client.events(JOB)
        assert [e.id for e in events] == [e["id"] for e in all_events()]
        assert malformed == 0
        assert len(fake.requests) == 8
        assert fake.paths()[1].endswith("events?limit=1&after=ftevent-0009")

    async def test_events_limit_stops_early(self) -> None:
        fake = fake_with(job(), page_size_cap=2)
        async with client_for(fake, page_size=2) as client:
            events, _ = await client.events(JOB, limit=3)
        assert [e.id for e in events] == ["ftevent-0009", "ftevent-0008", "ftevent-0007"]
        assert len(fake.requests) == 2

    async def test_absent_has_more_stops_on_a_short_page(self) -> None:
        """No has_more: a full page may have a next one; a short page is the last."""
        short = fake_with(job(), events=all_events()[:7], page_size_cap=4, has_more="absent")
        async with client_for(short, page_size=4) as client:
            events, _ = await client.events(JOB)
        assert len(events) == 7
        assert len(short.requests) == 2  # 4 + 3
        exact = fake_with(job(), page_size_cap=4, has_more="absent")
        async with client_for(exact, page_size=4) as client:
            events, _ = await client.events(JOB)
        assert len(events) == 8
        assert len(exact.requests) == 3  # 4 + 4 + an empty page

    async def test_a_cap_below_the_limit_is_followed_by_has_more(self) -> None:
        """The server gives fewer than asked (cap 1, limit 100): has_more still pages on."""
        fake = fake_with(job(), page_size_cap=1)
        async with client_for(fake) as client:
            events, _ = await client.events(JOB)
        assert len(events) == 8

    async def test_list_jobs_with_pages_of_one(self) -> None:
        """Discovery lists every job across pages; the suffix is the job's name."""
        second = job("openai-job-failed.json")
        third = job("openai-job-cancelled.json", user_provided_suffix=None)
        fake = fake_with(job(), second, third, page_size_cap=1)
        async with client_for(fake, page_size=1) as client:
            jobs = await client.list_jobs()
        assert [(j.id, j.status, j.name) for j in jobs] == [
            (JOB, RUNNING, "support-bot"),
            ("ftjob-def456", FAILED, "support-bot"),
            ("ftjob-ghi789", CANCELLED, None),
        ]
        assert len(fake.requests) == 3

    async def test_malformed_rows_are_skipped(self) -> None:
        """Rows that are not objects or lack an id/time are skipped and counted."""
        rows: list[Any] = [
            {"id": "ok", "created_at": T0},
            "junk",
            {"id": "x"},
            {"created_at": T0},
            None,
        ]
        async with client_for(fake_with(job(), events=rows)) as client:
            events, malformed = await client.events(JOB)
        assert [e.id for e in events] == ["ok"]
        assert malformed == 4
        listing = FakeOpenAI(key=KEY)
        listing.jobs = {"a": {"id": "a", "status": RUNNING}, "b": {"no": "id"}}
        async with client_for(listing) as client:
            assert [j.id for j in await client.list_jobs()] == ["a"]

    @pytest.mark.parametrize(
        ("kind", "match"),
        [("repeat_cursor", "repeated a page"), ("endless_pages", "more than 5 pages")],
    )
    async def test_cursor_guards(self, kind: str, match: str) -> None:
        """A cursor that comes back, or pages that never end, are BadResponseError."""
        fake = fake_with(job(), faults=[Fault(kind, times=None, where="events")])
        async with client_for(fake, max_pages=5) as client:
            with pytest.raises(BadResponseError, match=match):
                await client.events(JOB)
        assert len(fake.requests) <= 5

    async def test_has_more_with_an_empty_page_stops(self) -> None:
        """has_more true on an empty page: nothing to page after, so the end."""
        empty = Fault("body", times=None, where="events", body={"data": [], "has_more": True})
        fake = fake_with(job(), faults=[empty])
        async with client_for(fake) as client:
            events, _ = await client.events(JOB)
        assert events == []
        assert len(fake.requests) == 1

    @pytest.mark.parametrize(
        "body",
        [{"data": "x"}, {"data": [], "has_more": "yes"}, {"data": [{"id": 5}], "has_more": True}],
        ids=["data-not-a-list", "has-more-not-bool", "last-row-no-id"],
    )
    async def test_hostile_pages_are_bad_responses(self, body: dict[str, Any]) -> None:
        fake = fake_with(job(), faults=[Fault("body", times=None, where="events", body=body)])
        async with client_for(fake) as client:
            with pytest.raises(BadResponseError):
                await client.events(JOB)


# --- Faults -------------------------------------------------------------------------------


class TestFaults:
    async def test_wrong_key_is_auth_error_without_the_key(self) -> None:
        async with client_for(fake_with(job()), key="sk-wrong-456") as client:
            with pytest.raises(AuthError) as info:
                await client.fetch_history(JOB)
        assert info.value.status == 401
        assert info.value.provider == "openai"
        assert "sk-wrong-456" not in str(info.value)
        assert "Incorrect API key" in str(info.value) or "401" in str(info.value)

    @pytest.mark.parametrize(
        ("fault", "error", "status"),
        [
            (Fault("http_403", times=None), AuthError, 403),
            (Fault("http_404", times=None), NotFoundError, 404),
            (Fault("http_500", times=None), ServerError, 500),
            (Fault("http_503", times=None), ServerError, 503),
            (Fault("http_408", times=None), ServerError, 408),
            (Fault("malformed_json", times=None), BadResponseError, None),
            (Fault("html", times=None), BadResponseError, 200),
            (Fault("wrong_shape", times=None), BadResponseError, None),
            (Fault("huge_body", times=None), BadResponseError, None),
            (Fault("reset_connection", times=None), TransportError, None),
        ],
        ids=lambda v: v.kind if isinstance(v, Fault) else None,
    )
    @pytest.mark.parametrize("where", ["job", "events"])
    async def test_faults_become_typed_errors(
        self, fault: Fault, error: type[ApiError], status: int | None, where: str
    ) -> None:
        """Every broken answer, on the job or the events request, is a typed error naming
        openai; never a crash, never a hang."""
        fault.where = where
        async with client_for(fake_with(job(), faults=[fault])) as client:
            with pytest.raises(error) as info:
                await client.fetch_history(JOB)
        assert info.value.provider == "openai"
        if status is not None:
            assert info.value.status == status

    async def test_unknown_job_is_not_found(self) -> None:
        async with client_for(fake_with(job())) as client:
            with pytest.raises(NotFoundError, match="nope"):
                await client.fetch_history("ftjob-nope")
            with pytest.raises(NotFoundError):
                await client.job_details("ftjob-nope")

    @pytest.mark.parametrize(
        ("retry_after", "retry_after_ms", "expected"),
        [
            ("7", None, 7.0),
            (None, "2500", 2.5),
            ("30", "1500", 1.5),
            ("30", "junk", 30.0),
            (None, None, None),
        ],
        ids=["seconds", "ms", "ms-wins", "bad-ms", "none"],
    )
    async def test_rate_limited_pauses_only_openai(
        self, retry_after: str | None, retry_after_ms: str | None, expected: float | None
    ) -> None:
        """429: RateLimitedError with the wait (retry-after-ms first); the policy pauses
        this provider (the error names it); the next request goes through."""
        fault = Fault("http_429", retry_after=retry_after, retry_after_ms=retry_after_ms)
        async with client_for(fake_with(job(), faults=[fault])) as client:
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(JOB)
            assert (await client.fetch_history(JOB)).events
        error = info.value
        assert (error.retry_after, error.provider, error.status) == (expected, "openai", 429)
        decision = after_failure(
            error, failures=1, settled=False, interval=60, settled_interval=1800,
            backoff_cap=600, jitter=0, rand=0.5,
        )  # fmt: skip
        assert decision.pause_provider is not None
        assert decision.outcome == "rate_limited"

    def test_retry_after_of(self) -> None:
        assert retry_after_of({"retry-after-ms": "250"}) == 0.25
        assert retry_after_of({"retry-after-ms": "-5", "Retry-After": "3"}) == 0.0
        assert retry_after_of({"retry-after-ms": "inf", "Retry-After": "3"}) == 3.0
        assert retry_after_of({"retry-after-ms": "99999999"}) == 3600.0
        assert retry_after_of({}) is None

    async def test_slow_answer_times_out(self) -> None:
        fake = fake_with(job(), faults=[Fault("slow", times=None)])
        async with client_for(fake, timeout=0.3) as client:
            with pytest.raises(TransportError, match="no answer"):
                await client.fetch_history(JOB)

    async def test_unreachable_api_is_transport_error(self) -> None:
        section = OpenAISettings(base_url="http://127.0.0.1:9/v1", timeout=2)
        session = open_provider_session("openai", section, api_key=KEY, concurrency=1)
        try:
            client = open_provider("openai", section, session=session, pacer=None)
            with pytest.raises(TransportError, match="cannot connect") as info:
                await client.fetch_history(JOB)
        finally:
            await session.close()
        assert info.value.provider == "openai"


# --- Enrichment, headers, settings --------------------------------------------------------


class TestDetails:
    async def test_failed_job_details_carry_the_error(self) -> None:
        failed = job("openai-job-failed.json")
        async with client_for(fake_with(failed)) as client:
            details = await client.job_details(failed["id"])
        assert details.status == FAILED
        assert details.error_message is not None
        assert details.error_message.startswith("The job failed due to an invalid training file.")
        assert details.error_message.endswith("(invalid_training_file)")
        assert details.base_model == "gpt-4o-mini-2024-07-18"
        assert details.name == "support-bot"
        assert details.completed_at == at(1796026200)

    async def test_succeeded_job_details(self) -> None:
        async with client_for(fake_with(job("openai-job-succeeded.json"))) as client:
            details = await client.job_details(JOB)
            metrics = await client.final_metrics(JOB)
        assert (
            details.fine_tuned_model == "ft:gpt-4o-mini-2024-07-18:org-abc123:support-bot:AbC123xy"
        )
        assert details.error_message is None
        assert details.created_at == at(T0)
        assert metrics == {"step": 300.0, "train_loss": 0.21, "total_steps": 300.0,
                           "train_mean_token_accuracy": 0.93}  # fmt: skip

    async def test_no_metrics_is_none(self) -> None:
        async with client_for(fake_with(job(), events=[])) as client:
            assert await client.final_metrics(JOB) is None

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            ({"message": "  bad\n file ", "code": None}, "bad file"),
            ({"message": "x", "code": 42}, "x (42)"),
            ({"code": "quota"}, "error code quota"),
            ("a string", None),
            ({"message": 5}, None),
        ],
    )
    async def test_odd_errors(self, error: object, expected: str | None) -> None:
        async with client_for(fake_with(job(status=FAILED, error=error))) as client:
            assert (await client.job_details(JOB)).error_message == expected

    async def test_hostile_job_details(self) -> None:
        """A job that is no job (no id) is a BadResponseError, odd fields are None."""
        odd = {"id": JOB, "status": 5, "model": ["x"], "created_at": "then", "trained_tokens": True}
        fake = fake_with(job())
        fake.jobs[JOB] = odd
        async with client_for(fake) as client:
            details = await client.job_details(JOB)
            fake.jobs[JOB] = {"status": "running"}
            with pytest.raises(BadResponseError):
                await client.job_details(JOB)
        assert (details.status, details.base_model, details.created_at) == (None, None, None)
        assert details.metrics == {}

    def test_dashboard_url(self) -> None:
        client = OpenAIProvider.__new__(OpenAIProvider)
        assert client.dashboard_url(JOB) == f"https://platform.openai.com/finetune/{JOB}"


class TestHeadersAndSettings:
    def test_session_headers(self) -> None:
        plain = OpenAISettings()
        assert OpenAIProvider.session_headers(plain, "sk-1") == {"Authorization": "Bearer sk-1"}
        scoped = OpenAISettings(organization="org-1", project="proj-1")
        assert OpenAIProvider.session_headers(scoped, "sk-1") == {
            "Authorization": "Bearer sk-1",
            "OpenAI-Organization": "org-1",
            "OpenAI-Project": "proj-1",
        }

    async def test_from_settings_over_the_registry(self) -> None:
        """open_provider_session + open_provider: headers reach the server, page size used."""
        fake = fake_with(job(), page_size_cap=100)
        pacer = RequestPacer(60_000)
        async with serving(fake) as base_url:
            section = OpenAISettings(base_url=base_url + "/", organization="org-1", page_size=3,
                                     timeout=5)  # fmt: skip
            session = open_provider_session("openai", section, api_key=KEY, concurrency=2)
            try:
                client = open_provider("openai", section, session=session, pacer=pacer)
                events, _ = await client.events(JOB)  # type: ignore[attr-defined]
            finally:
                await session.close()
        assert len(events) == 8
        assert pacer.requests == 3  # 3 + 3 + 2
        assert fake.requests[0].headers["OpenAI-Organization"] == "org-1"
        assert "OpenAI-Project" not in fake.requests[0].headers
        assert fake.requests[0].headers["User-Agent"].startswith("finetune-watcher/")
