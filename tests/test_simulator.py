"""The Cohere simulator on loopback: time, order, pagination, auth, faults, limits, control."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from watcher.errors import ConfigError
from watcher.providers.cohere import FAILED, FINETUNING, QUEUED, READY, UNSPECIFIED
from watcher.simulator import (
    ClockError,
    ConflictError,
    RunningSimulator,
    Scenario,
    bundled_scenario_path,
    demo_scenario,
    load_scenario,
    parse_scenario,
    running_simulator,
    serve_forever,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key"
START = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
MODEL = "7a317d97-ready"
OTHER = "c0ffee00-failed"
API = "/v1/finetuning/finetuned-models"
TIMELINE = [[0, QUEUED], [2, FINETUNING], [5, READY]]


def scenario(**overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "api_key": KEY,
        "clock": "manual",
        "start": START.isoformat(),
        "page_size_cap": 50,
        "models": [
            {
                "id": MODEL,
                "name": "support-classifier",
                "timeline": TIMELINE,
                "metrics": {"loss": 0.5},
            },
            {"id": OTHER, "timeline": [[0, QUEUED], [1, FINETUNING], [3, FAILED]]},
        ],
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

    @property
    def message(self) -> str:
        return str(self.json()["message"])


@dataclass
class Api:
    """A tiny client for the simulator, with the key already in place."""

    session: aiohttp.ClientSession
    sim: RunningSimulator
    key: str | None = KEY

    async def get(self, path: str, *, key: Any = ..., **params: Any) -> Answer:
        """GET ``path`` with the session's key, or with ``key`` (None: no header)."""
        token = self.key if key is ... else key
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        query = {k: str(v) for k, v in params.items()}
        async with self.session.get(self.sim.base_url + path, headers=headers, params=query) as r:
            return Answer(r.status, r.headers, await r.read())

    async def post(self, path: str, payload: Any) -> Answer:
        async with self.session.post(self.sim.base_url + path, json=payload) as r:
            return Answer(r.status, r.headers, await r.read())

    async def events(self, model_id: str = MODEL, **params: Any) -> list[dict[str, Any]]:
        answer = await self.get(f"{API}/{model_id}/events", **params)
        assert answer.status == 200, answer.body
        return list(answer.json()["events"])

    async def all_events(self, model_id: str = MODEL, **params: Any) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token = ""
        for _ in range(50):
            answer = await self.get(f"{API}/{model_id}/events", page_token=token, **params)
            assert answer.status == 200, answer.body
            events += answer.json()["events"]
            token = answer.json()["next_page_token"]
            if not token:
                return events
        raise AssertionError("pagination did not end")


@asynccontextmanager
async def simulated(scn: Scenario, *, key: str | None = KEY) -> AsyncIterator[Api]:
    async with (
        running_simulator(scn) as sim,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
    ):
        yield Api(session, sim, key)


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in events]


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_scenario(data, source="scn.yaml")
    assert info.value.source == "scn.yaml"
    return info.value.problems


