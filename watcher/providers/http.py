"""The shared HTTP transport: one GET, paced, bounded and checked, every failure typed.

Every provider sends its requests through an :class:`ApiTransport`: it takes a slot
from the provider's :class:`~watcher.pacing.RequestPacer`, caps the body size,
insists on a JSON content type, and turns every HTTP status and network problem
into a subclass of :class:`~watcher.errors.ApiError` carrying the provider's name
(``Retry-After`` parsed for 429). It decides nothing else. It follows no redirect: a
3xx is a :class:`~watcher.errors.BadResponseError` naming the target's origin only
(an answer from wherever it points must not be trusted as the API's). A body over
:data:`OFFLOAD_BYTES` is decoded in a worker thread (:meth:`ApiTransport.decode_async`),
and a decode never raises anything but ``BadResponseError`` (deep nesting included).

Polling is the hot path (thousands of requests a second in the benchmarks), so a
caller may pass a whole URL as one string with ``params=None`` (no query encoding),
a body whose length is declared is read in one call, a plain ``application/json``
content type is accepted without parsing it, the pacer's slot is taken without a
coroutine when it is free, and :func:`body_digest` (the interpreter's keyed hash, not
a cryptographic one) lets a provider skip decoding a body it has already seen
(bench/README.md).

Deprecation: an API that announces its own end with ``Deprecation`` (RFC 9745) or
``Sunset`` (RFC 8594) response headers (Cohere's fine-tuning API is deprecated) is
noted once per provider: one warning in the log naming the provider and both values,
and a :class:`DeprecationInfo` in a process-wide registry (:func:`deprecations`, read
by the metrics at scrape time; :attr:`ApiTransport.deprecation`). The hot path pays
one header lookup per response until its provider is noted, none after; ``Sunset``
alone is looked for on a transport's first response.

Secrets: an API's text enters here (an error body's message). Before it becomes an
``ApiError`` message it is scrubbed of every registered secret and of the request's
own credentials (an error page that echoes the ``Authorization`` header must not put
the key into the database, a notification or a terminal), freed of control
characters and capped (:func:`watcher.redact.safe_text`). Ids go into a URL only as
one path segment (:func:`path_segment`).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any

import aiohttp
import anyio.to_thread
import structlog
from yarl import URL

from watcher import __version__
from watcher.errors import (
    ApiError,
    AuthError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from watcher.pacing import RequestPacer
from watcher.providers.base import gc_paused, path_segment
from watcher.redact import ERROR_LIMIT, safe_text

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_RETRY_AFTER",
    "OFFLOAD_BYTES",
    "USER_AGENT",
    "ApiTransport",
    "DeprecationInfo",
    "UrlBase",
    "body_digest",
    "client_timeout",
    "decode_object",
    "deprecations",
    "forget_deprecations",
    "open_session",
    "parse_retry_after",
    "path_segment",
    "retry_after_of",
]

DEFAULT_MAX_BODY = 4 * 1024 * 1024  # a job's status history is a few KB
#: Content-Type values taken as JSON as they are (any other is parsed and checked).
_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8"})
#: Bodies larger than this are decoded in a worker thread (``decode_async``).
OFFLOAD_BYTES = 256 * 1024
MAX_RETRY_AFTER = 3600.0
USER_AGENT = f"finetune-watcher/{__version__}"
#: A digest: the body's 64-bit hash (signed, as ``hash`` gives it) and its length.
_DIGEST = struct.Struct("<qQ")

log = structlog.get_logger("watcher.providers")


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
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        except OverflowError:  # year 1 east of UTC, year 9999 west of it
            return None
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """How long a 429 asks us to wait: ``retry-after-ms`` (OpenAI, Azure, Together and
    Fireworks send it; their SDKs read it first), else ``Retry-After``; None if neither."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000.0
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            return min(MAX_RETRY_AFTER, max(0.0, seconds))
    return parse_retry_after(headers.get("Retry-After"))


@dataclass(frozen=True, slots=True)
class DeprecationInfo:
    """A provider's API said it is deprecated: the header values as sent, and parsed.

    ``deprecation`` is the ``Deprecation`` header (RFC 9745: ``@<unix seconds>``; earlier
    drafts: ``true`` or an HTTP date), ``sunset`` the ``Sunset`` header (RFC 8594: an HTTP
    date, when the API stops answering); None when not sent. ``deprecated_at`` and
    ``sunset_at`` are those times when they parse (aware UTC), else None.
    """

    provider: str
    deprecation: str | None
    sunset: str | None
    deprecated_at: datetime | None = None
    sunset_at: datetime | None = None

    @classmethod
    def from_headers(cls, provider: str, headers: Mapping[str, str]) -> DeprecationInfo | None:
        """What ``headers`` announce, or None when they carry neither header."""
        deprecation = headers.get("Deprecation")
        sunset = headers.get("Sunset")
        if deprecation is None and sunset is None:
            return None
        return cls(
            provider,
            deprecation,
            sunset,
            _parse_header_date(deprecation, structured=True),
            _parse_header_date(sunset, structured=False),
        )

    @property
    def sunset_timestamp(self) -> float | None:
        """``sunset_at`` in unix seconds (the metric's value), None when unknown."""
        return self.sunset_at.timestamp() if self.sunset_at is not None else None


