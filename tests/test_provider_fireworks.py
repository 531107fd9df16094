"""The Fireworks AI provider: its state table, and its client against real loopback servers.

Two servers: a tiny fake serving the fixtures' payloads byte for byte (and any hostile
answer a test scripts), and the simulator (``watcher.simulator``, Fireworks under
``/fireworks``, account ``sim-account``), the reference fake every provider is tested
against. Also here: the shared transport's note of a deprecated API (``Deprecation`` /
``Sunset`` headers, sent by the simulator's Cohere with ``cohere_deprecation``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from watcher.errors import (
    ApiError,
    AuthError,
    BadResponseError,
    ConfigError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from watcher.lifecycle import DEFAULT_NOTIFY_ON, Phase, observe
from watcher.providers import PROVIDERS, open_provider, open_provider_session, provider_class
from watcher.providers import scheme_for as registered_scheme
from watcher.providers.cohere import READY as COHERE_READY
from watcher.providers.cohere import CohereProvider
from watcher.providers.fireworks import (
    ARCHIVED,
    CANCELLED,
    CANCELLING,
    COMPLETED,
    CREATING,
    CREATING_INPUT_DATASET,
    DASHBOARD_URL,
    DELETED,
    DELETING,
    DELETING_CLEANING_UP,
    EARLY_STOPPED,
    EXPIRED,
    FAILED,
    FIREWORKS_SCHEME,
    IDLE,
    KNOWN_STATUSES,
    PAUSED,
    PENDING,
    RE_QUEUEING,
    RUNNING,
    SDK_STATES,
    SETTLED,
    UNSPECIFIED,
    VALIDATING,
    WRITING_RESULTS,
    FireworksProvider,
    parse_rfc3339,
)
from watcher.providers.http import (
    ApiTransport,
    DeprecationInfo,
    deprecations,
    forget_deprecations,
    open_session,
)
from watcher.settings import CohereSettings, FireworksSettings
from watcher.simulator import Scenario, running_simulator
from watcher.simulator.scenario import PROVIDER_STATUSES

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
ACCOUNT = "acme"  # the fixtures' account
JOBS = f"/v1/accounts/{ACCOUNT}/supervisedFineTuningJobs"
JOB = "sftj-support-bot-01"
FAILED_JOB = "sftj-support-bot-02"
VALIDATION_FAILED = 'Dataset validation failed: line 12: missing required field "messages".'


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- The state table ---------------------------------------------------------------------

#: The fixtures' table (fireworks.md), row by row: state -> (phase, settled, rank).
EXPECTED: dict[str, tuple[Phase, bool, int]] = {
    UNSPECIFIED: (Phase.OTHER, False, 0),
    CREATING: (Phase.QUEUED, False, 5),
    CREATING_INPUT_DATASET: (Phase.QUEUED, False, 8),
    PENDING: (Phase.QUEUED, False, 10),
    RE_QUEUEING: (Phase.QUEUED, False, 12),
    VALIDATING: (Phase.QUEUED, False, 15),
    RUNNING: (Phase.RUNNING, False, 30),
    WRITING_RESULTS: (Phase.RUNNING, False, 35),
    CANCELLING: (Phase.RUNNING, False, 45),
    IDLE: (Phase.OTHER, False, 50),
    PAUSED: (Phase.OTHER, False, 55),
    COMPLETED: (Phase.READY, True, 70),
    EARLY_STOPPED: (Phase.READY, True, 72),
    EXPIRED: (Phase.FAILED, True, 78),
    FAILED: (Phase.FAILED, True, 80),
    CANCELLED: (Phase.CANCELLED, True, 85),
    DELETING: (Phase.OTHER, True, 90),
    DELETING_CLEANING_UP: (Phase.OTHER, True, 90),
    DELETED: (Phase.OTHER, True, 95),
    ARCHIVED: (Phase.OTHER, True, 95),
}


class TestScheme:
    @pytest.mark.parametrize(("state", "expected"), EXPECTED.items())
    def test_every_state_maps_to_its_phase(
        self, state: str, expected: tuple[Phase, bool, int]
    ) -> None:
        phase, settled, rank = expected
        assert FIREWORKS_SCHEME.phase(state) is phase
        assert FIREWORKS_SCHEME.is_settled(state) is settled
        assert FIREWORKS_SCHEME.rank(state) == rank
        assert FIREWORKS_SCHEME.is_failure(state) is (phase is Phase.FAILED)

    def test_the_table_covers_the_sdk_literal_and_the_simulator(self) -> None:
        """All 18 SDK states (and the two tombstones) are known; the simulator speaks them."""
        assert len(SDK_STATES) == len(set(SDK_STATES)) == 18
        assert set(KNOWN_STATUSES) == set(EXPECTED) == {*SDK_STATES, DELETED, ARCHIVED}
        assert set(PROVIDER_STATUSES["fireworks"]) == set(SDK_STATES)
        assert {s for s, (_, settled, _) in EXPECTED.items() if settled} == SETTLED

    @pytest.mark.parametrize("state", ["JOB_STATE_SOMETHING_NEW", "RUNNING", "job_state_running"])
    def test_unknown_states_are_other_rank_60_unsettled(self, state: str) -> None:
        assert FIREWORKS_SCHEME.phase(state) is Phase.OTHER
        assert FIREWORKS_SCHEME.rank(state) == 60
        assert not FIREWORKS_SCHEME.is_settled(state)
        assert not FIREWORKS_SCHEME.announces(state, DEFAULT_NOTIFY_ON)

    def test_ranks_follow_the_lifecycle(self) -> None:
        """queued < running < held < unknown (60) < ready < failed < cancelled < deleted."""
        by_phase: dict[Phase, list[int]] = {}
        for state, (phase, _, rank) in EXPECTED.items():
            if state != UNSPECIFIED and phase is not Phase.OTHER:
                by_phase.setdefault(phase, []).append(rank)
        order = [Phase.QUEUED, Phase.RUNNING, Phase.READY, Phase.FAILED, Phase.CANCELLED]
        for lower, higher in itertools.pairwise(order):
            assert max(by_phase[lower]) < min(by_phase[higher])
        held = [FIREWORKS_SCHEME.rank(IDLE), FIREWORKS_SCHEME.rank(PAUSED)]
        assert max(by_phase[Phase.RUNNING]) < min(held)
        assert max(held) < 60
        assert min(by_phase[Phase.READY]) > 60
        assert max(by_phase[Phase.CANCELLED]) < FIREWORKS_SCHEME.rank(DELETING)

    def test_common_words_announce_outcomes_only(self) -> None:
        """Default ready+failed: COMPLETED, EARLY_STOPPED, FAILED, EXPIRED; cancelled opt-in."""
        announced = {s for s in KNOWN_STATUSES if FIREWORKS_SCHEME.announces(s, DEFAULT_NOTIFY_ON)}
        assert announced == {COMPLETED, EARLY_STOPPED, FAILED, EXPIRED}
        with_cancelled = DEFAULT_NOTIFY_ON | {"cancelled"}
        assert FIREWORKS_SCHEME.announces(CANCELLED, with_cancelled)
        assert not FIREWORKS_SCHEME.announces(CANCELLING, with_cancelled)
        assert FIREWORKS_SCHEME.announces(PAUSED, frozenset({PAUSED}))

    def test_a_configuration_may_leave_out_the_prefix(self) -> None:
        assert FIREWORKS_SCHEME.canonical("early_stopped") == EARLY_STOPPED
        assert FIREWORKS_SCHEME.canonical("JOB_STATE_EXPIRED") == EXPIRED
        assert FIREWORKS_SCHEME.canonical("nope") is None

    def test_registered_under_its_name(self) -> None:
        assert PROVIDERS["fireworks"].title == FireworksProvider.title == "Fireworks AI"
        assert provider_class("fireworks") is FireworksProvider
        assert registered_scheme("fireworks") is FIREWORKS_SCHEME
        assert FireworksProvider.supports_discovery


class TestRfc3339:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-30T08:05:00Z", at("2026-11-30T08:05:00")),
            ("2026-11-30T08:05:00.123Z", at("2026-11-30T08:05:00.123000")),
            ("2026-11-30T08:05:00.123456Z", at("2026-11-30T08:05:00.123456")),
            ("2026-11-30T08:05:00.123456789Z", at("2026-11-30T08:05:00.123456")),
            ("2026-11-30T09:05:00+01:00", at("2026-11-30T08:05:00")),
            ("2026-11-30T08:05:00", at("2026-11-30T08:05:00")),
        ],
    )
    def test_forms_parse_to_aware_utc(self, text: str, expected: datetime) -> None:
        parsed = parse_rfc3339(text)
        assert parsed == expected
        assert parsed.tzinfo is UTC

    @pytest.mark.parametrize("bad", [None, "", 1764489900, "yesterday", "2026-13-01T00:00:00Z"])
    def test_anything_else_is_a_value_error(self, bad: object) -> None:
        with pytest.raises(ValueError, match=r"timestamp|isoformat|must be"):
            parse_rfc3339(bad)


# --- A fake serving the fixtures ---------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    text: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeFireworks:
    """Answers from a table of path -> Answer (the list by pageToken); records queries."""

    jobs: dict[str, Answer] = field(default_factory=dict)
    pages: dict[str, Answer] = field(default_factory=dict)  # pageToken ("" first) -> answer
    queries: list[dict[str, str]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(JOBS, self._list)
        app.router.add_get(JOBS + "/{job}", self._job)
        return app

    async def _job(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization", ""))
        answer = self.jobs.get(request.match_info["job"])
        if answer is None:
            return web.json_response(fixture("fireworks-error-404.json"), status=404)
        return self._respond(answer)

    async def _list(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        return self._respond(self.pages[request.query.get("pageToken", "")])

    @staticmethod
    def _respond(answer: Answer) -> web.Response:
        text = answer.text if answer.text is not None else json.dumps(answer.body)
        return web.Response(
            text=text,
            status=answer.status,
            content_type=answer.content_type,
            headers=answer.headers,
        )


@asynccontextmanager
async def fake_client(
    fake: FakeFireworks, *, page_size: int = 200, max_pages: int = 200
) -> AsyncIterator[FireworksProvider]:
    server = TestServer(fake.app())
    await server.start_server()
    session = open_session(headers={"Authorization": "Bearer fw-key"}, timeout=5, concurrency=2)
    try:
        transport = ApiTransport(session, provider="fireworks", timeout=5)
        yield FireworksProvider(
            transport,
            base_url=str(server.make_url("/")),
            account_id=ACCOUNT,
            page_size=page_size,
            max_pages=max_pages,
        )
    finally:
        await session.close()
        await server.close()


def serving(name: str, job_id: str = JOB) -> FakeFireworks:
    return FakeFireworks(jobs={job_id: Answer(body=fixture(name))})


class TestFixtures:
    @pytest.mark.parametrize(
        ("name", "state", "updated"),
        [
            ("fireworks-job-running.json", RUNNING, "2026-11-30T08:05:00.123456"),
            ("fireworks-job-succeeded.json", COMPLETED, "2026-11-30T09:00:00.123456"),
            ("fireworks-job-early-stopped.json", EARLY_STOPPED, "2026-11-30T08:40:00.123456"),
            ("fireworks-job-failed.json", FAILED, "2026-11-30T08:04:00.123456"),
        ],
    )
    async def test_the_state_at_update_time(self, name: str, state: str, updated: str) -> None:
        async with fake_client(serving(name)) as client:
            history = await client.fetch_history(JOB)
        assert [(e.status, e.created_at) for e in history.events] == [(state, at(updated))]
        assert (history.malformed, history.pages, history.unchanged) == (0, 1, False)
        assert history.digest is not None

    async def test_same_body_is_unchanged_and_a_new_one_is_not(self) -> None:
        fake = serving("fireworks-job-running.json")
        async with fake_client(fake) as client:
            first = await client.fetch_history(JOB)
            same = await client.fetch_history(JOB, unless_digest=first.digest)
            fake.jobs[JOB] = Answer(body=fixture("fireworks-job-succeeded.json"))
            changed = await client.fetch_history(JOB, unless_digest=first.digest)
        assert same.unchanged
        assert same.events == []
        assert same.digest == first.digest
        assert not changed.unchanged
        assert [e.status for e in changed.events] == [COMPLETED]
        assert fake.auth == ["Bearer fw-key"] * 3

    async def test_update_time_missing_falls_back_to_completed_then_created(self) -> None:
        job = fixture("fireworks-job-succeeded.json")
        del job["updateTime"]
        fake = FakeFireworks(jobs={JOB: Answer(body=job)})
        async with fake_client(fake) as client:
            completed = await client.fetch_history(JOB)
            del job["completedTime"]
            created = await client.fetch_history(JOB)
        assert completed.events[0].created_at == at("2026-11-30T09:00:00.123456")
        assert created.events[0].created_at == at("2026-11-30T08:00:00.123456")

    async def test_a_state_without_any_time_is_one_malformed_row(self) -> None:
        fake = FakeFireworks(jobs={JOB: Answer(body={"name": f"x/{JOB}", "state": RUNNING})})
        async with fake_client(fake) as client:
            history = await client.fetch_history(JOB)
        assert (history.events, history.malformed, history.digest) == ([], 1, None)

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            ({"name": "x", "updateTime": "2026-11-30T08:00:00Z"}, "no state"),
            ({"state": 7}, "no state"),
            ([1, 2], "expected a JSON object"),
        ],
    )
    async def test_unusable_jobs_are_bad_responses(self, body: Any, error: str) -> None:
        async with fake_client(FakeFireworks(jobs={JOB: Answer(body=body)})) as client:
            with pytest.raises(BadResponseError, match=error) as info:
                await client.fetch_history(JOB)
        assert info.value.provider == "fireworks"

    async def test_failed_job_details_carry_status_message(self) -> None:
        async with fake_client(serving("fireworks-job-failed.json", FAILED_JOB)) as client:
            details = await client.job_details(FAILED_JOB)
        assert details.id == FAILED_JOB
        assert details.status == FAILED
        assert details.name == "support-bot"
        assert details.base_model == "accounts/fireworks/models/llama-v3p1-8b-instruct"
        assert details.fine_tuned_model == "accounts/acme/models/support-bot-v1"
        assert details.error_message == f"{VALIDATION_FAILED} (INVALID_ARGUMENT)"
        assert details.completed_at == at("2026-11-30T08:04:00.123456")

    @pytest.mark.parametrize(
        "name", ["fireworks-job-succeeded.json", "fireworks-job-early-stopped.json"]
    )
    async def test_ready_job_details_have_no_error(self, name: str) -> None:
        async with fake_client(serving(name)) as client:
            details = await client.job_details(JOB)
        assert details.error_message is None
        assert details.fine_tuned_model == "accounts/acme/models/support-bot-v1"
        assert details.created_at == at("2026-11-30T08:00:00.123456")

    async def test_running_job_details_have_no_completion(self) -> None:
        async with fake_client(serving("fireworks-job-running.json")) as client:
            details = await client.job_details(JOB)
        assert (details.status, details.completed_at, details.error_message) == (
            RUNNING,
            None,
            None,
        )
        assert await client.final_metrics(JOB) is None

    async def test_list_follows_next_page_token_with_the_same_page_size(self) -> None:
        first = fixture("fireworks-list.json")
        fake = FakeFireworks(
            pages={
                "": Answer(body=first),
                first["nextPageToken"]: Answer(body=fixture("fireworks-list-page-2.json")),
            }
        )
        async with fake_client(fake, page_size=1) as client:
            jobs = await client.list_jobs()
        assert [(j.id, j.status) for j in jobs] == [(JOB, RUNNING), (FAILED_JOB, PENDING)]
        assert fake.queries == [
            {"pageSize": "1"},
            {"pageSize": "1", "pageToken": first["nextPageToken"]},
        ]

    async def test_list_skips_junk_rows_and_absent_lists(self) -> None:
        rows = [fixture("fireworks-job-running.json"), 7, {"state": RUNNING}, {"name": ""}]
        fake = FakeFireworks(pages={"": Answer(body={"supervisedFineTuningJobs": rows})})
        async with fake_client(fake) as client:
            jobs = await client.list_jobs()
            fake.pages[""] = Answer(body={})
            none = await client.list_jobs()
        assert [j.id for j in jobs] == [JOB]
        assert none == []

    @pytest.mark.parametrize(
        ("page", "match"),
        [
            ({"supervisedFineTuningJobs": "nope"}, "is not a list"),
            ({"supervisedFineTuningJobs": [], "nextPageToken": 5}, "not a string"),
        ],
    )
    async def test_list_shapes_that_are_bad_responses(self, page: Any, match: str) -> None:
        async with fake_client(FakeFireworks(pages={"": Answer(body=page)})) as client:
            with pytest.raises(BadResponseError, match=match):
                await client.list_jobs()

    async def test_a_repeated_token_and_endless_pages_are_refused(self) -> None:
        loop = {"supervisedFineTuningJobs": [], "nextPageToken": "a"}
        fake = FakeFireworks(pages={"": Answer(body=loop), "a": Answer(body=loop)})
        async with fake_client(fake) as client:
            with pytest.raises(BadResponseError, match="repeated a page token"):
                await client.list_jobs()
        endless = FakeFireworks(
            pages={
                "": Answer(body={"nextPageToken": "t1"}),
                **{f"t{i}": Answer(body={"nextPageToken": f"t{i + 1}"}) for i in range(1, 9)},
            }
        )
        async with fake_client(endless, max_pages=5) as client:
            with pytest.raises(BadResponseError, match="more than 5 pages"):
                await client.list_jobs()
        assert len(endless.queries) == 5

    @pytest.mark.parametrize(
        ("status", "body", "error", "message"),
        [
            (401, fixture("fireworks-error-401.json"), AuthError, "invalid API key"),
            (403, {"code": 7, "message": "permission denied"}, AuthError, "permission denied"),
            (404, fixture("fireworks-error-404.json"), NotFoundError, "not found"),
            (429, fixture("fireworks-error-429.json"), RateLimitedError, "too many requests"),
            (500, {"error": {"code": 13, "message": "internal"}}, ServerError, "internal"),
            (503, {"code": 14, "message": "unavailable"}, ServerError, "unavailable"),
        ],
    )
    async def test_google_rpc_status_errors_by_http_status(
        self, status: int, body: Any, error: type[ApiError], message: str
    ) -> None:
        """Classified by the HTTP status, never by the body's integer code; message kept."""
        fake = FakeFireworks(jobs={JOB: Answer(status=status, body=body)})
        async with fake_client(fake) as client:
            with pytest.raises(error, match=message) as info:
                await client.fetch_history(JOB)
        assert (info.value.status, info.value.provider) == (status, "fireworks")

    async def test_429_reads_retry_after_ms_first(self) -> None:
        headers = {"retry-after-ms": "1500", "Retry-After": "9"}
        answer = Answer(status=429, body=fixture("fireworks-error-429.json"), headers=headers)
        async with fake_client(FakeFireworks(jobs={JOB: answer})) as client:
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(JOB)
        assert info.value.retry_after == 1.5

    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            (Answer(status=502, text="<html>Bad gateway</html>", content_type="text/html"),
             ServerError),
            (Answer(text="<html>maintenance</html>", content_type="text/html"), BadResponseError),
            (Answer(text='{"state": "JOB_STATE_RUN'), BadResponseError),
        ],
    )  # fmt: skip
    async def test_html_and_broken_json(self, answer: Answer, error: type[ApiError]) -> None:
        async with fake_client(FakeFireworks(jobs={JOB: answer})) as client:
            with pytest.raises(error):
                await client.fetch_history(JOB)

    async def test_job_ids_are_quoted_into_the_path(self) -> None:
        async with fake_client(FakeFireworks()) as client:
            with pytest.raises(NotFoundError):
                await client.fetch_history("a/b?c")


