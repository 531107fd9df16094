"""Cohere's fine-tuning API (``/v1/finetuning``) as a provider: HTTP in, typed events out.

It decides nothing about statuses: :data:`COHERE_SCHEME` maps them onto the common
lifecycle and the core decides. It sends ``order_by`` explicitly but never relies
on the order it gets back (the core sorts), follows ``next_page_token`` with guards
against tokens that repeat and pages that never end, and holds at most
:data:`MAX_HISTORY_EVENTS` events and :data:`MAX_HISTORY_BYTES` of bodies per poll
(a typed error past them: it cannot stop early at "older than what the core has seen"
without trusting the order). A page over :data:`OFFLOAD_BYTES` is decoded and parsed in
a worker thread, so the event loop keeps answering. It accepts both timestamp forms
the API has shown, and turns every payload problem into a typed error (the shared
transport, :mod:`watcher.providers.http`, types the HTTP ones).

Polling is the hot path, so :meth:`CohereProvider.fetch_history` builds its
first-page URL as one string, and can skip decoding altogether: every single-page
answer carries a digest of its body, and a caller that passes the digest it saw
last time (``unless_digest=``) gets ``unchanged=True`` instead of a re-parse of the
same bytes.

This module does not import aiohttp: the statuses and the scheme are importable
alone (``watcher.settings`` checks ``notify.on`` against them).
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from watcher.errors import BadResponseError
from watcher.lifecycle import Event, Phase, StatusScheme
from watcher.providers.base import History, JobDetails, gc_paused, numbers, path_segment, total

if TYPE_CHECKING:
    import aiohttp

    from watcher.pacing import RequestPacer
    from watcher.providers.http import ApiTransport

__all__ = [
    "COHERE_SCHEME",
    "DELETED",
    "DEPLOYING_API",
    "FAILED",
    "FINETUNING",
    "KNOWN_STATUSES",
    "PAUSED",
    "QUEUED",
    "READY",
    "SETTLED",
    "TEMPORARILY_OFFLINE",
    "UNSPECIFIED",
    "CohereProvider",
    "CohereSection",
    "StepMetrics",
    "parse_timestamp",
]

NAME = "cohere"

# Statuses as Cohere spells them. An unknown status is data, never an error.
UNSPECIFIED = "STATUS_UNSPECIFIED"
QUEUED = "STATUS_QUEUED"
FINETUNING = "STATUS_FINETUNING"
DEPLOYING_API = "STATUS_DEPLOYING_API"
READY = "STATUS_READY"
FAILED = "STATUS_FAILED"
DELETED = "STATUS_DELETED"
TEMPORARILY_OFFLINE = "STATUS_TEMPORARILY_OFFLINE"
PAUSED = "STATUS_PAUSED"

#: Statuses after which a model changes rarely: polled at ``settled_interval``.
SETTLED: frozenset[str] = frozenset({READY, FAILED, DELETED})

#: Cohere's statuses on the common lifecycle. The ranks break ties between events
#: sharing a timestamp: the lifecycle's natural progression. Unknown statuses (60)
#: sit after the running stages and before the outcomes, so a tie between "something
#: new" and READY still ends on READY.
COHERE_SCHEME = StatusScheme(
    provider=NAME,
    table={
        # In the API reference's order (``known``, error messages); the ranks decide ties.
        UNSPECIFIED: (Phase.OTHER, 0),
        QUEUED: (Phase.QUEUED, 10),
        FINETUNING: (Phase.RUNNING, 20),
        DEPLOYING_API: (Phase.RUNNING, 30),
        READY: (Phase.READY, 70),
        FAILED: (Phase.FAILED, 80),
        DELETED: (Phase.OTHER, 90),
        TEMPORARILY_OFFLINE: (Phase.OTHER, 50),
        PAUSED: (Phase.OTHER, 40),
    },
    settled=SETTLED,
    unknown_rank=60,
    prefix="STATUS_",
    labels={
        FINETUNING: "fine-tuning",
        DEPLOYING_API: "deploying",
        TEMPORARILY_OFFLINE: "temporarily offline",
    },
)

KNOWN_STATUSES: tuple[str, ...] = COHERE_SCHEME.known

API_PREFIX = "/v1/finetuning"
DEFAULT_MAX_PAGES = 200
#: Per poll of one job's history (issue 11, finding 8): a real one has a dozen events.
#: 50,000 events (one full-size page of them parses) hold ~10 MB; 16 MiB of bodies.
MAX_HISTORY_EVENTS = 50_000
MAX_HISTORY_BYTES = 16 * 1024 * 1024
#: A page larger than this is decoded and parsed in a worker thread.
OFFLOAD_BYTES = 256 * 1024
DASHBOARD_URL = "https://dashboard.cohere.com/fine-tuning/{id}"
_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_timestamp(value: object) -> datetime:
    """Parse ``2024-01-15T09:30:00Z`` or ``2024-01-17 20:11:45.267960+00:00``.

    A timestamp without an offset is taken as UTC. Raises ``ValueError``.
    """
    if not isinstance(value, str) or not value:
        raise ValueError("not a timestamp")
    text = value.strip()
    if "." in text:
        text = _FRACTION.sub(r"\1", text)  # nanoseconds: keep microseconds
    parsed = datetime.fromisoformat(text)
    tz = parsed.tzinfo
    if tz is UTC:  # "Z" and "+00:00" both give the UTC singleton
        return parsed
    if tz is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise ValueError("timestamp out of range") from None


@dataclass(frozen=True, slots=True)
class StepMetrics:
    """The last training step's metrics."""

    step_number: int | None
    metrics: dict[str, float] = field(default_factory=dict)


