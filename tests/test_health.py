"""The health server on a real loopback port: liveness, readiness, metrics, the healthcheck."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml
from structlog.testing import capture_logs

from watcher.errors import WatcherError
from watcher.health import (
    DEFAULT_HEALTHCHECK_URL,
    HealthServer,
    healthcheck,
    healthcheck_url,
    liveness,
    readiness,
    round_deadline,
)
from watcher.metrics import Metrics, status_label
from watcher.progress import Progress
from watcher.providers.cohere import COHERE_SCHEME
from watcher.settings import Settings, is_loopback, load_settings

ROOT = Path(__file__).resolve().parent.parent


def make_settings(tmp_path: Path, **poll: Any) -> Settings:
    """Real settings from a YAML file: interval 10 s, settled 100 s, no jitter, timeout 5 s."""
    config = tmp_path / "watcher.yaml"
    poll = {"interval": 10, "settled_interval": 100, "jitter": 0} | poll
    config.write_text(
        yaml.safe_dump(
            {"cohere": {"timeout": 5}, "poll": poll, "models": ["m1", "m2"]}, sort_keys=False
        )
    )
    return load_settings(config, environ={})


def deadline_of(settings: Settings) -> float:
    """The round deadline the daemon computes for ``settings`` (timeout: cohere's)."""
    return round_deadline(settings.poll, request_timeout=settings.cohere.timeout)


@dataclass
class FakeWatcher:
    """The facts a Watcher exposes, set by hand: a real Progress, Metrics and Settings."""

    settings: Settings
    progress: Progress = field(default_factory=Progress)
    metrics: Metrics = field(default_factory=Metrics)
    db_ok: bool = True
    db_error: Exception | None = None

    @property
    def round_deadline(self) -> float:
        return deadline_of(self.settings)

    def status_line(self) -> str:
        return "watching 2 models, 1 in progress"

    async def database_ok(self) -> bool:
        if self.db_error is not None:
            raise self.db_error
        return self.db_ok


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    source: FakeWatcher
    clock: Clock
    server: HealthServer
    base_url: str
    http: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.base_url + path) as response:
            assert response.content_type == "application/json"
            assert response.headers["Cache-Control"] == "no-store"
            return response.status, await response.json()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    source = FakeWatcher(make_settings(tmp_path))
    clock = Clock()
    server = HealthServer(source, host="127.0.0.1", port=0, clock=clock)
    host, port = await server.start()
    async with aiohttp.ClientSession() as http:
        yield Served(source, clock, server, f"http://{host}:{port}", http)
    await server.aclose()


class TestLiveness:
    async def test_starting_counts_as_alive_for_a_while(self, served: Served) -> None:
        """Before the poll loop's first beat, the server's start stands in for it (30 s)."""
        assert await served.get("/healthz") == (
            200,
            {
                "status": "ok",
                "poll_loop": "starting",
                "summary": "watching 2 models, 1 in progress",
            },
        )
        served.clock.now += 31
        status, body = await served.get("/healthz")
        assert (status, body["status"], body["reason"]) == (
            503,
            "stalled",
            "poll loop not started after 31s",
        )

    async def test_fresh_heartbeat_is_alive(self, served: Served) -> None:
        """200 while the heartbeat is at most 30 s old, the limit included."""
        served.source.progress.heartbeat_mono = served.clock.now
        status, body = await served.get("/healthz")
        assert (status, body["status"], body["heartbeat_age_seconds"]) == (200, "ok", 0.0)
        served.clock.now += 30
        assert (await served.get("/healthz"))[0] == 200

    async def test_stuck_heartbeat_is_stalled(self, served: Served) -> None:
        """503 with the heartbeat's age once it is older than 30 s."""
        served.source.progress.heartbeat_mono = served.clock.now
        served.clock.now += 45
        status, body = await served.get("/healthz")
        assert status == 503
        assert body["status"] == "stalled"
        assert body["reason"] == "poll loop heartbeat 45s old (limit 30s)"
        served.source.progress.heartbeat_mono = served.clock.now  # the loop recovers
        assert (await served.get("/healthz"))[0] == 200


