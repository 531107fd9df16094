"""The Cohere fine-tuning API client: HTTP in, typed events and typed errors out.

It decides nothing about statuses. It sends ``order_by`` explicitly but never
relies on the order it gets back (the core sorts), follows ``next_page_token``
with guards against tokens that repeat and pages that never end, accepts both
timestamp forms the API has shown, caps the body size, checks the content type,
and turns every HTTP and payload problem into a subclass of ``CohereError``.

Polling is the hot path (thousands of requests a second in the benchmarks), so
``list_events`` builds its first-page URL as one string, reads a body whose length
is declared in one call, and can skip decoding altogether: every single-page answer
carries a digest of its body, and a caller that passes the digest it saw last time
(``unless_digest=``) gets ``unchanged=True`` instead of a re-parse of the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from watcher import __version__
from watcher.errors import (
    AuthError,
    BadResponseError,
    CohereError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from watcher.lifecycle import Event
from watcher.pacing import RequestPacer

API_PREFIX = "/v1/finetuning"
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # a model's event history is a few KB
DEFAULT_MAX_PAGES = 200
MAX_RETRY_AFTER = 3600.0
_FRACTION = re.compile(r"(\.\d{6})\d+")
_DIGEST_SIZE = 16  # bytes of BLAKE2b: a collision is not a practical concern


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
    return parsed.astimezone(UTC)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class EventHistory:
    """A model's events as fetched; ``malformed`` counts rows we had to skip.

    ``digest`` identifies the raw body when the history came on one page (None
    otherwise). ``unchanged`` is True when that body was byte for byte the one whose
    digest the caller passed as ``unless_digest``: then ``events`` is empty and was
    not decoded, because the caller already has it.
    """

    events: list[Event]
    malformed: int = 0
    pages: int = 1
    digest: bytes | None = None
    unchanged: bool = False


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The parts of a FinetunedModel the watcher uses; every field may be missing."""

    id: str
    name: str | None = None
    status: str | None = None
    base_model: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StepMetrics:
    """The last training step's metrics."""

    step_number: int | None
    metrics: dict[str, float] = field(default_factory=dict)


def client_headers(api_key: str, client_name: str) -> dict[str, str]:
    """The headers every request carries (the session holds them, not the logs)."""
    return {
        "Authorization": f"Bearer {api_key}",
        "X-Client-Name": client_name,
        "Accept": "application/json",
        "User-Agent": f"finetune-watcher/{__version__}",
    }


def open_session(
    *, api_key: str, timeout: float, concurrency: int, client_name: str = "finetune-watcher"
) -> aiohttp.ClientSession:
    """The process's one HTTP session: keep-alive, bounded timeouts, a right-sized pool.

    Must be called inside the running event loop; the caller owns and closes it.
    """
    return aiohttp.ClientSession(
        headers=client_headers(api_key, client_name),
        # ``total`` bounds the whole request, body included: a ``sock_read`` equal to it
        # could never fire first, and re-arming its timer on every chunk costs ~5 us a
        # request (bench/README.md), so there is none.
        timeout=aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout)),
        connector=aiohttp.TCPConnector(limit=max(4, concurrency * 2), limit_per_host=concurrency),
        raise_for_status=False,
    )