class CohereSection(Protocol):
    """What :meth:`CohereProvider.from_settings` reads (``watcher.settings.CohereSettings``)."""

    @property
    def base_url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def page_size(self) -> int: ...
    @property
    def client_name(self) -> str: ...


@total
class CohereProvider:
    """Typed access to ``/v1/finetuning`` through a transport the caller's session backs."""

    name = NAME
    title = "Cohere"
    scheme = COHERE_SCHEME
    supports_discovery = True

    def __init__(
        self,
        transport: ApiTransport,
        *,
        base_url: str,
        page_size: int = 50,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_events: int = MAX_HISTORY_EVENTS,
        max_bytes: int = MAX_HISTORY_BYTES,
    ) -> None:
        self._transport = transport
        # Bound once: called on every poll.
        self._get_raw = transport.get_raw
        self._decode = transport.decode
        self._digest = transport.digest
        self._base = base_url.rstrip("/") + API_PREFIX
        self._page_size = page_size
        # The query of every first page of events, encoded once.
        self._events_query = "?" + urlencode({"order_by": "created_at", "page_size": page_size})
        self._max_pages = max_pages
        self._max_events = max_events
        self._max_bytes = max_bytes
        # The URL is built from parts on every poll, without parsing (http.UrlBase, P19).
        self._api = transport.url_base(self._base)

    @staticmethod
    def session_headers(section: CohereSection, api_key: str) -> dict[str, str]:
        """The headers every request carries (the session holds them, not the logs)."""
        return {"Authorization": f"Bearer {api_key}", "X-Client-Name": section.client_name}

    @classmethod
    def from_settings(
        cls,
        section: CohereSection,
        session: aiohttp.ClientSession,
        pacer: RequestPacer | None,
    ) -> CohereProvider:
        """The provider for a ``cohere:`` section over ``session`` (opened with
        :meth:`session_headers`), charging ``pacer`` for every request."""
        from watcher.providers.http import ApiTransport  # deferred: keeps aiohttp out of settings

        transport = ApiTransport(session, provider=NAME, pacer=pacer, timeout=section.timeout)
        return cls(transport, base_url=section.base_url, page_size=section.page_size)

    def dashboard_url(self, job_id: str) -> str:
        """The model's page in Cohere's dashboard."""
        return DASHBOARD_URL.replace("{id}", job_id)

    async def fetch_history(self, job_id: str, *, unless_digest: bytes | None = None) -> History:
        """Every event of ``job_id``, all pages, in no guaranteed order.

        With ``unless_digest`` (the ``digest`` of an earlier answer), a one-page answer
        whose body has that digest is not decoded: the result says ``unchanged``.
        """
        # Built on every poll (< 1 us: the id's quoting has a fast path): a cache of them
        # cost ~230 B per watched model (issue 15, goal 3).
        what, events_path = f"events of {job_id}", f"/finetuned-models/{_quote(job_id)}/events"
        raw = await self._get_raw(
            self._api.url(events_path, self._events_query[1:]), None, what=what
        )
        digest = self._digest(raw)
        if unless_digest is not None and digest == unless_digest:
            # The same bytes as a one-page answer had: the same events, no next page.
            return History([], 0, 1, digest, unchanged=True)
        events: list[Event] = []
        malformed = 0
        pages = 0
        size = 0
        seen_tokens: set[str] = set()
        while True:
            # Bounded per poll (issue 11, finding 8): bytes read and events held. The
            # order is not relied on (see the module docstring), so there is no stopping
            # early at "older than what we have": past the budget is a typed error.
            size += len(raw)
            if size > self._max_bytes:
                raise _bad(f"{what}: more than {self._max_bytes} bytes of events; giving up")
            budget = self._max_events - len(events)
            if len(raw) > OFFLOAD_BYTES:  # parsed in a worker thread: the loop stays live
                from anyio import to_thread

                page, found, bad = await to_thread.run_sync(
                    _read_events_quietly, self._decode, raw, what, budget, self._max_events
                )
            else:
                page, found, bad = _read_events(self._decode, raw, what, budget, self._max_events)
            events.extend(found)
            malformed += bad
            pages += 1
            token = _next_token(page, seen_tokens, what)
            if not token:
                break
            if pages >= self._max_pages:
                raise _bad(f"{what}: more than {self._max_pages} pages; giving up")
            query = {"order_by": "created_at", "page_size": str(self._page_size),
                     "page_token": token}  # fmt: skip
            raw = await self._get_raw(self._api.url(events_path), query, what=what)
        return History(events, malformed, pages, digest if pages == 1 else None)

    async def job_details(self, job_id: str) -> JobDetails:
        """The fine-tuned model itself (name, base model, timestamps)."""
        body = await self._get_json(f"/finetuned-models/{_quote(job_id)}", {}, what=job_id)
        raw = body.get("finetuned_model", body)
        if not isinstance(raw, dict):
            raise _bad(f"model {job_id}: 'finetuned_model' is not an object")
        details = _details_from(raw)
        if details is None:
            return JobDetails(id=job_id)
        return details

    async def list_jobs(self) -> list[JobDetails]:
        """Every fine-tuned model of the account (all pages)."""
        models: list[JobDetails] = []
        async for page in self._pages("/finetuned-models", {}, what="model list"):
            rows = page.get("finetuned_models") or []
            if not isinstance(rows, list):
                raise _bad("model list: 'finetuned_models' is not a list")
            models.extend(m for m in (_details_from(r) for r in rows) if m is not None)
        return models

    async def final_metrics(self, job_id: str) -> dict[str, float] | None:
        """The last training step's metrics, or None when there are none."""
        step = await self.last_step_metrics(job_id)
        return step.metrics if step is not None and step.metrics else None

    async def last_step_metrics(self, job_id: str) -> StepMetrics | None:
        """The last training step (its number and metrics), or None when there is none."""
        last: StepMetrics | None = None
        async for page in self._pages(
            f"/finetuned-models/{_quote(job_id)}/training-step-metrics",
            {},
            what=f"metrics of {job_id}",
        ):
            rows = page.get("step_metrics") or []
            if not isinstance(rows, list):
                raise _bad(f"metrics of {job_id}: 'step_metrics' is not a list")
            for row in rows:
                step = _metrics_from(row)
                if step is not None and (
                    last is None or (step.step_number or 0) >= (last.step_number or 0)
                ):
                    last = step
        return last

    async def _pages(
        self, path: str, params: Mapping[str, str], *, what: str
    ) -> AsyncIterator[dict[str, Any]]:
        seen_tokens: set[str] = set()
        token = ""
        for _ in range(self._max_pages):
            query = dict(params)
            query["page_size"] = str(self._page_size)
            if token:
                query["page_token"] = token
            body = await self._get_json(path, query, what=what)
            yield body
            token = _next_token(body, seen_tokens, what)
            if not token:
                return
        raise _bad(f"{what}: more than {self._max_pages} pages; giving up")

    async def _get_json(self, path: str, params: Mapping[str, str], *, what: str) -> dict[str, Any]:
        return await self._transport.get_json(self._base + path, params, what=what)


