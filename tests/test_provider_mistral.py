"""The Mistral provider: its status table, and its client against real loopback servers.

Two servers: a tiny fake serving the fixtures' payloads byte for byte (and any hostile
answer a test scripts), and the simulator (``watcher.simulator``, Mistral under
``/mistral``), the reference fake every provider is tested against.
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
from watcher.providers.mistral import (
    CANCELLATION_REQUESTED,
    CANCELLED,
    FAILED,
    FAILED_VALIDATION,
    KNOWN_STATUSES,
    MISTRAL_SCHEME,
    QUEUED,
    RUNNING,
    SETTLED,
    STARTED,
    SUCCESS,
    VALIDATED,
    VALIDATING,
    MistralProvider,
    parse_unix_time,
)
from watcher.settings import MistralSettings
from watcher.simulator import Scenario, running_simulator

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
KEY = "mistral-test-key"
JOB = "2813b7e6-c511-43ac-a16a-1a54a5b884b2"  # the fixtures' job
FAILED_JOB = "7c1e0d2a-93b4-4f65-8a77-0b1c2d3e4f50"
JOB_PATH = f"/v1/fine_tuning/jobs/{JOB}"
LIST_PATH = "/v1/fine_tuning/jobs"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


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
class FakeMistral:
    """Answers GETs from ``answers`` (path -> JSON, or a function of the request)."""

    key: str = KEY
    answers: dict[str, Answer] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.path_qs)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(fixture("mistral-error-401.json"), status=401)
        if self.faults:
            fault = self.faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.pop(0)
            return await self._misbehave(request, fault)
        answer = self.answers.get(request.path)
        if answer is None:
            return web.json_response(fixture("mistral-error-404.json"), status=404)
        return web.json_response(answer(request) if callable(answer) else answer)

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "status":
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        if fault.kind == "bad_json":
            return web.Response(
                text='{"id": "2813b7e6", "status": ', content_type="application/json"
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
async def serving(fake: FakeMistral) -> AsyncIterator[str]:
    """``fake`` on a free loopback port; yields its base URL (host only, as Mistral's)."""
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
    fake: FakeMistral,
    *,
    key: str = KEY,
    timeout: float = 5.0,
    pacer: RequestPacer | None = None,
    **kw: Any,
) -> AsyncIterator[MistralProvider]:
    """A MistralProvider over its own session, talking to ``fake``."""
    async with serving(fake) as base_url:
        section = MistralSettings(base_url=base_url, timeout=timeout)
        session = open_session(
            headers=MistralProvider.session_headers(section, key), timeout=timeout, concurrency=2
        )
        transport = ApiTransport(session, provider="mistral", pacer=pacer, timeout=timeout,
                                 max_body_bytes=1024 * 1024)  # fmt: skip
        try:
            yield MistralProvider(transport, base_url=base_url, **kw)
        finally:
            await session.close()


def fake_with(job: dict[str, Any], **kw: Any) -> FakeMistral:
    return FakeMistral(answers={f"{LIST_PATH}/{job['id']}": job}, **kw)