class TestScenarioFiles:
    def test_demo_scenario(self) -> None:
        """The bundled demo has three models, the sim key and a page cap of 2."""
        demo = demo_scenario()
        assert demo.api_key == "sim-key"
        assert demo.page_size_cap == 2
        timelines = {m.id: (m.display_name, m.timeline) for m in demo.models}
        assert timelines == {
            "demo-ready-model": ("support-classifier", [(0, QUEUED), (1, FINETUNING), (3, READY)]),
            "demo-failed-model": ("intent-router", [(0, QUEUED), (1, FINETUNING), (4, FAILED)]),
            "demo-training-model": ("summariser-xl", [(0, QUEUED), (1, FINETUNING)]),
        }

    @pytest.mark.parametrize("name", ["demo", "bench", "chaos"])
    def test_bundled_scenarios_load(self, name: str) -> None:
        """Every bundled scenario file is valid."""
        assert isinstance(load_scenario(bundled_scenario_path(name)), Scenario)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming the path."""
        with pytest.raises(ConfigError) as info:
            load_scenario(tmp_path / "nope.yaml")
        assert info.value.source == str(tmp_path / "nope.yaml")
        assert info.value.problems == ["file not found"]

    def test_bad_yaml_names_the_line(self, tmp_path: Path) -> None:
        """Broken YAML is one problem line with its position, not a traceback."""
        path = tmp_path / "bad.yaml"
        path.write_text("models:\n  - id: [unclosed\n")
        with pytest.raises(ConfigError) as info:
            load_scenario(path)
        assert len(info.value.problems) == 1
        assert "line" in info.value.problems[0]

    def test_not_a_mapping(self, tmp_path: Path) -> None:
        """An empty file or a list is refused plainly."""
        path = tmp_path / "empty.yaml"
        path.write_text("")
        with pytest.raises(ConfigError, match="mapping"):
            load_scenario(path)

    def test_problems_name_field_paths(self, tmp_path: Path) -> None:
        """Each problem of a file is one line starting with its field path."""
        path = tmp_path / "scn.yaml"
        path.write_text(
            "clock: sometimes\n"
            "models:\n"
            "  - {id: a, timeline: [[0, STATUS_QUEUED]], colour: red}\n"
            "  - {id: b, timeline: [[3, STATUS_QUEUED], [1, STATUS_READY]]}\n"
        )
        with pytest.raises(ConfigError) as info:
            load_scenario(path)
        problems = info.value.problems
        assert any(p.startswith("clock:") for p in problems), problems
        assert any(p.startswith("models.0.colour:") for p in problems), problems
        assert any(p.startswith("models.1.timeline:") and "decrease" in p for p in problems)
        assert str(path) in str(info.value)

    @pytest.mark.parametrize(
        ("data", "path"),
        [
            ({"models": [{"id": "a", "timeline": [[-1, QUEUED]]}]}, "models.0.timeline.0.0:"),
            ({"models": [{"id": "a/b", "timeline": []}]}, "models.0.id:"),
            ({"models": [{"id": "a"}]}, "models.0.timeline:"),
            ({"page_size_cap": 0}, "page_size_cap:"),
            ({"faults": [{"kind": "gremlins"}]}, "faults.0.kind:"),
            ({"faults": [{"kind": "http_500", "model": "ghost"}]}, "faults.0.model:"),
            ({"faults": [{"kind": "repeat_token", "endpoint": "model"}]}, "faults.0.endpoint:"),
            ({"faults": [{"kind": "unknown_status", "endpoint": "metrics"}]}, "faults.0.endpoint:"),
            ({"faults": [{"kind": "http_429", "retry_after": "soon"}]}, "faults.0.retry_after:"),
            ({"faults": [{"kind": "slow", "times": 0}]}, "faults.0.times:"),
            ({"generate": {"count": 2, "stagger": -1}}, "generate.stagger:"),
        ],
    )
    def test_each_problem_names_its_field(self, data: dict[str, Any], path: str) -> None:
        """A bad value is reported once, under its field path."""
        problems = problems_of(data)
        assert len(problems) == 1, problems
        assert problems[0].startswith(path), problems

    def test_cross_field_problems(self) -> None:
        """Duplicate ids and generated-id collisions are named by path."""
        problems = problems_of(
            {
                "models": [
                    {"id": "a", "timeline": []},
                    {"id": "a", "timeline": []},
                    {"id": "bench-00001", "timeline": []},
                ],
                "generate": {"count": 5},
            }
        )
        assert problems == [
            "models.1.id: duplicate id 'a' (also models.0.id)",
            "models.2.id: 'bench-00001' collides with a generated id (generate.prefix 'bench-')",
        ]

    def test_list_fault_cannot_name_a_model(self) -> None:
        """The list endpoint concerns no model, so a fault there cannot name one."""
        problems = problems_of(
            {
                "models": [{"id": "a", "timeline": []}],
                "faults": [{"kind": "http_500", "model": "a", "endpoint": "list"}],
            }
        )
        assert len(problems) == 1
        assert problems[0].startswith("faults.0.endpoint:")

    def test_fault_may_name_a_generated_model(self) -> None:
        """Faults can target generated ids."""
        scn = scenario(generate={"count": 3}, faults=[{"kind": "http_500", "model": "bench-00002"}])
        assert scn.faults[0].model == "bench-00002"


class TestTime:
    async def test_events_appear_as_manual_time_passes(self) -> None:
        """Only events whose offset has passed are visible; the model follows along."""
        async with simulated(scenario()) as api:
            assert statuses(await api.events()) == [QUEUED]
            model = (await api.get(f"{API}/{MODEL}")).json()["finetuned_model"]
            assert model["status"] == QUEUED
            assert "completed_at" not in model
            api.sim.advance(2)
            assert statuses(await api.events()) == [QUEUED, FINETUNING]
            api.sim.advance(2.999)
            assert statuses(await api.events()) == [QUEUED, FINETUNING]
            api.sim.advance(0.001)
            assert statuses(await api.events()) == [QUEUED, FINETUNING, READY]
            model = (await api.get(f"{API}/{MODEL}")).json()["finetuned_model"]
        assert model["status"] == READY
        assert model["completed_at"] == "2024-01-15T09:30:05Z"
        assert model["created_at"] == "2024-01-15T09:30:00Z"
        assert model["name"] == "support-classifier"
        assert model["settings"]["base_model"] == {
            "name": "command-r-08-2024",
            "base_type": "BASE_TYPE_CHAT",
        }

    async def test_model_without_events_yet_is_unspecified(self) -> None:
        """Before its first event a model has no events and status UNSPECIFIED."""
        scn = scenario(models=[{"id": MODEL, "timeline": [[10, QUEUED]]}])
        async with simulated(scn) as api:
            assert await api.events() == []
            model = (await api.get(f"{API}/{MODEL}")).json()["finetuned_model"]
        assert model["status"] == UNSPECIFIED

    async def test_real_clock_follows_its_source(self) -> None:
        """A real clock reads the injected source relative to startup; it cannot be set."""
        now = [1000.0]
        scn = scenario(clock="real")
        async with (
            running_simulator(scn, clock=lambda: now[0]) as sim,
            aiohttp.ClientSession() as session,
        ):
            api = Api(session, sim)
            assert statuses(await api.events()) == [QUEUED]
            now[0] += 5
            assert sim.sim_time() == 5
            assert statuses(await api.events()) == [QUEUED, FINETUNING, READY]
            with pytest.raises(ClockError):
                sim.advance(1)
            answer = await api.post("/_sim/clock", {"advance": 1})
        assert answer.status == 409


class TestTimestampsAndOrder:
    @pytest.mark.parametrize(
        ("fmt", "expected"),
        [
            ("iso_z", ["2024-01-15T09:30:00Z", "2024-01-15T09:30:02Z", "2024-01-15T09:30:05Z"]),
            (
                "space_offset",
                [
                    "2024-01-15 09:30:00.000000+00:00",
                    "2024-01-15 09:30:02.000000+00:00",
                    "2024-01-15 09:30:05.000000+00:00",
                ],
            ),
            (
                "mixed",
                [
                    "2024-01-15T09:30:00Z",
                    "2024-01-15 09:30:02.000000+00:00",
                    "2024-01-15T09:30:05Z",
                ],
            ),
        ],
    )
    async def test_timestamp_formats(self, fmt: str, expected: list[str]) -> None:
        """created_at is start + offset in the chosen form, always with a zone."""
        async with simulated(scenario(timestamp_format=fmt)) as api:
            api.sim.advance(10)
            events = await api.events()
        assert [e["created_at"] for e in events] == expected
        assert all(datetime.fromisoformat(e["created_at"]).tzinfo for e in events)

    async def test_fractional_offsets_keep_microseconds(self) -> None:
        """A half-second offset is not rounded away in the Z form."""
        scn = scenario(models=[{"id": MODEL, "timeline": [[0.5, QUEUED]]}])
        async with simulated(scn) as api:
            api.sim.advance(1)
            events = await api.events()
        assert events[0]["created_at"] == "2024-01-15T09:30:00.500000Z"

    async def test_equal_timestamps(self) -> None:
        """With equal_timestamps every event carries the first event's created_at."""
        scn = scenario(models=[{"id": MODEL, "timeline": TIMELINE, "equal_timestamps": True}])
        async with simulated(scn) as api:
            api.sim.advance(1)
            assert len(await api.events()) == 1  # visibility still follows the offsets
            api.sim.advance(10)
            events = await api.events()
        assert statuses(events) == [QUEUED, FINETUNING, READY]
        assert {e["created_at"] for e in events} == {"2024-01-15T09:30:00Z"}

    @pytest.mark.parametrize(
        ("default", "order_by", "expected"),
        [
            ("asc", None, [QUEUED, FINETUNING, READY]),
            ("desc", None, [READY, FINETUNING, QUEUED]),
            ("desc", "created_at", [QUEUED, FINETUNING, READY]),
            ("asc", "created_at desc", [READY, FINETUNING, QUEUED]),
            ("asc", "created_at DESC", [READY, FINETUNING, QUEUED]),
            ("desc", "created_at asc", [QUEUED, FINETUNING, READY]),
        ],
    )
    async def test_orders(self, default: str, order_by: str | None, expected: list[str]) -> None:
        """order_by wins over default_order; without it the default applies."""
        params = {"order_by": order_by} if order_by else {}
        async with simulated(scenario(default_order=default)) as api:
            api.sim.advance(10)
            assert statuses(await api.all_events(**params)) == expected

    @pytest.mark.parametrize("default", ["asc", "desc"])
    async def test_order_by_ignored_when_not_honoured(self, default: str) -> None:
        """With honour_order_by false the default order is used whatever is asked."""
        expected = [QUEUED, FINETUNING, READY]
        if default == "desc":
            expected.reverse()
        scn = scenario(default_order=default, honour_order_by=False, page_size_cap=1)
        async with simulated(scn) as api:
            api.sim.advance(10)
            for order_by in ("created_at", "created_at desc", "nonsense"):
                assert statuses(await api.all_events(order_by=order_by)) == expected

    async def test_unsupported_order_by_is_400(self) -> None:
        """Only created_at can be sorted on."""
        async with simulated(scenario()) as api:
            answer = await api.get(f"{API}/{MODEL}/events", order_by="name")
        assert answer.status == 400
        assert "order_by" in answer.message


