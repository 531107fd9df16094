"""The Together AI provider: its status table, and its client against real loopback servers.

Two servers: a tiny fake serving the fixtures' payloads byte for byte (and any hostile
answer a test scripts), and the simulator (``watcher.simulator``, Together under
``/together``), the reference fake every provider is tested against.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

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
from watcher.providers import PROVIDERS, open_provider, open_provider_session, provider_class
from watcher.providers import scheme_for as registered_scheme
from watcher.providers.cohere import COHERE_SCHEME
from watcher.providers.cohere import FAILED as COHERE_FAILED
from watcher.providers.cohere import READY as COHERE_READY
from watcher.providers.http import ApiTransport, open_session
from watcher.providers.together import (
    CANCEL_REQUESTED,
    CANCELLED,
    COMPLETED,
    COMPRESSING,
    ERROR,
    KNOWN_STATUSES,
    PENDING,
    QUEUED,
    RUNNING,
    SETTLED,
    TOGETHER_SCHEME,
    UPLOADING,
    USER_ERROR,
    TogetherProvider,
    parse_iso_time,
)
from watcher.settings import TogetherSettings
from watcher.simulator import Scenario, running_simulator

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
KEY = "together-test-key"
JOB = "ft-3b9c2d1e-5f6a-4b7c-8d9e-0a1b2c3d4e5f"  # the fixtures' running/succeeded job
FAILED_JOB = "ft-9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
USER_ERROR_JOB = "ft-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
LIST_PATH = "/v1/fine-tunes"
JOB_PATH = f"{LIST_PATH}/{JOB}"
VALIDATION_FAILED = (
    "Training data validation failed: line 7 is not valid JSON. "
    "Please fix the training file and resubmit."
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- A tiny fake on loopback -----------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour of the next ``times`` requests (None: forever).

    ``kind``: "status" (answer ``status`` with ``body`` and ``headers``), "bad_json",
    "html", "reset", "slow", "body" (``body`` as JSON, status 200).
    """

    kind: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = 1


Answer = Any | Callable[[web.Request], Any]