class TestReadiness:
    async def test_not_ready_before_the_first_round(self, served: Served) -> None:
        """No completed round yet: 503 with that reason."""
        status, body = await served.get("/readyz")
        assert status == 503
        assert body["status"] == "not ready"
        assert body["reason"] == "no poll round completed yet"
        assert body["reasons"] == ["no poll round completed yet"]

    async def test_ready_after_a_recent_round(self, served: Served) -> None:
        """A round just completed and the database answers: 200."""
        progress = served.source.progress
        progress.rounds_completed, progress.last_round_mono = 1, served.clock.now
        status, body = await served.get("/readyz")
        assert status == 200
        assert body["status"] == "ready"
        assert body["rounds_completed"] == 1
        assert body["last_round_age_seconds"] == 0.0
        assert body["summary"] == "watching 2 models, 1 in progress"

    async def test_stale_round_is_not_ready(self, served: Served) -> None:
        """A last round older than the deadline (here 115 s) makes the daemon not ready."""
        progress = served.source.progress
        progress.rounds_completed, progress.last_round_mono = 3, served.clock.now
        served.clock.now += 115
        assert (await served.get("/readyz"))[0] == 200
        served.clock.now += 1
        status, body = await served.get("/readyz")
        assert status == 503
        assert body["reason"] == "last poll round 116s ago"
        assert body["round_deadline_seconds"] == 115.0

    async def test_unusable_database_is_not_ready(self, served: Served) -> None:
        """database_ok() false: 503 "state database unusable"."""
        progress = served.source.progress
        progress.rounds_completed, progress.last_round_mono = 1, served.clock.now
        served.source.db_ok = False
        status, body = await served.get("/readyz")
        assert (status, body["reason"]) == (503, "state database unusable")

    async def test_database_check_that_raises_is_not_ready(self, served: Served) -> None:
        """A check that raises counts as unusable, and is logged once."""
        progress = served.source.progress
        progress.rounds_completed, progress.last_round_mono = 1, served.clock.now
        served.source.db_error = RuntimeError("database disk image is malformed")
        with capture_logs() as logs:
            for _ in range(2):
                status, body = await served.get("/readyz")
                assert (status, body["reason"]) == (503, "state database unusable")
        assert [(e["log_level"], e["error"]) for e in logs] == [("error", "RuntimeError")]

    async def test_rejected_key_is_not_ready(self, served: Served) -> None:
        """progress.auth_failing: 503 "API key rejected"."""
        progress = served.source.progress
        progress.rounds_completed, progress.last_round_mono = 1, served.clock.now
        progress.auth_failing = True
        status, body = await served.get("/readyz")
        assert (status, body["reason"]) == (503, "API key rejected")

    async def test_every_reason_is_listed(self, served: Served) -> None:
        """Several problems at once: all reasons, in a fixed order."""
        served.source.db_ok = False
        served.source.progress.auth_failing = True
        status, body = await served.get("/readyz")
        assert status == 503
        assert body["reasons"] == [
            "no poll round completed yet",
            "state database unusable",
            "API key rejected",
        ]
        assert body["reason"] == "; ".join(body["reasons"])