class TestPagination:
    async def test_cap_of_one_pages_through_everything(self) -> None:
        """With a cap of 1 every page holds one event and the tokens lead to the end."""
        async with simulated(scenario(page_size_cap=1)) as api:
            api.sim.advance(10)
            first = await api.get(f"{API}/{MODEL}/events", page_size=50)
            assert len(first.json()["events"]) == 1
            assert first.json()["total_size"] == 3
            assert first.json()["next_page_token"]
            assert statuses(await api.all_events()) == [QUEUED, FINETUNING, READY]
            assert statuses(await api.all_events(order_by="created_at desc")) == [
                READY,
                FINETUNING,
                QUEUED,
            ]

    async def test_page_size_zero_or_absent_means_the_cap(self) -> None:
        """page_size 0 or absent gives min(50, cap) events; a smaller page_size is honoured."""
        async with simulated(scenario(page_size_cap=2)) as api:
            api.sim.advance(10)
            assert len(await api.events(page_size=0)) == 2
            assert len(await api.events()) == 2
            assert len(await api.events(page_size=1)) == 1

    @pytest.mark.parametrize(
        "params", [{"page_token": "not a token!"}, {"page_token": "bm9wZQ"}, {"page_size": "x"}]
    )
    async def test_bad_paging_parameters_are_400(self, params: dict[str, str]) -> None:
        """An invalid page_token or page_size is a 400 with a message."""
        async with simulated(scenario()) as api:
            answer = await api.get(f"{API}/{MODEL}/events", **params)
        assert answer.status == 400
        assert answer.message

    async def test_list_models_paginates(self) -> None:
        """The model list pages through every model that exists, added ones included."""
        async with simulated(scenario(page_size_cap=1)) as api:
            api.sim.add_model({"id": "late", "timeline": [[0, QUEUED]]})
            ids: list[str] = []
            token = ""
            while True:
                answer = (await api.get(API, page_token=token)).json()
                assert answer["total_size"] == 3
                ids += [m["id"] for m in answer["finetuned_models"]]
                token = answer["next_page_token"]
                if not token:
                    break
        assert ids == [MODEL, OTHER, "late"]