@dataclass
class FakeTogether:
    """Answers GETs from ``answers`` (path -> JSON, or a function of the request)."""

    key: str = KEY
    answers: dict[str, Answer] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.path_qs)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(fixture("together-error-401.json"), status=401)
        if self.faults:
            fault = self.faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.pop(0)
            return await self._misbehave(request, fault)
        answer = self.answers.get(request.path)
        if answer is None:
            return web.json_response(fixture("together-error-404.json"), status=404)
        return web.json_response(answer(request) if callable(answer) else answer)

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "status":
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        if fault.kind == "bad_json":
            return web.Response(
                text='{"id": "ft-3b9c", "status": ', content_type="application/json"
            )
        if fault.kind == "html":
            return web.Response(
                text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        if fault.kind == "reset":  # a TCP reset: SO_LINGER 0, then close
            if request.transport is not None:
                sock = request.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                request.transport.abort()
            return web.Response()
        if fault.kind == "slow":
            await asyncio.wait_for(self.released.wait(), 30)
            return web.json_response({})
        return web.json_response(fault.body)


@asynccontextmanager
async def serving(fake: FakeTogether) -> AsyncIterator[str]:
    """``fake`` on a free loopback port; yields its base URL (host only, as Together's)."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        fake.released.set()
        await server.close()


@asynccontextmanager
async def client_for(
    fake: FakeTogether,
    *,
    key: str = KEY,
    timeout: float = 5.0,
    pacer: RequestPacer | None = None,
) -> AsyncIterator[TogetherProvider]:
    """A TogetherProvider over its own session, talking to ``fake``."""
    async with serving(fake) as base_url:
        section = TogetherSettings(base_url=base_url, timeout=timeout)
        session = open_session(
            headers=TogetherProvider.session_headers(section, key), timeout=timeout, concurrency=2
        )
        transport = ApiTransport(session, provider="together", pacer=pacer, timeout=timeout,
                                 max_body_bytes=1024 * 1024)  # fmt: skip
        try:
            yield TogetherProvider(transport, base_url=base_url)
        finally:
            await session.close()


def job(name: str = "together-job-running.json", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(fixture(name))
    body.update(changes)
    return body


def fake_with(body: dict[str, Any], **kw: Any) -> FakeTogether:
    return FakeTogether(answers={f"{LIST_PATH}/{body['id']}": body}, **kw)


def error_event(
    created_at: str, message: str, *, kind: str = "job_error", level: str = "error"
) -> dict[str, str]:
    """A Together event row (the generated type's required fields, plus ``level``)."""
    return {"object": "fine-tune-event", "created_at": created_at, "level": level,
            "message": message, "type": kind}  # fmt: skip


# --- The scheme ------------------------------------------------------------------------

SCHEME_TABLE = [
    # status, phase, settled, failure
    (PENDING, Phase.QUEUED, False, False),
    (QUEUED, Phase.QUEUED, False, False),
    (RUNNING, Phase.RUNNING, False, False),
    (COMPRESSING, Phase.RUNNING, False, False),
    (UPLOADING, Phase.RUNNING, False, False),
    (CANCEL_REQUESTED, Phase.RUNNING, False, False),
    (COMPLETED, Phase.READY, True, False),
    (USER_ERROR, Phase.FAILED, True, True),
    (ERROR, Phase.FAILED, True, True),
    (CANCELLED, Phase.CANCELLED, True, False),
    ("something_new", Phase.OTHER, False, False),
]


class TestScheme:
    @pytest.mark.parametrize(("status", "phase", "settled", "failure"), SCHEME_TABLE)
    def test_every_status_maps_to_its_phase(
        self, status: str, phase: Phase, settled: bool, failure: bool
    ) -> None:
        """Each status has its phase, settledness and failure flag; unknown ones are other."""
        assert TOGETHER_SCHEME.phase(status) is phase
        assert TOGETHER_SCHEME.is_settled(status) is settled
        assert TOGETHER_SCHEME.is_failure(status) is failure

    def test_the_table_is_complete(self) -> None:
        """The test table covers every known status; settled is the SDK's COMPLETED_STATUSES."""
        assert set(KNOWN_STATUSES) == {row[0] for row in SCHEME_TABLE} - {"something_new"}
        assert {COMPLETED, USER_ERROR, ERROR, CANCELLED} == SETTLED
        assert TOGETHER_SCHEME.provider == "together"

    def test_ranks_follow_the_lifecycle(self) -> None:
        """Ranks rise queued < running < unknown < ready < failed < cancelled, as Cohere's do."""
        order = [PENDING, QUEUED, RUNNING, COMPRESSING, UPLOADING, CANCEL_REQUESTED,
                 "something_new", COMPLETED, USER_ERROR, ERROR, CANCELLED]  # fmt: skip
        ranks = [TOGETHER_SCHEME.rank(s) for s in order]
        assert ranks == sorted(ranks)
        assert len(set(ranks)) == len(ranks)
        assert TOGETHER_SCHEME.rank("something_new") == 60
        assert TOGETHER_SCHEME.rank(COMPLETED) == COHERE_SCHEME.rank(COHERE_READY)
        assert TOGETHER_SCHEME.rank(ERROR) == COHERE_SCHEME.rank(COHERE_FAILED)

    def test_common_words_announce_outcomes_only(self) -> None:
        """ready/failed announce completed and both errors; a cancel request announces nothing."""
        assert TOGETHER_SCHEME.announces(COMPLETED, DEFAULT_NOTIFY_ON)
        assert TOGETHER_SCHEME.announces(USER_ERROR, DEFAULT_NOTIFY_ON)
        assert TOGETHER_SCHEME.announces(ERROR, DEFAULT_NOTIFY_ON)
        assert not TOGETHER_SCHEME.announces(CANCELLED, DEFAULT_NOTIFY_ON)
        opted_in = frozenset({"cancelled"})
        assert TOGETHER_SCHEME.announces(CANCELLED, opted_in)
        assert not TOGETHER_SCHEME.announces(CANCEL_REQUESTED, opted_in)
        assert TOGETHER_SCHEME.announces(USER_ERROR, frozenset({USER_ERROR}))
        assert not TOGETHER_SCHEME.announces(ERROR, frozenset({USER_ERROR}))

    def test_registered_under_its_name(self) -> None:
        """The registry's "together" is this class and this scheme."""
        assert PROVIDERS["together"].title == "Together AI"
        assert provider_class("together") is TogetherProvider
        assert registered_scheme("together") is TOGETHER_SCHEME
        assert (TogetherProvider.name, TogetherProvider.title) == ("together", "Together AI")
        assert TogetherProvider.supports_discovery is True


class TestIsoTime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-30T08:00:00.000Z", datetime(2026, 11, 30, 8, tzinfo=UTC)),
            ("2026-11-30T08:00:00Z", datetime(2026, 11, 30, 8, tzinfo=UTC)),
            ("2026-11-30T09:00:00+01:00", datetime(2026, 11, 30, 8, tzinfo=UTC)),
            ("2026-11-30T08:00:00", datetime(2026, 11, 30, 8, tzinfo=UTC)),
            ("2026-11-30T08:00:00.123456789Z", datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=UTC)),
        ],
    )
    def test_forms_parse_to_aware_utc(self, text: str, expected: datetime) -> None:
        """Both SDK forms (with and without fractions), offsets and naive times are UTC."""
        assert parse_iso_time(text) == expected

    @pytest.mark.parametrize(
        "bad",
        [
            None,
            "",
            "yesterday",
            1796025600,
            "2026-13-45T00:00:00Z",
            "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
            "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        ],
    )
    def test_anything_else_is_a_value_error(self, bad: object) -> None:
        """Numbers, empty strings and nonsense are no times."""
        with pytest.raises(ValueError):  # noqa: PT011
            parse_iso_time(bad)


# --- History -----------------------------------------------------------------------------


class TestHistory:
    @pytest.mark.parametrize(
        ("name", "status", "updated"),
        [
            ("together-job-running.json", RUNNING, "2026-11-30T08:02:00"),
            ("together-job-succeeded.json", COMPLETED, "2026-11-30T09:00:00"),
            ("together-job-failed.json", ERROR, "2026-11-30T08:01:35"),
            ("together-job-user-error.json", USER_ERROR, "2026-11-30T08:01:35"),
        ],
    )
    async def test_the_job_status_at_updated_at(self, name: str, status: str, updated: str) -> None:
        """One synthetic event: the job's status at its updated_at; one request, a digest."""
        body = fixture(name)
        fake = fake_with(body)
        async with client_for(fake) as client:
            history = await client.fetch_history(body["id"])
        assert history.events == [Event(status, at(updated))]
        assert (history.malformed, history.pages) == (0, 1)
        assert history.digest is not None
        assert len(fake.seen) == 1

    async def test_without_updated_at_the_newest_event_time_stands_in(self) -> None:
        """No updated_at: the newest embedded event's time (whatever the list order)."""
        body = job()
        del body["updated_at"]
        body["events"].reverse()
        async with client_for(fake_with(body)) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(RUNNING, at("2026-11-30T08:02:00"))]

    async def test_without_updated_at_or_events_created_at_stands_in(self) -> None:
        """No updated_at, no events: the job's created_at."""
        body = {"id": JOB, "status": PENDING, "created_at": "2026-11-30T08:00:00.000Z"}
        async with client_for(fake_with(body)) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(PENDING, at("2026-11-30T08:00:00"))]

    async def test_with_no_time_at_all_the_event_log_gives_one(self) -> None:
        """A job with a status and no time at all: the newest time of /events (one request more)."""
        events = {"data": fixture("together-events-page.json")["data"][:3]}
        fake = FakeTogether(answers={JOB_PATH: {"id": JOB, "status": RUNNING},
                                     f"{JOB_PATH}/events": events})  # fmt: skip
        async with client_for(fake) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(RUNNING, at("2026-11-30T08:01:00"))]
        assert history.pages == 2
        assert fake.seen == [JOB_PATH, f"{JOB_PATH}/events"]

    async def test_with_no_time_anywhere_it_is_a_bad_response(self) -> None:
        """No time in the job nor in its events: a BadResponseError, never a made-up time."""
        fake = FakeTogether(answers={JOB_PATH: {"id": JOB, "status": RUNNING},
                                     f"{JOB_PATH}/events": {"data": [{"type": "x"}]}})  # fmt: skip
        async with client_for(fake) as client:
            with pytest.raises(BadResponseError, match="no usable time"):
                await client.fetch_history(JOB)

    async def test_another_casing_of_a_known_status_is_that_status(self) -> None:
        """COMPLETED (the hand-written layer's casing) reads as completed."""
        async with client_for(fake_with(job(status="COMPLETED"))) as client:
            history = await client.fetch_history(JOB)
        assert [e.status for e in history.events] == [COMPLETED]

    async def test_unknown_status_is_data(self) -> None:
        """A status Together adds tomorrow is kept as sent (phase other), not an error."""
        async with client_for(fake_with(job(status="Evaluating"))) as client:
            history = await client.fetch_history(JOB)
        assert [e.status for e in history.events] == ["Evaluating"]
        assert TOGETHER_SCHEME.phase("Evaluating") is Phase.OTHER

    @pytest.mark.parametrize(
        ("body", "match"),
        [
            ([1, 2], "expected a JSON object"),
            ({"id": JOB, "updated_at": "2026-11-30T08:00:00Z"}, "no status"),
            ({"id": JOB, "status": 5, "updated_at": "2026-11-30T08:00:00Z"}, "no status"),
            ({"id": JOB, "status": ""}, "no status"),
        ],
    )
    async def test_unusable_jobs_are_bad_responses(self, body: Any, match: str) -> None:
        """A body that is no job, or a job without a status or any time, is a BadResponseError."""
        async with client_for(FakeTogether(answers={JOB_PATH: body})) as client:
            with pytest.raises(BadResponseError, match=match) as info:
                await client.fetch_history(JOB)
        assert info.value.provider == "together"

    async def test_same_body_is_unchanged_and_a_new_one_is_not(self) -> None:
        """The digest fast path: the same bytes are not decoded again; new bytes are."""
        fake = fake_with(job())
        async with client_for(fake) as client:
            first = await client.fetch_history(JOB)
            again = await client.fetch_history(JOB, unless_digest=first.digest)
            fake.answers[JOB_PATH] = job("together-job-succeeded.json")
            later = await client.fetch_history(JOB, unless_digest=first.digest)
        assert again.unchanged
        assert again.events == []
        assert again.digest == first.digest
        assert not later.unchanged
        assert later.digest != first.digest
        assert [e.status for e in later.events] == [COMPLETED]

    async def test_each_poll_is_one_paced_request(self) -> None:
        """A poll costs one request of the provider's budget, with the bearer key."""
        pacer = RequestPacer(60_000)
        fake = fake_with(job())
        async with client_for(fake, pacer=pacer) as client:
            await client.fetch_history(JOB)
        assert pacer.requests == 1
        assert fake.seen == [JOB_PATH]