class TestRules:
    def test_round_deadline_covers_the_slowest_interval(self, tmp_path: Path) -> None:
        """max(3 × interval, 60 s, settled round + interval) + the request timeout."""
        assert deadline_of(make_settings(tmp_path)) == 100 + 10 + 5
        fast = make_settings(tmp_path, settled_interval=2, interval=1)
        assert deadline_of(fast) == 60 + 5
        slow = make_settings(tmp_path, settled_interval=60, interval=50)
        assert deadline_of(slow) == 150 + 5

    def test_round_deadline_allows_for_jitter(self, tmp_path: Path) -> None:
        """Jitter can delay the slowest model by that fraction."""
        assert deadline_of(make_settings(tmp_path, jitter=0.1)) == pytest.approx(110 + 10 + 5)

    async def test_verdicts_are_plain_data(self, tmp_path: Path) -> None:
        """The rules are pure functions of the facts and the time."""
        progress = Progress(heartbeat_mono=100.0, rounds_completed=1, last_round_mono=100.0)
        alive = liveness(progress, now=110.0, listening_since=0.0)
        assert (alive.healthy, alive.http_status) == (True, 200)
        dead = liveness(progress, now=131.0, listening_since=0.0, stale_after=30.0)
        assert (dead.healthy, dead.http_status) == (False, 503)
        deadline = deadline_of(make_settings(tmp_path))
        ready = readiness(progress, deadline=deadline, database_ok=True, now=200.0)
        assert ready.healthy
        assert ready.body["status"] == "ready"

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("127.0.0.1", True),
            ("127.0.0.53", True),
            ("::1", True),
            ("[::1]", True),
            ("localhost", True),
            ("0.0.0.0", False),  # noqa: S104
            ("::", False),
            ("", False),
            ("192.168.1.10", False),
            ("watcher.example.com", False),
        ],
    )
    def test_is_loopback(self, host: str, expected: bool) -> None:
        """Only loopback addresses and ``localhost`` count as loopback."""
        assert is_loopback(host) is expected


