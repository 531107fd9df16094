"""The web layer over a real aiohttp server on port 0 and a hand-written fake daemon.

Access rule, the status page and the JSON API, the event stream and its bounds.
Webhooks are in ``test_web_webhooks.py``, the browser in ``tests/browser/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.web_fakes import FakeSource, sample_source
from watcher.redact import SECRETS
from watcher.web import SERVER_LIMITS, WebOptions, make_app
from watcher.web.app import WEB_MOUNT
from watcher.web.auth import SESSION_COOKIE, Access, access_rule, safe_next
from watcher.web.page import human_duration, model_path, status_view

TOKEN = "t0ken-for-tests-0123456789abcdef"  # noqa: S105 -- a test token
#: A configured listen host beyond loopback (the tests still bind 127.0.0.1).
ANYWHERE = "0.0.0.0"  # noqa: S104 -- never bound: the access rule reads it

Serve = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start the web layer for a source on 127.0.0.1:0 (the *configured* host is an option)."""
    servers: list[TestServer] = []

    async def start(
        source: FakeSource, *, extra: Callable[[web.Application], None] | None = None, **opts: Any
    ) -> TestServer:
        opts.setdefault("listen_host", "127.0.0.1")
        app = make_app(source, WebOptions(**opts))
        if extra is not None:
            extra(app)
        server = TestServer(app, host="127.0.0.1", port=0, **SERVER_LIMITS)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address (127.0.0.1)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10), cookie_jar=jar
    ) as session:
        yield session


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