class TestFirstObservation:
    @pytest.mark.parametrize(
        ("name", "announced"),
        [
            ("together-job-running.json", []),
            ("together-job-succeeded.json", [COMPLETED]),
            ("together-job-failed.json", [ERROR]),
            ("together-job-user-error.json", [USER_ERROR]),
        ],
    )
    async def test_only_the_current_status_is_announced(
        self, name: str, announced: list[str]
    ) -> None:
        """A first look announces the current status (if notify.on says so), nothing else."""
        body = fixture(name)
        async with client_for(fake_with(body)) as client:
            history = await client.fetch_history(body["id"])
        observation = observe(None, body["id"], history.events, scheme=TOGETHER_SCHEME)
        assert [n.status for n in observation.notices] == announced
        assert all(n.first_observation and n.provider == "together" for n in observation.notices)
        assert observation.state.status == body["status"]
        assert observation.state.key == ("together", body["id"])

    async def test_running_then_completed_announces_once(self) -> None:
        """running (updated twice), then completed: one notice, for completed, then none."""
        fake = fake_with(job())
        async with client_for(fake) as client:
            first = observe(None, JOB, (await client.fetch_history(JOB)).events,
                            scheme=TOGETHER_SCHEME)  # fmt: skip
            fake.answers[JOB_PATH] = job(updated_at="2026-11-30T08:30:00.000Z")
            events = (await client.fetch_history(JOB)).events
            second = observe(first.state, JOB, events, scheme=TOGETHER_SCHEME)
            fake.answers[JOB_PATH] = job("together-job-succeeded.json")
            events = (await client.fetch_history(JOB)).events
            third = observe(second.state, JOB, events, scheme=TOGETHER_SCHEME)
            fourth = observe(third.state, JOB, events, scheme=TOGETHER_SCHEME)
        assert first.notices == ()
        assert second.notices == ()
        assert second.state.status_since == at("2026-11-30T08:02:00")  # still the same run
        assert [(n.status, n.previous_status) for n in third.notices] == [(COMPLETED, RUNNING)]
        assert fourth.notices == ()