class TestMetrics:
    async def test_prometheus_text_of_the_registry(self, served: Served) -> None:
        """/metrics serves the watcher's registry in the Prometheus text format."""
        known = COHERE_SCHEME.known
        served.source.metrics.watch_statuses(
            lambda: [
                ("cohere", "m1", status_label("STATUS_READY", known)),
                ("cohere", "m2", status_label(None, known)),
            ]
        )
        served.source.metrics.polls.labels("ok").inc(3)
        async with served.http.get(served.base_url + "/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()
        assert 'finetune_watcher_polls_total{outcome="ok"} 3.0' in text
        ready = 'model_id="m1",provider="cohere",status="STATUS_READY"'
        assert "finetune_watcher_model_status{" + ready + "} 1.0" in text
        assert 'finetune_watcher_models{status="none"} 1.0' in text
        assert "finetune_watcher_build_info{" in text
        assert "finetune_watcher_poll_latency_seconds_bucket{" in text
        assert "finetune_watcher_outbox_pending " in text

    async def test_unknown_path_is_404(self, served: Served) -> None:
        """Nothing else is served."""
        async with served.http.get(served.base_url + "/") as response:
            assert response.status == 404


class TestServer:
    async def test_loopback_bind_does_not_warn(self, tmp_path: Path) -> None:
        """The default, loopback, is quiet apart from the address it listens on."""
        source = FakeWatcher(make_settings(tmp_path))
        with capture_logs() as logs:
            async with HealthServer(source, host="127.0.0.1", port=0):
                pass
        assert [e["log_level"] for e in logs] == ["info"]
        assert logs[0]["event"] == "health server listening"

    async def test_non_loopback_bind_warns(self, tmp_path: Path) -> None:
        """Listening on every interface is allowed, and logged as a warning first."""
        source = FakeWatcher(make_settings(tmp_path))
        server = HealthServer(source, host="0.0.0.0", port=0)  # noqa: S104 -- the point of the test
        with capture_logs() as logs:
            host, port = await server.start()
        await server.aclose()
        assert (host, port > 0) == ("0.0.0.0", True)  # noqa: S104
        assert logs[0]["log_level"] == "warning"
        assert "beyond loopback" in logs[0]["event"]
        assert logs[0]["host"] == "0.0.0.0"  # noqa: S104

    async def test_port_in_use_is_a_clear_error(self, served: Served, tmp_path: Path) -> None:
        """A port another listener holds raises WatcherError naming the address."""
        port = int(served.base_url.rsplit(":", 1)[1])
        other = HealthServer(FakeWatcher(make_settings(tmp_path)), host="127.0.0.1", port=port)
        with pytest.raises(WatcherError, match=f"cannot listen on 127.0.0.1:{port}"):
            await other.start()
        await other.aclose()

    async def test_aclose_stops_serving_and_is_idempotent(self, tmp_path: Path) -> None:
        """After aclose() the port refuses connections; a second aclose() is fine."""
        server = HealthServer(FakeWatcher(make_settings(tmp_path)), host="127.0.0.1", port=0)
        _, port = await server.start()
        await server.aclose()
        await server.aclose()
        with pytest.raises(OSError):  # noqa: PT011 -- ECONNREFUSED, whatever its subclass
            await anyio.connect_tcp("127.0.0.1", port)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestHealthcheck:
    async def test_healthy_exits_0(
        self, served: Served, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """200 from /healthz: exit 0 and one line."""
        served.source.progress.heartbeat_mono = served.clock.now
        code = await anyio.to_thread.run_sync(healthcheck, served.base_url + "/healthz")
        assert code == 0
        out = capsys.readouterr().out
        assert out == f"healthy: {served.base_url}/healthz: ok\n"

    async def test_stalled_exits_1_with_the_reason(
        self, served: Served, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """503 from /healthz: exit 1 and the server's reason on one line."""
        served.source.progress.heartbeat_mono = served.clock.now - 100
        code = await anyio.to_thread.run_sync(healthcheck, served.base_url + "/healthz")
        assert code == 1
        assert capsys.readouterr().out == (
            f"unhealthy: {served.base_url}/healthz answered HTTP 503: "
            "poll loop heartbeat 100s old (limit 30s)\n"
        )

    def test_connection_refused_exits_1(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Nothing listening: exit 1, "cannot reach"."""
        url = f"http://127.0.0.1:{closed_port()}/healthz"
        assert healthcheck(url, timeout=2) == 1
        assert capsys.readouterr().out == f"unhealthy: cannot reach {url}: Connection refused\n"

    def test_timeout_exits_1(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A listener that never answers: exit 1 after the timeout."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()  # accepted by the kernel, never answered
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/healthz"
            assert healthcheck(url, timeout=0.2) == 1
        assert capsys.readouterr().out == f"unhealthy: cannot reach {url}: timed out\n"

    def test_not_http_exits_1(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Only http(s) URLs are fetched (no file://)."""
        assert healthcheck("file:///etc/passwd") == 1
        assert "not an http:// or https:// URL" in capsys.readouterr().out

    def test_importing_the_module_does_not_import_aiohttp(self) -> None:
        """The healthcheck starts fast: aiohttp and prometheus_client load only for a server."""
        code = (
            "import sys, watcher.health; "
            "print(sorted(m for m in ('aiohttp', 'prometheus_client') if m in sys.modules))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        assert result.stdout.strip() == "[]"

    @pytest.mark.parametrize(
        ("listen", "url"),
        [
            (None, DEFAULT_HEALTHCHECK_URL),
            ("", DEFAULT_HEALTHCHECK_URL),
            (":9464", "http://127.0.0.1:9464/healthz"),
            ("127.0.0.1:9500", "http://127.0.0.1:9500/healthz"),
            ("0.0.0.0:9464", "http://127.0.0.1:9464/healthz"),
            ("[::]:9464", "http://[::1]:9464/healthz"),
            ("[::1]:9464", "http://[::1]:9464/healthz"),
            ("localhost:9464", "http://localhost:9464/healthz"),
            ("10.0.0.5:9464", "http://10.0.0.5:9464/healthz"),
        ],
    )
    def test_url_from_the_listen_address(self, listen: str | None, url: str) -> None:
        """The check follows health.listen; wildcard binds are reached on loopback."""
        assert healthcheck_url(listen) == url

    @pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:99999", "host:port"])
    def test_url_needs_a_valid_port(self, listen: str) -> None:
        """A listen address without a usable port is an error, not a guess."""
        with pytest.raises(ValueError):  # noqa: PT011
            healthcheck_url(listen)