class TestAccessRule:
    @pytest.mark.parametrize(
        ("host", "public", "token", "expected"),
        [
            ("127.0.0.1", False, False, Access.LOOPBACK),
            ("127.0.0.2", False, False, Access.LOOPBACK),
            ("::1", False, False, Access.LOOPBACK),
            ("[::1]", False, False, Access.LOOPBACK),
            ("localhost", False, False, Access.LOOPBACK),
            (ANYWHERE, False, False, Access.LOCKED),
            ("::", False, False, Access.LOCKED),
            ("", False, False, Access.LOCKED),
            ("watcher.example", False, False, Access.LOCKED),
            ("10.0.0.7", False, True, Access.TOKEN),
            ("127.0.0.1", False, True, Access.TOKEN),
            (ANYWHERE, True, False, Access.PUBLIC),
            (ANYWHERE, True, True, Access.PUBLIC),
        ],
    )
    def test_table(self, host: str, public: bool, token: bool, expected: Access) -> None:
        """The rule depends on the configured listen host, web.public and the token only."""
        assert access_rule(host, public=public, has_token=token) is expected

    @pytest.mark.parametrize(
        ("target", "expected"),
        [
            ("/models/openai/x", "/models/openai/x"),
            ("/?a=1", "/?a=1"),
            (None, "/"),
            ("", "/"),
            ("https://evil.example/", "/"),
            ("//evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("/ok\r\nSet-Cookie: x=1", "/"),
            ("javascript:alert(1)", "/"),
        ],
    )
    def test_login_redirects_stay_local(self, target: str | None, expected: str) -> None:
        """After login the browser only goes to a path of this server."""
        assert safe_next(target) == expected

    async def test_loopback_is_open(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """On a loopback listener without a token, page and API need nothing."""
        server = await serve(sample_source())
        for path in ("/", "/api/status", "/models/openai/ftjob-abc123"):
            async with http.get(url(server, path)) as answer:
                assert answer.status == 200, path

    @pytest.mark.parametrize(
        ("host", "allowed"),
        [
            ("127.0.0.1:9464", True),
            ("localhost:9464", True),
            ("LOCALHOST", True),
            ("[::1]:9464", True),
            ("127.9.9.9", True),
            ("evil.example:9464", False),
            ("localhost.evil.example", False),
            ("127.0.0.1.nip.io", False),
            ("", False),
        ],
    )
    async def test_loopback_answers_only_loopback_names(
        self, serve: Serve, http: aiohttp.ClientSession, host: str, allowed: bool
    ) -> None:
        """DNS rebinding: a foreign Host on the open loopback listener gets 403, no data."""
        server = await serve(sample_source())
        for path in ("/api/status", "/"):
            async with http.get(url(server, path), headers={"Host": host}) as answer:
                assert (answer.status == 200) is allowed, (path, host)
                if not allowed:
                    assert answer.status == 403
                    assert "support-classifier" not in await answer.text()

    async def test_beyond_loopback_without_token_is_locked(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """Listening on 0.0.0.0 with neither token nor web.public: 403, probes still open."""

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        server = await serve(
            sample_source(),
            listen_host=ANYWHERE,
            extra=lambda app: app.router.add_get("/healthz", healthz),
        )
        assert server.app is not None
        assert server.app[WEB_MOUNT].access is Access.LOCKED
        async with http.get(url(server, "/")) as answer:
            assert answer.status == 403
            assert "web.token_file" in await answer.text()
        async with http.get(url(server, "/api/status")) as answer:
            assert answer.status == 403
        async with http.get(url(server, "/api/stream")) as answer:
            assert answer.status == 403
        async with http.get(url(server, "/healthz")) as answer:
            assert answer.status == 200
        async with http.get(url(server, "/static/page.css")) as answer:
            assert answer.status == 200

    async def test_public_opens_it(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """web.public: true opens page and API beyond loopback."""
        server = await serve(sample_source(), listen_host=ANYWHERE, public=True)
        async with http.get(url(server, "/api/status")) as answer:
            assert answer.status == 200

    async def test_bearer_token(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """The API answers 401 with WWW-Authenticate until the right Bearer token comes."""
        server = await serve(sample_source(), listen_host=ANYWHERE, token=TOKEN)
        async with http.get(url(server, "/api/status")) as answer:
            assert answer.status == 401
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
            async with http.get(url(server, "/api/status"), headers={"Authorization": wrong}) as a:
                assert a.status == 401, wrong
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(url(server, "/api/status"), headers=headers) as answer:
            assert answer.status == 200
        async with http.get(url(server, "/"), headers=headers) as answer:
            assert answer.status == 200

    async def test_token_also_guards_loopback(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """A configured token is required even on loopback (a proxy may sit in front)."""
        server = await serve(sample_source(), token=TOKEN)
        async with http.get(url(server, "/api/status")) as answer:
            assert answer.status == 401

    async def test_login_form_sets_a_strict_cookie(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """The page shows a login form; the right token sets an HttpOnly SameSite=Strict cookie."""
        server = await serve(sample_source(), listen_host=ANYWHERE, token=TOKEN)
        async with http.get(url(server, "/models/openai/ftjob-abc123")) as answer:
            assert answer.status == 401
            text = await answer.text()
            assert 'action="/login"' in text
            assert 'value="/models/openai/ftjob-abc123"' in text
            assert "support-classifier" not in text
        form = {"token": "wrong", "next": "/"}
        async with http.post(url(server, "/login"), data=form, allow_redirects=False) as answer:
            assert answer.status == 401
            assert "not right" in await answer.text()
            assert SESSION_COOKIE not in answer.cookies
        form = {"token": TOKEN, "next": "https://evil.example/"}
        async with http.post(url(server, "/login"), data=form, allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["Location"] == "/"
            cookie = answer.headers["Set-Cookie"]
            assert "HttpOnly" in cookie
            assert "SameSite=Strict" in cookie
            assert TOKEN not in cookie
        async with http.get(url(server, "/")) as answer:  # the jar sends the cookie
            assert answer.status == 200
            assert "support-classifier" in await answer.text()
        async with http.post(url(server, "/logout"), allow_redirects=False) as answer:
            assert answer.status == 303
        async with http.get(url(server, "/")) as answer:
            assert answer.status == 401

    async def test_forged_cookie_is_refused(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """The cookie must be the token's HMAC; the token itself as a cookie is not enough."""
        server = await serve(sample_source(), listen_host=ANYWHERE, token=TOKEN)
        for value in (TOKEN, "0" * 64, ""):
            async with http.get(
                url(server, "/api/status"), headers={"Cookie": f"{SESSION_COOKIE}={value}"}
            ) as answer:
                assert answer.status == 401

    async def test_login_form_is_bounded(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """A huge or odd login body is refused without being parsed."""
        server = await serve(sample_source(), listen_host=ANYWHERE, token=TOKEN)
        async with http.post(url(server, "/login"), data={"token": "x" * 10_000}) as answer:
            assert answer.status == 400
        async with http.post(url(server, "/login"), json={"token": TOKEN}) as answer:
            assert answer.status == 400

    async def test_no_login_routes_without_a_token(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        server = await serve(sample_source())
        async with http.post(url(server, "/login"), data={"token": "x"}) as answer:
            assert answer.status in (404, 405)


class TestStatusPage:
    async def test_lists_every_model_escaped(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """Every model is a row; names, ids and errors are escaped, never markup."""
        source = sample_source()
        hostile = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
        source.add("evil/id?<b>&x", name=hostile, provider="openai", status="running",
                   phase="running", last_error="<iframe src=//evil>")  # fmt: skip
        server = await serve(source)
        async with http.get(url(server, "/")) as answer:
            assert answer.status == 200
            assert answer.content_type == "text/html"
            csp = answer.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp
            assert "default-src 'none'" in csp
            text = await answer.text()
        assert text.count("<tr data-key=") == len(source.models)
        for model in source.models.values():
            assert f"{model['id']}" in text or "evil/id" in model["id"]
        assert "<script>alert" not in text
        assert "<img src=x" not in text
        assert "<iframe" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert 'href="/models/openai/evil%2Fid%3F%3Cb%3E%26x"' in text
        assert "1 pending · 14 delivered · 0 given up" in text

    async def test_shows_status_word_icon_and_provider_status(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """The phase word and an icon (never colour alone), the provider's spelling beside."""
        server = await serve(sample_source())
        async with http.get(url(server, "/")) as answer:
            text = await answer.text()
        assert re.search(
            r'<span class="status phase-ready"><svg class="icon"[^>]*><use href="#icon-ready">'
            r'</use></svg><span class="word">ready</span></span> '
            r'<span class="detail">STATUS_READY</span>',
            text,
        )
        assert '<span class="word">not polled yet</span>' in text
        assert '<span class="word">STATUS_PAUSED</span>' in text  # phase "other": the status
        assert "2h 14m ago" not in text or "1h 3m ago" in text

    async def test_model_page_and_timeline(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """A model's page shows its facts and every stage of its timeline; unknown is 404."""
        source = sample_source()
        source.set_status("openai", "ftjob-abc123", "succeeded", "ready")
        server = await serve(source)
        async with http.get(url(server, "/models/openai/ftjob-abc123")) as answer:
            assert answer.status == 200
            text = await answer.text()
        assert '<h1 id="model-name">support-classifier</h1>' in text
        assert text.count("<li>") == 2
        assert "so far" in text
        async with http.get(url(server, "/models/openai/nope")) as answer:
            assert answer.status == 404

    async def test_ids_with_slashes_round_trip(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """A model id with ``/`` (Fireworks' job names) has a working page and API path."""
        source = FakeSource()
        model_id = "accounts/acme/supervisedFineTuningJobs/j-1"
        source.add(model_id, name="fw", provider="fireworks", status="JOB_STATE_RUNNING",
                   phase="running")  # fmt: skip
        server = await serve(source)
        path = model_path("fireworks", model_id)
        async with http.get(url(server, path)) as answer:
            assert answer.status == 200
        async with http.get(url(server, "/api" + path)) as answer:
            assert answer.status == 200
            assert (await answer.json())["model"]["id"] == model_id

    async def test_static_files_are_small_and_cached(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """CSS and JS are served by the package, a few kB, with an ETag."""
        server = await serve(sample_source())
        async with http.get(url(server, "/")) as answer:
            text = await answer.text()
        css = re.search(r'href="(/static/page\.css\?v=\w+)"', text)
        js = re.search(r'src="(/static/page\.js\?v=\w+)"', text)
        assert css
        assert js
        total = len(text.encode())
        for path in (css.group(1), js.group(1)):
            async with http.get(url(server, path)) as answer:
                assert answer.status == 200
                assert "immutable" in answer.headers["Cache-Control"]
                body = await answer.read()
                total += len(body)
                etag = answer.headers["ETag"]
            async with http.get(url(server, path), headers={"If-None-Match": etag}) as answer:
                assert answer.status == 304
        assert total < 40_000
        async with http.get(url(server, "/static/../app.py")) as answer:
            assert answer.status == 404

    async def test_secrets_never_shown(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """A secret the process knows is scrubbed from the page and the API, as in the CLI."""
        secret = "sk-leaky-secret-value-42"  # noqa: S105 -- a fake secret
        SECRETS.add(secret)
        source = sample_source()
        source.add("leak", name="leaky", status="failed", phase="failed",
                   last_error=f"401 for key {secret}")  # fmt: skip
        server = await serve(source)
        for path in ("/", "/api/status", "/models/cohere/leak", "/api/models/cohere/leak"):
            async with http.get(url(server, path)) as answer:
                assert secret not in await answer.text(), path

    def test_pure_helpers(self) -> None:
        """Durations use the two largest units; a null status reads as the CLI does."""
        seconds = (0, 45, 845, 8040, 10801, 273600, 86400, -5)
        expected = ["0s", "45s", "14m 5s", "2h 14m", "3h", "3d 4h", "1d", "0s"]
        assert [human_duration(s) for s in seconds] == expected
        assert status_view({"status": None}).word == "not polled yet"
        assert status_view({"status": None, "last_poll_at": "t"}).word == "unknown"
        view = status_view({"status": None, "last_poll_at": "t", "last_success_at": "t"})
        assert view.word == "no events yet"
        assert status_view({"status": "STATUS_X"}).phase == "other"
        assert status_view({"status": "x", "phase": "<bad>"}).phase == "other"


class TestApi:
    async def test_status_is_exactly_the_document(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """GET /api/status is the status --json document, byte for byte in content."""
        source = sample_source(clock_follows=False)
        server = await serve(source)
        async with http.get(url(server, "/api/status")) as answer:
            assert answer.status == 200
            assert answer.content_type == "application/json"
            assert answer.headers["Cache-Control"] == "no-store"
            document = await answer.json()
        assert document == await source.status_document()

    async def test_model_document(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        source = sample_source()
        server = await serve(source)
        async with http.get(url(server, "/api/models/openai/ftjob-zz9")) as answer:
            document = await answer.json()
        assert document["model"]["last_error"] == "training file has 3 malformed lines"
        assert document["timeline"][0]["status"] == "failed"
        async with http.get(url(server, "/api/models/openai/unknown")) as answer:
            assert answer.status == 404
            assert await answer.json() == {"error": "no such model"}

    async def test_header_limits(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """Oversized headers are refused by the server before any handler runs."""
        server = await serve(sample_source())
        async with http.get(url(server, "/api/status"), headers={"X-Big": "a" * 20_000}) as a:
            assert a.status in (400, 431)


# --- the stream -------------------------------------------------------------------------


class SseReader:
    """Reads server-sent events from an open response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next_event(self, timeout: float = 5.0) -> tuple[str, str]:
        """The next ``(event, data)``; comments and ``retry:`` are skipped."""
        kind, data = "message", ""
        with anyio.fail_after(timeout):
            while True:
                line = (await self.response.content.readline()).decode()
                if line == "":
                    raise EOFError("stream ended")
                line = line.rstrip("\n")
                if line == "":
                    if data:
                        return kind, data
                    kind = "message"
                    continue
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]

    async def next_of(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                got, data = await self.next_event(timeout)
                if got == kind:
                    return dict(json.loads(data))


class TestStream:
    async def test_sends_current_state_then_changes_quickly(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """First the daemon facts and the document, then each change within a second."""
        source = sample_source()
        server = await serve(source)
        async with http.get(url(server, "/api/stream")) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/event-stream")
            reader = SseReader(answer)
            facts = await reader.next_of("daemon")
            assert facts["ready"] is True
            first = await reader.next_of("status")
            assert len(first["models"]) == len(source.models)
            started = time.monotonic()
            source.set_status("openai", "ftjob-abc123", "succeeded", "ready")
            changed = await reader.next_of("status", timeout=1.0)
            assert time.monotonic() - started < 1.0
        model = next(m for m in changed["models"] if m["id"] == "ftjob-abc123")
        assert model["status"] == "succeeded"

    async def test_waits_while_the_daemon_starts(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """Before the state database is open: 503 with Retry-After, a page that reloads
        itself, and a stream that sends facts, then the document once it can."""
        source = sample_source()
        source.starting = "waiting for the state database"
        server = await serve(source)
        async with http.get(url(server, "/api/status")) as answer:
            assert answer.status == 503
            assert answer.headers["Retry-After"] == "5"
            assert await answer.json() == {"error": "waiting for the state database"}
        async with http.get(url(server, "/")) as answer:
            assert answer.status == 503
            text = await answer.text()
            assert '<meta http-equiv="refresh" content="5">' in text
            assert "waiting for the state database" in text
        async with http.get(url(server, "/models/openai/ftjob-abc123")) as answer:
            assert answer.status == 503
        async with http.get(url(server, "/api/stream")) as answer:
            reader = SseReader(answer)
            await reader.next_of("daemon")
            source.starting = None
            source.bump()
            document = await reader.next_of("status", timeout=2.0)
        assert len(document["models"]) == len(source.models)

    async def test_daemon_facts_follow_without_a_change(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """Readiness changes reach the page within ``refresh`` even without a recorded change."""
        source = sample_source()
        server = await serve(source, refresh=0.2)
        async with http.get(url(server, "/api/stream")) as answer:
            reader = SseReader(answer)
            await reader.next_of("daemon")
            source.facts = source.facts.__class__(
                alive=True, ready=False, summary="x", reasons=("API key rejected",)
            )
            facts = await reader.next_of("daemon", timeout=2.0)
        assert facts["reasons"] == ["API key rejected"]

    async def test_one_read_per_change_for_all_clients(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """Fifty open streams cost one read of the daemon per change, not fifty."""
        source = sample_source()
        server = await serve(source)
        assert server.app is not None
        feed = server.app[WEB_MOUNT].feed
        async with aiohttp.ClientSession() as many:
            answers = [await many.get(url(server, "/api/stream")) for _ in range(50)]
            readers = [SseReader(a) for a in answers]
            for reader in readers:
                await reader.next_of("status")
            before = feed.reads
            source.set_status("cohere", "b71c-queued", "STATUS_FINETUNING", "running")
            for reader in readers:
                await reader.next_of("status", timeout=2.0)
            assert feed.reads - before == 1
            for answer in answers:
                answer.close()

    async def test_two_hundred_streams_still_see_a_change_within_a_second(
        self, serve: Serve
    ) -> None:
        """With 200 clients holding streams open, a change reaches every one in under 1 s
        and the API keeps answering quickly meanwhile."""
        source = sample_source()
        server = await serve(source)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as many:
            answers = [await many.get(url(server, "/api/stream")) for _ in range(200)]
            readers = [SseReader(a) for a in answers]
            for reader in readers:
                await reader.next_of("status")
            started = time.monotonic()
            source.set_status("openai", "ftjob-abc123", "succeeded", "ready")
            async with many.get(url(server, "/api/status")) as answer:
                assert answer.status == 200
                api_latency = time.monotonic() - started
            for reader in readers:
                await reader.next_of("status", timeout=2.0)
            everyone = time.monotonic() - started
            for answer in answers:
                answer.close()
        assert everyone < 1.0, everyone
        assert api_latency < 0.5, api_latency

    async def test_stream_cap_answers_503(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        """Beyond max_streams a client gets 503 with Retry-After; a closed one frees its slot."""
        server = await serve(sample_source(), max_streams=2)
        assert server.app is not None
        streams = server.app[WEB_MOUNT].streams
        first = await http.get(url(server, "/api/stream"))
        second = await http.get(url(server, "/api/stream"))
        async with http.get(url(server, "/api/stream")) as third:
            assert third.status == 503
            assert third.headers["Retry-After"] == "10"
        first.close()
        await _wait(lambda: streams.open_streams == 1)
        async with http.get(url(server, "/api/stream")) as again:
            assert again.status == 200
        second.close()

    async def test_a_client_that_stops_reading_is_dropped(
        self, serve: Serve, http: aiohttp.ClientSession
    ) -> None:
        """A reader that never reads is dropped after the write timeout; others never wait."""
        source = FakeSource()
        for n in range(300):
            source.add(f"m-{n:03}", name="x" * 200, status="running", phase="running")
        server = await serve(source, stream_write_timeout=0.3)
        assert server.app is not None
        streams = server.app[WEB_MOUNT].streams
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port or 0))
        await loop.sock_sendall(sock, b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            await _wait(lambda: streams.open_streams == 1)
            worst = 0.0
            for n in range(200):
                source.models[("cohere", f"m-{n % 300:03}")]["failures"] = n
                source.bump()
                started = time.monotonic()
                async with http.get(url(server, "/api/status")) as answer:
                    assert answer.status == 200
                    await answer.read()
                worst = max(worst, time.monotonic() - started)
                if streams.dropped:
                    break
                await anyio.sleep(0.01)
            assert streams.dropped == 1
            await _wait(lambda: streams.open_streams == 0)
            assert worst < 0.5
        finally:
            sock.close()

    async def test_shutdown_ends_open_streams(self, http: aiohttp.ClientSession) -> None:
        """Stopping the server does not wait for open streams to end by themselves."""
        app = make_app(sample_source(), WebOptions(listen_host="127.0.0.1"))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        answer = await http.get(url(server, "/api/stream"))
        await SseReader(answer).next_of("status")
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 2.0
        answer.close()


async def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


def test_timedelta_in_fake_is_plausible() -> None:
    """The fake's default 'since' reads as the README's example."""
    assert human_duration(timedelta(hours=2, minutes=14).total_seconds()) == "2h 14m"