# --- Listing -----------------------------------------------------------------------------


class TestListing:
    async def test_one_response_lists_every_job(self) -> None:
        """The list is one request without parameters; its rows are typed."""
        fake = FakeTogether(answers={LIST_PATH: fixture("together-list.json")})
        async with client_for(fake) as client:
            jobs = await client.list_jobs()
        assert fake.seen == [LIST_PATH]
        assert len(jobs) == 1
        assert jobs[0].id == JOB
        assert jobs[0].name == "support-bot"
        assert jobs[0].status == RUNNING
        assert jobs[0].base_model == "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"

    async def test_junk_rows_are_skipped(self) -> None:
        """Rows with no id or that are no objects are left out."""
        rows = [fixture("together-list.json")["data"][0], "junk", {"id": 5}, {"status": RUNNING}]
        fake = FakeTogether(answers={LIST_PATH: {"data": rows}})
        async with client_for(fake) as client:
            assert [j.id for j in await client.list_jobs()] == [JOB]

    @pytest.mark.parametrize(("body", "count"), [({}, 0), ({"data": None}, 0)])
    async def test_no_data_is_no_jobs(self, body: Any, count: int) -> None:
        """A list without 'data' is empty, not an error."""
        async with client_for(FakeTogether(answers={LIST_PATH: body})) as client:
            assert len(await client.list_jobs()) == count

    async def test_data_that_is_no_list_is_a_bad_response(self) -> None:
        """'data' must be a list."""
        async with client_for(FakeTogether(answers={LIST_PATH: {"data": "all"}})) as client:
            with pytest.raises(BadResponseError, match="'data' is not a list"):
                await client.list_jobs()


# --- Faults ------------------------------------------------------------------------------