class TestMetrics:
    async def test_metrics_appear_once_finished(self) -> None:
        """Step metrics are empty while training and present once READY."""
        async with simulated(scenario()) as api:
            path = f"{API}/{MODEL}/training-step-metrics"
            assert (await api.get(path)).json() == {"step_metrics": [], "next_page_token": ""}
            api.sim.advance(5)
            steps = (await api.get(path)).json()["step_metrics"]
        assert len(steps) == 1
        assert steps[0]["metrics"] == {"loss": 0.5}
        assert steps[0]["created_at"] == "2024-01-15T09:30:05Z"
        assert isinstance(steps[0]["step_number"], int)

    async def test_failed_model_metrics_and_none(self) -> None:
        """A FAILED model publishes its metrics too; a model without metrics has none."""
        scn = scenario(
            models=[
                {"id": MODEL, "timeline": [[0, FAILED]], "metrics": {"loss": 9.0}},
                {"id": OTHER, "timeline": [[0, READY]]},
            ]
        )
        async with simulated(scn) as api:
            failed = (await api.get(f"{API}/{MODEL}/training-step-metrics")).json()
            empty = (await api.get(f"{API}/{OTHER}/training-step-metrics")).json()
        assert failed["step_metrics"][0]["metrics"] == {"loss": 9.0}
        assert empty["step_metrics"] == []


class TestAuthAndErrors:
    @pytest.mark.parametrize("key", [None, "wrong", ""])
    async def test_missing_or_wrong_key_is_401(self, key: str | None) -> None:
        """Without the right bearer key every API path answers 401, even unknown models."""
        async with simulated(scenario()) as api:
            for path in (f"{API}/{MODEL}/events", f"{API}/nope", API):
                answer = await api.get(path, key=key)
                assert answer.status == 401
                assert answer.json() == {"message": "invalid api token"}

    async def test_other_schemes_are_401(self) -> None:
        """Only 'Bearer' authenticates."""
        async with simulated(scenario()) as api:
            url = api.sim.base_url + f"{API}/{MODEL}/events"
            async with api.session.get(url, headers={"Authorization": f"Basic {KEY}"}) as r:
                assert r.status == 401

    async def test_null_api_key_accepts_any_bearer(self) -> None:
        """With api_key null any non-empty bearer works, an empty one does not."""
        async with simulated(scenario(api_key=None)) as api:
            assert (await api.get(f"{API}/{MODEL}/events", key="anything")).status == 200
            assert (await api.get(f"{API}/{MODEL}/events", key="")).status == 401

    @pytest.mark.parametrize("suffix", ["/events", "", "/training-step-metrics"])
    async def test_unknown_model_is_404(self, suffix: str) -> None:
        """An unknown model is 404 with Cohere's message."""
        async with simulated(scenario()) as api:
            answer = await api.get(f"{API}/nope{suffix}")
        assert answer.status == 404
        assert answer.json() == {"message": "finetuned model nope not found"}

    async def test_unknown_path_and_method(self) -> None:
        """Unknown API paths are 404 and non-GET methods 405, both as JSON."""
        async with simulated(scenario()) as api:
            assert (await api.get("/v1/nothing-here")).status == 404
            url = api.sim.base_url + f"{API}/{MODEL}/events"
            headers = {"Authorization": f"Bearer {KEY}"}
            async with api.session.delete(url, headers=headers) as r:
                assert r.status == 405
                assert "message" in await r.json()


