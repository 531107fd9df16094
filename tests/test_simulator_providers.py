"""The simulator's fake OpenAI, Azure OpenAI, Mistral, Together and Fireworks APIs on loopback.

Shapes are checked against the provider samples in ``tests/fixtures/providers/`` (field
names, value types, timestamp units), then pagination, auth, every fault kind per provider,
status progress over sim time, scenario validation and the per-provider counters.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from watcher.errors import ConfigError
from watcher.simulator import (
    PROVIDER_BASE_PATHS,
    PROVIDERS,
    RunningSimulator,
    Scenario,
    bundled_scenario_path,
    load_scenario,
    parse_scenario,
    running_simulator,
)
from watcher.simulator.dialects import fireworks_token

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "providers"
KEY = "test-key"
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
START_UNIX = int(START.timestamp())
ACCOUNT = "acme"
MISTRAL_OK = "2813b7e6-c511-43ac-a16a-1a54a5b884b2"
MISTRAL_FAIL = "7c1e0d2a-93b4-4f65-8a77-0b1c2d3e4f50"
MISTRAL_RUN = "84482011-dfe9-4245-9103-d28b6aef30d4"
MESSAGE = "The job failed due to an invalid training file. Line 1 is not a dictionary."
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def sample(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@dataclass(frozen=True)
class Fleet:
    """One provider's scripted jobs (ok: succeeds at 5 s, bad: fails at 4 s, run: keeps running)."""

    provider: str
    ok: str
    bad: str
    run: str
    ok_timeline: list[list[Any]]
    bad_timeline: list[list[Any]]
    run_timeline: list[list[Any]]
    error: bool  # the provider reports a failure reason

    def job(self, job_id: str) -> str:
        if self.provider == "fireworks":
            return f"/v1/accounts/{ACCOUNT}/supervisedFineTuningJobs/{job_id}"
        return f"{self.list_path}/{job_id}"

    @property
    def list_path(self) -> str:
        return {
            "openai": "/fine_tuning/jobs",
            "azure-openai": "/fine_tuning/jobs",
            "mistral": "/v1/fine_tuning/jobs",
            "together": "/v1/fine-tunes",
            "fireworks": f"/v1/accounts/{ACCOUNT}/supervisedFineTuningJobs",
        }[self.provider]

    def events(self, job_id: str) -> str | None:
        if self.provider in ("mistral", "fireworks"):
            return None
        return self.job(job_id) + "/events"

    def models(self) -> list[dict[str, Any]]:
        bad: dict[str, Any] = {
            "id": self.bad,
            "provider": self.provider,
            "name": "intent-router",
            "timeline": self.bad_timeline,
        }
        if self.error:
            bad["error"] = {"message": MESSAGE}
        return [
            {
                "id": self.ok,
                "provider": self.provider,
                "name": "support-bot",
                "timeline": self.ok_timeline,
                "metrics": {"loss": 0.21},
            },
            bad,
            {"id": self.run, "provider": self.provider, "timeline": self.run_timeline},
        ]


FLEETS: dict[str, Fleet] = {
    "openai": Fleet(
        "openai",
        "ftjob-abc123",
        "ftjob-def456",
        "ftjob-ghi789",
        [[0, "validating_files"], [1, "queued"], [2, "running"], [5, "succeeded"]],
        [[0, "validating_files"], [4, "failed"]],
        [[0, "queued"], [1, "running"]],
        error=True,
    ),
    "azure-openai": Fleet(
        "azure-openai",
        "ftjob-0123456789abcdef0123456789abcdef",
        "ftjob-fedcba9876543210fedcba9876543210",
        "ftjob-00000000000000000000000000000000",
        [[0, "pending"], [1, "queued"], [2, "running"], [5, "succeeded"]],
        [[0, "pending"], [4, "failed"]],
        [[0, "pending"], [1, "running"]],
        error=True,
    ),
    "mistral": Fleet(
        "mistral",
        MISTRAL_OK,
        MISTRAL_FAIL,
        MISTRAL_RUN,
        [[0, "QUEUED"], [1, "VALIDATING"], [2, "VALIDATED"], [3, "RUNNING"], [5, "SUCCESS"]],
        [[0, "QUEUED"], [1, "VALIDATING"], [4, "FAILED_VALIDATION"]],
        [[0, "QUEUED"], [1, "RUNNING"]],
        error=False,
    ),
    "together": Fleet(
        "together",
        "ft-3b9c2d1e-5f6a-4b7c-8d9e-0a1b2c3d4e5f",
        "ft-9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
        "ft-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        [[0, "pending"], [1, "queued"], [2, "running"], [4.5, "uploading"], [5, "completed"]],
        [[0, "pending"], [1, "running"], [4, "error"]],
        [[0, "pending"], [1, "running"]],
        error=True,
    ),
    "fireworks": Fleet(
        "fireworks",
        "sftj-support-bot-01",
        "sftj-support-bot-02",
        "sftj-support-bot-03",
        [
            [0, "JOB_STATE_CREATING"],
            [1, "JOB_STATE_PENDING"],
            [2, "JOB_STATE_RUNNING"],
            [5, "JOB_STATE_COMPLETED"],
        ],
        [[0, "JOB_STATE_CREATING"], [1, "JOB_STATE_RUNNING"], [4, "JOB_STATE_FAILED"]],
        [[0, "JOB_STATE_PENDING"], [1, "JOB_STATE_RUNNING"]],
        error=True,
    ),
}
OTHERS = list(FLEETS)
# The sample file prefix of each provider.
SAMPLE_PREFIX = {p: p for p in OTHERS}