class TestFaults:
    @pytest.mark.parametrize(
        ("fault", "error", "status"),
        [
            (Fault("status", 401, fixture("together-error-401.json")), AuthError, 401),
            (Fault("status", 403, {"error": {"message": "Forbidden"}}), AuthError, 403),
            (Fault("status", 404, fixture("together-error-404.json")), NotFoundError, 404),
            (Fault("status", 500, {"error": {"message": "oops"}}), ServerError, 500),
            (Fault("status", 503, None), ServerError, 503),
            (Fault("bad_json"), BadResponseError, None),
            (Fault("html"), BadResponseError, 200),
            (Fault("body", body=["not", "a", "job"]), BadResponseError, None),
            # aiohttp retries an idempotent GET once after a reset: two in a row fail.
            (Fault("reset", times=2), TransportError, None),
        ],
    )
    async def test_faults_become_typed_errors(
        self, fault: Fault, error: type[ApiError], status: int | None
    ) -> None:
        """Every fault kind is its typed error naming the provider, never a crash."""
        async with client_for(fake_with(job(), faults=[fault])) as client:
            with pytest.raises(error) as info:
                await client.fetch_history(JOB)
            # One bad answer changes nothing for the next request.
            assert (await client.fetch_history(JOB)).events
        assert type(info.value) is error
        assert info.value.provider == "together"
        assert info.value.status == status

    async def test_wrong_key_is_auth_error_without_the_key(self) -> None:
        """401 for a wrong key: AuthError with Together's message, never the key."""
        async with client_for(fake_with(job()), key="wrong-key-123") as client:
            with pytest.raises(AuthError) as info:
                await client.fetch_history(JOB)
        assert "wrong-key-123" not in str(info.value)
        assert "Invalid API key" in str(info.value)

    async def test_unknown_job_is_not_found_naming_it(self) -> None:
        """An id the API does not know is NotFoundError naming the job."""
        async with client_for(fake_with(job())) as client:
            with pytest.raises(NotFoundError, match="ft-nope"):
                await client.fetch_history("ft-nope")

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({"Retry-After": "7"}, 7.0),
            ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
            ({}, None),
        ],
    )
    async def test_rate_limited_carries_retry_after(
        self, headers: dict[str, str], expected: float | None
    ) -> None:
        """429 is RateLimitedError with the delay asked for (retry-after-ms first)."""
        fault = Fault("status", 429, fixture("together-error-429.json"), headers)
        async with client_for(fake_with(job(), faults=[fault])) as client:
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(JOB)
        assert info.value.retry_after == expected
        assert info.value.provider == "together"
        assert "exceeded the rate limit" in str(info.value)

    async def test_slow_answer_times_out(self) -> None:
        """An answer slower than the timeout is a TransportError, promptly."""
        fake = fake_with(job(), faults=[Fault("slow")])
        async with client_for(fake, timeout=0.3) as client:
            with pytest.raises(TransportError, match="no answer"):
                await client.fetch_history(JOB)

    async def test_listing_and_details_faults_are_typed_too(self) -> None:
        """The list and the events endpoint fail with the same typed errors."""
        body = job("together-job-failed.json")
        del body["events"]
        fake = FakeTogether(
            answers={LIST_PATH: fixture("together-list.json"), f"{LIST_PATH}/{FAILED_JOB}": body},
            faults=[Fault("status", 500)],
        )
        async with client_for(fake) as client:
            with pytest.raises(ServerError):
                await client.list_jobs()
            # The job answers; its /events does not exist here: 404.
            with pytest.raises(NotFoundError, match="events of job"):
                await client.job_details(FAILED_JOB)

    async def test_unreachable_api_is_transport_error(self) -> None:
        """A closed port is a TransportError saying it cannot connect."""
        section = TogetherSettings(base_url="http://127.0.0.1:9", timeout=2)
        session = open_provider_session("together", section, api_key=KEY, concurrency=1)
        try:
            client = open_provider("together", section, session=session, pacer=None)
            with pytest.raises(TransportError, match="cannot connect") as info:
                await client.fetch_history(JOB)
        finally:
            await session.close()
        assert info.value.provider == "together"


# --- Details -----------------------------------------------------------------------------


# --- Hostile shapes ------------------------------------------------------------------------

JOB_FIELDS = [
    "id",
    "status",
    "updated_at",
    "created_at",
    "events",
    "model",
    "model_output_name",
    "suffix",
]
EVENT_FIELDS = ["type", "level", "message", "created_at"]

#: Values of every JSON type, and the edges of each, put where a field is expected.
HOSTILE_VALUES: list[Any] = [
    None, True, 0, -1, 10**30, 1.5e308, float("nan"), "", "x", "2026-11-30T08:00:00Z",
    [], ["x"], [None], [{}], {}, {"a": 1}, {"status": 5},
]  # fmt: skip