async def fault_answer(fault: dict[str, Any], path: str = f"{API}/{MODEL}/events") -> Answer:
    """The answer to one request under ``fault`` (at t=10, every event visible)."""
    async with simulated(scenario(faults=[fault])) as api:
        api.sim.advance(10)
        return await api.get(path)


class TestFaults:
    async def test_429_with_seconds(self) -> None:
        """http_429 answers 429 with Retry-After in seconds."""
        answer = await fault_answer({"kind": "http_429", "retry_after": 7})
        assert answer.status == 429
        assert answer.headers["Retry-After"] == "7"
        assert "limit" in answer.message

    async def test_429_with_http_date(self) -> None:
        """retry_after http-date sends an HTTP date about two seconds ahead."""
        answer = await fault_answer({"kind": "http_429", "retry_after": "http-date"})
        when = parsedate_to_datetime(answer.headers["Retry-After"])
        assert answer.status == 429
        assert timedelta(0) <= when - datetime.now(UTC) <= timedelta(seconds=3)

    async def test_429_without_header(self) -> None:
        """retry_after null sends no Retry-After."""
        answer = await fault_answer({"kind": "http_429", "retry_after": None})
        assert answer.status == 429
        assert "Retry-After" not in answer.headers

    @pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_503", 503)])
    async def test_server_errors(self, kind: str, status: int) -> None:
        """http_500/http_503 answer that status with a JSON message."""
        answer = await fault_answer({"kind": kind})
        assert answer.status == status
        assert answer.message

    async def test_after_and_times(self) -> None:
        """'after' lets N requests through, 'times' limits how many are hit."""
        scn = scenario(faults=[{"kind": "http_500", "after": 1, "times": 2}])
        async with simulated(scn) as api:
            codes = [(await api.get(f"{API}/{MODEL}/events")).status for _ in range(5)]
        assert codes == [200, 500, 500, 200, 200]

    async def test_forever_and_scoping(self) -> None:
        """times null never stops; a fault hits only its model and endpoint."""
        scn = scenario(faults=[{"kind": "http_503", "model": MODEL, "times": None}])
        async with simulated(scn) as api:
            for _ in range(3):
                assert (await api.get(f"{API}/{MODEL}/events")).status == 503
            assert (await api.get(f"{API}/{OTHER}/events")).status == 200
            assert (await api.get(f"{API}/{MODEL}")).status == 200

    async def test_endpoint_any(self) -> None:
        """endpoint any hits the model, list and metrics endpoints too."""
        scn = scenario(faults=[{"kind": "http_500", "endpoint": "any", "times": None}])
        async with simulated(scn) as api:
            for path in (API, f"{API}/{MODEL}", f"{API}/{MODEL}/training-step-metrics"):
                assert (await api.get(path)).status == 500

    async def test_slow(self) -> None:
        """slow waits 'delay' seconds before answering normally."""
        began = time.monotonic()
        answer = await fault_answer({"kind": "slow", "delay": 0.2})
        assert answer.status == 200
        assert time.monotonic() - began >= 0.2

    async def test_slow_is_cancelled_when_the_client_gives_up(self) -> None:
        """A client timeout does not keep the simulator busy: shutdown stays prompt."""
        began = time.monotonic()
        scn = scenario(faults=[{"kind": "slow", "delay": 30}])
        async with simulated(scn) as api:
            with pytest.raises(asyncio.TimeoutError):
                await api.session.get(
                    api.sim.base_url + f"{API}/{MODEL}/events",
                    headers={"Authorization": f"Bearer {KEY}"},
                    timeout=aiohttp.ClientTimeout(total=0.1),
                )
        assert time.monotonic() - began < 3

    async def test_malformed_json(self) -> None:
        """malformed_json is a 200 application/json body that does not parse."""
        answer = await fault_answer({"kind": "malformed_json"})
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            answer.json()

    async def test_wrong_content_type(self) -> None:
        """wrong_content_type is a 200 HTML page."""
        answer = await fault_answer({"kind": "wrong_content_type"})
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/html")
        assert b"<html>" in answer.body

    async def test_huge_body(self) -> None:
        """huge_body is valid JSON of about 5 MB, events included."""
        answer = await fault_answer({"kind": "huge_body"})
        assert len(answer.body) >= 5 * 1024 * 1024
        assert statuses(answer.json()["events"]) == [QUEUED, FINETUNING, READY]

    @pytest.mark.parametrize(
        ("path", "check"),
        [
            (f"{API}/{MODEL}/events", lambda body: body == {"events": "nope"}),
            (f"{API}/{MODEL}", lambda body: isinstance(body, list)),
            (API, lambda body: body == {"finetuned_models": "nope"}),
        ],
    )
    async def test_wrong_shape(self, path: str, check: Any) -> None:
        """wrong_shape answers JSON that does not fit the documented shape."""
        answer = await fault_answer({"kind": "wrong_shape", "endpoint": "any"}, path)
        assert answer.status == 200
        assert check(answer.json())

    async def test_repeat_token(self) -> None:
        """repeat_token answers the same non-empty token on every page."""
        scn = scenario(faults=[{"kind": "repeat_token", "times": None}])
        async with simulated(scn) as api:
            first = (await api.get(f"{API}/{MODEL}/events")).json()["next_page_token"]
            again = await api.get(f"{API}/{MODEL}/events", page_token=first)
        assert first
        assert again.json()["next_page_token"] == first

    async def test_endless_pages(self) -> None:
        """endless_pages hands out a new token every page, repeating the events."""
        scn = scenario(page_size_cap=2, faults=[{"kind": "endless_pages", "times": None}])
        async with simulated(scn) as api:
            api.sim.advance(10)
            tokens: list[str] = []
            seen: list[str] = []
            token = ""
            for _ in range(6):
                page = (await api.get(f"{API}/{MODEL}/events", page_token=token)).json()
                seen += statuses(page["events"])
                token = page["next_page_token"]
                tokens.append(token)
        assert all(tokens)
        assert len(set(tokens)) == 6
        assert len(seen) == 12
        assert set(seen) == {QUEUED, FINETUNING, READY}

    async def test_naive_timestamp(self) -> None:
        """naive_timestamp drops the zone from created_at."""
        answer = await fault_answer({"kind": "naive_timestamp"})
        stamps = [e["created_at"] for e in answer.json()["events"]]
        assert stamps[0] == "2024-01-15T09:30:00"
        assert all(datetime.fromisoformat(s).tzinfo is None for s in stamps)

    async def test_future_timestamp(self) -> None:
        """future_timestamp dates the newest event ten years ahead."""
        answer = await fault_answer({"kind": "future_timestamp"})
        stamps = [datetime.fromisoformat(e["created_at"]) for e in answer.json()["events"]]
        assert stamps[0] == START
        assert stamps[-1] > START + timedelta(days=9 * 365)

    async def test_unknown_status(self) -> None:
        """unknown_status adds an event with a status nobody has heard of."""
        answer = await fault_answer({"kind": "unknown_status"})
        body = answer.json()
        assert statuses(body["events"]) == [QUEUED, FINETUNING, READY, "STATUS_SOMETHING_NEW"]
        assert body["total_size"] == 4
        model = await fault_answer(
            {"kind": "unknown_status", "endpoint": "model"}, f"{API}/{MODEL}"
        )
        assert model.json()["finetuned_model"]["status"] == "STATUS_SOMETHING_NEW"

    async def test_missing_fields(self) -> None:
        """missing_fields drops user_id, total_size and next_page_token."""
        body = (await fault_answer({"kind": "missing_fields"})).json()
        assert set(body) == {"events"}
        assert all(set(e) == {"status", "created_at"} for e in body["events"])

    async def test_reset_connection(self) -> None:
        """reset_connection drops the connection without an answer.

        aiohttp's client retries an idempotent request once after a disconnect, so the
        fault strikes twice to reach the caller.
        """
        async with simulated(scenario(faults=[{"kind": "reset_connection", "times": 2}])) as api:
            with pytest.raises(aiohttp.ClientError):
                await api.get(f"{API}/{MODEL}/events")
            assert (await api.get(f"{API}/{MODEL}/events")).status == 200
            stats = api.sim.stats()
        assert stats["connections_reset"] == 2
        assert stats["requests"] == 3
        assert stats["by_status_code"] == {"200": 1}

    async def test_auth_comes_before_faults(self) -> None:
        """A request without the key is 401 and does not use up a fault."""
        async with simulated(scenario(faults=[{"kind": "http_500"}])) as api:
            assert (await api.get(f"{API}/{MODEL}/events", key=None)).status == 401
            assert (await api.get(f"{API}/{MODEL}/events")).status == 500