def _parse_header_date(value: str | None, *, structured: bool) -> datetime | None:
    """``@1757894400`` (a structured-field date, when ``structured``) or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    if structured and text.startswith("@"):
        try:
            return datetime.fromtimestamp(int(text[1:]), UTC)
        except (ValueError, OverflowError, OSError):
            return None
    try:
        when = parsedate_to_datetime(text)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


#: Every provider whose API announced its deprecation in this process, by name.
_DEPRECATIONS: dict[str, DeprecationInfo] = {}


def deprecations() -> dict[str, DeprecationInfo]:
    """The providers whose API sent ``Deprecation`` or ``Sunset`` so far (a copy)."""
    return dict(_DEPRECATIONS)


def forget_deprecations() -> None:
    """Forget every noted deprecation (tests: the registry lives as long as the process)."""
    _DEPRECATIONS.clear()


def _note_deprecation(info: DeprecationInfo) -> None:
    """Record ``info`` and log it, the first time its provider announces a deprecation."""
    if info.provider in _DEPRECATIONS:
        return
    _DEPRECATIONS[info.provider] = info
    log.warning(
        "provider API deprecated",
        provider=info.provider,
        deprecation=info.deprecation,
        sunset=info.sunset,
    )


def _request_secrets(response: aiohttp.ClientResponse) -> list[str]:
    """The credentials this request carried (``Authorization``, ``api-key``, ...): scrubbed
    from an answer that echoes them, registered or not."""
    found: list[str] = []
    for name, value in response.request_info.headers.items():
        lowered = name.lower()
        if any(word in lowered for word in ("auth", "key", "token", "secret")):
            found.append(value)
            found.extend(word for word in value.split() if len(word) >= 8)
    return found


def body_digest(raw: bytes) -> bytes:
    """A short fingerprint of a response body (is this the body we saw last time?).

    16 bytes: the interpreter's hash of the bytes (SipHash-1-3, 64 bits, keyed with the
    process's random hash seed) and the length. It is 5-10 times cheaper than BLAKE2b on
    the job bodies every poll hashes (0.2-2 KB), and enough for what a
    digest is for: two different bodies of one job in a row with the same digest has a
    chance of 2**-64, and an API that wanted to hide a change could simply not send it.
    A digest is only ever compared within the process that made it (the daemon keeps it
    in memory, never in the store): another process, another key.
    """
    return _DIGEST.pack(hash(raw), len(raw))


def decode_object(raw: bytes, what: str, *, provider: str = "") -> dict[str, Any]:
    """A body that must be a JSON object; ``BadResponseError`` otherwise."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadResponseError(f"{what}: the JSON is nested too deep", provider=provider) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadResponseError(f"{what}: the body is not valid JSON", provider=provider) from exc
    if not isinstance(body, dict):
        raise BadResponseError(
            f"{what}: expected a JSON object, got {type(body).__name__}", provider=provider
        )
    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw):
        _without_surrogates(body)  # in place
    return body


#: A ``\uD800``-``\uDFFF`` escape: JSON lets a body spell a lone surrogate, which no
#: UTF-8 database, log or terminal takes.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _without_surrogates(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with every lone surrogate in its strings (keys too) replaced by U+FFFD;
    iterative, so any depth ``json.loads`` accepted is fine."""

    def fix(text: str) -> str:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

    def clean(value: Any, stack: list[Any]) -> Any:
        if isinstance(value, str):
            return fix(value)
        if isinstance(value, dict | list):
            stack.append(value)
        return value

    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            items = [(fix(k), clean(v, stack)) for k, v in node.items()]
            node.clear()
            node.update(items)
        else:
            node[:] = [clean(v, stack) for v in node]
    return body


def _decode_quietly(raw: bytes, what: str, *, provider: str) -> dict[str, Any]:
    """:func:`decode_object` with the garbage collector paused (a worker thread's big body)."""
    with gc_paused():
        return decode_object(raw, what, provider=provider)


def client_timeout(timeout: float) -> aiohttp.ClientTimeout:
    """Bounds for one request of at most ``timeout`` seconds, connecting included.

    ``total`` bounds the whole request, body included: a ``sock_read`` equal to it
    could never fire first, and re-arming its timer on every chunk costs ~5 us a
    request (bench/README.md), so there is none.
    """
    return aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout))