async def hostile_calls(client: TogetherProvider, job_id: str) -> None:
    """Every provider method once; each either answers or raises an ApiError."""
    with suppress(ApiError):
        await client.fetch_history(job_id)
    with suppress(ApiError):
        await client.job_details(job_id)
    with suppress(ApiError):
        await client.final_metrics(job_id)
    with suppress(ApiError):
        await client.list_jobs()


class TestHostileShapes:
    @pytest.mark.parametrize("key", JOB_FIELDS)
    async def test_any_value_in_any_job_field_is_data_or_a_typed_error(self, key: str) -> None:
        """Whatever a job's field holds, every method answers or raises an ApiError."""
        fake = FakeTogether()
        async with client_for(fake) as client:
            for value in HOSTILE_VALUES:
                body = job("together-job-failed.json", **{key: value})
                fake.answers = {JOB_PATH: body, f"{JOB_PATH}/events": {"data": value},
                                LIST_PATH: {"data": [body, value]}}  # fmt: skip
                await hostile_calls(client, JOB)

    @pytest.mark.parametrize("key", EVENT_FIELDS)
    async def test_any_value_in_any_event_field_is_skipped_or_used(self, key: str) -> None:
        """Whatever an event's field holds, the reason is read or left out, never a crash."""
        fake = FakeTogether()
        async with client_for(fake) as client:
            for value in HOSTILE_VALUES:
                body = job("together-job-failed.json")
                body["events"][-1][key] = value
                fake.answers = {f"{LIST_PATH}/{FAILED_JOB}": body}
                details = await client.job_details(FAILED_JOB)
                assert details.error_message is None or isinstance(details.error_message, str)


class TestDetails:
    async def test_completed_job_names_its_models(self) -> None:
        """model_output_name, base model and times; no error, no metrics."""
        async with client_for(fake_with(job("together-job-succeeded.json"))) as client:
            details = await client.job_details(JOB)
            metrics = await client.final_metrics(JOB)
        assert details.id == JOB
        assert details.status == COMPLETED
        assert details.fine_tuned_model == (
            "acme/Meta-Llama-3.1-8B-Instruct-Reference-support-bot-3b9c2d1e"
        )
        assert details.base_model == "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
        assert details.error_message is None
        assert details.created_at == at("2026-11-30T08:00:00")
        assert details.completed_at == at("2026-11-30T09:00:00")
        assert metrics is None

    @pytest.mark.parametrize(
        ("name", "job_id", "message"),
        [
            ("together-job-failed.json", FAILED_JOB, VALIDATION_FAILED),
            (
                "together-job-user-error.json",
                USER_ERROR_JOB,
                "Job failed: the training file has fewer examples than the batch size.",
            ),
        ],
    )
    async def test_failure_message_from_the_embedded_events(
        self, name: str, job_id: str, message: str
    ) -> None:
        """A failed job's reason is its newest job_error/job_user_error event, in one request."""
        fake = fake_with(job(name))
        async with client_for(fake) as client:
            details = await client.job_details(job_id)
        assert details.error_message == message
        assert len(fake.seen) == 1

    async def test_failure_message_from_the_events_endpoint(self) -> None:
        """A failed job without embedded events costs one /events request for its reason."""
        body = job("together-job-failed.json")
        events = {"data": body.pop("events")}
        path = f"{LIST_PATH}/{FAILED_JOB}"
        fake = FakeTogether(answers={path: body, f"{path}/events": events})
        async with client_for(fake) as client:
            details = await client.job_details(FAILED_JOB)
        assert details.error_message == VALIDATION_FAILED
        assert fake.seen == [path, f"{path}/events"]

    @pytest.mark.parametrize(
        ("rows", "message"),
        [
            # Any casing of the type or the level; the newest by time wins, not by position.
            (
                [
                    error_event("2026-11-30T08:01:35Z", "late", kind="JOB_ERROR", level="Error"),
                    error_event("2026-11-30T08:01:00Z", "early"),
                ],
                "late",
            ),
            (
                [
                    error_event("2026-11-30T08:01:00Z", "warned", kind="warning"),
                    error_event("2026-11-30T08:00:00Z", "typed", kind="JOB_USER_ERROR", level=""),
                ],
                "warned",
            ),
            # Equal times: the later in the list.
            (
                [
                    error_event("2026-11-30T08:01:00Z", "first"),
                    error_event("2026-11-30T08:01:00Z", "second"),
                ],
                "second",
            ),
            # Info events, junk rows and messageless errors give nothing.
            (
                [
                    {"type": "job_start", "level": "info", "message": "started"},
                    "junk",
                    None,
                    {"type": "job_error", "message": ""},
                    {"type": "job_error", "message": 7},
                ],
                None,
            ),
            # Whitespace is collapsed; a row without a time still counts.
            ([{"type": "job_error", "message": "  bad\n  file  "}], "bad file"),
        ],
    )
    async def test_which_event_gives_the_reason(self, rows: list[Any], message: str | None) -> None:
        """The newest error event (type job_error/job_user_error or level error, any case)."""
        body = job("together-job-failed.json", events=rows)
        async with client_for(fake_with(body)) as client:
            details = await client.job_details(FAILED_JOB)
        assert details.error_message == message

    async def test_no_reason_for_a_job_that_did_not_fail(self) -> None:
        """An error event in a job that then completed is no failure reason (and costs nothing)."""
        body = job("together-job-succeeded.json")
        body["events"].append(error_event("2026-11-30T08:30:00Z", "transient, restarted"))
        fake = fake_with(body)
        async with client_for(fake) as client:
            details = await client.job_details(JOB)
        assert details.error_message is None
        assert len(fake.seen) == 1

    async def test_a_body_with_no_job_is_a_bad_response(self) -> None:
        """Details of a body without an id are a BadResponseError."""
        async with client_for(FakeTogether(answers={JOB_PATH: {"status": ERROR}})) as client:
            with pytest.raises(BadResponseError, match="not a fine-tuning job"):
                await client.job_details(JOB)