class TestRateLimit:
    async def test_sliding_window_per_key(self) -> None:
        """Past the limit a key gets 429 with the seconds until a slot frees; others are fine."""
        async with simulated(scenario(api_key=None, rate_limit_per_minute=3)) as api:
            for _ in range(3):
                assert (await api.get(f"{API}/{MODEL}/events")).status == 200
            api.sim.advance(20)
            limited = await api.get(f"{API}/{MODEL}/events")
            assert limited.status == 429
            assert limited.headers["Retry-After"] == "40"
            assert (await api.get(f"{API}/{MODEL}/events", key="another")).status == 200
            api.sim.advance(39.5)
            assert (await api.get(f"{API}/{MODEL}")).headers["Retry-After"] == "1"
            api.sim.advance(0.5)
            assert (await api.get(API)).status == 200
            stats = api.sim.stats()
        assert stats["rate_limited"] == 2
        assert stats["by_status_code"] == {"200": 5, "429": 2}

    async def test_unauthorised_requests_do_not_count(self) -> None:
        """401s are answered before the limit and do not use it up."""
        async with simulated(scenario(rate_limit_per_minute=1)) as api:
            for _ in range(3):
                assert (await api.get(API, key="wrong")).status == 401
            assert (await api.get(API)).status == 200
            assert (await api.get(API)).status == 429