def open_session(
    *, headers: Mapping[str, str], timeout: float, concurrency: int
) -> aiohttp.ClientSession:
    """One provider's HTTP session: keep-alive, bounded timeouts, a right-sized pool.

    ``headers`` (the provider's auth and client headers) ride on every request: the
    session holds the key, never a log line. Must be called inside the running event
    loop; the caller owns and closes it.
    """
    return aiohttp.ClientSession(
        headers={"Accept": "application/json", "User-Agent": USER_AGENT, **headers},
        timeout=client_timeout(timeout),
        connector=aiohttp.TCPConnector(limit=max(4, concurrency * 2), limit_per_host=concurrency),
        raise_for_status=False,
    )


class UrlBase:
    """A base URL split once; :meth:`url` adds a request's path and query without parsing.

    yarl parses a URL string in 5-10 us and remembers only the last 128 it parsed: with
    more jobs than that, every poll's URL string was parsed again. A URL built from
    parts that are already encoded (``URL.build(encoded=True)``) costs ~1 us. The tail
    must be encoded already: ids go in through :func:`path_segment`, queries through
    ``urlencode``. A base with a query or a fragment (a mistake the settings let through
    for most providers) is joined as a string and parsed on every request, as before.
    """

    __slots__ = ("_parts", "text")

    def __init__(self, base: str) -> None:
        self.text = base.rstrip("/")
        url = URL(self.text)
        self._parts: tuple[str, str, str] | None = None
        if url.absolute and not url.raw_query_string and not url.raw_fragment:
            self._parts = (url.scheme, url.raw_authority, url.raw_path.rstrip("/"))

    def url(self, tail: str = "", query: str = "") -> URL | str:
        """The base followed by ``tail`` (a path, encoded) and ``query`` (encoded, no ``?``)."""
        parts = self._parts
        if parts is None:
            return self.text + tail + ("?" + query if query else "")
        scheme, authority, path = parts
        return URL.build(
            scheme=scheme, authority=authority, path=path + tail, query_string=query, encoded=True
        )