def job(name: str = "mistral-job-running.json", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(fixture(name))
    body.update(changes)
    return body


# --- The scheme ------------------------------------------------------------------------

SCHEME_TABLE = [
    # status, phase, settled, failure
    (QUEUED, Phase.QUEUED, False, False),
    (STARTED, Phase.QUEUED, False, False),
    (VALIDATING, Phase.QUEUED, False, False),
    (VALIDATED, Phase.QUEUED, False, False),
    (RUNNING, Phase.RUNNING, False, False),
    (CANCELLATION_REQUESTED, Phase.RUNNING, False, False),
    (SUCCESS, Phase.READY, True, False),
    (FAILED_VALIDATION, Phase.FAILED, True, True),
    (FAILED, Phase.FAILED, True, True),
    (CANCELLED, Phase.CANCELLED, True, False),
    ("SOMETHING_NEW", Phase.OTHER, False, False),
]


class TestScheme:
    @pytest.mark.parametrize(("status", "phase", "settled", "failure"), SCHEME_TABLE)
    def test_every_status_maps_to_its_phase(
        self, status: str, phase: Phase, settled: bool, failure: bool
    ) -> None:
        """Each status has its phase, settledness and failure flag; unknown ones are other."""
        assert MISTRAL_SCHEME.phase(status) is phase
        assert MISTRAL_SCHEME.is_settled(status) is settled
        assert MISTRAL_SCHEME.is_failure(status) is failure

    def test_the_table_is_complete(self) -> None:
        """The test table covers every known status, and the settled set is the outcomes."""
        assert set(KNOWN_STATUSES) == {row[0] for row in SCHEME_TABLE} - {"SOMETHING_NEW"}
        assert {SUCCESS, FAILED_VALIDATION, FAILED, CANCELLED} == SETTLED
        assert MISTRAL_SCHEME.provider == "mistral"

    def test_ranks_follow_the_lifecycle(self) -> None:
        """Ranks rise queued < running < unknown < ready < failed < cancelled, as Cohere's do."""
        order = [QUEUED, STARTED, VALIDATING, VALIDATED, RUNNING, CANCELLATION_REQUESTED,
                 "SOMETHING_NEW", SUCCESS, FAILED_VALIDATION, FAILED, CANCELLED]  # fmt: skip
        ranks = [MISTRAL_SCHEME.rank(s) for s in order]
        assert ranks == sorted(ranks)
        assert len(set(ranks)) == len(ranks)
        assert MISTRAL_SCHEME.rank("SOMETHING_NEW") == 60
        assert MISTRAL_SCHEME.rank(SUCCESS) == COHERE_SCHEME.rank(COHERE_READY)
        assert MISTRAL_SCHEME.rank(FAILED) == COHERE_SCHEME.rank(COHERE_FAILED)

    def test_common_words_announce_outcomes_only(self) -> None:
        """ready/failed announce SUCCESS and both failures; a cancel request announces nothing."""
        assert MISTRAL_SCHEME.announces(SUCCESS, DEFAULT_NOTIFY_ON)
        assert MISTRAL_SCHEME.announces(FAILED_VALIDATION, DEFAULT_NOTIFY_ON)
        assert MISTRAL_SCHEME.announces(FAILED, DEFAULT_NOTIFY_ON)
        assert not MISTRAL_SCHEME.announces(CANCELLED, DEFAULT_NOTIFY_ON)
        opted_in = frozenset({"cancelled"})
        assert MISTRAL_SCHEME.announces(CANCELLED, opted_in)
        assert not MISTRAL_SCHEME.announces(CANCELLATION_REQUESTED, opted_in)
        assert MISTRAL_SCHEME.announces(FAILED_VALIDATION, frozenset({FAILED_VALIDATION}))
        assert not MISTRAL_SCHEME.announces(FAILED, frozenset({FAILED_VALIDATION}))

    def test_registered_under_its_name(self) -> None:
        """The registry's "mistral" is this class and this scheme."""
        assert PROVIDERS["mistral"].title == "Mistral"
        assert provider_class("mistral") is MistralProvider
        assert registered_scheme("mistral") is MISTRAL_SCHEME
        assert (MistralProvider.name, MistralProvider.title) == ("mistral", "Mistral")
        assert MistralProvider.supports_discovery is True


class TestUnixTime:
    def test_seconds_are_aware_utc(self) -> None:
        """Mistral's unix seconds (int or float) become aware UTC datetimes."""
        assert parse_unix_time(1796025600) == datetime(2026, 11, 30, 8, tzinfo=UTC)
        assert parse_unix_time(1796025600.5).microsecond == 500000

    @pytest.mark.parametrize("bad", [None, "1796025600", True, -1, 10**13, float("inf")])
    def test_anything_else_is_a_value_error(self, bad: object) -> None:
        """Strings, booleans, negatives and far futures are no times."""
        with pytest.raises(ValueError):  # noqa: PT011
            parse_unix_time(bad)


# --- History -----------------------------------------------------------------------------


class TestHistory:
    async def test_embedded_events_are_the_history(self) -> None:
        """Each event's data.status at its created_at; one request, and a digest."""
        async with client_for(fake_with(job())) as client:
            history = await client.fetch_history(JOB)
        assert [(e.status, e.created_at) for e in history.events] == [
            (RUNNING, at(1796025665)),
            (VALIDATED, at(1796025660)),
            (VALIDATING, at(1796025602)),
            (QUEUED, at(1796025600)),
        ]
        assert (history.malformed, history.pages) == (0, 1)
        assert history.digest is not None

    async def test_events_without_data_fall_back_to_the_job_status(self) -> None:
        """Documented events with no data count for nothing; (modified_at, status) stands in."""
        body = fixture("mistral-job-events-without-data.json")
        async with client_for(fake_with(body)) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(RUNNING, at(1796025601))]
        assert history.malformed == 0

    async def test_job_status_ahead_of_its_events_is_current(self) -> None:
        """When the events stop short of the job's status, the job's status is appended."""
        body = job(status=SUCCESS, modified_at=1796029200)
        async with client_for(fake_with(body)) as client:
            history = await client.fetch_history(JOB)
        assert Event(SUCCESS, at(1796029200)) in history.events
        assert observe(None, JOB, history.events, scheme=MISTRAL_SCHEME).state.status == SUCCESS

    async def test_stale_modified_at_never_puts_the_job_status_in_the_past(self) -> None:
        """A job status newer than the events but with an older modified_at still sorts last."""
        body = job(status=SUCCESS, modified_at=1796025000)
        async with client_for(fake_with(body)) as client:
            history = await client.fetch_history(JOB)
        assert Event(SUCCESS, at(1796025665)) in history.events
        assert observe(None, JOB, history.events, scheme=MISTRAL_SCHEME).state.status == SUCCESS

    async def test_bad_rows_are_skipped_and_counted(self) -> None:
        """Rows that are no objects, or whose status or time is unusable, are counted."""
        rows = [
            {"name": "status-updated", "data": {"status": RUNNING}, "created_at": 1796025665},
            "junk",
            None,
            {"name": "status-updated", "data": {"status": 7}, "created_at": 1796025660},
            {"name": "status-updated", "data": {"status": ""}, "created_at": 1796025660},
            {"name": "status-updated", "data": {"status": QUEUED}, "created_at": "yesterday"},
            {"name": "status-updated", "data": {"status": QUEUED}, "created_at": True},
            {"name": "status-updated", "data": {"status": QUEUED}, "created_at": 10**15},
            {"name": "status-updated", "data": "RUNNING", "created_at": 1796025660},
            {"name": "status-updated", "data": {"other": 1}, "created_at": 1796025660},  # no status
            {"name": "status-updated", "created_at": 1796025660},  # documented: no data
        ]
        async with client_for(fake_with(job(events=rows))) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(RUNNING, at(1796025665))]
        assert history.malformed == 8

    async def test_unknown_status_is_data(self) -> None:
        """A status Mistral adds tomorrow is an event (phase other), not an error."""
        rows = [
            {"name": "status-updated", "data": {"status": "ARCHIVED"}, "created_at": 1796030000}
        ]
        async with client_for(fake_with(job(status="ARCHIVED", events=rows))) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event("ARCHIVED", at(1796030000))]
        assert MISTRAL_SCHEME.phase(history.events[0].status) is Phase.OTHER

    @pytest.mark.parametrize(
        ("body", "match"),
        [
            ([1, 2], "expected a JSON object"),
            ({"id": JOB, "status": RUNNING, "modified_at": 1796025665, "events": {}}, "not a list"),
            ({"id": JOB, "events": []}, "neither a status"),
            ({"id": JOB, "status": RUNNING, "modified_at": "now", "events": []}, "neither"),
            ({"id": JOB, "status": 5, "modified_at": 1796025665}, "neither a status"),
        ],
    )
    async def test_unusable_jobs_are_bad_responses(self, body: Any, match: str) -> None:
        """A body that is no job, or a job with no status and time at all, is a BadResponseError."""
        fake = FakeMistral(answers={JOB_PATH: body})
        async with client_for(fake) as client:
            with pytest.raises(BadResponseError, match=match) as info:
                await client.fetch_history(JOB)
        assert info.value.provider == "mistral"

    async def test_job_without_events_uses_created_at_when_nothing_else(self) -> None:
        """No events and no modified_at: the job's status at created_at."""
        body = {"id": JOB, "status": QUEUED, "created_at": 1796025600}
        async with client_for(FakeMistral(answers={JOB_PATH: body})) as client:
            history = await client.fetch_history(JOB)
        assert history.events == [Event(QUEUED, at(1796025600))]

    async def test_same_body_is_unchanged_and_a_new_one_is_not(self) -> None:
        """The digest fast path: the same bytes are not decoded again; new bytes are."""
        fake = fake_with(job())
        async with client_for(fake) as client:
            first = await client.fetch_history(JOB)
            again = await client.fetch_history(JOB, unless_digest=first.digest)
            fake.answers[JOB_PATH] = job("mistral-job-succeeded.json")
            later = await client.fetch_history(JOB, unless_digest=first.digest)
        assert again.unchanged
        assert again.events == []
        assert again.digest == first.digest
        assert not later.unchanged
        assert later.digest != first.digest
        assert SUCCESS in {e.status for e in later.events}

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
            ("mistral-job-running.json", []),
            ("mistral-job-succeeded.json", [SUCCESS]),
            ("mistral-job-failed.json", [FAILED_VALIDATION]),
        ],
    )
    async def test_only_the_current_status_is_announced(
        self, name: str, announced: list[str]
    ) -> None:
        """A first look announces the current status (if notify.on says so), no history."""
        body = fixture(name)
        async with client_for(fake_with(body)) as client:
            history = await client.fetch_history(body["id"])
        observation = observe(None, body["id"], history.events, scheme=MISTRAL_SCHEME)
        assert [n.status for n in observation.notices] == announced
        assert all(n.first_observation and n.provider == "mistral" for n in observation.notices)
        assert observation.state.status == body["status"]
        assert observation.state.key == ("mistral", body["id"])

    async def test_running_then_succeeded_announces_once(self) -> None:
        """RUNNING, then SUCCESS on the next poll: one notice, for SUCCESS, then none."""
        fake = fake_with(job())
        async with client_for(fake) as client:
            first = observe(None, JOB, (await client.fetch_history(JOB)).events,
                            scheme=MISTRAL_SCHEME)  # fmt: skip
            fake.answers[JOB_PATH] = job("mistral-job-succeeded.json")
            events = (await client.fetch_history(JOB)).events
            second = observe(first.state, JOB, events, scheme=MISTRAL_SCHEME)
            third = observe(second.state, JOB, events, scheme=MISTRAL_SCHEME)
        assert first.notices == ()
        assert [(n.status, n.previous_status) for n in second.notices] == [(SUCCESS, RUNNING)]
        assert third.notices == ()


