"""The health and metrics HTTP server (``/healthz``, ``/readyz``, ``/metrics``) and its client.

What "alive" and "ready" mean is decided by two pure functions over the daemon's
``Progress`` (``liveness``, ``readiness``; see ``watcher.progress``); ``HealthServer``
only serves their verdicts and the Prometheus registry. ``healthcheck`` backs
``finetune-watcher healthcheck`` (Docker's ``HEALTHCHECK``, run every few seconds): it
uses only the standard library, and aiohttp / prometheus_client are imported when a
server starts rather than when this module is imported, so the check starts fast.

The port must not be a way to stop the watcher (issue 11, finding 3). At start the soft
descriptor limit is raised to the hard one, and the server holds at most
``connection_cap`` connections (256, at most a quarter of the limit): one more evicts
the connection idle longest, so a probe is answered however many slow clients there
are; a connection must send a request within ``HEADER_TIMEOUT``. asyncio's "accept()
out of system resource" is logged once a minute, not per attempt. ``/metrics`` is
rendered off the event loop from a snapshot, shared by scrapers for ``METRICS_MAX_AGE``
and answered at most ``METRICS_PER_SECOND`` times a second.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import structlog

from watcher.errors import WatcherError

# The client (``finetune-watcher healthcheck``) lives in watcher.healthprobe: stdlib only.
from watcher.healthprobe import DEFAULT_HEALTHCHECK_URL, healthcheck, healthcheck_url

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client.registry import Collector

    from watcher.metrics import Metrics
    from watcher.progress import Progress
    from watcher.settings import PollSettings

__all__ = [
    "DEFAULT_HEALTHCHECK_URL",
    "HEADER_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "LIVENESS_STALE_AFTER",
    "MAX_CONNECTIONS",
    "METRICS_MAX_AGE",
    "METRICS_PER_SECOND",
    "HealthServer",
    "HealthSource",
    "Verdict",
    "connection_cap",
    "healthcheck",
    "healthcheck_url",
    "liveness",
    "raise_open_files_limit",
    "readiness",
    "round_deadline",
]

log = structlog.get_logger("watcher.health")

#: The poll loop's heartbeat may be this old (seconds) before the daemon counts as stalled.
#: The loop beats at least every second (``schedule.HEARTBEAT``); the slack covers a busy
#: event loop.
LIVENESS_STALE_AFTER = 30.0

# Limits of the server (issue 11, finding 3: its port must not be a way to stop the watcher).
#: The most connections the server holds at once; also at most a quarter of the descriptor
#: limit (``connection_cap``), so that the rest stays for the API, targets and database.
MAX_CONNECTIONS = 256
#: Seconds a new connection has to send its first request's headers.
HEADER_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection stays open (above common proxies' 60 s).
KEEPALIVE_TIMEOUT = 75.0
#: ``/metrics`` is rendered at most once per this many seconds per format, off the event
#: loop; scrapers share the page. A render that took longer than a tenth of that keeps
#: its page for ``METRICS_RENDER_SHARE`` times its duration (5,000 models: ~3 s), so that
#: rendering (which still holds the GIL) takes at most a tenth of the process's time.
METRICS_MAX_AGE = 1.0
METRICS_RENDER_SHARE = 10.0
#: ``/metrics`` answers at most this many scrapes a second (Prometheus asks every 15 s or
#: so); more wait their turn, and one that would wait over ``METRICS_MAX_WAIT`` seconds
#: gets 429 at once. So clients fetching it back to back cannot take the event loop.
METRICS_PER_SECOND = 10.0
METRICS_MAX_WAIT = 5.0
#: At most one log line per this many seconds about dropped connections or accept errors.
_LOG_EVERY = 60.0
#: asyncio's message when ``accept()`` fails for want of descriptors (or memory).
_ACCEPT_ERROR = "socket.accept() out of system resource"
#: The soft descriptor limit to ask for when the hard limit is unlimited.
_NOFILE_UNLIMITED = 65536


class HealthSource(Protocol):
    """What the server reads from the daemon (``watcher.daemon.Watcher`` provides it)."""

    @property
    def progress(self) -> Progress: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def round_deadline(self) -> float:
        """``round_deadline`` for the current settings (see below)."""
        ...

    def status_line(self) -> str: ...

    async def database_ok(self) -> bool: ...

    @property
    def role(self) -> str:
        """``"leader"`` (polls and delivers; always, with SQLite) or ``"standby"``."""
        ...


@dataclass(frozen=True)
class Verdict:
    """The answer of a probe: healthy or not, and the JSON body that says why."""

    healthy: bool
    body: dict[str, Any]

    @property
    def http_status(self) -> int:
        return 200 if self.healthy else 503


# --- The rules (pure) -------------------------------------------------------------


def liveness(
    progress: Progress,
    *,
    now: float,
    listening_since: float,
    stale_after: float = LIVENESS_STALE_AFTER,
) -> Verdict:
    """Alive while the poll loop's heartbeat is at most ``stale_after`` seconds old.

    Before the loop's first beat, the server's own start (``listening_since``) stands in
    for it, so a daemon that is still starting is not reported dead.
    """
    beat = progress.heartbeat_mono
    if beat <= 0.0:
        waited = now - listening_since
        if waited <= stale_after:
            return Verdict(True, {"status": "ok", "poll_loop": "starting"})
        return Verdict(
            False,
            {"status": "stalled", "reason": f"poll loop not started after {waited:.0f}s"},
        )
    age = max(0.0, now - beat)
    if age <= stale_after:
        return Verdict(True, {"status": "ok", "heartbeat_age_seconds": round(age, 3)})
    return Verdict(
        False,
        {
            "status": "stalled",
            "reason": f"poll loop heartbeat {age:.0f}s old (limit {stale_after:g}s)",
            "heartbeat_age_seconds": round(age, 3),
        },
    )


def round_deadline(poll: PollSettings, *, request_timeout: float) -> float:
    """How old (seconds) the last completed poll round may be while the daemon is ready.

    A round is complete when every watched model was polled once, so it takes as long
    as the slowest model's interval: ``poll.settled_interval`` (plus jitter) when any
    model is settled. The allowance is ``max(3 * poll.interval, 60 s, that round time +
    poll.interval)`` plus ``request_timeout`` (the providers' longest) for the last
    request of the round.
    """
    slowest = max(poll.interval, poll.settled_interval) * (1.0 + poll.jitter)
    return max(3.0 * poll.interval, 60.0, slowest + poll.interval) + request_timeout


def readiness(
    progress: Progress,
    *,
    deadline: float,
    database_ok: bool,
    now: float,
    role: str = "leader",
) -> Verdict:
    """Ready when a poll round completed within ``deadline`` seconds (``round_deadline``),
    the database answers and every provider accepts its key.

    Not-ready reasons, in this order: ``no poll round completed yet`` or ``last poll round
    Ns ago``; ``state database unusable``; ``API key rejected``.

    A ``standby`` replica (high availability: another one holds the lease) polls
    nothing: it is ready as soon as the database answers, i.e. ready to take over, so a
    rolling update does not wait for a lease it cannot get. The body's ``role`` says which.
    """
    if role != "leader":
        if database_ok:
            return Verdict(True, {"status": "ready", "role": role})
        why = "state database unusable"
        return Verdict(
            False, {"status": "not ready", "reason": why, "reasons": [why], "role": role}
        )
    facts: dict[str, Any] = {"rounds_completed": progress.rounds_completed, "role": role}
    reasons: list[str] = []
    if progress.rounds_completed < 1 or progress.last_round_mono is None:
        reasons.append("no poll round completed yet")
    else:
        age = max(0.0, now - progress.last_round_mono)
        facts["last_round_age_seconds"] = round(age, 3)
        facts["round_deadline_seconds"] = round(deadline, 3)
        if age > deadline:
            reasons.append(f"last poll round {age:.0f}s ago")
    if not database_ok:
        reasons.append("state database unusable")
    if progress.auth_failing:
        reasons.append("API key rejected")
    if reasons:
        body = {"status": "not ready", "reason": "; ".join(reasons), "reasons": reasons}
        return Verdict(False, body | facts)
    return Verdict(True, {"status": "ready"} | facts)


# --- The server's limits ----------------------------------------------------------


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit now.

    The usual soft limit (1,024) is quickly used up by clients of the health port. The
    server holds at most ``connection_cap`` of the descriptors; the rest stay for the
    providers' APIs, the notification targets and the state database.
    """
    import resource  # Unix only, like the daemon

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    want = hard if hard != unlimited else max(soft, _NOFILE_UNLIMITED)
    if soft != unlimited and want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:  # e.g. above fs.nr_open: keep the soft limit
            log.warning("cannot raise the open files limit", soft=soft, error=str(exc))
        else:
            soft = want
    return soft if soft != unlimited else _NOFILE_UNLIMITED


def connection_cap(open_files: int) -> int:
    """The most connections the server holds with ``open_files`` descriptors: a quarter
    of them, at most ``MAX_CONNECTIONS`` (and at least 8)."""
    return max(8, min(MAX_CONNECTIONS, open_files // 4))


class _Throttled:
    """One log line per ``every`` seconds about a recurring event, with the count since."""

    def __init__(self, event: str, every: float = _LOG_EVERY) -> None:
        self.event = event
        self.every = every
        self.total = 0
        self._unlogged = 0
        self._logged_at = -math.inf

    def note(self, **fields: Any) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= self.every:
            log.warning(self.event, count=self._unlogged, total=self.total, **fields)
            self._logged_at, self._unlogged = now, 0


class _Connection(asyncio.Protocol):
    """One client connection: admitted (or refused) by the guard, served by aiohttp's
    ``RequestHandler`` (``handler``), to which every protocol call is passed on."""

    def __init__(self, handler: asyncio.Protocol, guard: _ConnectionGuard) -> None:
        self.handler = handler
        self.busy = 0  # requests being handled now
        self.requests = 0  # requests that reached a handler
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # a TCP server's
        if not self._guard.admit(self):
            self._transport.abort()
            return
        self._admitted = True
        self.handler.connection_made(transport)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.header_timeout, self._first_request_due)

    def _first_request_due(self) -> None:
        self._deadline = None
        if self.requests == 0:
            self._guard.timed_out.note(limit_seconds=self._guard.header_timeout)
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._guard.forget(self)
        if self._admitted:
            self._admitted = False
            self.handler.connection_lost(exc)


class _ConnectionGuard:
    """Holds the server's connections to ``cap``.

    A connection beyond the cap evicts the one idle longest: no request running, i.e. a
    client still sending (or never finishing) its headers, or an idle keep-alive. When
    every connection is busy the new one is closed at once. So a probe, which sends its
    request at once, is answered however many slow clients hold connections. A
    connection that has not sent a whole request within ``header_timeout`` is closed.
    """

    def __init__(self, cap: int, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        #: By aiohttp's handler; least recently active first.
        self._open: dict[object, _Connection] = {}
        self.dropped = _Throttled(
            "health server at its connection limit: dropping the connections idle longest"
        )
        self.timed_out = _Throttled("health server closed connections that sent no request")

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, connection: _Connection) -> bool:
        while len(self._open) >= self.cap:
            idle = next((c for c in self._open.values() if not c.busy), None)
            self.dropped.note(limit=self.cap)
            if idle is None:
                return False
            self.forget(idle)
            idle.abort()
        self._open[connection.handler] = connection
        return True

    def forget(self, connection: _Connection) -> None:
        if self._open.get(connection.handler) is connection:
            del self._open[connection.handler]

    @contextmanager
    def busy(self, handler: object) -> Iterator[None]:
        """While a request of ``handler``'s connection is handled: not idle."""
        connection = self._open.get(handler)
        if connection is None:
            yield
            return
        connection.busy += 1
        connection.requests += 1
        try:
            yield
        finally:
            connection.busy -= 1
            if self._open.pop(handler, None) is connection:
                self._open[handler] = connection  # now the most recently active


def _encode(encode: Callable[[Collector], bytes], snapshot: Collector, gzipped: bool) -> bytes:
    body = encode(snapshot)
    return gzip.compress(body, compresslevel=6) if gzipped else body


class _MetricsPage:
    """``/metrics``, rendered off the event loop at most once per ``max_age`` seconds per
    format (or per ``METRICS_RENDER_SHARE`` times the last render's duration, when
    longer); meanwhile every
    scraper gets the same page, and scrapers arriving during a render wait for it.
    ``turn()`` spaces the answers (``per_second``)."""

    def __init__(
        self,
        max_age: float = METRICS_MAX_AGE,
        *,
        per_second: float = METRICS_PER_SECOND,
        max_wait: float = METRICS_MAX_WAIT,
    ) -> None:
        self.max_age = max_age
        self.per_second = per_second
        self.max_wait = max_wait
        self.renders = 0
        self._pages: dict[tuple[str, bool], tuple[float, bytes]] = {}
        self._pending: dict[tuple[str, bool], asyncio.Future[bytes]] = {}
        self._next_turn = -math.inf

    async def turn(self) -> bool:
        """Wait for this scrape's turn; False (at once) when that is over ``max_wait`` away."""
        now = time.monotonic()
        at = max(now, self._next_turn)
        if at - now > self.max_wait:
            return False
        self._next_turn = at + 1.0 / self.per_second
        if at > now:
            await anyio.sleep(at - now)
        return True

    async def get(self, metrics: Metrics, accept: str, gzipped: bool) -> tuple[bytes, str]:
        """The page in the format ``accept`` asks for: ``(body, content type)``."""
        from prometheus_client.exposition import choose_encoder

        encode, content_type = choose_encoder(accept)
        key = (content_type, gzipped)
        page = self._pages.get(key)
        if page is not None and time.monotonic() < page[0]:
            return page[1], content_type
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._render(key, metrics, encode))
            self._pending[key] = pending
        return await asyncio.shield(pending), content_type

    async def _render(
        self, key: tuple[str, bool], metrics: Metrics, encode: Callable[[Collector], bytes]
    ) -> bytes:
        try:
            started = time.monotonic()
            snapshot = metrics.snapshot()  # the daemon's state: read on the loop
            body = await anyio.to_thread.run_sync(_encode, encode, snapshot, key[1])
            took = time.monotonic() - started
            self.renders += 1
            keep = max(self.max_age, METRICS_RENDER_SHARE * took)
            self._pages[key] = (time.monotonic() + keep, body)
            return body
        finally:
            del self._pending[key]

    def cancel(self) -> None:
        for pending in self._pending.values():
            pending.cancel()


# --- The server -------------------------------------------------------------------


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` for one ``HealthSource``.

    ``start()`` binds (port 0 picks a free port) and returns the real address;
    ``aclose()`` stops it. ``clock`` is the monotonic clock the heartbeat uses.
    """

    def __init__(
        self,
        source: HealthSource,
        *,
        host: str,
        port: int,
        clock: Callable[[], float] = anyio.current_time,
        stale_after: float = LIVENESS_STALE_AFTER,
        mount: Callable[[web.Application], None] | None = None,
    ) -> None:
        self.source = source
        #: Adds the status page, the API and webhooks (``watcher.web.mount_web``).
        self._mount = mount
        self.host = host
        self.port = port
        self._clock = clock
        #: How old the heartbeat may get (the daemon sets its own once it is open).
        self.stale_after = stale_after
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._listening_since = 0.0
        self._database_error_logged = False
        #: Set by ``start()`` from the descriptor limit (``connection_cap``).
        self.guard = _ConnectionGuard(MAX_CONNECTIONS)
        self.metrics_page = _MetricsPage()
        self._accept_errors = _Throttled(
            "cannot accept connections: out of descriptors or memory; retrying"
        )
        self._previous_exception_handler: Any = None

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound ``(host, port)``. Raises ``WatcherError``."""
        from aiohttp import web

        from watcher.settings import is_loopback  # deferred: `healthcheck` must start fast

        if not is_loopback(self.host):
            log.warning(
                "health server listens beyond loopback: /metrics and /readyz are reachable "
                "from the network",
                host=self.host or "*",
                port=self.port,
            )
        open_files = raise_open_files_limit()
        self.guard = guard = _ConnectionGuard(connection_cap(open_files))

        @web.middleware
        async def not_idle(request: web.Request, handler: Any) -> web.StreamResponse:
            with guard.busy(request.protocol):
                response: web.StreamResponse = await handler(request)
                return response

        from watcher.web import CLIENT_MAX_SIZE, SERVER_LIMITS

        app = web.Application(middlewares=[not_idle], client_max_size=CLIENT_MAX_SIZE)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self._mount is not None:
            self._mount(app)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_TIMEOUT,
            **SERVER_LIMITS,
        )  # fmt: skip
        await runner.setup()
        server = runner.server
        assert server is not None  # set up
        loop = asyncio.get_running_loop()
        try:
            # Not web.TCPSite: every connection passes the guard (the cap) first.
            listener = await loop.create_server(
                lambda: _Connection(server(), guard), self.host or None, self.port, backlog=128
            )
        except OSError as exc:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            raise WatcherError(
                f"health server cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self._runner, self._listener = runner, listener
        self._previous_exception_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self._listening_since = self._clock()
        host, port = listener.sockets[0].getsockname()[:2]
        log.info("health server listening", host=host, port=port,
                 max_connections=guard.cap, open_files=open_files)  # fmt: skip
        return str(host), int(port)

    @property
    def listening_since(self) -> float:
        """When ``start()`` bound the socket (the clock's time; 0.0 before)."""
        return self._listening_since

    async def aclose(self) -> None:
        """Stop serving. Safe to call twice; shielded from cancellation."""
        runner, self._runner = self._runner, None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            loop = asyncio.get_running_loop()
            if loop.get_exception_handler() == self._loop_exception:
                loop.set_exception_handler(self._previous_exception_handler)
        self.metrics_page.cancel()
        if runner is not None:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio logs a failed ``accept()`` (no descriptors left) with a traceback, as
        often as the listening socket is ready: counted here, logged once a minute."""
        if context.get("message") == _ACCEPT_ERROR:
            exc = context.get("exception")
            self._accept_errors.note(error=str(exc) if exc else None)
            return
        previous = self._previous_exception_handler
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _healthz(self, request: web.Request) -> web.Response:
        verdict = liveness(
            self.source.progress,
            now=self._clock(),
            listening_since=self._listening_since,
            stale_after=self.stale_after,
        )
        return self._respond(verdict)

    async def _readyz(self, request: web.Request) -> web.Response:
        verdict = readiness(
            self.source.progress,
            deadline=self.source.round_deadline,
            database_ok=await self._database_ok(),
            now=self._clock(),
            role=getattr(self.source, "role", "leader"),
        )
        return self._respond(verdict)

    async def _metrics(self, request: web.Request) -> web.Response:
        """The Prometheus page (text or OpenMetrics, gzipped when accepted), from the
        ``metrics_page`` cache; a ``name[]`` filter is not supported (the whole page)."""
        from aiohttp import hdrs, web
        from prometheus_client.exposition import gzip_accepted

        if not await self.metrics_page.turn():
            raise web.HTTPTooManyRequests(headers={hdrs.RETRY_AFTER: "1"})
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        gzipped = gzip_accepted(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
        body, content_type = await self.metrics_page.get(self.source.metrics, accept, gzipped)
        headers = {hdrs.CONTENT_TYPE: content_type, hdrs.VARY: "Accept, Accept-Encoding"}
        if gzipped:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=body, headers=headers)

    def _respond(self, verdict: Verdict) -> web.Response:
        from aiohttp import web

        body = verdict.body | {"summary": self.source.status_line()}
        return web.json_response(
            body, status=verdict.http_status, headers={"Cache-Control": "no-store"}
        )

    async def _database_ok(self) -> bool:
        try:
            return await self.source.database_ok()
        except Exception as exc:  # a probe must answer, whatever the store raises
            if not self._database_error_logged:
                self._database_error_logged = True
                log.error("state database check failed", error=type(exc).__name__)
            return False