class TestSettings:
    def test_session_headers_carry_the_bearer_key(self) -> None:
        section = FireworksSettings(account_id=ACCOUNT)
        assert FireworksProvider.session_headers(section, "k-1") == {"Authorization": "Bearer k-1"}

    async def test_no_account_is_a_config_error(self) -> None:
        section = FireworksSettings(account_id=None)
        session = open_provider_session("fireworks", section, api_key="k", concurrency=1)
        try:
            with pytest.raises(ConfigError, match="FIREWORKS_ACCOUNT_ID"):
                open_provider("fireworks", section, session=session, pacer=None)
        finally:
            await session.close()

    async def test_dashboard_is_the_accounts_fine_tuning_page(self) -> None:
        section = FireworksSettings(account_id=ACCOUNT)
        session = open_provider_session("fireworks", section, api_key="k", concurrency=1)
        try:
            provider = open_provider("fireworks", section, session=session, pacer=None)
        finally:
            await session.close()
        assert provider.dashboard_url(JOB) == DASHBOARD_URL
        assert DASHBOARD_URL.startswith("https://app.fireworks.ai/")


# --- Against the simulator ---------------------------------------------------------------

SIM_KEY = "fw-sim-key"
SIM_ACCOUNT = "sim-account"
SIM_JOB = "sftj-sim-bot"
SIM_FAILING = "sftj-sim-broken"
SIM_EXPIRING = "sftj-sim-expires"
SIM_REASON = "Dataset validation failed: line 3: missing field 'messages'."
SIM_TIMELINE = [
    (0, CREATING),
    (1, VALIDATING),
    (2, RUNNING),
    (4, WRITING_RESULTS),
    (5, COMPLETED),
]