# --- Listing -----------------------------------------------------------------------------


def listing(
    count: int, *, cap: int | None = None, total: Any = "exact", ignore_page: bool = False
) -> Callable[[web.Request], Any]:
    """A Mistral job list of ``count`` jobs: ``page`` from 0, at most ``cap`` rows a page."""
    template = fixture("mistral-list.json")["data"][0]
    jobs = [{**template, "id": f"00000000-0000-4000-8000-{n:012d}"} for n in range(count)]

    def answer(request: web.Request) -> Any:
        page = 0 if ignore_page else int(request.query.get("page", "0"))
        size = int(request.query.get("page_size", "100"))
        if cap is not None:
            size = min(size, cap)
        body: dict[str, Any] = {"object": "list", "data": jobs[page * size : (page + 1) * size]}
        if total == "exact":
            body["total"] = count
        elif total is not None:
            body["total"] = total
        return body

    return answer


class TestListing:
    async def test_pages_from_zero_until_total(self) -> None:
        """page=0,1,2 with the page size; stops once ``total`` jobs arrived, no extra request."""
        fake = FakeMistral(answers={LIST_PATH: listing(5)})
        async with client_for(fake, page_size=2) as client:
            jobs = await client.list_jobs()
        assert len({j.id for j in jobs}) == 5
        assert fake.seen == [f"{LIST_PATH}?page={p}&page_size=2" for p in range(3)]
        assert jobs[0].name == "support-bot"
        assert jobs[0].base_model == "open-mistral-nemo"

    async def test_the_fixture_list_is_one_page(self) -> None:
        """The fixture's list (total 1) is read in one request."""
        fake = FakeMistral(answers={LIST_PATH: fixture("mistral-list.json")})
        async with client_for(fake) as client:
            jobs = await client.list_jobs()
        assert [(j.id, j.status) for j in jobs] == [(JOB, RUNNING)]
        assert len(fake.seen) == 1

    async def test_a_capped_page_size_still_lists_everything(self) -> None:
        """A server that sends fewer rows than asked: rows are counted against total."""
        fake = FakeMistral(answers={LIST_PATH: listing(3, cap=1)})
        async with client_for(fake, page_size=100) as client:
            jobs = await client.list_jobs()
        assert len(jobs) == 3
        assert len(fake.seen) == 3

    @pytest.mark.parametrize("total", [None, 99, "three", True])
    async def test_a_missing_or_wrong_total_stops_on_the_empty_page(self, total: Any) -> None:
        """Total absent, too large or no integer: the first empty page ends the list."""
        fake = FakeMistral(answers={LIST_PATH: listing(3, total=total)})
        async with client_for(fake, page_size=2) as client:
            jobs = await client.list_jobs()
        assert len(jobs) == 3
        assert len(fake.seen) == 3  # two pages and the empty one

    async def test_a_server_ignoring_page_is_refused(self) -> None:
        """The same page again and again is a BadResponseError, not a loop."""
        fake = FakeMistral(answers={LIST_PATH: listing(5, ignore_page=True, total=None)})
        async with client_for(fake, page_size=2) as client:
            with pytest.raises(BadResponseError, match="repeats"):
                await client.list_jobs()
        assert len(fake.seen) == 2

    async def test_endless_pages_give_up(self) -> None:
        """New jobs forever (and a total that never arrives) stop at max_pages."""
        fake = FakeMistral(answers={LIST_PATH: listing(1000, total=10**6)})
        async with client_for(fake, page_size=1, max_pages=5) as client:
            with pytest.raises(BadResponseError, match="more than 5 pages"):
                await client.list_jobs()
        assert len(fake.seen) == 5

    async def test_junk_rows_are_skipped(self) -> None:
        """Rows with no id or that are no objects are left out of the list."""
        rows = [fixture("mistral-list.json")["data"][0], "junk", {"id": 5}, {"status": "RUNNING"}]
        fake = FakeMistral(answers={LIST_PATH: {"object": "list", "data": rows, "total": 4}})
        async with client_for(fake) as client:
            jobs = await client.list_jobs()
        assert [j.id for j in jobs] == [JOB]

    async def test_data_that_is_no_list_is_a_bad_response(self) -> None:
        """'data' must be a list."""
        fake = FakeMistral(answers={LIST_PATH: {"object": "list", "data": {}, "total": 1}})
        async with client_for(fake) as client:
            with pytest.raises(BadResponseError, match="'data' is not a list"):
                await client.list_jobs()