def scenario(*providers: str, **overrides: Any) -> Scenario:
    models: list[dict[str, Any]] = []
    for provider in providers or OTHERS:
        models += FLEETS[provider].models()
    data: dict[str, Any] = {
        "api_key": KEY,
        "clock": "manual",
        "start": START.isoformat(),
        "page_size_cap": 50,
        "fireworks_account": ACCOUNT,
        "models": models,
    }
    data.update(overrides)
    return Scenario.model_validate(data)


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Api:
    """A tiny client for one provider of the simulator, key in place."""

    session: aiohttp.ClientSession
    sim: RunningSimulator
    provider: str

    @property
    def fleet(self) -> Fleet:
        return FLEETS[self.provider]

    def headers(self, key: str | None) -> dict[str, str]:
        if key is None:
            return {}
        if self.provider == "azure-openai":
            return {"api-key": key}
        return {"Authorization": f"Bearer {key}"}

    async def get(
        self, path: str, *, key: str | None = KEY, headers: dict[str, str] | None = None,
        **params: Any,
    ) -> Answer:  # fmt: skip
        url = self.sim.provider_url(self.provider) + path
        query = {k: str(v) for k, v in params.items()}
        sent = headers if headers is not None else self.headers(key)
        async with self.session.get(url, headers=sent, params=query) as r:
            return Answer(r.status, r.headers, await r.read())

    async def ok(self, path: str, **params: Any) -> Any:
        answer = await self.get(path, **params)
        assert answer.status == 200, answer.body
        return answer.json()

    async def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.ok(self.fleet.job(job_id))
        return body


@asynccontextmanager
async def simulated(provider: str, scn: Scenario | None = None) -> AsyncIterator[Api]:
    async with (
        running_simulator(scn or scenario()) as sim,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
    ):
        yield Api(session, sim, provider)