class ApiTransport:
    """GETs JSON from one provider over a session the caller owns; every failure typed.

    Each request is bounded by ``timeout`` (so a reload can change it without a new
    session); ``pacer`` is the provider's request budget (None: unpaced).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        provider: str,
        pacer: RequestPacer | None = None,
        timeout: float,
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.session = session
        self.provider = provider
        self.pacer = pacer
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self._client_timeout = client_timeout(timeout)
        # Look for Deprecation/Sunset headers until the provider is noted (then never);
        # ``Sunset`` alone only on the first response.
        self._watch_deprecation = provider not in _DEPRECATIONS
        self._sunset_checked = False

    @property
    def deprecation(self) -> DeprecationInfo | None:
        """What this provider's API announced about its own deprecation, if anything."""
        return _DEPRECATIONS.get(self.provider)

    @staticmethod
    def url_base(base: str) -> UrlBase:
        """``base`` split once, for URLs built on every poll (see :class:`UrlBase`)."""
        return UrlBase(base)

    #: A short fingerprint of a body (see :func:`body_digest`).
    digest = staticmethod(body_digest)

    def decode(self, raw: bytes, what: str) -> dict[str, Any]:
        """``raw`` as a JSON object; ``BadResponseError`` (naming ``what``) otherwise."""
        return decode_object(raw, what, provider=self.provider)

    async def get_json(
        self, url: str | URL, params: Mapping[str, str] | None = None, *, what: str
    ) -> dict[str, Any]:
        """The JSON object answering GET ``url``; ``what`` names the request in errors."""
        return await self.decode_async(await self.get_raw(url, params, what=what), what)

    async def decode_async(self, raw: bytes, what: str) -> dict[str, Any]:
        """:meth:`decode`, in a worker thread for a body over :data:`OFFLOAD_BYTES` (a
        50,000-event page must not stall the event loop: issue 11, finding 8)."""
        if len(raw) <= OFFLOAD_BYTES:
            return decode_object(raw, what, provider=self.provider)
        return await anyio.to_thread.run_sync(
            partial(_decode_quietly, raw, what, provider=self.provider)
        )

    async def get_raw(
        self, url: str | URL, params: Mapping[str, str] | None, *, what: str
    ) -> bytes:
        """The body of a successful JSON answer to GET ``url``; every failure typed."""
        pacer = self.pacer
        if pacer is not None:
            # RequestPacer.acquire without its coroutine: a free slot costs no await.
            wait = pacer.reserve()
            if wait > 0:
                await anyio.sleep(wait)
        try:
            async with self.session.get(
                url, params=params, timeout=self._client_timeout, allow_redirects=False
            ) as response:
                if self._watch_deprecation and (
                    not self._sunset_checked or "Deprecation" in response.headers
                ):
                    self._look_for_deprecation(response.headers)
                if 300 <= response.status < 400:
                    raise self._redirected(response, what)
                if response.status >= 400:
                    raise await self._error_for(response, what)
                # The usual answer's header is taken as it is; any other is parsed.
                if response.headers.get("Content-Type") not in _PLAIN_JSON:
                    content_type = response.content_type
                    if content_type != "application/json" and not content_type.endswith("+json"):
                        raise BadResponseError(
                            f"{what}: expected JSON, got {content_type or 'no content type'}",
                            status=response.status,
                            provider=self.provider,
                        )
                length = response.content_length
                if length is not None and length <= self.max_body_bytes:
                    # The declared length is enforced by the HTTP parser: one read.
                    return await response.read()
                return await self._read_capped(response, what)
        except TimeoutError as exc:
            raise TransportError(
                f"{what}: no answer within {self.timeout:g}s", provider=self.provider
            ) from exc
        except aiohttp.ClientResponseError as exc:
            raise TransportError(
                f"{what}: {safe_text(str(exc.message), ERROR_LIMIT)}",
                status=exc.status,
                provider=self.provider,
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{what}: {_describe(exc)}", provider=self.provider) from exc

    def _redirected(self, response: aiohttp.ClientResponse, what: str) -> BadResponseError:
        """A redirect is never followed (issue 11, finding 13): an answer from wherever it
        points would be trusted as the API's. The error names the target's origin only
        (its path or query may carry anything)."""
        status = response.status
        try:
            target = response.url.join(URL(response.headers.get("Location") or ""))
            origin = str(target.origin()) if target.absolute else ""
        except (ValueError, TypeError, UnicodeError):
            origin = ""
        here = str(response.url.origin())
        if not origin:
            where = "an unreadable location"
        elif origin == here:
            where = "another path of the same origin"
        else:
            where = origin
        return BadResponseError(
            f"{what}: HTTP {status} redirect to {where}; redirects are not followed "
            f"(is base_url right? the API answered from {here})",
            status=status,
            provider=self.provider,
        )

    def _look_for_deprecation(self, headers: Mapping[str, str]) -> None:
        """Note a Deprecation (any response) or Sunset (first response) header, once."""
        self._sunset_checked = True
        info = DeprecationInfo.from_headers(self.provider, headers)
        if info is not None:
            self._watch_deprecation = False
            _note_deprecation(info)

    async def _read_capped(self, response: aiohttp.ClientResponse, what: str) -> bytes:
        limit = self.max_body_bytes
        if response.content_length is not None and response.content_length > limit:
            raise BadResponseError(
                f"{what}: body of {response.content_length} bytes exceeds {limit}",
                provider=self.provider,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise BadResponseError(
                    f"{what}: body exceeds {limit} bytes", provider=self.provider
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _error_for(self, response: aiohttp.ClientResponse, what: str) -> ApiError:
        status = response.status
        message = await _error_message(response)
        text = f"{what}: HTTP {status}" + (f": {message}" if message else "")
        # The API's words: no secret (not even an unregistered one this request sent),
        # no control character, bounded.
        text = safe_text(text, ERROR_LIMIT, extra=_request_secrets(response))
        provider = self.provider
        if status in (401, 403):
            return AuthError(text, status=status, provider=provider)
        if status == 404:
            return NotFoundError(text, status=status, provider=provider)
        if status == 429:
            retry_after = retry_after_of(response.headers)
            return RateLimitedError(text, retry_after=retry_after, provider=provider)
        if status >= 500 or status in (408, 409):
            return ServerError(text, status=status, provider=provider)
        return ApiError(text, status=status, provider=provider)


async def _error_message(response: aiohttp.ClientResponse) -> str:
    """The message of a JSON error body, shortened; empty when there is none.

    Understands ``{"message": "..."}`` (Cohere), ``{"error": {"message": "..."}}``
    (OpenAI and alike), ``{"error": "..."}`` and ``{"detail": "..."}``.
    """
    try:
        raw = await response.content.read(8192)
        body = json.loads(raw)
    except (ValueError, RecursionError, aiohttp.ClientError, TimeoutError):
        return ""
    if not isinstance(body, dict):
        return ""
    message = body.get("message")
    error = body.get("error")
    if message is None and isinstance(error, dict):
        message = error.get("message")
    if message is None:
        message = error if error is not None else body.get("detail")
    if not isinstance(message, str):
        return ""
    # Scrubbed by the caller before it is shortened (a cut must not halve a secret).
    return " ".join(message[:8192].split())


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    return type(exc).__name__