# --- Faults ------------------------------------------------------------------------------


class TestFaults:
    @pytest.mark.parametrize(
        ("fault", "error", "status"),
        [
            (Fault("status", 401, fixture("mistral-error-401-alt.json")), AuthError, 401),
            (Fault("status", 403, {"detail": "Forbidden"}), AuthError, 403),
            (Fault("status", 404, fixture("mistral-error-404.json")), NotFoundError, 404),
            (Fault("status", 410, {"detail": "Gone"}), NotFoundError, 410),
            (Fault("status", 422, fixture("mistral-error-422.json")), NotFoundError, 422),
            (Fault("status", 500, {"detail": "oops"}), ServerError, 500),
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
        assert info.value.provider == "mistral"
        assert info.value.status == status

    async def test_one_reset_is_retried_by_the_http_client(self) -> None:
        """A single reset costs a second request, not an error (aiohttp's idempotent retry)."""
        fake = fake_with(job(), faults=[Fault("reset")])
        async with client_for(fake) as client:
            assert (await client.fetch_history(JOB)).events
        assert len(fake.seen) == 2

    async def test_wrong_key_is_auth_error_without_the_key(self) -> None:
        """401 for a wrong key: AuthError whose message never carries the key."""
        async with client_for(fake_with(job()), key="wrong-key-123") as client:
            with pytest.raises(AuthError) as info:
                await client.fetch_history(JOB)
        assert "wrong-key-123" not in str(info.value)
        assert "Unauthorized" in str(info.value)

    async def test_unknown_job_is_not_found_naming_it(self) -> None:
        """An id the API does not know is NotFoundError naming the job."""
        async with client_for(fake_with(job())) as client:
            with pytest.raises(NotFoundError, match="3f2a"):
                await client.fetch_history("3f2a")

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "1500"}, 1.5), ({}, None)],
    )
    async def test_rate_limited_carries_retry_after(
        self, headers: dict[str, str], expected: float | None
    ) -> None:
        """429 is RateLimitedError with the delay the answer asks for (if any)."""
        fault = Fault("status", 429, {"detail": "Too many requests"}, headers)
        async with client_for(fake_with(job(), faults=[fault])) as client:
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(JOB)
        assert info.value.retry_after == expected
        assert info.value.provider == "mistral"

    async def test_slow_answer_times_out(self) -> None:
        """An answer slower than the timeout is a TransportError, promptly."""
        fake = fake_with(job(), faults=[Fault("slow")])
        async with client_for(fake, timeout=0.3) as client:
            with pytest.raises(TransportError, match="no answer"):
                await client.fetch_history(JOB)

    async def test_listing_faults_are_typed_too(self) -> None:
        """The list endpoint's failures are the same typed errors."""
        fake = FakeMistral(answers={LIST_PATH: listing(3)}, faults=[Fault("status", 500)])
        async with client_for(fake) as client:
            with pytest.raises(ServerError):
                await client.list_jobs()
            assert len(await client.list_jobs()) == 3

    async def test_a_422_on_the_list_is_no_not_found(self) -> None:
        """422 means "no such job" only on a job's URL; on the list it stays a plain ApiError."""
        fake = FakeMistral(faults=[Fault("status", 422, fixture("mistral-error-422.json"))])
        async with client_for(fake) as client:
            with pytest.raises(ApiError) as info:
                await client.list_jobs()
        assert type(info.value) is ApiError
        assert info.value.status == 422

    async def test_unreachable_api_is_transport_error(self) -> None:
        """A closed port is a TransportError saying it cannot connect."""
        section = MistralSettings(base_url="http://127.0.0.1:9", timeout=2)
        session = open_provider_session("mistral", section, api_key=KEY, concurrency=1)
        try:
            client = open_provider("mistral", section, session=session, pacer=None)
            with pytest.raises(TransportError, match="cannot connect") as info:
                await client.fetch_history(JOB)
        finally:
            await session.close()
        assert info.value.provider == "mistral"


