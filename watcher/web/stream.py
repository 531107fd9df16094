"""``GET /api/stream``: the status document and the daemon's facts as server-sent events.

One :class:`StatusFeed` serves every open stream: it re-reads the daemon at most once
per recorded change (and every ``refresh`` seconds for facts that change without one,
such as readiness), encodes the events once, and every client sends the same bytes.
A client is sent an event only when its content changed.

Events::

    retry: 2000                           (reconnect after 2 s)
    event: phases / data: {provider: {status: lifecycle word}}   (on connect)
    event: daemon / data: {DaemonFacts}   (on connect and when it changes)
    event: status / id: N / data: {the status --json document}
    : keepalive                           (after ``keepalive`` seconds of silence)

Bounded: at most ``max_streams`` clients (one more gets 503 and ``Retry-After``); a
write that cannot finish within ``stream_write_timeout`` (a client that stopped
reading) drops that client, so a slow or hostile reader costs its socket buffers and
nothing else; the loop never waits on it beyond that timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from aiohttp import web

from watcher.redact import SECRETS
from watcher.web.source import SourceUnavailable, WebSource

__all__ = ["Snapshot", "StatusFeed", "StreamServer", "encode_document"]

log = structlog.get_logger("watcher.web")

#: The browser reconnects this long (ms) after a dropped stream.
RETRY_MS = 2000


def encode_document(document: Any) -> str:
    """A document as one line of JSON, secrets scrubbed (as ``status --json`` prints it)."""
    return SECRETS.scrub(json.dumps(document, ensure_ascii=False, separators=(",", ":")))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The feed's current events: each with a version that changes with its content."""

    status_version: int
    status_event: bytes
    daemon_version: int
    daemon_event: bytes
    changed: anyio.Event  # set at the daemon's next recorded change after this snapshot


class StatusFeed:
    """The latest status document and facts, read once for all streams."""

    def __init__(
        self,
        source: WebSource,
        *,
        refresh: float,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self._source = source
        self._refresh = refresh
        self._clock = clock
        self._lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._taken = 0.0
        self._status_digest = b""
        self._daemon_digest = b""
        self._phases_event: bytes | None = None
        self.reads = 0  # how often the daemon was asked (tests, benchmarks)

    def phases_event(self) -> bytes:
        """The ``phases`` event (statuses as lifecycle words), encoded once."""
        if self._phases_event is None:
            phases = {p: dict(table) for p, table in self._source.status_phases().items()}
            self._phases_event = f"event: phases\ndata: {encode_document(phases)}\n\n".encode()
        return self._phases_event

    async def snapshot(self) -> Snapshot:
        """The current events, re-read when a change happened or ``refresh`` passed."""
        async with self._lock:
            current = self._snapshot
            fresh = self._clock() - self._taken < self._refresh
            if current is not None and not current.changed.is_set() and fresh:
                return current
            changed = self._source.changed()  # taken before reading: no change is missed
            try:
                document: dict[str, Any] | None = await self._source.status_document()
            except SourceUnavailable:
                document = None  # starting: only the daemon's facts until ``changed``
            facts = (await self._source.daemon_facts()).as_json()
            self.reads += 1
            self._taken = self._clock()
            status_version = current.status_version if current else 0
            daemon_version = current.daemon_version if current else 0
            status_event = current.status_event if current else b""
            daemon_event = current.daemon_event if current else b""
            # generated_at changes on every read; only the content counts as a change.
            if document is None:
                digest = self._status_digest
            else:
                digest = _digest({k: v for k, v in document.items() if k != "generated_at"})
            if document is not None and (digest != self._status_digest or not status_event):
                self._status_digest = digest
                status_version += 1
                status_event = (
                    f"event: status\nid: {status_version}\n"
                    f"data: {encode_document(document)}\n\n".encode()
                )
            digest = _digest(facts)
            if digest != self._daemon_digest or current is None:
                self._daemon_digest = digest
                daemon_version += 1
                daemon_event = f"event: daemon\ndata: {encode_document(facts)}\n\n".encode()
            self._snapshot = Snapshot(
                status_version, status_event, daemon_version, daemon_event, changed
            )
            return self._snapshot


def _digest(value: Any) -> bytes:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()


class StreamServer:
    """The ``/api/stream`` handler: counts, bounds and ends the open streams."""

    def __init__(
        self,
        feed: StatusFeed,
        *,
        max_streams: int,
        write_timeout: float,
        refresh: float,
        keepalive: float,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self._feed = feed
        self._max_streams = max_streams
        self._write_timeout = write_timeout
        self._refresh = refresh
        self._keepalive = keepalive
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0  # clients dropped for not keeping up (tests, benchmarks)

    @property
    def open_streams(self) -> int:
        return len(self._tasks)

    async def close_all(self, app: web.Application | None = None) -> None:
        """End every open stream (an ``on_shutdown`` hook: the server need not wait)."""
        for task in list(self._tasks):
            task.cancel()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if len(self._tasks) >= self._max_streams or task is None:
            return web.json_response(
                {"error": "too many open streams; try again later"},
                status=503,
                headers={"Retry-After": "10", "Cache-Control": "no-store"},
            )
        self._tasks.add(task)
        try:
            return await self._serve(request)
        except asyncio.CancelledError:
            if request.transport is not None:
                request.transport.close()  # shutdown or a client that went away
            raise
        finally:
            self._tasks.discard(task)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
            }
        )
        await response.prepare(request)
        greeting = f"retry: {RETRY_MS}\n\n".encode() + self._feed.phases_event()
        if not await self._send(request, response, greeting):
            return response
        sent_status = sent_daemon = 0
        last_write = self._clock()
        while True:
            snapshot = await self._feed.snapshot()
            parts = []
            if snapshot.daemon_version != sent_daemon:
                parts.append(snapshot.daemon_event)
            if snapshot.status_version != sent_status:
                parts.append(snapshot.status_event)
            if not parts and self._clock() - last_write >= self._keepalive:
                parts.append(b": keepalive\n\n")
            if parts:
                if not await self._send(request, response, b"".join(parts)):
                    return response
                sent_status, sent_daemon = snapshot.status_version, snapshot.daemon_version
                last_write = self._clock()
            with anyio.move_on_after(min(self._refresh, self._keepalive)):
                await snapshot.changed.wait()

    async def _send(self, request: web.Request, response: web.StreamResponse, data: bytes) -> bool:
        """Write or drop the client: False when it is gone or too slow."""
        with anyio.move_on_after(self._write_timeout) as scope:
            try:
                await response.write(data)
            except (ConnectionError, RuntimeError):  # reset, or the transport closed
                return False
        if scope.cancelled_caught:
            self.dropped += 1
            log.info("status stream dropped: the client does not keep up", peer=request.remote)
            if request.transport is not None:
                request.transport.abort()  # frees what is buffered for it at once
            return False
        return True