def _bad(message: str) -> BadResponseError:
    return BadResponseError(message, provider=NAME)


def _next_token(body: dict[str, Any], seen_tokens: set[str], what: str) -> str:
    """The page token to follow ("" at the end); refuses tokens that come back."""
    token = body.get("next_page_token") or ""
    if not isinstance(token, str):
        raise _bad(f"{what}: next_page_token is not a string")
    if token:
        if token in seen_tokens:
            raise _bad(f"{what}: the API repeated a page token")
        seen_tokens.add(token)
    return token


def _read_events(
    decode: Callable[[bytes, str], dict[str, Any]],
    raw: bytes,
    what: str,
    budget: int,
    limit: int,
) -> tuple[dict[str, Any], list[Event], int]:
    """One page of events: the decoded page, its usable events and how many rows were
    not; more than ``budget`` rows is a typed error (``limit`` events per history)."""
    page = decode(raw, what)
    rows = page.get("events")
    if rows is None:
        rows = []
    if not isinstance(rows, list):
        raise _bad(f"{what}: 'events' is not a list")
    if len(rows) > budget:
        raise _bad(f"{what}: more than {limit} events; giving up")
    events: list[Event] = []
    malformed = 0
    for row in rows:
        event = _event_from(row)
        if event is None:
            malformed += 1
        else:
            events.append(event)
    return page, events, malformed