# --- Details -----------------------------------------------------------------------------


# --- Hostile shapes ------------------------------------------------------------------------

JOB_FIELDS = [
    "id",
    "status",
    "modified_at",
    "created_at",
    "events",
    "checkpoints",
    "model",
    "fine_tuned_model",
    "suffix",
]
EVENT_FIELDS = ["name", "data", "created_at"]

#: Values of every JSON type, and the edges of each, put where a field is expected.
HOSTILE_VALUES: list[Any] = [
    None, True, 0, -1, 10**30, 1.5e308, float("nan"), "", "x", "2026-11-30T08:00:00Z",
    [], ["x"], [None], [{}], {}, {"a": 1}, {"status": 5},
]  # fmt: skip


async def hostile_calls(client: MistralProvider, job_id: str) -> None:
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
        fake = FakeMistral()
        async with client_for(fake, page_size=2, max_pages=3) as client:
            for value in HOSTILE_VALUES:
                body = job("mistral-job-succeeded.json", **{key: value})
                fake.answers = {JOB_PATH: body, LIST_PATH: {"data": [body], "total": value}}
                await hostile_calls(client, JOB)

    @pytest.mark.parametrize("key", EVENT_FIELDS)
    async def test_any_value_in_any_event_field_is_skipped_or_used(self, key: str) -> None:
        """Whatever an event's field holds, the history is read (bad rows skipped)."""
        fake = FakeMistral()
        async with client_for(fake) as client:
            for value in HOSTILE_VALUES:
                body = job("mistral-job-succeeded.json")
                body["events"][0][key] = value
                body["checkpoints"][0][key] = value
                fake.answers = {JOB_PATH: body}
                history = await client.fetch_history(JOB)
                assert history.events
                await client.final_metrics(JOB)


