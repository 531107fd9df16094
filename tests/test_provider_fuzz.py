"""Hostile answers at every provider: the only exceptions out are ApiError subclasses.

Issue 11, finding 1: JSON nested ~1,000 deep, a timestamp one hour past year 9999 (or
before year 1), a metric of ``1`` with 400 zeros, ... ended the daemon. These property
tests throw arbitrary JSON (deep nesting, huge ints, NaN/Infinity, odd strings, wrong
types in every field the providers read), arbitrary bytes and arbitrary headers
(content type and length, ``Retry-After``, ``Deprecation``, ``Sunset``) at every public
method of every provider, through a real loopback HTTP server: one raw asyncio server
for the whole module whose next answer each example sets (raw, so that a lying
``Content-Length`` goes out as generated). What comes back must be an
:class:`~watcher.errors.ApiError` or a well-typed result.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.errors import ApiError, BadResponseError
from watcher.lifecycle import Event
from watcher.providers.azure_openai import AzureOpenAIProvider
from watcher.providers.base import History, JobDetails, total
from watcher.providers.cohere import CohereProvider, StepMetrics
from watcher.providers.fireworks import FireworksProvider
from watcher.providers.http import ApiTransport, forget_deprecations, open_session
from watcher.providers.mistral import MistralProvider
from watcher.providers.openai import JobEvent, OpenAIProvider
from watcher.providers.together import TogetherProvider

PROVIDERS_DIR = Path(__file__).resolve().parents[1] / "watcher" / "providers"
#: Every field name a provider reads (``.get("...")``): the fuzzed objects use them.
FIELDS = sorted(
    {
        name
        for path in PROVIDERS_DIR.glob("*.py")
        for name in re.findall(r'\.get\("([A-Za-z_]+)"', path.read_text())
    }
)

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- The server ---------------------------------------------------------------------


@dataclass
class Answer:
    """What the server sends next (to every request until changed)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes = b"{}"
    content_length: str | None = None  # None: the body's true length

    def raw(self) -> bytes:
        length = str(len(self.body)) if self.content_length is None else self.content_length
        lines = [f"HTTP/1.1 {self.status} Whatever"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines += [f"Content-Length: {length}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + self.body


class Loopback:
    """A raw HTTP/1.1 server on 127.0.0.1 answering every request with ``answer``."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(self.answer.raw())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    server: Loopback
    providers: dict[str, Any]

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    loop = asyncio.new_event_loop()
    server = Loopback()
    base = loop.run_until_complete(server.start())

    async def make() -> tuple[Any, dict[str, Any]]:
        session = open_session(
            headers={"Authorization": "Bearer fuzz-key"}, timeout=5, concurrency=4
        )

        def transport(name: str) -> ApiTransport:
            return ApiTransport(session, provider=name, timeout=5)

        providers: dict[str, Any] = {
            "cohere": CohereProvider(transport("cohere"), base_url=base, max_pages=5),
            "openai": OpenAIProvider(transport("openai"), base_url=base + "/v1", max_pages=5),
            "azure-openai": AzureOpenAIProvider(
                transport("azure-openai"), base_url=base + "/openai", query={"api-version": "x"}
            ),
            "mistral": MistralProvider(transport("mistral"), base_url=base, max_pages=5),
            "together": TogetherProvider(transport("together"), base_url=base),
            "fireworks": FireworksProvider(
                transport("fireworks"), base_url=base, account_id="acct", max_pages=5
            ),
        }
        return session, providers

    session, providers = loop.run_until_complete(make())
    yield World(loop, server, providers)
    loop.run_until_complete(session.close())
    assert server.server is not None
    server.server.close()
    loop.run_until_complete(server.server.wait_closed())
    loop.close()
    forget_deprecations()


# --- What comes back must be well-typed ----------------------------------------------


def _utf8(value: str) -> None:
    value.encode("utf-8")  # a lone surrogate would break the database, a log, a terminal


def _check_time(value: object) -> None:
    assert value is None or (isinstance(value, datetime) and value.tzinfo is not None)


def _check_metrics(metrics: object) -> None:
    assert isinstance(metrics, dict)
    for key, number in metrics.items():
        assert isinstance(key, str)
        _utf8(key)
        assert type(number) is float
        assert math.isfinite(number)


def check_event(event: object) -> None:
    assert isinstance(event, Event)
    assert isinstance(event.status, str)
    assert event.status
    _utf8(event.status)
    assert isinstance(event.created_at, datetime)
    assert event.created_at.tzinfo is not None
    assert event.user_id is None or isinstance(event.user_id, str)


def check_history(history: object) -> None:
    assert isinstance(history, History)
    assert isinstance(history.events, list)
    for event in history.events:
        check_event(event)
    assert isinstance(history.malformed, int)
    assert history.malformed >= 0
    assert isinstance(history.pages, int)
    assert history.pages >= 1


def check_details(details: object) -> None:
    assert isinstance(details, JobDetails)
    assert isinstance(details.id, str)
    assert details.id
    for text in (
        details.id,
        details.name,
        details.status,
        details.base_model,
        details.fine_tuned_model,
        details.error_message,
    ):
        assert text is None or isinstance(text, str)
        if text is not None:
            _utf8(text)
    for when in (details.created_at, details.updated_at, details.completed_at):
        _check_time(when)
    _check_metrics(details.metrics)


def check_metrics(result: object) -> None:
    if result is not None:
        _check_metrics(result)


def check_jobs(result: object) -> None:
    assert isinstance(result, list)
    for details in result:
        check_details(details)


def check_steps(result: object) -> None:
    if result is not None:
        assert isinstance(result, StepMetrics)
        assert result.step_number is None or isinstance(result.step_number, int)
        _check_metrics(result.metrics)


def check_events(result: object) -> None:
    assert isinstance(result, tuple)
    events, malformed = result
    assert isinstance(malformed, int)
    for event in events:
        assert isinstance(event, JobEvent)
        _check_time(event.created_at)
        for text in (event.id, event.level, event.message, event.type):
            assert isinstance(text, str)
            _utf8(text)


Call = tuple[str, Callable[[Any], Awaitable[Any]], Callable[[object], None]]

CALLS: list[Call] = [
    ("fetch_history", lambda p: p.fetch_history("job-1"), check_history),
    (
        "fetch_history(digest)",
        lambda p: p.fetch_history("job-1", unless_digest=b"0" * 16),
        check_history,
    ),
    ("job_details", lambda p: p.job_details("job-1"), check_details),
    ("final_metrics", lambda p: p.final_metrics("job-1"), check_metrics),
    ("list_jobs", lambda p: p.list_jobs(), check_jobs),
]
EXTRA: dict[str, list[Call]] = {
    "cohere": [("last_step_metrics", lambda p: p.last_step_metrics("job-1"), check_steps)],
    "openai": [("events", lambda p: p.events("job-1"), check_events)],
    "azure-openai": [("events", lambda p: p.events("job-1", limit=3), check_events)],
}
NAMES = ["cohere", "openai", "azure-openai", "mistral", "together", "fireworks"]


async def _total(provider: Any, name: str) -> list[str]:
    """Call every public method; fail on any exception that is not an ApiError."""
    outcomes: list[str] = []
    for label, call, check in CALLS + EXTRA.get(name, []):
        error: ApiError | None = None
        try:
            result = await asyncio.wait_for(call(provider), 20)
        except ApiError as exc:
            error = exc
        if error is not None:
            assert error.provider == provider.name, (label, error)
            str(error).encode("utf-8")  # printable, storable
            outcomes.append(type(error).__name__)
        else:
            check(result)
            outcomes.append("ok")
    return outcomes


# --- Strategies ---------------------------------------------------------------------

HUGE = [10**400, -(10**400), 2**63, 2**64 + 1, 253402300800, -62135596801, 10**20]
ODD_TIMES = [
    "9999-12-31T23:00:00-05:00",
    "0001-01-01T00:30:00+05:00",
    "9999-12-31T23:59:59.999999999Z",
    "0001-01-01T00:00:00Z",
    "2026-11-30T08:00:00Z",
    "2026-11-30 08:00:00.123456789+00:00",
    "2026-13-45T99:99:99Z",
    "",
    " ",
    "\x00",
    "\ud800",
    "1" + "0" * 5000,
]
ODD_TEXT = ["", "\ud800", "\udfff", "a\ud800b", "\x1b[31m", "\u202e", "STATUS_READY", "succeeded",
            "COMPLETED", "JOB_STATE_COMPLETED", "x" * 10_000, "NaN", "null"]  # fmt: skip

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(ODD_TIMES),
    st.sampled_from(ODD_TEXT),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=12,
)
#: An object shaped like an answer: known fields, rows of known fields, anything inside.
rows = st.lists(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6), max_size=3)
shaped = st.dictionaries(st.sampled_from(FIELDS), st.one_of(json_values, rows), max_size=8)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """JSON nested ``depth`` deep, at the top or under a field a provider reads."""
    depth = draw(st.integers(min_value=900, max_value=20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    core = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from([None, *FIELDS]))
    if where is None:
        return core.encode()
    row = draw(st.booleans())
    inner = f'[{{"{where}": {core}}}]' if row else core
    field_name = draw(st.sampled_from(FIELDS))
    return f'{{"{field_name}": {inner}, "{where}": {core}}}'.encode()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    shaped.map(_dumps),
    json_values.map(_dumps),
    deep(),
    st.binary(max_size=300),
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"1e999", b"-Infinity", b"NaN", b"\xff\xfe{}"]),
)

header_text = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.sampled_from(
        ["@99999999999999999999", "@-1", "true", "Fri, 31 Dec 9999 23:00:00 -0500",
         "Mon, 01 Jan 0001 00:30:00 +0500", "1e400", "-5", "nan", "inf", "Sat, 99 Foo 2026"]
    ),
)  # fmt: skip
content_types = st.one_of(
    st.sampled_from(
        ["application/json", "application/problem+json", "application/json; charset=latin-1",
         "application/json; charset=x-bogus", "text/html", "", "application/+json", ";;;"]
    ),
    header_text,
)  # fmt: skip
statuses = st.one_of(
    st.just(200),
    st.sampled_from([201, 204, 301, 302, 307, 400, 401, 403, 404, 408, 409, 410, 422, 429, 500]),
    st.integers(min_value=200, max_value=599),
)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    headers = {"Content-Type": draw(content_types)}
    for name in ("Retry-After", "retry-after-ms", "Deprecation", "Sunset", "Location"):
        if draw(st.booleans()):
            headers[name] = draw(header_text)
    body = draw(bodies)
    length = draw(
        st.one_of(
            st.none(),
            st.none(),
            st.integers(min_value=0, max_value=len(body) + 10).map(str),
            st.sampled_from(["-1", "abc", "1e3", "99999999999999999999999"]),
        )
    )
    return Answer(draw(statuses), headers, body, length)


# --- The properties -----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(answer=answers())
def test_every_method_of_every_provider_is_total(world: World, name: str, answer: Answer) -> None:
    """Any status, headers and body: an ApiError or a well-typed result, never a crash."""
    forget_deprecations()
    world.server.answer = answer
    world.run(_total(world.providers[name], name))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(body=st.one_of(shaped.map(_dumps), deep()))
def test_successful_answers_with_any_content_are_total(
    world: World, name: str, body: bytes
) -> None:
    """The common case: a 200 with a JSON type and any content at all."""
    world.server.answer = Answer(body=body)
    world.run(_total(world.providers[name], name))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(body=st.one_of(shaped.map(_dumps), deep(), st.binary(max_size=100)),
       status=st.sampled_from([400, 401, 403, 404, 409, 422, 429, 500, 502, 503]))  # fmt: skip
def test_error_bodies_are_total(world: World, name: str, body: bytes, status: int) -> None:
    """An error status whose body is anything (deep JSON in an error body killed the daemon)."""
    world.server.answer = Answer(status=status, body=body)
    outcomes = world.run(_total(world.providers[name], name))
    assert "ok" not in outcomes[:1] or name == "mistral"  # mistral maps some 4xx to "gone"


# --- The findings, one by one ---------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "answer",
    [
        Answer(body=DEEP),
        Answer(body=b'{"events": ' + DEEP + b', "data": ' + DEEP + b"}"),
        Answer(status=500, body=b'{"error": ' + DEEP + b"}"),
        Answer(status=502, body=b'{"message": ' + b"[" * 1000 + b"]" * 1000 + b"}"),
    ],
    ids=["top", "field", "error-500", "error-1000"],
)
def test_deep_json_is_a_typed_error(world: World, name: str, answer: Answer) -> None:
    world.server.answer = answer
    world.run(_total(world.providers[name], name))


COHERE_EVENTS = {
    "events": [
        {"status": "STATUS_QUEUED", "created_at": "9999-12-31T23:00:00-05:00"},
        {"status": "STATUS_FINETUNING", "created_at": "0001-01-01T00:30:00+05:00"},
        {"status": "STATUS_READY", "created_at": "2026-11-30T08:00:00Z"},
    ],
    "finetuned_model": {
        "id": "job-1",
        "created_at": "9999-12-31T23:00:00-05:00",
        "updated_at": "0001-01-01T00:30:00+05:00",
    },
}


def test_out_of_range_timestamps_are_skipped_rows(world: World) -> None:
    """Year 9999 west of UTC, year 1 east of it: malformed rows, not OverflowError."""
    world.server.answer = Answer(body=json.dumps(COHERE_EVENTS).encode())
    provider = world.providers["cohere"]
    history = world.run(provider.fetch_history("job-1"))
    assert [e.status for e in history.events] == ["STATUS_READY"]
    assert history.malformed == 2
    details = world.run(provider.job_details("job-1"))
    assert details.created_at is None
    assert details.updated_at is None


HUGE_METRIC = b"1" + b"0" * 400


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("cohere", b'{"step_metrics": [{"step_number": 3, "metrics": {"loss": ' + HUGE_METRIC
         + b', "acc": 0.5}}]}'),
        ("openai", b'{"data": [{"id": "e1", "created_at": 1, "type": "metrics", "data": '
         b'{"step": 3, "train_loss": ' + HUGE_METRIC + b', "acc": 0.5}}], "has_more": false}'),
        ("openai", b'{"id": "j", "status": "running", "created_at": ' + HUGE_METRIC + b"}"),
        ("mistral", b'{"id": "j", "status": "RUNNING", "created_at": ' + HUGE_METRIC + b', '
         b'"checkpoints": [{"metrics": {"train_loss": ' + HUGE_METRIC + b', "acc": 0.5}}]}'),
    ],
)  # fmt: skip
def test_huge_numbers_are_skipped(world: World, name: str, body: bytes) -> None:
    """A metric of 1 with 400 zeros does not fit a float: that number is left out."""
    world.server.answer = Answer(body=body)
    world.run(_total(world.providers[name], name))


# --- The backstop itself -------------------------------------------------------------


@total
class _Broken:
    name = "broken"

    async def fetch_history(self, job_id: str) -> None:
        raise KeyError(job_id)

    async def job_details(self, job_id: str) -> None:
        raise asyncio.CancelledError

    async def list_jobs(self) -> None:
        raise ApiError("typed already", provider="broken")


async def test_total_types_data_errors_and_lets_the_rest_through() -> None:
    broken = _Broken()
    with pytest.raises(BadResponseError, match="fetch_history job-1: unusable answer") as caught:
        await broken.fetch_history("job-1")
    assert caught.value.provider == "broken"
    assert isinstance(caught.value.__cause__, KeyError)
    with pytest.raises(asyncio.CancelledError):
        await broken.job_details("job-1")
    with pytest.raises(ApiError, match="typed already") as typed:
        await broken.list_jobs()
    assert type(typed.value) is ApiError


@pytest.mark.parametrize(
    "cls",
    [CohereProvider, OpenAIProvider, AzureOpenAIProvider, MistralProvider, TogetherProvider,
     FireworksProvider],
)  # fmt: skip
def test_every_public_coroutine_of_every_provider_is_guarded(cls: type[Any]) -> None:
    for method in ("fetch_history", "job_details", "final_metrics", "list_jobs"):
        assert getattr(getattr(cls, method), "_total", False), (cls, method)