def _read_events_quietly(
    decode: Callable[[bytes, str], dict[str, Any]],
    raw: bytes,
    what: str,
    budget: int,
    limit: int,
) -> tuple[dict[str, Any], list[Event], int]:
    """:func:`_read_events` with the garbage collector paused (a worker thread's big page)."""
    with gc_paused():
        return _read_events(decode, raw, what, budget, limit)


def _quote(model_id: str) -> str:
    return path_segment(model_id, provider=NAME)  # on every poll: bound at import (no aiohttp)


def _event_from(row: object) -> Event | None:
    if not isinstance(row, dict):
        return None
    status = row.get("status")
    if not isinstance(status, str) or not status:
        return None
    try:
        created_at = parse_timestamp(row.get("created_at"))
    except ValueError:
        return None
    user_id = row.get("user_id")
    # Interned: a handful of statuses repeat across every model, and states keep them.
    return Event(
        sys.intern(status), created_at, user_id if isinstance(user_id, str) and user_id else None
    )


def _optional_time(value: object) -> datetime | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _details_from(raw: object) -> JobDetails | None:
    if not isinstance(raw, dict):
        return None
    model_id = raw.get("id")
    if not isinstance(model_id, str) or not model_id:
        return None
    settings = raw.get("settings")
    base = settings.get("base_model") if isinstance(settings, dict) else None
    base_name = base.get("name") if isinstance(base, dict) else None
    name = raw.get("name")
    status = raw.get("status")
    return JobDetails(
        id=model_id,
        name=name if isinstance(name, str) and name else None,
        status=status if isinstance(status, str) and status else None,
        base_model=base_name if isinstance(base_name, str) and base_name else None,
        # A Cohere fine-tune is served under its own id: the model and the job are one.
        fine_tuned_model=model_id,
        created_at=_optional_time(raw.get("created_at")),
        updated_at=_optional_time(raw.get("updated_at")),
        completed_at=_optional_time(raw.get("completed_at")),
    )


def _metrics_from(row: object) -> StepMetrics | None:
    if not isinstance(row, dict):
        return None
    raw = row.get("metrics")
    if not isinstance(raw, dict):
        return None
    metrics = numbers(raw)
    step = row.get("step_number")
    return StepMetrics(step if isinstance(step, int) else None, metrics)


if TYPE_CHECKING:
    from watcher.providers import ProviderClass
    from watcher.providers.base import Provider

    def _conforms(provider: CohereProvider) -> tuple[Provider, ProviderClass]:
        return provider, CohereProvider  # mypy checks both protocols here