class TestDetails:
    async def test_succeeded_job_names_its_model_and_metrics(self) -> None:
        """fine_tuned_model, base model, suffix, times and the last checkpoint's metrics."""
        body = fixture("mistral-job-succeeded.json")
        async with client_for(fake_with(body)) as client:
            details = await client.job_details(JOB)
            metrics = await client.final_metrics(JOB)
        assert details.id == JOB
        assert details.name == "support-bot"
        assert details.status == SUCCESS
        assert details.base_model == "open-mistral-nemo"
        assert details.fine_tuned_model == "ft:open-mistral-nemo:57d37e6c:20261130:2813b7e6"
        assert details.error_message is None
        assert details.created_at == at(1796025600)
        assert details.completed_at == at(1796029200)
        expected = {"train_loss": 0.816, "valid_loss": 0.82, "valid_mean_token_accuracy": 1.765}
        assert metrics == expected  # step 100, not step 50
        assert details.metrics == expected

    async def test_failed_job_has_no_reason(self) -> None:
        """Mistral gives no failure reason: error_message is None, never made up."""
        body = fixture("mistral-job-failed.json")
        async with client_for(fake_with(body)) as client:
            details = await client.job_details(FAILED_JOB)
            metrics = await client.final_metrics(FAILED_JOB)
        assert details.status == FAILED_VALIDATION
        assert details.error_message is None
        assert details.fine_tuned_model is None
        assert metrics is None

    async def test_running_job_is_not_completed(self) -> None:
        """A running job has no completion time and no metrics yet."""
        async with client_for(fake_with(job())) as client:
            details = await client.job_details(JOB)
        assert details.completed_at is None
        assert details.updated_at == at(1796025665)
        assert details.metrics == {}

    async def test_hostile_checkpoints_are_ignored(self) -> None:
        """Checkpoints that are junk, or metrics that are no numbers, are left out."""
        checkpoints = [
            "junk",
            {"metrics": "loss=1", "step_number": 300},
            {"metrics": {"train_loss": "low", "ok": True}, "step_number": 200},
            {"metrics": {"train_loss": 0.5, "valid_loss": None}, "step_number": "ten"},
        ]
        body = job("mistral-job-succeeded.json", checkpoints=checkpoints)
        async with client_for(fake_with(body)) as client:
            assert await client.final_metrics(JOB) == {"train_loss": 0.5}

    async def test_a_body_with_no_job_is_a_bad_response(self) -> None:
        """Details of a body without an id are a BadResponseError."""
        async with client_for(FakeMistral(answers={JOB_PATH: {"status": RUNNING}})) as client:
            with pytest.raises(BadResponseError, match="not a fine-tuning job"):
                await client.job_details(JOB)


