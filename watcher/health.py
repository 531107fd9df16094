"""The health and metrics HTTP server (``/healthz``, ``/readyz``, ``/metrics``) and its client.

What "alive" and "ready" mean is decided by two pure functions over the daemon's
``Progress`` (``liveness``, ``readiness``; see ``watcher.progress``); ``HealthServer``
only serves their verdicts and the Prometheus registry. ``healthcheck`` backs
``finetune-watcher healthcheck`` (Docker's ``HEALTHCHECK``, run every few seconds): it
uses only the standard library, and aiohttp / prometheus_client are imported when a
server starts rather than when this module is imported, so the check starts fast.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import anyio
import structlog

from watcher.errors import WatcherError

if TYPE_CHECKING:
    from aiohttp import web

    from watcher.metrics import Metrics
    from watcher.progress import Progress
    from watcher.settings import PollSettings

__all__ = [
    "DEFAULT_HEALTHCHECK_URL",
    "LIVENESS_STALE_AFTER",
    "HealthServer",
    "HealthSource",
    "Verdict",
    "healthcheck",
    "healthcheck_url",
    "liveness",
    "readiness",
    "round_deadline",
]

log = structlog.get_logger("watcher.health")

#: The poll loop's heartbeat may be this old (seconds) before the daemon counts as stalled.
#: The loop beats at least every second (``schedule.HEARTBEAT``); the slack covers a busy
#: event loop.
LIVENESS_STALE_AFTER = 30.0
DEFAULT_HEALTHCHECK_URL = "http://127.0.0.1:9464/healthz"
_MAX_BODY = 64 * 1024


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
    ) -> None:
        self.source = source
        self.host = host
        self.port = port
        self._clock = clock
        #: How old the heartbeat may get (the daemon sets its own once it is open).
        self.stale_after = stale_after
        self._runner: web.AppRunner | None = None
        self._listening_since = 0.0
        self._database_error_logged = False

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound ``(host, port)``. Raises ``WatcherError``."""
        from aiohttp import web
        from prometheus_client.aiohttp import make_aiohttp_handler

        from watcher.settings import is_loopback  # deferred: `healthcheck` must start fast

        if not is_loopback(self.host):
            log.warning(
                "health server listens beyond loopback: /metrics and /readyz are reachable "
                "from the network",
                host=self.host or "*",
                port=self.port,
            )
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", make_aiohttp_handler(self.source.metrics.registry))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host or None, self.port).start()
        except OSError as exc:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            raise WatcherError(
                f"health server cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        self._listening_since = self._clock()
        host, port = runner.addresses[0][:2]
        log.info("health server listening", host=host, port=port)
        return str(host), int(port)

    async def aclose(self) -> None:
        """Stop serving. Safe to call twice; shielded from cancellation."""
        runner, self._runner = self._runner, None
        if runner is not None:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

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


# --- The client (``finetune-watcher healthcheck``) ------------------------------------


def healthcheck_url(listen: str | None) -> str:
    """The ``/healthz`` URL for a ``health.listen`` value (e.g. ``$WATCHER_HEALTH__LISTEN``).

    Unset means the default ``http://127.0.0.1:9464/healthz``; a wildcard host
    (``0.0.0.0``, ``::``, none) is reached on loopback. Raises ``ValueError`` when
    ``listen`` has no valid port.
    """
    if listen is None or not listen.strip():
        return DEFAULT_HEALTHCHECK_URL
    parts = urlsplit("//" + listen.strip())
    port = parts.port  # ValueError when out of range or not a number
    if port is None:
        raise ValueError(f"health listen address {listen!r} has no port")
    host = parts.hostname or "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass  # a host name: use it as it is
    else:
        if address.is_unspecified:
            host = "::1" if address.version == 6 else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def healthcheck(url: str = DEFAULT_HEALTHCHECK_URL, *, timeout: float = 5.0) -> int:
    """GET ``url``: 0 when it answers 200, else 1. Prints one line saying why.

    Standard library only (fast to start); proxies from the environment are ignored,
    since the target is the daemon's own listener.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        print(f"unhealthy: {url} is not an http:// or https:// URL", flush=True)
        return 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status, body = response.status, response.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        try:
            status, body = exc.code, exc.read(_MAX_BODY)
        finally:
            exc.close()
    except (urllib.error.URLError, OSError) as exc:  # refused, unresolvable, timed out
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"unhealthy: cannot reach {url}: {_describe_error(reason)}", flush=True)
        return 1
    if status == 200:
        print(f"healthy: {url}: {_describe_body(body) or 'ok'}", flush=True)
        return 0
    print(f"unhealthy: {url} answered HTTP {status}: {_describe_body(body)}", flush=True)
    return 1


def _describe_error(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _describe_body(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("status") or "")
    return ""
