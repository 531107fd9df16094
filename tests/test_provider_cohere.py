"""The Cohere provider against the simulator on loopback: pagination, ties, formats, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
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
from watcher.lifecycle import Event, ModelState, Observation, observe
from watcher.pacing import RequestPacer
from watcher.providers import (
    PROVIDERS,
    open_provider,
    open_provider_session,
    provider_class,
    scheme_for,
)
from watcher.providers.cohere import (
    COHERE_SCHEME,
    FAILED,
    FINETUNING,
    QUEUED,
    READY,
    CohereProvider,
    parse_timestamp,
)
from watcher.providers.http import ApiTransport, open_session, parse_retry_after
from watcher.settings import CohereSettings
from watcher.simulator import Scenario, running_simulator

KEY = "client-test-key"
MODEL = "a3c1e0f2-model"
TIMELINE = [[0, QUEUED], [1, FINETUNING], [2, "STATUS_DEPLOYING_API"], [3, READY]]


def scenario(**overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "api_key": KEY,
        "clock": "manual",
        "page_size_cap": 1,
        "models": [
            {"id": MODEL, "name": "m", "timeline": TIMELINE, "metrics": {"loss": 0.25}},
            {"id": "other", "timeline": [[0, QUEUED], [5, FAILED]]},
        ],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


def first_look(events: list[Event]) -> Observation:
    """The core's first observation of ``events`` under Cohere's scheme."""
    return observe(None, MODEL, events, scheme=COHERE_SCHEME)


@asynccontextmanager
async def client_for(
    scn: Scenario,
    *,
    key: str = KEY,
    timeout: float = 5.0,
    advance: float = 10.0,
    pacer: RequestPacer | None = None,
    max_body_bytes: int = 4 * 1024 * 1024,
    **kw: Any,
) -> AsyncIterator[tuple[CohereProvider, Any]]:
    """A provider over its own session, talking to the simulator running ``scn``."""
    async with running_simulator(scn) as sim:
        sim.advance(advance)
        section = CohereSettings(base_url=sim.base_url, timeout=timeout)
        headers = CohereProvider.session_headers(section, key)
        session = open_session(headers=headers, timeout=timeout, concurrency=4)
        transport = ApiTransport(
            session, provider="cohere", pacer=pacer, timeout=timeout, max_body_bytes=max_body_bytes
        )
        try:
            yield CohereProvider(transport, base_url=sim.base_url, **kw), sim
        finally:
            await session.close()


class TestTimestamps:
    def test_both_documented_forms_parse_to_aware_utc(self) -> None:
        """The 'Z' form and the space-and-offset form both parse, timezone-aware."""
        a = parse_timestamp("2024-01-15T09:30:00Z")
        b = parse_timestamp("2024-01-17 20:11:45.267960+00:00")
        assert a == datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
        assert b == datetime(2024, 1, 17, 20, 11, 45, 267960, tzinfo=UTC)

    def test_naive_is_utc_and_nanoseconds_are_cut(self) -> None:
        """A timestamp without offset is UTC; digits beyond microseconds are dropped."""
        assert parse_timestamp("2024-01-15 09:30:00") == datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
        assert parse_timestamp("2024-01-15T09:30:00.123456789+02:00") == datetime(
            2024, 1, 15, 7, 30, 0, 123456, tzinfo=UTC
        )

    @pytest.mark.parametrize("bad", ["", "yesterday", None, 12, "2024-13-45T00:00:00Z"])
    def test_garbage_is_a_value_error(self, bad: object) -> None:
        """Anything else is a ValueError (the provider skips that row)."""
        with pytest.raises(ValueError):  # noqa: PT011
            parse_timestamp(bad)


class TestRetryAfter:
    def test_seconds_and_http_date(self) -> None:
        """Retry-After is honoured as seconds or as an HTTP date, capped at an hour."""
        now = datetime(2024, 1, 1, tzinfo=UTC)
        assert parse_retry_after("7", now=now) == 7.0
        assert parse_retry_after("Mon, 01 Jan 2024 00:00:30 GMT", now=now) == 30.0
        assert parse_retry_after("99999", now=now) == 3600.0
        assert parse_retry_after("soon", now=now) is None
        assert parse_retry_after(None) is None


class TestEvents:
    @pytest.mark.parametrize("order", ["asc", "desc"])
    @pytest.mark.parametrize("fmt", ["iso_z", "space_offset", "mixed"])
    async def test_pages_of_one_give_the_whole_history(self, order: str, fmt: str) -> None:
        """With one event per page, every event arrives whatever the order and timestamp form."""
        scn = scenario(default_order=order, honour_order_by=False, timestamp_format=fmt)
        async with client_for(scn) as (client, _):
            history = await client.fetch_history(MODEL)
        assert sorted(e.status for e in history.events) == sorted(s for _, s in TIMELINE)
        assert history.pages >= len(TIMELINE)
        assert all(e.created_at.tzinfo is not None for e in history.events)
        assert first_look(history.events).state.status == READY

    async def test_tied_timestamps_still_end_on_ready(self) -> None:
        """When every event has the same created_at, the model is still READY."""
        scn = scenario(
            models=[{"id": MODEL, "timeline": TIMELINE, "equal_timestamps": True}],
        )
        async with client_for(scn) as (client, _):
            history = await client.fetch_history(MODEL)
        assert len({e.created_at for e in history.events}) == 1
        assert first_look(history.events).state.status == READY

    async def test_sends_order_by_bearer_and_client_name(self) -> None:
        """The provider authenticates and asks for an explicit order; the simulator accepts it."""
        async with client_for(scenario(page_size_cap=50)) as (client, sim):
            history = await client.fetch_history(MODEL)
            assert history.pages == 1
            assert sim.stats()["by_status_code"].get("200") == 1

    async def test_pacer_is_charged_per_request(self) -> None:
        """Every page costs one request of the budget."""
        pacer = RequestPacer(60_000)
        async with client_for(scenario(), pacer=pacer) as (client, _):
            history = await client.fetch_history(MODEL)
        assert pacer.requests == history.pages


class TestErrors:
    async def test_wrong_key_is_auth_error(self) -> None:
        """401 becomes AuthError and the message never carries the key."""
        async with client_for(scenario(), key="wrong-key-123") as (client, _):
            with pytest.raises(AuthError) as info:
                await client.fetch_history(MODEL)
        assert info.value.status == 401
        assert "wrong-key-123" not in str(info.value)

    async def test_unknown_model_is_not_found(self) -> None:
        """404 becomes NotFoundError naming the model."""
        async with client_for(scenario()) as (client, _):
            with pytest.raises(NotFoundError, match="nope"):
                await client.fetch_history("nope")

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            ({"kind": "http_500"}, ServerError),
            ({"kind": "http_503"}, ServerError),
            ({"kind": "malformed_json"}, BadResponseError),
            ({"kind": "wrong_content_type"}, BadResponseError),
            ({"kind": "wrong_shape"}, BadResponseError),
            ({"kind": "huge_body"}, BadResponseError),
            ({"kind": "repeat_token"}, BadResponseError),
            ({"kind": "endless_pages"}, BadResponseError),
            ({"kind": "reset_connection"}, TransportError),
        ],
    )
    async def test_faults_become_typed_errors(self, fault: dict[str, Any], error: type) -> None:
        """Every broken answer is a typed error, never a crash or a hang."""
        scn = scenario(page_size_cap=50, faults=[{**fault, "times": None}])
        async with client_for(scn, max_pages=20, max_body_bytes=1024 * 1024) as (client, _):
            with pytest.raises(error):
                await client.fetch_history(MODEL)

    async def test_rate_limited_carries_retry_after(self) -> None:
        """429 becomes RateLimitedError with the Retry-After delay."""
        scn = scenario(faults=[{"kind": "http_429", "retry_after": 7, "times": 1}])
        async with client_for(scn) as (client, _):
            with pytest.raises(RateLimitedError) as info:
                await client.fetch_history(MODEL)
            assert info.value.retry_after == 7.0
            # The next request goes through.
            assert (await client.fetch_history(MODEL)).events

    async def test_slow_answer_times_out(self) -> None:
        """An answer slower than the timeout is a TransportError, promptly."""
        scn = scenario(faults=[{"kind": "slow", "delay": 30, "times": None}])
        async with client_for(scn, timeout=0.3) as (client, _):
            with pytest.raises(TransportError, match="no answer"):
                await client.fetch_history(MODEL)

    async def test_unreachable_api_is_transport_error(self) -> None:
        """A closed port is a TransportError saying it cannot connect."""
        section = CohereSettings(base_url="http://127.0.0.1:9", timeout=2)
        session = open_provider_session("cohere", section, api_key=KEY, concurrency=1)
        try:
            client = open_provider("cohere", section, session=session, pacer=None)
            with pytest.raises(TransportError, match="cannot connect") as info:
                await client.fetch_history(MODEL)
        finally:
            await session.close()
        assert info.value.provider == "cohere"


class TestOddities:
    @pytest.mark.parametrize(
        "kind", ["naive_timestamp", "future_timestamp", "unknown_status", "missing_fields"]
    )
    async def test_tolerated_oddities_are_data(self, kind: str) -> None:
        """Odd but readable answers give events, not errors."""
        scn = scenario(page_size_cap=50, faults=[{"kind": kind, "times": None}])
        async with client_for(scn) as (client, _):
            history = await client.fetch_history(MODEL)
        assert history.events
        assert all(e.created_at.tzinfo is not None for e in history.events)
        if kind == "unknown_status":
            assert "STATUS_SOMETHING_NEW" in {e.status for e in history.events}
        if kind == "future_timestamp":
            assert max(e.created_at for e in history.events) > datetime.now(UTC) + timedelta(
                days=365
            )


class TestModels:
    async def test_get_model_list_models_and_metrics(self) -> None:
        """The model, the account's model list and the last step's metrics are typed."""
        async with client_for(scenario()) as (client, _):
            info = await client.job_details(MODEL)
            listed = await client.list_jobs()
            metrics = await client.final_metrics(MODEL)
            step = await client.last_step_metrics(MODEL)
        assert info.id == MODEL
        assert info.name == "m"
        assert info.status == READY
        assert info.fine_tuned_model == MODEL
        assert {m.id for m in listed} == {MODEL, "other"}
        assert metrics == {"loss": 0.25}
        assert step is not None
        assert step.metrics == {"loss": 0.25}

    async def test_no_metrics_is_none(self) -> None:
        """A model without training-step metrics has no final metrics."""
        async with client_for(scenario()) as (client, _):
            assert await client.final_metrics("other") is None


class TestDigest:
    async def test_repeated_body_is_unchanged_and_not_parsed(self) -> None:
        """The same one-page body again, with its digest passed, comes back as unchanged."""
        async with client_for(scenario(page_size_cap=50)) as (client, _):
            first = await client.fetch_history(MODEL)
            again = await client.fetch_history(MODEL, unless_digest=first.digest)
        assert first.digest is not None
        assert first.events
        assert again.unchanged
        assert again.events == []
        assert again.digest == first.digest

    async def test_a_new_event_gives_a_new_digest(self) -> None:
        """When the history grows, the body differs: parsed again, with a new digest."""
        async with client_for(scenario(page_size_cap=50), advance=1.5) as (client, sim):
            first = await client.fetch_history(MODEL)
            sim.advance(5)
            later = await client.fetch_history(MODEL, unless_digest=first.digest)
        assert not later.unchanged
        assert later.digest != first.digest
        assert len(later.events) > len(first.events)

    async def test_a_multi_page_history_has_no_digest(self) -> None:
        """A history over several pages is never skipped: its digest is None."""
        async with client_for(scenario(page_size_cap=1)) as (client, _):
            history = await client.fetch_history(MODEL)
        assert history.pages > 1
        assert history.digest is None


class TestRegistry:
    def test_cohere_is_registered_lazily(self) -> None:
        """The registry names Cohere first (the default); its class, title and scheme come
        from its module."""
        assert next(iter(PROVIDERS)) == "cohere"
        assert PROVIDERS["cohere"].title == "Cohere"
        assert provider_class("cohere") is CohereProvider
        assert scheme_for("cohere") is COHERE_SCHEME
        with pytest.raises(KeyError):
            provider_class("nope")

    def test_provider_attributes(self) -> None:
        """The class says who it is, how its statuses map, and that it can list jobs."""
        assert (CohereProvider.name, CohereProvider.title) == ("cohere", "Cohere")
        assert CohereProvider.scheme is COHERE_SCHEME
        assert CohereProvider.supports_discovery is True

    def test_session_headers(self) -> None:
        """Requests carry the bearer key and the configured client name."""
        section = CohereSettings(client_name="my-team")
        assert CohereProvider.session_headers(section, "sk-1") == {
            "Authorization": "Bearer sk-1",
            "X-Client-Name": "my-team",
        }

    async def test_from_settings_uses_the_section(self) -> None:
        """open_provider builds the provider from its section: base URL, page size, pacer."""
        pacer = RequestPacer(60_000)
        async with running_simulator(scenario(page_size_cap=50)) as sim:
            sim.advance(10)
            section = CohereSettings(base_url=sim.base_url + "/", page_size=2, timeout=5)
            session = open_provider_session("cohere", section, api_key=KEY, concurrency=2)
            try:
                client = open_provider("cohere", section, session=session, pacer=pacer)
                history = await client.fetch_history(MODEL)
            finally:
                await session.close()
        assert history.pages == 2  # four events, two a page
        assert pacer.requests == 2
        assert client.dashboard_url(MODEL) == f"https://dashboard.cohere.com/fine-tuning/{MODEL}"

    def test_states_from_cohere_events_are_cohere_states(self) -> None:
        """What the core makes of Cohere's events is keyed by provider "cohere"."""
        observation = first_look([Event(READY, parse_timestamp("2024-01-15T09:30:00Z"))])
        assert observation.state.key == ModelState(MODEL).key


class TestErrorsCarryTheProvider:
    async def test_http_and_payload_errors_name_cohere(self) -> None:
        """Errors from the transport (HTTP) and from parsing (shape) both say "cohere"."""
        scn = scenario(page_size_cap=50, faults=[{"kind": "wrong_shape", "times": 1}])
        async with client_for(scn) as (client, _):
            with pytest.raises(BadResponseError) as shape:
                await client.fetch_history(MODEL)
            with pytest.raises(NotFoundError) as missing:
                await client.fetch_history("nope")
        for error in (shape.value, missing.value):
            assert isinstance(error, ApiError)
            assert error.provider == "cohere"