class TestHeadersAndSettings:
    def test_session_headers_carry_the_bearer_key(self) -> None:
        """Requests carry ``Authorization: Bearer``, as the SDK sends it."""
        assert MistralProvider.session_headers(MistralSettings(), "sk-1") == {
            "Authorization": "Bearer sk-1"
        }

    async def test_no_dashboard_link(self) -> None:
        """No per-job console URL is verified: the link is empty."""
        assert MistralSettings().base_url == "https://api.mistral.ai"
        async with client_for(fake_with(job())) as client:
            assert client.dashboard_url(JOB) == ""

    async def test_from_settings_uses_the_section(self) -> None:
        """open_provider builds it from its section: base URL (trailing slash), page size, pacer."""
        pacer = RequestPacer(60_000)
        fake = FakeMistral(answers={LIST_PATH: listing(3), JOB_PATH: job()})
        async with serving(fake) as base_url:
            section = MistralSettings(base_url=base_url + "/", page_size=2, timeout=5)
            session = open_provider_session("mistral", section, api_key=KEY, concurrency=2)
            try:
                client = open_provider("mistral", section, session=session, pacer=pacer)
                jobs = await client.list_jobs()
                await client.fetch_history(JOB)
            finally:
                await session.close()
        assert len(jobs) == 3
        assert fake.seen[:2] == [
            f"{LIST_PATH}?page=0&page_size=2",
            f"{LIST_PATH}?page=1&page_size=2",
        ]
        assert pacer.requests == 3


# --- Against the simulator -----------------------------------------------------------------

SIM_KEY = "sim-mistral-key"
SIM_JOB = "5a0c5e8e-1b2c-4d3e-8f40-123456789abc"
OTHER_JOB = "6b1d6f9f-2c3d-4e4f-9a51-23456789abcd"
SIM_TIMELINE: list[tuple[float, str]] = [
    (0, QUEUED),
    (1, VALIDATING),
    (2, VALIDATED),
    (3, RUNNING),
    (5, SUCCESS),
]