class TestHeadersAndSettings:
    def test_session_headers_carry_the_bearer_key(self) -> None:
        """Requests carry ``Authorization: Bearer``, as the SDK sends it."""
        assert TogetherProvider.session_headers(TogetherSettings(), "sk-1") == {
            "Authorization": "Bearer sk-1"
        }

    async def test_from_settings_uses_the_section_and_links_the_dashboard(self) -> None:
        """open_provider builds it from its section (base URL with a trailing slash, pacer)."""
        assert TogetherSettings().base_url == "https://api.together.ai"
        pacer = RequestPacer(60_000)
        fake = fake_with(job())
        async with serving(fake) as base_url:
            section = TogetherSettings(base_url=base_url + "/", timeout=5)
            session = open_provider_session("together", section, api_key=KEY, concurrency=2)
            try:
                client = open_provider("together", section, session=session, pacer=pacer)
                await client.fetch_history(JOB)
            finally:
                await session.close()
        assert fake.seen == [JOB_PATH]
        assert pacer.requests == 1
        assert client.dashboard_url(JOB) == f"https://api.together.ai/fine-tuning/{JOB}"
        assert client.dashboard_url("a/b") == "https://api.together.ai/fine-tuning/a%2Fb"


# --- Against the simulator -----------------------------------------------------------------

SIM_KEY = "sim-together-key"
SIM_JOB = "ft-sim-0001"
FAILING_JOB = "ft-sim-0002"
SIM_TIMELINE: list[tuple[float, str]] = [
    (0, PENDING),
    (1, QUEUED),
    (2, RUNNING),
    (4, UPLOADING),
    (5, COMPLETED),
]