class CohereClient:
    """Typed access to ``/v1/finetuning`` over a session the caller owns."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        timeout: float,
        page_size: int = 50,
        pacer: RequestPacer | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/") + API_PREFIX
        self._timeout = timeout
        self._page_size = page_size
        # The query of every first page of events, encoded once.
        self._events_query = "?" + urlencode({"order_by": "created_at", "page_size": page_size})
        self._pacer = pacer
        self._max_pages = max_pages
        self._max_body = max_body_bytes

    async def list_events(
        self, model_id: str, *, unless_digest: bytes | None = None
    ) -> EventHistory:
        """Every event of ``model_id``, all pages, in no guaranteed order.

        With ``unless_digest`` (the ``digest`` of an earlier answer), a one-page answer
        whose body has that digest is not decoded: the result says ``unchanged``.
        """
        what = f"events of {model_id}"
        path = f"/finetuned-models/{_quote(model_id)}/events"
        raw = await self._get_raw(self._base + path + self._events_query, None, what=what)
        digest = hashlib.blake2b(raw, digest_size=_DIGEST_SIZE).digest()
        if unless_digest is not None and digest == unless_digest:
            # The same bytes as a one-page answer had: the same events, no next page.
            return EventHistory([], 0, 1, digest, unchanged=True)
        events: list[Event] = []
        malformed = 0
        pages = 0
        seen_tokens: set[str] = set()
        while True:
            page = _decode(raw, what)
            rows = page.get("events")
            if rows is None:
                rows = []
            if not isinstance(rows, list):
                raise BadResponseError(f"{what}: 'events' is not a list")
            pages += 1
            for row in rows:
                event = _event_from(row)
                if event is None:
                    malformed += 1
                else:
                    events.append(event)
            token = _next_token(page, seen_tokens, what)
            if not token:
                break
            if pages >= self._max_pages:
                raise BadResponseError(f"{what}: more than {self._max_pages} pages; giving up")
            query = {"order_by": "created_at", "page_size": str(self._page_size),
                     "page_token": token}  # fmt: skip
            raw = await self._get_raw(self._base + path, query, what=what)
        return EventHistory(events, malformed, pages, digest if pages == 1 else None)

    async def get_model(self, model_id: str) -> ModelInfo:
        """The fine-tuned model itself (name, base model, timestamps)."""
        body = await self._get_json(f"/finetuned-models/{_quote(model_id)}", {}, what=model_id)
        raw = body.get("finetuned_model", body)
        if not isinstance(raw, dict):
            raise BadResponseError(f"model {model_id}: 'finetuned_model' is not an object")
        info = _model_from(raw)
        if info is None:
            return ModelInfo(id=model_id)
        return info

    async def list_models(self) -> list[ModelInfo]:
        """Every fine-tuned model of the account (all pages)."""
        models: list[ModelInfo] = []
        async for page in self._pages("/finetuned-models", {}, what="model list"):
            rows = page.get("finetuned_models") or []
            if not isinstance(rows, list):
                raise BadResponseError("model list: 'finetuned_models' is not a list")
            models.extend(m for m in (_model_from(r) for r in rows) if m is not None)
        return models

    async def last_step_metrics(self, model_id: str) -> StepMetrics | None:
        """The metrics of the last training step, or None when there are none."""
        last: StepMetrics | None = None
        async for page in self._pages(
            f"/finetuned-models/{_quote(model_id)}/training-step-metrics",
            {},
            what=f"metrics of {model_id}",
        ):
            rows = page.get("step_metrics") or []
            if not isinstance(rows, list):
                raise BadResponseError(f"metrics of {model_id}: 'step_metrics' is not a list")
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
        raise BadResponseError(f"{what}: more than {self._max_pages} pages; giving up")

    async def _get_json(self, path: str, params: Mapping[str, str], *, what: str) -> dict[str, Any]:
        return _decode(await self._get_raw(self._base + path, params, what=what), what)

    async def _get_raw(self, url: str, params: Mapping[str, str] | None, *, what: str) -> bytes:
        """The body of a successful JSON answer to GET ``url``; every failure typed."""
        if self._pacer is not None:
            await self._pacer.acquire()
        try:
            async with self._session.get(url, params=params) as response:
                if response.status >= 400:
                    raise await self._error_for(response, what)
                content_type = response.content_type
                if content_type != "application/json" and not content_type.endswith("+json"):
                    raise BadResponseError(
                        f"{what}: expected JSON, got {content_type or 'no content type'}",
                        status=response.status,
                    )
                length = response.content_length
                if length is not None and length <= self._max_body:
                    # The declared length is enforced by the HTTP parser: one read.
                    return await response.read()
                return await _read_capped(response, self._max_body, what)
        except TimeoutError as exc:
            raise TransportError(f"{what}: no answer within {self._timeout:g}s") from exc
        except aiohttp.ClientResponseError as exc:
            raise TransportError(f"{what}: {exc.message}", status=exc.status) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{what}: {_describe(exc)}") from exc

    async def _error_for(self, response: aiohttp.ClientResponse, what: str) -> CohereError:
        status = response.status
        message = await _error_message(response)
        text = f"{what}: HTTP {status}" + (f": {message}" if message else "")
        if status in (401, 403):
            return AuthError(text, status=status)
        if status == 404:
            return NotFoundError(text, status=status)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return RateLimitedError(text, retry_after=retry_after)
        if status >= 500 or status in (408, 409):
            return ServerError(text, status=status)
        return CohereError(text, status=status)


def _decode(raw: bytes, what: str) -> dict[str, Any]:
    """A body that must be a JSON object."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadResponseError(f"{what}: the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadResponseError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def _next_token(body: dict[str, Any], seen_tokens: set[str], what: str) -> str:
    """The page token to follow ("" at the end); refuses tokens that come back."""
    token = body.get("next_page_token") or ""
    if not isinstance(token, str):
        raise BadResponseError(f"{what}: next_page_token is not a string")
    if token:
        if token in seen_tokens:
            raise BadResponseError(f"{what}: the API repeated a page token")
        seen_tokens.add(token)
    return token


async def _read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise BadResponseError(f"{what}: body of {response.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BadResponseError(f"{what}: body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _error_message(response: aiohttp.ClientResponse) -> str:
    """The ``message`` of a JSON error body, shortened; empty when there is none."""
    try:
        raw = await response.content.read(8192)
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, aiohttp.ClientError, TimeoutError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        return ""
    message = " ".join(message.split())
    return message[:200]


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    return type(exc).__name__


def _quote(model_id: str) -> str:
    return quote(model_id, safe="")


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


def _model_from(raw: object) -> ModelInfo | None:
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
    return ModelInfo(
        id=model_id,
        name=name if isinstance(name, str) and name else None,
        status=status if isinstance(status, str) and status else None,
        base_model=base_name if isinstance(base_name, str) and base_name else None,
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
    metrics = {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    step = row.get("step_number")
    return StepMetrics(step if isinstance(step, int) else None, metrics)