def sim_scenario(**overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "api_key": SIM_KEY,
        "clock": "manual",
        "page_size_cap": 1,
        "models": [
            {
                "id": SIM_JOB,
                "provider": "mistral",
                "name": "bot",
                "timeline": SIM_TIMELINE,
                "metrics": {"loss": 0.25},
            },
            {"id": OTHER_JOB, "provider": "mistral", "timeline": [[0, QUEUED], [4, FAILED]]},
            {"id": "cohere-model", "timeline": [[0, "STATUS_QUEUED"]]},
        ],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


@asynccontextmanager
async def sim_client(
    scn: Scenario, *, key: str = SIM_KEY, timeout: float = 5.0, advance: float = 10.0
) -> AsyncIterator[tuple[MistralProvider, Any]]:
    """The provider, built from its settings section, against the simulator's /mistral."""
    async with running_simulator(scn) as sim:
        sim.advance(advance)
        section = MistralSettings(base_url=sim.provider_url("mistral"), timeout=timeout)
        session = open_provider_session("mistral", section, api_key=key, concurrency=2)
        try:
            provider = open_provider("mistral", section, session=session, pacer=None)
            assert isinstance(provider, MistralProvider)
            yield provider, sim
        finally:
            await session.close()


class TestSimulator:
    async def test_history_and_first_observation(self) -> None:
        """The whole timeline comes embedded; a first look announces SUCCESS only."""
        async with sim_client(sim_scenario()) as (client, _):
            history = await client.fetch_history(SIM_JOB)
        assert sorted(e.status for e in history.events) == sorted(s for _, s in SIM_TIMELINE)
        observation = observe(None, SIM_JOB, history.events, scheme=MISTRAL_SCHEME)
        assert [n.status for n in observation.notices] == [SUCCESS]
        assert observation.notices[0].previous_status == RUNNING

    async def test_the_lifecycle_as_it_happens(self) -> None:
        """Polled while it runs: nothing, then one SUCCESS notice, then nothing again."""
        async with sim_client(sim_scenario(), advance=3.5) as (client, sim):
            first = observe(None, SIM_JOB, (await client.fetch_history(SIM_JOB)).events,
                            scheme=MISTRAL_SCHEME)  # fmt: skip
            sim.advance(5)
            later = await client.fetch_history(SIM_JOB)
            second = observe(first.state, SIM_JOB, later.events, scheme=MISTRAL_SCHEME)
            same = await client.fetch_history(SIM_JOB, unless_digest=later.digest)
        assert first.state.status == RUNNING
        assert first.notices == ()
        assert [n.status for n in second.notices] == [SUCCESS]
        assert same.unchanged

    async def test_listing_pages_of_one(self) -> None:
        """The account's Mistral jobs, one per page; Cohere's models are not among them."""
        async with sim_client(sim_scenario()) as (client, sim):
            jobs = await client.list_jobs()
            stats = sim.stats()
        assert {j.id for j in jobs} == {SIM_JOB, OTHER_JOB}
        assert stats["by_status_code"].get("200") == 2

    async def test_details_and_metrics(self) -> None:
        """The simulator's job gives names, the output model and the checkpoint's metrics."""
        async with sim_client(sim_scenario()) as (client, _):
            details = await client.job_details(SIM_JOB)
            failed = await client.job_details(OTHER_JOB)
            metrics = await client.final_metrics(SIM_JOB)
        assert details.name == "bot"
        assert details.fine_tuned_model
        assert details.fine_tuned_model.startswith("ft:")
        assert failed.status == FAILED
        assert failed.error_message is None
        assert metrics is not None
        assert metrics["train_loss"] == 0.25

    async def test_wrong_key_and_unknown_jobs(self) -> None:
        """Wrong key: AuthError; an unknown UUID: 404; an id that is no UUID: 422, also gone."""
        async with sim_client(sim_scenario(), key="wrong-key-123") as (client, _):
            with pytest.raises(AuthError) as auth:
                await client.fetch_history(SIM_JOB)
        assert "wrong-key-123" not in str(auth.value)
        async with sim_client(sim_scenario()) as (client, _):
            with pytest.raises(NotFoundError) as missing:
                await client.fetch_history("7c1e0d2a-0000-4000-8000-000000000000")
            with pytest.raises(NotFoundError) as invalid:
                await client.fetch_history("nope")
        assert missing.value.status == 404
        assert invalid.value.status == 422

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            ({"kind": "http_500"}, ServerError),
            ({"kind": "http_503"}, ServerError),
            ({"kind": "http_401"}, AuthError),
            ({"kind": "http_403"}, AuthError),
            ({"kind": "http_404"}, NotFoundError),
            ({"kind": "malformed_json"}, BadResponseError),
            ({"kind": "wrong_content_type"}, BadResponseError),
            ({"kind": "wrong_shape"}, BadResponseError),
            ({"kind": "huge_body"}, BadResponseError),
            ({"kind": "reset_connection"}, TransportError),
        ],
    )
    async def test_faults_become_typed_errors(
        self, fault: dict[str, Any], error: type[ApiError]
    ) -> None:
        """Each simulated fault on the job is its typed error, naming Mistral."""
        faults = [{**fault, "provider": "mistral", "endpoint": "model", "times": None}]
        async with sim_client(sim_scenario(faults=faults)) as (client, _):
            with pytest.raises(error) as info:
                await client.fetch_history(SIM_JOB)
        assert info.value.provider == "mistral"

    async def test_rate_limited_carries_retry_after(self) -> None:
        """429 with Retry-After: RateLimitedError with the delay; the next request works."""
        faults = [{"kind": "http_429", "retry_after": 7, "times": 1, "provider": "mistral",
                   "endpoint": "model"}]  # fmt: skip
        async with sim_client(sim_scenario(faults=faults)) as (client, _):
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(SIM_JOB)
            assert (await client.fetch_history(SIM_JOB)).events
        assert info.value.retry_after == 7.0

    async def test_slow_answer_times_out(self) -> None:
        """A simulated slow answer is a TransportError within the timeout."""
        faults = [{"kind": "slow", "delay": 30, "times": None, "provider": "mistral",
                   "endpoint": "model"}]  # fmt: skip
        async with sim_client(sim_scenario(faults=faults), timeout=0.3) as (client, _):
            with pytest.raises(TransportError, match="no answer"):
                await client.fetch_history(SIM_JOB)

    @pytest.mark.parametrize("kind", ["repeat_token", "endless_pages"])
    async def test_broken_paging_is_refused(self, kind: str) -> None:
        """A list that repeats itself or never ends is a BadResponseError, not a hang."""
        faults = [{"kind": kind, "times": None, "provider": "mistral", "endpoint": "list"}]
        async with sim_client(sim_scenario(faults=faults)) as (client, _):
            client._max_pages = 20
            with pytest.raises(BadResponseError):
                await client.list_jobs()

    async def test_oddities_are_data(self) -> None:
        """An unknown status, and events without data, still give the job's status."""
        unknown = [{"kind": "unknown_status", "times": None, "provider": "mistral",
                    "endpoint": "model"}]  # fmt: skip
        async with sim_client(sim_scenario(faults=unknown)) as (client, _):
            history = await client.fetch_history(SIM_JOB)
        current = observe(None, SIM_JOB, history.events, scheme=MISTRAL_SCHEME).state.status
        assert current == "SOMETHING_NEW"
        bare = [{"kind": "missing_fields", "times": None, "provider": "mistral",
                 "endpoint": "model"}]  # fmt: skip
        async with sim_client(sim_scenario(faults=bare)) as (client, _):
            history = await client.fetch_history(SIM_JOB)
        assert [e.status for e in history.events] == [SUCCESS]
        assert history.malformed == 0