def sim_scenario(**overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "api_key": SIM_KEY,
        "clock": "manual",
        "models": [
            {"id": SIM_JOB, "provider": "together", "name": "bot", "timeline": SIM_TIMELINE},
            {
                "id": FAILING_JOB,
                "provider": "together",
                "timeline": [(0, PENDING), (2, RUNNING), (3, USER_ERROR)],
                "error": {"message": "The training file has fewer examples than the batch size."},
            },
            {"id": "cohere-model", "timeline": [(0, "STATUS_QUEUED")]},
        ],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


@asynccontextmanager
async def sim_client(
    scn: Scenario, *, key: str = SIM_KEY, timeout: float = 5.0, advance: float = 10.0
) -> AsyncIterator[tuple[TogetherProvider, Any]]:
    """The provider, built from its settings section, against the simulator's /together."""
    async with running_simulator(scn) as sim:
        sim.advance(advance)
        section = TogetherSettings(base_url=sim.provider_url("together"), timeout=timeout)
        session = open_provider_session("together", section, api_key=key, concurrency=2)
        try:
            provider = open_provider("together", section, session=session, pacer=None)
            assert isinstance(provider, TogetherProvider)
            yield provider, sim
        finally:
            await session.close()


def sim_fault(kind: str, **kw: Any) -> list[dict[str, Any]]:
    return [{"kind": kind, "times": None, "provider": "together", "endpoint": "model", **kw}]


class TestSimulator:
    async def test_first_observation_announces_the_current_status(self) -> None:
        """completed at its updated_at; a first look announces it, a failed job its failure."""
        async with sim_client(sim_scenario()) as (client, _):
            done = await client.fetch_history(SIM_JOB)
            failed = await client.fetch_history(FAILING_JOB)
        assert [e.status for e in done.events] == [COMPLETED]
        observation = observe(None, SIM_JOB, done.events, scheme=TOGETHER_SCHEME)
        assert [n.status for n in observation.notices] == [COMPLETED]
        observation = observe(None, FAILING_JOB, failed.events, scheme=TOGETHER_SCHEME)
        assert [n.status for n in observation.notices] == [USER_ERROR]

    async def test_the_lifecycle_as_it_happens(self) -> None:
        """Polled while it runs: nothing until completed, then one notice, then nothing."""
        async with sim_client(sim_scenario(), advance=2.5) as (client, sim):
            state = None
            announced: list[str] = []
            for _ in range(4):
                history = await client.fetch_history(SIM_JOB)
                observation = observe(state, SIM_JOB, history.events, scheme=TOGETHER_SCHEME)
                announced += [n.status for n in observation.notices]
                state = observation.state
                sim.advance(1.0)
            same = await client.fetch_history(SIM_JOB, unless_digest=history.digest)
        assert announced == [COMPLETED]
        assert same.unchanged

    async def test_listing_and_details(self) -> None:
        """The account's Together jobs in one request; a failure's reason in job_details."""
        async with sim_client(sim_scenario()) as (client, sim):
            sim.reset_stats()
            jobs = await client.list_jobs()
            assert sim.stats()["by_status_code"].get("200") == 1
            details = await client.job_details(FAILING_JOB)
            done = await client.job_details(SIM_JOB)
        assert {j.id for j in jobs} == {SIM_JOB, FAILING_JOB}
        assert details.status == USER_ERROR
        assert details.error_message == "The training file has fewer examples than the batch size."
        assert done.error_message is None
        assert done.fine_tuned_model

    async def test_wrong_key_and_unknown_jobs(self) -> None:
        """Wrong key: AuthError without the key; an unknown job: NotFoundError."""
        async with sim_client(sim_scenario(), key="wrong-key-123") as (client, _):
            with pytest.raises(AuthError) as auth:
                await client.fetch_history(SIM_JOB)
        assert "wrong-key-123" not in str(auth.value)
        async with sim_client(sim_scenario()) as (client, _):
            with pytest.raises(NotFoundError):
                await client.fetch_history("ft-nope")

    @pytest.mark.parametrize(
        ("kind", "error"),
        [
            ("http_500", ServerError),
            ("http_503", ServerError),
            ("http_401", AuthError),
            ("http_403", AuthError),
            ("http_404", NotFoundError),
            ("malformed_json", BadResponseError),
            ("wrong_content_type", BadResponseError),
            ("wrong_shape", BadResponseError),
            ("huge_body", BadResponseError),
            ("reset_connection", TransportError),
        ],
    )
    async def test_faults_become_typed_errors(self, kind: str, error: type[ApiError]) -> None:
        """Each simulated fault on the job is its typed error, naming Together."""
        async with sim_client(sim_scenario(faults=sim_fault(kind))) as (client, _):
            with pytest.raises(error) as info:
                await client.fetch_history(SIM_JOB)
        assert info.value.provider == "together"

    async def test_rate_limited_carries_retry_after(self) -> None:
        """429 with Retry-After: RateLimitedError with the delay; the next request works."""
        faults = sim_fault("http_429", retry_after=7, times=1)
        async with sim_client(sim_scenario(faults=faults)) as (client, _):
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(SIM_JOB)
            assert (await client.fetch_history(SIM_JOB)).events
        assert info.value.retry_after == 7.0

    async def test_slow_answer_times_out(self) -> None:
        """A simulated slow answer is a TransportError within the timeout."""
        faults = sim_fault("slow", delay=30)
        async with sim_client(sim_scenario(faults=faults), timeout=0.3) as (client, _):
            with pytest.raises(TransportError, match="no answer"):
                await client.fetch_history(SIM_JOB)

    @pytest.mark.parametrize("kind", ["unknown_status", "naive_timestamp", "future_timestamp"])
    async def test_oddities_are_data(self, kind: str) -> None:
        """Odd but readable jobs give their status, not errors."""
        async with sim_client(sim_scenario(faults=sim_fault(kind))) as (client, _):
            history = await client.fetch_history(SIM_JOB)
        assert len(history.events) == 1
        assert history.events[0].created_at.tzinfo is not None
        if kind == "unknown_status":
            assert history.events[0].status == "something_new"

    async def test_a_job_with_only_id_and_status_takes_its_time_from_the_events(self) -> None:
        """missing_fields leaves the job no time: the newest event's, one more request."""
        async with sim_client(sim_scenario(faults=sim_fault("missing_fields"))) as (client, _):
            history = await client.fetch_history(SIM_JOB)
        assert [e.status for e in history.events] == [COMPLETED]
        assert history.pages == 2