def sim_scenario(**overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "api_key": SIM_KEY,
        "clock": "manual",
        "models": [
            {"id": SIM_JOB, "provider": "fireworks", "name": "bot", "timeline": SIM_TIMELINE},
            {
                "id": SIM_FAILING,
                "provider": "fireworks",
                "timeline": [(0, PENDING), (2, RUNNING), (3, FAILED)],
                "error": {"message": SIM_REASON, "code": "INVALID_ARGUMENT"},
            },
            {
                "id": SIM_EXPIRING,
                "provider": "fireworks",
                "timeline": [(0, PENDING), (3, EXPIRED)],
            },
            {"id": "cohere-model", "timeline": [(0, "STATUS_QUEUED")]},
        ],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


@asynccontextmanager
async def sim_client(
    scn: Scenario,
    *,
    key: str = SIM_KEY,
    account: str = SIM_ACCOUNT,
    timeout: float = 5.0,
    advance: float = 10.0,
    page_size: int = 200,
) -> AsyncIterator[tuple[FireworksProvider, Any]]:
    """The provider, built from its settings section, against the simulator's /fireworks."""
    async with running_simulator(scn) as sim:
        sim.advance(advance)
        section = FireworksSettings(
            base_url=sim.provider_url("fireworks"),
            account_id=account,
            timeout=timeout,
            page_size=page_size,
        )
        session = open_provider_session("fireworks", section, api_key=key, concurrency=2)
        try:
            provider = open_provider("fireworks", section, session=session, pacer=None)
            assert isinstance(provider, FireworksProvider)
            yield provider, sim
        finally:
            await session.close()


def sim_fault(kind: str, **kw: Any) -> list[dict[str, Any]]:
    return [{"kind": kind, "times": None, "provider": "fireworks", "endpoint": "model", **kw}]


class TestSimulator:
    async def test_first_observation_announces_only_the_current_status(self) -> None:
        """A first look at a finished job announces its state alone; a running one nothing."""
        async with sim_client(sim_scenario()) as (client, _):
            done = await client.fetch_history(SIM_JOB)
            failed = await client.fetch_history(SIM_FAILING)
            expired = await client.fetch_history(SIM_EXPIRING)
        async with sim_client(sim_scenario(), advance=2.5) as (client, _):
            running = await client.fetch_history(SIM_JOB)
        notices = {
            job: [
                (n.status, n.first_observation, n.provider)
                for n in observe(None, job, h.events, scheme=FIREWORKS_SCHEME).notices
            ]
            for job, h in [(SIM_JOB, done), (SIM_FAILING, failed), (SIM_EXPIRING, expired)]
        }
        assert notices == {
            SIM_JOB: [(COMPLETED, True, "fireworks")],
            SIM_FAILING: [(FAILED, True, "fireworks")],
            SIM_EXPIRING: [(EXPIRED, True, "fireworks")],
        }
        assert [e.status for e in running.events] == [RUNNING]
        assert observe(None, SIM_JOB, running.events, scheme=FIREWORKS_SCHEME).notices == ()

    async def test_states_progressing_announce_once(self) -> None:
        """Polled along the way: every state is seen, one notice (COMPLETED), then none."""
        async with sim_client(sim_scenario(), advance=0.5) as (client, sim):
            state = None
            seen: list[str] = []
            announced: list[str] = []
            for _ in range(7):
                history = await client.fetch_history(SIM_JOB)
                seen += [e.status for e in history.events]
                observation = observe(state, SIM_JOB, history.events, scheme=FIREWORKS_SCHEME)
                announced += [n.status for n in observation.notices]
                state = observation.state
                sim.advance(1.0)
            same = await client.fetch_history(SIM_JOB, unless_digest=history.digest)
        assert list(dict.fromkeys(seen)) == [s for _, s in SIM_TIMELINE]
        assert announced == [COMPLETED]
        assert state is not None
        assert state.status == COMPLETED
        assert same.unchanged

    async def test_failure_message_in_the_details(self) -> None:
        async with sim_client(sim_scenario()) as (client, _):
            failed = await client.job_details(SIM_FAILING)
            done = await client.job_details(SIM_JOB)
        assert failed.status == FAILED
        assert failed.error_message == f"{SIM_REASON} (INVALID_ARGUMENT)"
        assert done.error_message is None
        assert done.name == "bot"
        assert done.fine_tuned_model == f"accounts/{SIM_ACCOUNT}/models/{SIM_JOB}"
        assert done.base_model

    async def test_pagination_with_page_size_1(self) -> None:
        """Three jobs, one per page: three list requests, every job once."""
        async with sim_client(sim_scenario(), page_size=1) as (client, sim):
            sim.reset_stats()
            jobs = await client.list_jobs()
            stats = sim.stats()
        assert sorted(j.id for j in jobs) == sorted([SIM_JOB, SIM_FAILING, SIM_EXPIRING])
        assert stats["by_provider"]["fireworks"]["by_endpoint"]["list"] == 3

    @pytest.mark.parametrize(
        ("kind", "match"),
        [("repeat_token", "repeated a page token"), ("endless_pages", "more than")],
    )
    async def test_paging_guards(self, kind: str, match: str) -> None:
        faults = [{"kind": kind, "times": None, "provider": "fireworks", "endpoint": "list"}]
        async with sim_client(sim_scenario(faults=faults), page_size=1) as (client, _):
            with pytest.raises(BadResponseError, match=match):
                await client.list_jobs()

    async def test_wrong_key_account_and_unknown_job(self) -> None:
        """Wrong key or account: AuthError without the key; an unknown job: NotFoundError."""
        async with sim_client(sim_scenario(), key="wrong-key-123") as (client, _):
            with pytest.raises(AuthError) as auth:
                await client.fetch_history(SIM_JOB)
        assert auth.value.status == 401
        assert "wrong-key-123" not in str(auth.value)
        async with sim_client(sim_scenario(), account="someone-else") as (client, _):
            with pytest.raises(AuthError) as denied:
                await client.fetch_history(SIM_JOB)
        assert denied.value.status == 403
        async with sim_client(sim_scenario()) as (client, _):
            with pytest.raises(NotFoundError, match="sftj-nope"):
                await client.fetch_history("sftj-nope")

    @pytest.mark.parametrize(
        ("kind", "error"),
        [
            ("http_401", AuthError),
            ("http_403", AuthError),
            ("http_404", NotFoundError),
            ("http_500", ServerError),
            ("http_503", ServerError),
            ("malformed_json", BadResponseError),
            ("wrong_content_type", BadResponseError),  # an HTML page
            ("wrong_shape", BadResponseError),
            ("huge_body", BadResponseError),
            ("reset_connection", TransportError),
        ],
    )
    async def test_faults_become_typed_errors(self, kind: str, error: type[ApiError]) -> None:
        """Each simulated fault on the job is its typed error, naming Fireworks."""
        async with sim_client(sim_scenario(faults=sim_fault(kind))) as (client, _):
            with pytest.raises(error) as info:
                await client.fetch_history(SIM_JOB)
        assert type(info.value) is error
        assert info.value.provider == "fireworks"

    async def test_list_faults_are_typed_too(self) -> None:
        faults = [{"kind": "http_503", "times": None, "provider": "fireworks", "endpoint": "list"}]
        async with sim_client(sim_scenario(faults=faults)) as (client, _):
            with pytest.raises(ServerError):
                await client.list_jobs()
            assert (await client.job_details(SIM_JOB)).status == COMPLETED

    async def test_rate_limited_carries_retry_after(self) -> None:
        """429 with Retry-After: RateLimitedError with the delay; the next request works."""
        faults = sim_fault("http_429", retry_after=7, times=1)
        async with sim_client(sim_scenario(faults=faults)) as (client, _):
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(SIM_JOB)
            assert (await client.fetch_history(SIM_JOB)).events
        assert info.value.retry_after == 7.0
        assert info.value.status == 429

    async def test_the_simulators_own_rate_limit(self) -> None:
        scn = sim_scenario(provider_rate_limits={"fireworks": 2})
        async with sim_client(scn) as (client, _):
            await client.fetch_history(SIM_JOB)
            await client.fetch_history(SIM_JOB)
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(SIM_JOB)
        assert info.value.retry_after is not None
        assert info.value.retry_after > 0

    async def test_slow_answer_times_out(self) -> None:
        faults = sim_fault("slow", delay=30)
        async with sim_client(sim_scenario(faults=faults), timeout=0.3) as (client, _):
            with pytest.raises(TransportError, match="no answer"):
                await client.fetch_history(SIM_JOB)

    @pytest.mark.parametrize("kind", ["unknown_status", "future_timestamp"])
    async def test_oddities_are_data(self, kind: str) -> None:
        async with sim_client(sim_scenario(faults=sim_fault(kind))) as (client, _):
            history = await client.fetch_history(SIM_JOB)
        assert len(history.events) == 1
        assert history.events[0].created_at.tzinfo is UTC
        if kind == "unknown_status":
            status = history.events[0].status
            assert status == "JOB_STATE_SOMETHING_NEW"
            assert FIREWORKS_SCHEME.phase(status) is Phase.OTHER

    async def test_a_job_with_only_name_and_state_is_one_malformed_row(self) -> None:
        async with sim_client(sim_scenario(faults=sim_fault("missing_fields"))) as (client, _):
            history = await client.fetch_history(SIM_JOB)
        assert (history.events, history.malformed) == ([], 1)


# --- Deprecation / Sunset headers (the shared transport) ---------------------------------

DEPRECATION = "@1757894400"  # 2025-09-15T00:00:00Z (RFC 9745 structured date)
SUNSET = "Wed, 15 Sep 2027 00:00:00 GMT"


@pytest.fixture(autouse=False)
def no_deprecations() -> Iterator[None]:
    forget_deprecations()
    yield
    forget_deprecations()


@asynccontextmanager
async def cohere_client(sim: Any) -> AsyncIterator[CohereProvider]:
    section = CohereSettings(base_url=sim.base_url, timeout=5.0, api_key=None)
    session = open_provider_session("cohere", section, api_key=SIM_KEY, concurrency=2)
    try:
        provider = open_provider("cohere", section, session=session, pacer=None)
        assert isinstance(provider, CohereProvider)
        yield provider
    finally:
        await session.close()


@pytest.mark.usefixtures("no_deprecations")
class TestDeprecationHeaders:
    async def test_logged_once_per_provider_and_registered(self) -> None:
        """Many answers, two transports: one warning naming Cohere and both values."""
        scn = sim_scenario(cohere_deprecation={"deprecation": DEPRECATION, "sunset": SUNSET})
        async with running_simulator(scn) as sim:
            sim.advance(10)
            with capture_logs() as logs:
                async with cohere_client(sim) as client:
                    for _ in range(3):
                        await client.fetch_history("cohere-model")
                    with pytest.raises(NotFoundError):  # error answers carry them too
                        await client.fetch_history("nope")
                    transport = client._transport
                async with cohere_client(sim) as again:
                    await again.fetch_history("cohere-model")
                    assert again._transport.deprecation == transport.deprecation
                async with sim_client(sim_scenario()) as (fireworks, _):
                    await fireworks.fetch_history(SIM_JOB)
        warnings = [e for e in logs if e["event"] == "provider API deprecated"]
        assert warnings == [
            {
                "event": "provider API deprecated",
                "log_level": "warning",
                "provider": "cohere",
                "deprecation": DEPRECATION,
                "sunset": SUNSET,
            }
        ]
        info = deprecations()["cohere"]
        assert set(deprecations()) == {"cohere"}
        assert transport.deprecation == info
        assert info.deprecated_at == datetime(2025, 9, 15, tzinfo=UTC)
        assert info.sunset_at == datetime(2027, 9, 15, tzinfo=UTC)
        assert info.sunset_timestamp == datetime(2027, 9, 15, tzinfo=UTC).timestamp()

    async def test_no_headers_no_note(self) -> None:
        async with running_simulator(sim_scenario()) as sim:
            sim.advance(10)
            with capture_logs() as logs:
                async with cohere_client(sim) as client:
                    history = await client.fetch_history("cohere-model")
                    assert client._transport.deprecation is None
        assert [e.status for e in history.events] == ["STATUS_QUEUED"]
        assert deprecations() == {}
        assert not [e for e in logs if e["event"] == "provider API deprecated"]

    async def test_sunset_alone_is_seen_on_the_first_answer(self) -> None:
        scn = sim_scenario(cohere_deprecation={"sunset": SUNSET})
        async with running_simulator(scn) as sim:
            sim.advance(10)
            with capture_logs() as logs:
                async with cohere_client(sim) as client:
                    await client.fetch_history("cohere-model")
        info = deprecations()["cohere"]
        assert (info.deprecation, info.sunset, info.deprecated_at) == (None, SUNSET, None)
        assert len([e for e in logs if e["event"] == "provider API deprecated"]) == 1

    @pytest.mark.parametrize(
        ("headers", "deprecated_at", "sunset_at"),
        [
            ({"Deprecation": "true"}, None, None),
            ({"Deprecation": "Mon, 15 Sep 2025 00:00:00 GMT"}, datetime(2025, 9, 15, tzinfo=UTC),
             None),
            ({"Deprecation": "@nope", "Sunset": "soon"}, None, None),
            ({"Sunset": "Wed, 15 Sep 2027 00:00:00 GMT"}, None, datetime(2027, 9, 15, tzinfo=UTC)),
        ],
    )  # fmt: skip
    def test_header_forms(
        self, headers: dict[str, str], deprecated_at: datetime | None, sunset_at: datetime | None
    ) -> None:
        info = DeprecationInfo.from_headers("cohere", headers)
        assert info is not None
        assert (info.deprecated_at, info.sunset_at) == (deprecated_at, sunset_at)
        assert DeprecationInfo.from_headers("cohere", {}) is None

    def test_scenario_refuses_unknown_keys(self) -> None:
        with pytest.raises(ValueError, match="cohere_deprecation"):
            sim_scenario(cohere_deprecation={"deprecated": "true"})


def test_cohere_ready_is_not_a_fireworks_state() -> None:
    """No status string is shared by accident: each scheme is its own table."""
    assert FIREWORKS_SCHEME.phase(COHERE_READY) is Phase.OTHER