def assert_like(actual: Any, expected: Any, where: str = "$") -> None:
    """Same field names as the sample and, where both are set, the same JSON types."""
    if expected is None or actual is None:
        return
    if isinstance(expected, bool) or isinstance(actual, bool):
        assert type(actual) is type(expected), f"{where}: {actual!r} vs {expected!r}"
    elif isinstance(expected, int | float):
        assert isinstance(actual, int | float), f"{where}: {actual!r} is not a number"
        if isinstance(expected, int):
            assert isinstance(actual, int), f"{where}: {actual!r} should be an integer"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        if where.endswith((".data", ".metadata", ".jobProgress", ".metrics")):
            return  # free-form
        assert set(actual) == set(expected), f"{where}: {sorted(actual)} != {sorted(expected)}"
        for name, value in expected.items():
            assert_like(actual[name], value, f"{where}.{name}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        if expected and actual:
            for item in actual:
                assert_like(item, expected[0], f"{where}[]")
    else:
        assert type(actual) is type(expected), f"{where}: {actual!r} vs {expected!r}"


def status_of(provider: str, job: dict[str, Any]) -> str:
    return str(job["state"] if provider == "fireworks" else job["status"])


def items_of(provider: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    key = "supervisedFineTuningJobs" if provider == "fireworks" else "data"
    return list(body[key])


def message_of(body: Any) -> str:
    """The recommended extractor: error.message, message, detail, detail[0].msg."""
    error = body.get("error")
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    if "message" in body:
        return str(body["message"])
    detail = body["detail"]
    return str(detail if isinstance(detail, str) else detail[0]["msg"])


# --- Shapes ---------------------------------------------------------------------------------

# (provider, job, sim time, sample file)
JOB_SAMPLES = [
    ("openai", "run", 3, "openai-job-running"),
    ("openai", "ok", 9, "openai-job-succeeded"),
    ("openai", "bad", 9, "openai-job-failed"),
    ("azure-openai", "run", 0, "azure-openai-job-pending"),
    ("azure-openai", "run", 3, "azure-openai-job-running"),
    ("azure-openai", "ok", 9, "azure-openai-job-succeeded"),
    ("azure-openai", "bad", 9, "azure-openai-job-failed"),
    ("mistral", "ok", 3, "mistral-job-running"),
    ("mistral", "ok", 9, "mistral-job-succeeded"),
    ("mistral", "bad", 9, "mistral-job-failed"),
    ("together", "ok", 3, "together-job-running"),
    ("together", "ok", 9, "together-job-succeeded"),
    ("together", "bad", 9, "together-job-failed"),
    ("fireworks", "ok", 3, "fireworks-job-running"),
    ("fireworks", "ok", 9, "fireworks-job-succeeded"),
    ("fireworks", "bad", 9, "fireworks-job-failed"),
]


class TestShapes:
    @pytest.mark.parametrize(("provider", "which", "at", "name"), JOB_SAMPLES)
    async def test_job_matches_its_sample(
        self, provider: str, which: str, at: float, name: str
    ) -> None:
        """The job object has the sample's field names and value types."""
        expected = sample(name)
        async with simulated(provider) as api:
            api.sim.advance(at)
            job = await api.job(getattr(api.fleet, which))
        assert_like(job, expected)
        assert status_of(provider, job) == status_of(provider, expected)

    @pytest.mark.parametrize("provider", OTHERS)
    async def test_list_matches_its_sample(self, provider: str) -> None:
        """The list document has the sample's envelope and items."""
        async with simulated(provider) as api:
            api.sim.advance(3)
            body = await api.ok(api.fleet.list_path)
        expected = sample(f"{provider}-list")
        assert set(body) == set(expected)
        assert_like(body, expected)
        assert len(items_of(provider, body)) == 3

    @pytest.mark.parametrize("provider", ["openai", "azure-openai", "together"])
    async def test_events_match_their_sample(self, provider: str) -> None:
        """The events document has the sample's envelope and event fields."""
        fleet = FLEETS[provider]
        events_path = fleet.events(fleet.ok)
        assert events_path is not None
        async with simulated(provider) as api:
            api.sim.advance(9)
            body = await api.ok(events_path)
        expected = sample(f"{provider}-events-page")
        assert set(body) == set(expected)
        assert_like(body, expected)

    async def test_openai_units_and_lifecycle_fields(self) -> None:
        """Unix seconds; finished_at, fine_tuned_model and error appear when they should."""
        fleet = FLEETS["openai"]
        async with simulated("openai") as api:
            api.sim.advance(3)
            running = await api.job(fleet.ok)
            api.sim.advance(6)
            done = await api.job(fleet.ok)
            failed = await api.job(fleet.bad)
        assert running["created_at"] == START_UNIX
        assert running["finished_at"] is None
        assert running["estimated_finish"] == START_UNIX + 5
        assert running["fine_tuned_model"] is None
        assert done["finished_at"] == START_UNIX + 5
        assert done["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
        assert done["user_provided_suffix"] == "support-bot"
        assert done["error"] is None
        assert failed["error"]["message"] == MESSAGE
        assert failed["error"]["code"]
        assert failed["finished_at"] == START_UNIX + 4

    async def test_openai_failure_event_carries_the_message(self) -> None:
        """The newest event of a failed job is an error-level message event."""
        fleet = FLEETS["openai"]
        async with simulated("openai") as api:
            api.sim.advance(9)
            body = await api.ok(f"/fine_tuning/jobs/{fleet.bad}/events")
        newest = body["data"][0]
        assert newest["level"] == "error"
        assert newest["message"] == MESSAGE
        assert newest["type"] == "message"
        assert all("status" not in event for event in body["data"])

    async def test_mistral_embedded_events(self) -> None:
        """Mistral embeds status-updated events, newest first, unix seconds."""
        async with simulated("mistral") as api:
            api.sim.advance(9)
            job = await api.job(MISTRAL_OK)
        events = job["events"]
        assert [e["data"]["status"] for e in events] == [
            "SUCCESS",
            "RUNNING",
            "VALIDATED",
            "VALIDATING",
            "QUEUED",
        ]
        assert {e["name"] for e in events} == {"status-updated"}
        assert [e["created_at"] for e in events] == [START_UNIX + t for t in (5, 3, 2, 1, 0)]
        assert job["modified_at"] == START_UNIX + 5
        assert job["fine_tuned_model"].startswith("ft:open-mistral-nemo:")
        assert job["checkpoints"]
        assert job["checkpoints"][0]["metrics"]["train_loss"] == 0.21

    async def test_together_iso_times_and_error_event(self) -> None:
        """Together: ISO-8601 Z strings with milliseconds; the failure is a job_error event."""
        fleet = FLEETS["together"]
        async with simulated("together") as api:
            api.sim.advance(9)
            job = await api.job(fleet.bad)
            events = (await api.ok(f"/v1/fine-tunes/{fleet.bad}/events"))["data"]
        for name in ("created_at", "updated_at", "started_at"):
            assert ISO_MS.match(job[name]), job[name]
        assert job["updated_at"] == "2026-11-30T08:00:04.000Z"
        assert all(ISO_MS.match(e["created_at"]) for e in events)
        errors = [e for e in events if e["type"] == "job_error"]
        assert [e["message"] for e in errors] == [MESSAGE]
        assert errors[0]["level"] == "error"
        assert job["events"] == events

    async def test_together_user_error(self) -> None:
        """user_error comes with a job_user_error event (sample together-job-user-error)."""
        scn = scenario(
            models=[
                {
                    "id": "ft-user",
                    "provider": "together",
                    "timeline": [[0, "pending"], [1, "user_error"]],
                    "error": {"message": "too few examples"},
                }
            ]
        )
        async with simulated("together", scn) as api:
            api.sim.advance(2)
            job = await api.job("ft-user")
        assert_like(job, sample("together-job-user-error"))
        assert job["events"][-1]["type"] == "job_user_error"
        assert job["events"][-1]["message"] == "too few examples"

    async def test_fireworks_state_status_and_times(self) -> None:
        """Fireworks: state, status {code, message}, RFC 3339 times, outputModel."""
        fleet = FLEETS["fireworks"]
        async with simulated("fireworks") as api:
            api.sim.advance(9)
            done = await api.job(fleet.ok)
            failed = await api.job(fleet.bad)
        assert done["name"] == f"accounts/{ACCOUNT}/supervisedFineTuningJobs/{fleet.ok}"
        assert done["outputModel"].startswith(f"accounts/{ACCOUNT}/models/")
        assert done["status"] == {"code": "OK", "message": ""}
        assert failed["status"] == {"code": "INVALID_ARGUMENT", "message": MESSAGE}
        for name in ("createTime", "updateTime", "completedTime"):
            assert RFC3339_US.match(done[name]), done[name]
        assert done["updateTime"] == "2026-11-30T08:00:05.000000Z"

    async def test_fireworks_early_stopped(self) -> None:
        """EARLY_STOPPED is served like the sample (earlyStop true, completedTime)."""
        scn = scenario(
            models=[
                {
                    "id": "sftj-early",
                    "provider": "fireworks",
                    "timeline": [[0, "JOB_STATE_RUNNING"], [2, "JOB_STATE_EARLY_STOPPED"]],
                }
            ]
        )
        async with simulated("fireworks", scn) as api:
            api.sim.advance(3)
            job = await api.job("sftj-early")
        assert_like(job, sample("fireworks-job-early-stopped"))
        assert job["earlyStop"] is True

    async def test_openai_cancelled(self) -> None:
        """A cancelled OpenAI job looks like the cancelled sample."""
        scn = scenario(
            models=[
                {
                    "id": "ftjob-c",
                    "provider": "openai",
                    "timeline": [[0, "queued"], [1, "cancelled"]],
                }
            ]
        )
        async with simulated("openai", scn) as api:
            api.sim.advance(1)
            job = await api.job("ftjob-c")
        assert_like(job, sample("openai-job-cancelled"))
        assert job["status"] == "cancelled"
        assert job["finished_at"] == START_UNIX + 1


# --- Progress over sim time -----------------------------------------------------------------


class TestProgress:
    @pytest.mark.parametrize("provider", OTHERS)
    async def test_statuses_follow_the_timeline(self, provider: str) -> None:
        """At each scripted offset the job reports that status; before t=0 it does not exist."""
        fleet = FLEETS[provider]
        scn = scenario(
            models=[
                {
                    "id": fleet.ok,
                    "provider": provider,
                    "timeline": [[1, s] for _, s in fleet.ok_timeline[:1]]
                    + [[t + 1, s] for t, s in fleet.ok_timeline[1:]],
                }
            ]
        )
        async with simulated(provider, scn) as api:
            absent = await api.get(fleet.job(fleet.ok))
            assert absent.status == 404
            assert items_of(provider, await api.ok(fleet.list_path)) == []
            seen: list[str] = []
            for offset, status in fleet.ok_timeline:
                api.sim.set_time(offset + 1)
                job = await api.job(fleet.ok)
                seen.append(status_of(provider, job))
                assert seen[-1] == status
        assert seen == [s for _, s in fleet.ok_timeline]

    @pytest.mark.parametrize("provider", ["openai", "azure-openai", "together"])
    async def test_events_grow_with_time(self, provider: str) -> None:
        """Events appear as their status is reached, and never before."""
        fleet = FLEETS[provider]
        path = fleet.events(fleet.ok)
        assert path is not None
        async with simulated(provider) as api:
            counts = []
            for at in (0, 2, 9):
                api.sim.set_time(at)
                counts.append(len((await api.ok(path, limit=50))["data"]))
        assert counts[0] >= 1
        assert counts[0] < counts[1] < counts[2]

    async def test_openai_events_newest_first(self) -> None:
        """OpenAI events come newest first."""
        fleet = FLEETS["openai"]
        async with simulated("openai") as api:
            api.sim.advance(9)
            data = (await api.ok(f"/fine_tuning/jobs/{fleet.ok}/events"))["data"]
        times = [e["created_at"] for e in data]
        assert times == sorted(times, reverse=True)
        assert data[0]["message"] == "The job has successfully completed"
        assert data[-1]["message"] == f"Created fine-tuning job: {fleet.ok}"
        assert any(e["type"] == "metrics" for e in data)

    async def test_mixed_fleet_ids_stay_with_their_provider(self) -> None:
        """A job is served only under its own provider's prefix."""
        async with simulated("openai") as api:
            api.sim.advance(9)
            assert (await api.get(f"/fine_tuning/jobs/{FLEETS['openai'].ok}")).status == 200
            assert (await api.get(f"/fine_tuning/jobs/{FLEETS['azure-openai'].ok}")).status == 404
            url = api.sim.base_url + f"/v1/finetuning/finetuned-models/{FLEETS['openai'].ok}"
            async with api.session.get(url, headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 404
                assert (await r.json())["message"].startswith("finetuned model")


# --- Pagination -----------------------------------------------------------------------------


async def walk_cursor(api: Api, path: str, limit: int) -> list[str]:
    ids: list[str] = []
    after = ""
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        body = await api.ok(path, **params)
        assert len(body["data"]) <= limit
        ids += [item["id"] for item in body["data"]]
        if not body["has_more"]:
            return ids
        after = body["data"][-1]["id"]
    raise AssertionError("pagination did not end")


class TestPagination:
    @pytest.mark.parametrize("provider", ["openai", "azure-openai"])
    async def test_events_cursor_with_limit_one(self, provider: str) -> None:
        """limit=1 and after=<last id> walk every event once, newest first, has_more to the end."""
        fleet = FLEETS[provider]
        path = f"/fine_tuning/jobs/{fleet.ok}/events"
        async with simulated(provider) as api:
            api.sim.advance(9)
            whole = [e["id"] for e in (await api.ok(path, limit=50))["data"]]
            walked = await walk_cursor(api, path, 1)
            last = await api.ok(path, limit=1, after=whole[-1])
        assert walked == whole
        assert len(set(whole)) == len(whole) > 3
        assert last == {"object": "list", "data": [], "has_more": False}

    @pytest.mark.parametrize("provider", ["openai", "azure-openai"])
    async def test_job_list_cursor(self, provider: str) -> None:
        """The job list pages with limit/after too, newest first."""
        async with simulated(provider) as api:
            api.sim.advance(1)
            api.sim.add_model(
                {"id": "ftjob-late", "provider": provider, "timeline": [[0, "queued"]]}
            )
            walked = await walk_cursor(api, "/fine_tuning/jobs", 1)
        assert walked[0] == "ftjob-late"
        assert sorted(walked) == sorted(
            [*(getattr(FLEETS[provider], w) for w in ("ok", "bad", "run")), "ftjob-late"]
        )

    async def test_page_size_cap_limits_openai(self) -> None:
        """page_size_cap caps limit: has_more says there is more."""
        fleet = FLEETS["openai"]
        async with simulated("openai", scenario(page_size_cap=2)) as api:
            api.sim.advance(9)
            body = await api.ok(f"/fine_tuning/jobs/{fleet.ok}/events", limit=20)
        assert len(body["data"]) == 2
        assert body["has_more"] is True

    async def test_fireworks_page_token(self) -> None:
        """pageSize=1 with pageToken walks every job once; the last token is empty."""
        fleet = FLEETS["fireworks"]
        async with simulated("fireworks") as api:
            api.sim.advance(1)
            names: list[str] = []
            token = ""
            for _ in range(10):
                params: dict[str, Any] = {"pageSize": 1}
                if token:
                    params["pageToken"] = token
                body = await api.ok(fleet.list_path, **params)
                names += [
                    job["name"].rsplit("/", 1)[-1] for job in body["supervisedFineTuningJobs"]
                ]
                token = body["nextPageToken"]
                if not token:
                    break
            changed = await api.get(fleet.list_path, pageSize=2, pageToken=fireworks_token(1, 1))
            bad = await api.get(fleet.list_path, pageToken="garbage!")
        assert names == sorted([fleet.ok, fleet.bad, fleet.run])
        assert_like(body, sample("fireworks-list-page-2"))
        assert changed.status == 400
        assert changed.json()["code"] == 3
        assert bad.status == 400

    async def test_mistral_pages_from_zero(self) -> None:
        """Mistral pages from 0 with page_size; total counts every job."""
        fleet = FLEETS["mistral"]
        async with simulated("mistral") as api:
            api.sim.advance(1)
            ids: list[str] = []
            for page in range(5):
                body = await api.ok(fleet.list_path, page=page, page_size=1)
                assert body["total"] == 3
                if not body["data"]:
                    break
                ids += [job["id"] for job in body["data"]]
            bad = await api.get(fleet.list_path, page="x")
        assert sorted(ids) == sorted([fleet.ok, fleet.bad, fleet.run])
        assert "events" not in body
        assert all("events" not in job for job in body["data"])
        assert bad.status == 422
        assert bad.json()["detail"][0]["loc"] == ["query", "page"]

    async def test_together_list_is_one_page(self) -> None:
        """Together lists every job at once, with suffix and without events."""
        async with simulated("together") as api:
            api.sim.advance(1)
            body = await api.ok("/v1/fine-tunes")
        assert set(body) == {"data"}
        assert len(body["data"]) == 3
        assert all("events" not in job and "suffix" in job for job in body["data"])

    async def test_openai_bad_limit_is_400_in_openai_shape(self) -> None:
        """A limit that is no integer is a 400 OpenAI error."""
        async with simulated("openai") as api:
            answer = await api.get("/fine_tuning/jobs", limit="many")
        assert answer.status == 400
        assert_like(answer.json(), sample("openai-error-404"))


# --- Auth and errors ------------------------------------------------------------------------


class TestAuth:
    @pytest.mark.parametrize("provider", OTHERS)
    @pytest.mark.parametrize("key", [None, "wrong", ""])
    async def test_bad_key_is_401_in_the_provider_shape(
        self, provider: str, key: str | None
    ) -> None:
        """No key or a wrong key: 401 with the provider's error body, on every path."""
        fleet = FLEETS[provider]
        async with simulated(provider) as api:
            for path in (fleet.job(fleet.ok), fleet.list_path, fleet.job("nope")):
                answer = await api.get(path, key=key)
                assert answer.status == 401
                assert_like(answer.json(), sample(f"{provider}-error-401"))
                assert message_of(answer.json())
            stats = api.sim.stats()
        assert stats["by_provider"][provider]["by_status_code"] == {"401": 3}

    async def test_azure_accepts_api_key_and_bearer(self) -> None:
        """Azure takes the api-key header, or Authorization: Bearer."""
        fleet = FLEETS["azure-openai"]
        path = fleet.job(fleet.ok)
        async with simulated("azure-openai") as api:
            assert (await api.get(path, headers={"api-key": KEY})).status == 200
            bearer = {"Authorization": f"Bearer {KEY}"}
            assert (await api.get(path, headers=bearer)).status == 200
            assert (await api.get(path, headers={"api-key": "wrong"})).status == 401
            assert (
                await api.get(path, headers={"api-key": KEY}, **{"api-version": "v1"})
            ).status == 200

    async def test_api_key_header_is_azure_only(self) -> None:
        """OpenAI does not read api-key."""
        async with simulated("openai") as api:
            answer = await api.get("/fine_tuning/jobs", headers={"api-key": KEY})
        assert answer.status == 401

    @pytest.mark.parametrize("provider", OTHERS)
    async def test_rotation_applies_to_every_provider(self, provider: str) -> None:
        """POST /_sim/api-key changes the key every provider accepts."""
        fleet = FLEETS[provider]
        async with simulated(provider) as api:
            async with api.session.post(
                api.sim.base_url + "/_sim/api-key", json={"api_key": "rotated"}
            ) as r:
                assert r.status == 200
            assert (await api.get(fleet.list_path)).status == 401
            assert (await api.get(fleet.list_path, key="rotated")).status == 200

    @pytest.mark.parametrize("provider", OTHERS)
    async def test_unknown_job_is_not_found(self, provider: str) -> None:
        """An unknown job: each provider's 404 (Mistral: 422 for an id that is no UUID)."""
        fleet = FLEETS[provider]
        unknown = "00000000-0000-0000-0000-000000000000" if provider == "mistral" else "nope"
        async with simulated(provider) as api:
            answer = await api.get(fleet.job(unknown))
            if provider == "mistral":
                invalid = await api.get(fleet.job("nope"))
                assert invalid.status == 422
                assert_like(invalid.json(), sample("mistral-error-422"))
        assert answer.status == 404
        assert_like(answer.json(), sample(f"{provider}-error-404"))
        assert message_of(answer.json())

    async def test_fireworks_other_account_is_403(self) -> None:
        """An account other than the scenario's is PERMISSION_DENIED."""
        async with simulated("fireworks") as api:
            answer = await api.get("/v1/accounts/someone-else/supervisedFineTuningJobs")
        assert answer.status == 403
        assert answer.json()["code"] == 7

    @pytest.mark.parametrize("provider", OTHERS)
    async def test_unknown_path_and_method(self, provider: str) -> None:
        """Unknown paths under a provider's prefix are its 404; non-GET is 405, as JSON."""
        fleet = FLEETS[provider]
        async with simulated(provider) as api:
            missing = await api.get("/v1/nothing-here")
            url = api.sim.provider_url(provider) + fleet.list_path
            async with api.session.delete(url, headers=api.headers(KEY)) as r:
                assert r.status == 405
                assert message_of(await r.json())
            stats = api.sim.stats()["by_provider"][provider]
        assert missing.status == 404
        assert message_of(missing.json())
        assert stats["by_endpoint"]["other"] == 1


# --- Faults ---------------------------------------------------------------------------------

GENERIC_KINDS = [
    "http_401",
    "http_403",
    "http_404",
    "http_429",
    "http_500",
    "http_503",
    "malformed_json",
    "wrong_content_type",
    "huge_body",
    "wrong_shape",
    "unknown_status",
    "missing_fields",
    "future_timestamp",
]


async def fault_answer(provider: str, fault: dict[str, Any], path: str | None = None) -> Answer:
    fleet = FLEETS[provider]
    fault = {"provider": provider, "endpoint": "model", **fault}
    async with simulated(provider, scenario(faults=[fault])) as api:
        api.sim.advance(9)
        return await api.get(path or fleet.job(fleet.ok))


class TestFaults:
    @pytest.mark.parametrize("provider", OTHERS)
    @pytest.mark.parametrize("kind", GENERIC_KINDS)
    async def test_each_kind(self, provider: str, kind: str) -> None:
        """Every fault kind strikes each provider's job endpoint, in that provider's style."""
        answer = await fault_answer(provider, {"kind": kind, "retry_after": 3})
        if kind.startswith("http_"):
            status = int(kind.removeprefix("http_"))
            assert answer.status == status
            body = answer.json()
            assert message_of(body)
            name = f"{provider}-error-{status}"
            if (FIXTURES / f"{name}.json").exists():
                assert_like(body, sample(name))
            elif provider == "mistral" and status == 429:
                assert_like(body, sample("mistral-error-401-alt"))
            if status == 429:
                assert answer.headers["Retry-After"] == "3"
                if provider in ("openai", "azure-openai"):
                    assert answer.headers["retry-after-ms"] == "3000"
            return
        assert answer.status == 200
        if kind == "malformed_json":
            assert answer.headers["Content-Type"].startswith("application/json")
            with pytest.raises(json.JSONDecodeError):
                answer.json()
            return
        if kind == "wrong_content_type":
            assert answer.headers["Content-Type"].startswith("text/html")
            return
        body = answer.json()
        if kind == "huge_body":
            assert len(answer.body) >= 5 * 1024 * 1024
            assert status_of(provider, body)
        elif kind == "wrong_shape":
            assert isinstance(body, list)
        elif kind == "unknown_status":
            assert "SOMETHING_NEW" in status_of(provider, body).upper()
        elif kind == "missing_fields" and provider == "mistral":
            assert all("data" not in event for event in body["events"])  # documented form
        elif kind == "missing_fields":
            assert len(body) < 5
        elif kind == "future_timestamp":
            assert newest_time(provider, body) > START + timedelta(days=9 * 365)

    @pytest.mark.parametrize("provider", OTHERS)
    async def test_429_with_http_date_and_without(self, provider: str) -> None:
        """retry_after http-date sends a date; null sends no Retry-After."""
        dated = await fault_answer(provider, {"kind": "http_429", "retry_after": "http-date"})
        bare = await fault_answer(provider, {"kind": "http_429", "retry_after": None})
        assert dated.status == bare.status == 429
        assert "GMT" in dated.headers["Retry-After"]
        assert "Retry-After" not in bare.headers

    @pytest.mark.parametrize("provider", OTHERS)
    async def test_reset_connection(self, provider: str) -> None:
        """reset_connection drops the connection (twice: aiohttp retries once)."""
        fleet = FLEETS[provider]
        fault = {"kind": "reset_connection", "provider": provider, "endpoint": "any", "times": 2}
        async with simulated(provider, scenario(faults=[fault])) as api:
            with pytest.raises(aiohttp.ClientError):
                await api.get(fleet.list_path)
            assert (await api.get(fleet.list_path)).status == 200
            stats = api.sim.stats()
        assert stats["by_provider"][provider]["connections_reset"] == 2
        assert stats["by_provider"][provider]["requests"] == 3

    @pytest.mark.parametrize("provider", OTHERS)
    async def test_slow_and_timeout(self, provider: str) -> None:
        """slow delays the answer; a client timeout gives up without keeping the server busy."""
        fleet = FLEETS[provider]
        began = time.monotonic()
        answer = await fault_answer(provider, {"kind": "slow", "delay": 0.2})
        assert answer.status == 200
        assert time.monotonic() - began >= 0.2
        fault = {"kind": "slow", "delay": 30, "provider": provider, "endpoint": "model"}
        began = time.monotonic()
        async with simulated(provider, scenario(faults=[fault])) as api:
            with pytest.raises(asyncio.TimeoutError):
                await api.session.get(
                    api.sim.provider_url(provider) + fleet.job(fleet.ok),
                    headers=api.headers(KEY),
                    timeout=aiohttp.ClientTimeout(total=0.1),
                )
        assert time.monotonic() - began < 3

    @pytest.mark.parametrize("provider", ["together", "fireworks"])
    async def test_naive_timestamp(self, provider: str) -> None:
        """naive_timestamp drops the Z of ISO providers."""
        body = (await fault_answer(provider, {"kind": "naive_timestamp"})).json()
        stamp = body["updated_at" if provider == "together" else "updateTime"]
        assert datetime.fromisoformat(stamp).tzinfo is None

    async def test_list_and_events_faults(self) -> None:
        """wrong_shape and missing_fields on lists and events hit the right keys."""
        fleet = FLEETS["openai"]
        shape = await fault_answer(
            "openai", {"kind": "wrong_shape", "endpoint": "list"}, "/fine_tuning/jobs"
        )
        missing = await fault_answer(
            "openai", {"kind": "missing_fields", "endpoint": "events"},
            f"/fine_tuning/jobs/{fleet.ok}/events",
        )  # fmt: skip
        assert shape.json() == {"data": "nope"}
        assert "has_more" not in missing.json()
        fireworks_list = FLEETS["fireworks"].list_path
        fw = await fault_answer(
            "fireworks", {"kind": "missing_fields", "endpoint": "list"}, fireworks_list
        )
        assert "nextPageToken" not in fw.json()
        mistral = await fault_answer("mistral", {"kind": "missing_fields"})
        assert all("data" not in e for e in mistral.json()["events"])

    @pytest.mark.parametrize("provider", ["openai", "azure-openai"])
    async def test_openai_repeat_and_endless(self, provider: str) -> None:
        """repeat_token ignores after (same page, has_more); endless_pages never ends."""
        fleet = FLEETS[provider]
        path = f"/fine_tuning/jobs/{fleet.ok}/events"
        faults = [{"kind": "repeat_token", "provider": provider, "times": None}]
        async with simulated(provider, scenario(faults=faults)) as api:
            api.sim.advance(9)
            first = await api.ok(path, limit=1)
            again = await api.ok(path, limit=1, after=first["data"][0]["id"])
        assert first == again
        assert first["has_more"] is True
        faults = [{"kind": "endless_pages", "provider": provider, "times": None}]
        async with simulated(provider, scenario(faults=faults)) as api:
            api.sim.advance(9)
            seen = await walk_or_give_up(api, path)
        assert seen > 20

    async def test_fireworks_and_mistral_paging_faults(self) -> None:
        """repeat_token and endless_pages at the page-token and page-number providers."""
        fw = FLEETS["fireworks"]
        faults = [
            {"kind": "repeat_token", "provider": "fireworks", "endpoint": "list", "times": None}
        ]
        async with simulated("fireworks", scenario(faults=faults)) as api:
            api.sim.advance(9)
            first = await api.ok(fw.list_path, pageSize=1)
            again = await api.ok(fw.list_path, pageSize=1, pageToken=first["nextPageToken"])
        assert first["nextPageToken"]
        assert again["nextPageToken"] == first["nextPageToken"]
        faults = [
            {"kind": "endless_pages", "provider": "mistral", "endpoint": "list", "times": None}
        ]
        async with simulated("mistral", scenario(faults=faults)) as api:
            api.sim.advance(9)
            far = await api.ok(FLEETS["mistral"].list_path, page=50, page_size=1)
        assert far["data"]
        assert far["total"] > 50

    async def test_fault_scoped_to_a_provider(self) -> None:
        """A fault with provider: hits only that provider; without one it hits every provider."""
        faults = [{"kind": "http_500", "provider": "openai", "endpoint": "any", "times": None}]
        async with simulated("openai", scenario(faults=faults)) as api:
            assert (await api.get("/fine_tuning/jobs")).status == 500
            api.provider = "together"
            assert (await api.get("/v1/fine-tunes")).status == 200
        faults = [{"kind": "http_503", "endpoint": "list", "times": None}]
        async with simulated("mistral", scenario(faults=faults)) as api:
            for provider in OTHERS:
                api.provider = provider
                assert (await api.get(FLEETS[provider].list_path)).status == 503

    async def test_fault_scoped_to_a_model(self) -> None:
        """A fault naming a model strikes only that job."""
        fleet = FLEETS["together"]
        faults = [{"kind": "http_500", "model": fleet.ok, "endpoint": "any", "times": None}]
        async with simulated("together", scenario(faults=faults)) as api:
            api.sim.advance(1)
            assert (await api.get(fleet.job(fleet.ok))).status == 500
            assert (await api.get(fleet.job(fleet.ok) + "/events")).status == 500
            assert (await api.get(fleet.job(fleet.run))).status == 200


async def walk_or_give_up(api: Api, path: str) -> int:
    seen = 0
    after = ""
    for _ in range(30):
        params: dict[str, Any] = {"limit": 1}
        if after:
            params["after"] = after
        body = await api.ok(path, **params)
        assert body["has_more"] is True
        seen += len(body["data"])
        after = body["data"][-1]["id"]
    return seen


def newest_time(provider: str, job: dict[str, Any]) -> datetime:
    if provider in ("openai", "azure-openai"):
        return datetime.fromtimestamp(job["finished_at"] or job["created_at"], UTC)
    if provider == "mistral":
        return datetime.fromtimestamp(job["modified_at"], UTC)
    if provider == "together":
        return datetime.fromisoformat(job["updated_at"])
    return datetime.fromisoformat(job["updateTime"])


# --- Rate limits and counters ---------------------------------------------------------------


class TestLimitsAndCounters:
    async def test_rate_limit_per_provider(self) -> None:
        """provider_rate_limits limits one provider; the 429 is in its shape with Retry-After."""
        scn = scenario(provider_rate_limits={"openai": 1})
        async with simulated("openai", scn) as api:
            assert (await api.get("/fine_tuning/jobs")).status == 200
            limited = await api.get("/fine_tuning/jobs")
            api.provider = "together"
            for _ in range(3):
                assert (await api.get("/v1/fine-tunes")).status == 200
            stats = api.sim.stats()
        assert limited.status == 429
        assert limited.headers["Retry-After"] == "60"
        assert_like(limited.json(), sample("openai-error-429"))
        assert stats["rate_limited"] == 1
        assert stats["by_provider"]["openai"]["rate_limited"] == 1

    async def test_counters_per_provider(self) -> None:
        """Totals keep their meaning; by_provider splits them; by_model counts job polls."""
        fleet = FLEETS["openai"]
        async with simulated("openai") as api:
            await api.get(fleet.job(fleet.ok))
            await api.get(fleet.job(fleet.ok) + "/events")
            await api.get(fleet.list_path)
            api.provider = "fireworks"
            await api.get(FLEETS["fireworks"].job(FLEETS["fireworks"].ok))
            async with api.session.get(api.sim.base_url + "/_sim/stats") as r:
                snapshot = await r.json()
        assert snapshot["requests"] == 4
        assert snapshot["by_endpoint"] == {
            "events": 1,
            "model": 2,
            "list": 1,
            "metrics": 0,
            "other": 0,
        }
        assert snapshot["by_model"] == {fleet.ok: 1, FLEETS["fireworks"].ok: 1}
        openai = snapshot["by_provider"]["openai"]
        assert openai["requests"] == 3
        assert openai["by_endpoint"] == {"events": 1, "list": 1, "model": 1, "other": 0}
        assert openai["by_status_code"] == {"200": 3}
        assert snapshot["by_provider"]["fireworks"]["by_endpoint"] == {
            "list": 0,
            "model": 1,
            "other": 0,
        }
        assert snapshot["by_provider"]["cohere"]["requests"] == 0
        assert set(snapshot["by_provider"]) == set(PROVIDERS)

    async def test_add_model_with_a_provider(self) -> None:
        """POST /_sim/models takes a provider; its statuses are checked; offsets count from now."""
        late = "9f1e0d2a-93b4-4f65-8a77-0b1c2d3e4f50"
        async with simulated("mistral") as api:
            api.sim.advance(100)
            url = api.sim.base_url + "/_sim/models"
            entry = {"id": late, "provider": "mistral", "timeline": [[0, "QUEUED"], [2, "RUNNING"]]}
            async with api.session.post(url, json=entry) as r:
                assert r.status == 201
            assert (await api.job(late))["status"] == "QUEUED"
            api.sim.advance(2)
            job = await api.job(late)
            bad = {"id": "x", "provider": "mistral", "timeline": [[0, "queued"]]}
            async with api.session.post(url, json=bad) as r:
                assert r.status == 400
                assert (await r.json())["problems"][0].startswith("timeline")
        assert job["status"] == "RUNNING"
        assert job["created_at"] == START_UNIX + 100

    async def test_shared_rate_limit_counts_per_provider(self) -> None:
        """rate_limit_per_minute is a budget per provider (and key), not one shared budget."""
        async with simulated("openai", scenario(rate_limit_per_minute=1)) as api:
            assert (await api.get("/fine_tuning/jobs")).status == 200
            assert (await api.get("/fine_tuning/jobs")).status == 429
            api.provider = "fireworks"
            assert (await api.get(FLEETS["fireworks"].list_path)).status == 200


# --- Scenario format ------------------------------------------------------------------------


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_scenario(data, source="scn.yaml")
    return info.value.problems


class TestScenarioFormat:
    def test_mixed_scenario(self) -> None:
        """The bundled mixed fleet: six providers; ready, failed (with why), running, cancelled."""
        mixed = load_scenario(bundled_scenario_path("mixed"))
        assert {m.provider for m in mixed.models} == set(PROVIDERS)
        finals = {m.timeline[-1][1] for m in mixed.models}
        assert {"STATUS_READY", "failed", "running", "CANCELLED"} <= finals
        assert any(m.error is not None and m.error.message for m in mixed.models)
        assert mixed.api_key == "sim-key"

    async def test_mixed_scenario_serves_every_provider(self) -> None:
        """Each model of the mixed fleet answers under its provider's base URL."""
        mixed = load_scenario(bundled_scenario_path("mixed"))
        scn = mixed.model_copy(update={"clock": "manual"})
        async with (
            running_simulator(scn) as sim,
            aiohttp.ClientSession() as session,
        ):
            sim.advance(10)
            for model in scn.models:
                provider = model.provider
                if provider == "cohere":
                    path = f"/v1/finetuning/finetuned-models/{model.id}"
                elif provider == "fireworks":
                    path = f"/v1/accounts/sim-account/supervisedFineTuningJobs/{model.id}"
                elif provider == "mistral":
                    path = f"/v1/fine_tuning/jobs/{model.id}"
                elif provider == "together":
                    path = f"/v1/fine-tunes/{model.id}"
                else:
                    path = f"/fine_tuning/jobs/{model.id}"
                headers = {"Authorization": "Bearer sim-key"}
                async with session.get(sim.provider_url(provider) + path, headers=headers) as r:
                    assert r.status == 200, (provider, await r.text())
        assert PROVIDER_BASE_PATHS == {
            "cohere": "",
            "openai": "/openai/v1",
            "azure-openai": "/azure/openai/v1",
            "mistral": "/mistral",
            "together": "/together",
            "fireworks": "/fireworks",
        }

    @pytest.mark.parametrize(
        ("data", "path", "words"),
        [
            (
                {"models": [{"id": "a", "provider": "openai", "timeline": [[0, "STATUS_READY"]]}]},
                "models.0.timeline:",
                "not a openai status",
            ),
            (
                {"models": [{"id": "a", "provider": "openai", "timeline": []}]},
                "models.0.timeline:",
                "at least one status",
            ),
            (
                {"models": [{"id": "a", "provider": "gemini", "timeline": []}]},
                "models.0.provider:",
                "",
            ),
            (
                {
                    "models": [
                        {
                            "id": "a",
                            "provider": "mistral",
                            "timeline": [[0, "FAILED"]],
                            "error": {"message": "x"},
                        }
                    ]
                },
                "models.0.error:",
                "reports no failure reason",
            ),
            (
                {
                    "models": [
                        {
                            "id": "a",
                            "provider": "openai",
                            "timeline": [[0, "succeeded"]],
                            "error": {"message": "x"},
                        }
                    ]
                },
                "models.0.error:",
                "never fails",
            ),
            (
                {"faults": [{"kind": "http_500", "provider": "mistral", "endpoint": "events"}]},
                "faults.0.endpoint:",
                "at mistral",
            ),
            (
                {"faults": [{"kind": "naive_timestamp", "provider": "openai", "endpoint": "any"}]},
                "faults.0.endpoint:",
                "never applies",
            ),
            (
                {"faults": [{"kind": "repeat_token", "provider": "together", "endpoint": "any"}]},
                "faults.0.endpoint:",
                "never applies",
            ),
            (
                {
                    "models": [{"id": "a", "provider": "openai", "timeline": [[0, "queued"]]}],
                    "faults": [{"kind": "http_500", "model": "a", "provider": "together"}],
                },
                "faults.0.provider:",
                "is at openai",
            ),
            (
                {
                    "models": [
                        {"id": "a", "provider": "fireworks", "timeline": [[0, "JOB_STATE_RUNNING"]]}
                    ],
                    "faults": [{"kind": "http_500", "model": "a", "endpoint": "events"}],
                },
                "faults.0.endpoint:",
                "at fireworks",
            ),
            (
                {
                    "models": [
                        {"id": "a", "timeline": []},
                        {"id": "a", "provider": "openai", "timeline": [[0, "queued"]]},
                    ]
                },
                "models.1.id:",
                "duplicate",
            ),
            ({"provider_rate_limits": {"openai": 0}}, "provider_rate_limits.openai:", ""),
            ({"fireworks_account": "Has Spaces"}, "fireworks_account:", ""),
        ],
    )
    def test_problems_name_their_field(self, data: dict[str, Any], path: str, words: str) -> None:
        """Each mistake is one problem under its field path, in plain words."""
        problems = problems_of(data)
        assert len(problems) == 1, problems
        assert problems[0].startswith(path), problems
        assert words in problems[0]

    def test_allow_unknown_statuses(self) -> None:
        """allow_unknown_statuses lets a timeline script a status the provider never sent."""
        scn = parse_scenario(
            {
                "models": [
                    {
                        "id": "a",
                        "provider": "fireworks",
                        "allow_unknown_statuses": True,
                        "timeline": [[0, "JOB_STATE_SOMETHING_ELSE"]],
                    }
                ]
            },
            source="scn",
        )
        assert scn.models[0].timeline == [(0, "JOB_STATE_SOMETHING_ELSE")]

    def test_defaults_per_provider(self) -> None:
        """Base models and generated timelines default to the provider's own."""
        scn = parse_scenario(
            {
                "models": [{"id": "a", "provider": "together", "timeline": [[0, "running"]]}],
                "generate": {"count": 2, "provider": "openai"},
            },
            source="scn",
        )
        assert scn.models[0].base_model.startswith("meta-llama/")
        assert scn.generate is not None
        assert scn.generate.timeline == [(0, "running")]

    async def test_generated_jobs_at_a_provider(self) -> None:
        """generate with a provider serves its ids under that provider."""
        scn = scenario("openai", generate={"count": 3, "provider": "openai", "prefix": "ftjob-g"})
        async with simulated("openai", scn) as api:
            job = await api.job("ftjob-g00002")
            listed = await walk_cursor(api, "/fine_tuning/jobs", 2)
        assert job["status"] == "running"
        assert len(listed) == 6