class TestControl:
    async def test_stats_count_every_api_response(self) -> None:
        """Stats count requests by endpoint, status code and (for events) model."""
        async with simulated(scenario()) as api:
            await api.get(f"{API}/{MODEL}/events")
            await api.get(f"{API}/{MODEL}/events")
            await api.get(f"{API}/{OTHER}/events", key="wrong")
            await api.get(f"{API}/{MODEL}")
            await api.get(API)
            await api.get(f"{API}/nope/training-step-metrics")
            api.sim.advance(1.5)
            stats = (await api.get("/_sim/stats", key=None)).json()
        assert stats["requests"] == 6
        assert stats["by_endpoint"] == {
            "events": 3,
            "model": 1,
            "list": 1,
            "metrics": 1,
            "other": 0,
        }
        assert stats["by_status_code"] == {"200": 4, "401": 1, "404": 1}
        assert stats["by_model"] == {MODEL: 2, OTHER: 1}
        assert stats["rate_limited"] == 0
        assert stats["sim_time"] == 1.5

    async def test_reset_stats(self) -> None:
        """reset-stats zeroes the counters."""
        async with simulated(scenario()) as api:
            await api.get(API)
            answer = await api.post("/_sim/reset-stats", {})
            assert answer.status == 200
            assert api.sim.stats()["requests"] == 0
            assert api.sim.stats()["by_status_code"] == {}

    async def test_clock_endpoint(self) -> None:
        """POST /_sim/clock advances or sets a manual clock, never backwards."""
        async with simulated(scenario()) as api:
            assert (await api.post("/_sim/clock", {"advance": 2})).json() == {"sim_time": 2.0}
            assert (await api.post("/_sim/clock", {"set": 5})).json() == {"sim_time": 5.0}
            assert api.sim.sim_time() == 5.0
            assert statuses(await api.events()) == [QUEUED, FINETUNING, READY]
            bad_bodies: list[Any] = [{"set": 1}, {"advance": -1}, {"advance": "x"}, {"jump": 1}, []]
            for bad in bad_bodies:
                assert (await api.post("/_sim/clock", bad)).status == 400, bad
            with pytest.raises(ClockError):
                api.sim.set_time(1)

    async def test_add_model_counts_from_now(self) -> None:
        """POST /_sim/models adds a model whose offsets start at the current sim time."""
        async with simulated(scenario()) as api:
            api.sim.advance(100)
            entry = {"id": "late", "timeline": [[0, QUEUED], [3, READY]]}
            answer = await api.post("/_sim/models", entry)
            assert answer.status == 201
            assert answer.json() == {"id": "late", "added_at": 100.0}
            assert statuses(await api.events("late")) == [QUEUED]
            api.sim.advance(3)
            events = await api.events("late")
            assert events[-1] == {
                "user_id": events[0]["user_id"],
                "status": READY,
                "created_at": "2024-01-15T09:31:43Z",
            }
            assert (await api.post("/_sim/models", entry)).status == 409
            bad = await api.post("/_sim/models", {"id": "x", "timeline": "soon"})
            assert bad.status == 400
            assert bad.json()["problems"][0].startswith("timeline")
            with pytest.raises(ConflictError):
                api.sim.add_model(entry)

    async def test_add_fault(self) -> None:
        """POST /_sim/faults adds a fault that strikes from then on."""
        async with simulated(scenario()) as api:
            assert (await api.get(f"{API}/{MODEL}/events")).status == 200
            answer = await api.post("/_sim/faults", {"kind": "http_503", "model": MODEL})
            assert answer.status == 201
            assert (await api.get(f"{API}/{MODEL}/events")).status == 503
            assert (await api.get(f"{API}/{MODEL}/events")).status == 200
            ghost = await api.post("/_sim/faults", {"kind": "http_503", "model": "ghost"})
            assert ghost.status == 400
            with pytest.raises(ConfigError):
                api.sim.add_fault({"kind": "nope"})

    async def test_api_key_rotates(self) -> None:
        """POST /_sim/api-key (or set_api_key) changes the key the API accepts from then on."""
        async with simulated(scenario()) as api:
            path = f"{API}/{MODEL}/events"
            assert (await api.get(path, key="rotated-key")).status == 401
            answer = await api.post("/_sim/api-key", {"api_key": "rotated-key"})
            assert answer.status == 200
            assert answer.json() == {"api_key_required": True}
            assert (await api.get(path, key="rotated-key")).status == 200
            assert (await api.get(path)).status == 401
            api.sim.set_api_key(None)
            assert (await api.get(path, key="anything")).status == 200
            for bad in ({"api_key": ""}, {"api_key": 5}, {"key": "x"}, []):
                assert (await api.post("/_sim/api-key", bad)).status == 400, bad
            with pytest.raises(ValueError, match="non-empty"):
                api.sim.set_api_key(" ")

    async def test_control_paths_need_no_key_and_are_not_counted(self) -> None:
        """/_sim/ paths work without a key and leave the counters alone."""
        async with simulated(scenario()) as api:
            assert (await api.get("/_sim/stats", key=None)).status == 200
            assert (await api.post("/_sim/clock", {"advance": 1})).status == 200
            assert (await api.get("/_sim/nothing", key=None)).status == 404
            assert api.sim.stats()["requests"] == 0


class TestGenerated:
    async def test_generated_models_share_a_staggered_timeline(self) -> None:
        """generate adds count models with padded ids and offsets staggered by index."""
        scn = scenario(
            generate={
                "count": 3,
                "prefix": "bench-",
                "timeline": [[0, FINETUNING], [10, READY]],
                "stagger": 5,
            }
        )
        async with simulated(scn) as api:
            api.sim.advance(15)
            assert statuses(await api.events("bench-00000")) == [FINETUNING, READY]
            assert statuses(await api.events("bench-00001")) == [FINETUNING, READY]
            assert statuses(await api.events("bench-00002")) == [FINETUNING]
            assert (await api.get(f"{API}/bench-00003/events")).status == 404
            assert (await api.get(API)).json()["total_size"] == 5

    async def test_ten_thousand_models_are_cheap(self) -> None:
        """10,000 generated models start quickly and answer by id and by list page."""
        began = time.monotonic()
        scn = scenario(models=[], generate={"count": 10_000, "stagger": 0.01})
        async with simulated(scn) as api:
            api.sim.advance(1000)
            assert statuses(await api.events("bench-09999")) == [FINETUNING]
            page = (await api.get(API, page_size=10)).json()
        assert page["total_size"] == 10_000
        assert len(page["finetuned_models"]) == 10
        assert time.monotonic() - began < 3


class TestServing:
    async def test_serve_forever_reports_its_url_and_stops_on_cancel(self) -> None:
        """serve_forever calls on_ready with the bound URL and stops cleanly when cancelled."""
        ready: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.create_task(
            serve_forever(scenario(), host="127.0.0.1", port=0, on_ready=ready.put_nowait)
        )
        url = await asyncio.wait_for(ready.get(), 5)
        async with aiohttp.ClientSession() as session, session.get(url + "/_sim/stats") as r:
            assert r.status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    def test_standalone_process_prints_url_and_exits_0_on_sigterm(self) -> None:
        """python -m watcher.simulator announces its URL and exits 0 on SIGTERM."""
        with subprocess.Popen(
            [sys.executable, "-m", "watcher.simulator", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            try:
                assert process.stdout is not None
                line = process.stdout.readline().strip()
                assert line.startswith("simulator listening on http://127.0.0.1:"), line
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=10)
            finally:
                if process.poll() is None:
                    process.kill()
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr

    def test_standalone_bad_scenario_exits_78(self, tmp_path: Path) -> None:
        """A bad scenario file is one line per problem and exit code 78."""
        path = tmp_path / "bad.yaml"
        path.write_text("page_size_cap: lots\n")
        result = subprocess.run(
            [sys.executable, "-m", "watcher.simulator", "--scenario", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 78
        assert "page_size_cap" in result.stderr
        assert "Traceback" not in result.stderr
