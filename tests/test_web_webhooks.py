"""``POST /webhooks/openai`` against a real server, signed with the standardwebhooks library."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from tests.web_fakes import FakeSource
from watcher.web import WebOptions, make_app, mount_web
from watcher.web.app import WEB_MOUNT
from watcher.web.webhooks import RateLimitedLog, SeenIds

SECRET = "whsec_" + base64.b64encode(b"finetune-watcher-test-secret-32b").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"someone-else-entirely-0123456789").decode()


def signed(
    event: dict[str, Any] | bytes,
    *,
    webhook_id: str = "wh_1",
    secret: str = SECRET,
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A body and the headers OpenAI would send, signed by the reference library."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, at, body.decode("utf-8", "replace"))
    return body, {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def job_event(job_id: str = "ftjob-abc", kind: str = "fine_tuning.job.succeeded") -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "created_at": 1764500000, "type": kind,
            "data": {"id": job_id}}  # fmt: skip


@pytest.fixture
def source() -> FakeSource:
    source = FakeSource()
    source.add("ftjob-abc", name="watched", provider="openai", status="running", phase="running")
    return source


@pytest.fixture
async def server(source: FakeSource) -> AsyncIterator[TestServer]:
    anywhere = "0.0.0.0"  # noqa: S104 -- the configured host; the test binds 127.0.0.1
    app = make_app(source, WebOptions(listen_host=anywhere, webhook_secret=SECRET))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def post(
    http: aiohttp.ClientSession, server: TestServer, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.post(server.make_url("/webhooks/openai"), data=body, headers=headers) as a:
        return a.status, await a.json()


class TestAccepted:
    async def test_job_event_polls_that_job(
        self, server: TestServer, http: aiohttp.ClientSession, source: FakeSource
    ) -> None:
        """A valid fine_tuning.job.* event for a watched job: 200, and the daemon polls it."""
        status, body = await post(http, server, *signed(job_event()))
        assert (status, body) == (200, {"poll": "scheduled"})
        assert source.poll_requests == [("openai", "ftjob-abc")]

    async def test_unknown_job_is_accepted_not_polled(
        self, server: TestServer, http: aiohttp.ClientSession, source: FakeSource
    ) -> None:
        """A valid event for a job nobody watches: 202, so OpenAI does not retry."""
        status, body = await post(http, server, *signed(job_event("ftjob-other")))
        assert (status, body) == (202, {"poll": "not watched"})

    async def test_other_event_types_are_ignored(
        self, server: TestServer, http: aiohttp.ClientSession, source: FakeSource
    ) -> None:
        status, body = await post(http, server, *signed(job_event(kind="batch.completed")))
        assert (status, body) == (202, {"ignored": "batch.completed"})
        assert source.poll_requests == []

    async def test_webhooks_are_open_even_when_the_page_is_locked(
        self, server: TestServer, http: aiohttp.ClientSession
    ) -> None:
        """The path carries its own signatures: no token, even beyond loopback."""
        async with http.get(server.make_url("/api/status")) as answer:
            assert answer.status == 403
        status, _ = await post(http, server, *signed(job_event()))
        assert status == 200


class TestRefused:
    @pytest.mark.parametrize(
        "tamper",
        [
            "wrong secret",
            "stale",
            "future",
            "no signature",
            "no id",
            "garbage signature",
            "bad base64",
            "body changed",
            "bad timestamp",
        ],
    )
    async def test_unverified_is_400_and_nothing_happens(
        self, server: TestServer, http: aiohttp.ClientSession, source: FakeSource, tamper: str
    ) -> None:
        """Bad signature, stale or future timestamp, missing or malformed headers: 400."""
        now = datetime.now(UTC)
        body, headers = signed(job_event())
        if tamper == "wrong secret":
            body, headers = signed(job_event(), secret=OTHER_SECRET)
        elif tamper == "stale":
            body, headers = signed(job_event(), at=now - timedelta(minutes=6))
        elif tamper == "future":
            body, headers = signed(job_event(), at=now + timedelta(minutes=6))
        elif tamper == "no signature":
            del headers["webhook-signature"]
        elif tamper == "no id":
            del headers["webhook-id"]
        elif tamper == "garbage signature":
            headers["webhook-signature"] = "garbage"
        elif tamper == "bad base64":
            headers["webhook-signature"] = "v1,@@@not-base64@@@"
        elif tamper == "body changed":
            body = body.replace(b"ftjob-abc", b"ftjob-abd")
        elif tamper == "bad timestamp":
            headers["webhook-timestamp"] = "nan"
        status, answer = await post(http, server, body, headers)
        assert status == 400
        assert "error" in answer
        assert source.poll_requests == []

    async def test_within_tolerance_is_accepted(
        self, server: TestServer, http: aiohttp.ClientSession
    ) -> None:
        """Four minutes old is inside ±5 min."""
        at = datetime.now(UTC) - timedelta(minutes=4)
        status, _ = await post(http, server, *signed(job_event(), at=at))
        assert status == 200

    async def test_replayed_id_is_refused(
        self, server: TestServer, http: aiohttp.ClientSession, source: FakeSource
    ) -> None:
        """The same webhook-id twice: the second is a replay (400), and polls nothing."""
        body, headers = signed(job_event(), webhook_id="wh_replay")
        assert (await post(http, server, body, headers))[0] == 200
        status, answer = await post(http, server, body, headers)
        assert (status, answer) == (400, {"error": "replayed webhook-id"})
        assert source.poll_requests == [("openai", "ftjob-abc")]

    async def test_bodies_that_are_not_objects(
        self, server: TestServer, http: aiohttp.ClientSession
    ) -> None:
        """Correctly signed nonsense is still refused, without an exception."""
        for n, body in enumerate((b"[1, 2]", b"not json", b"[" * 100_00 + b"]" * 100_00)):
            status, _ = await post(http, server, *signed(body, webhook_id=f"wh_{n}"))
            assert status == 400
        status, _ = await post(http, server, *signed(b"\xff\xfe", webhook_id="wh_x"))
        assert status == 400
        event = job_event()
        event["data"] = {"id": 42}
        status, _ = await post(http, server, *signed(event, webhook_id="wh_y"))
        assert status == 400

    async def test_oversized_body_is_413(
        self, server: TestServer, http: aiohttp.ClientSession
    ) -> None:
        event = job_event()
        event["padding"] = "x" * 70_000
        status, _ = await post(http, server, *signed(event))
        assert status == 413

    async def test_refusals_are_logged_once_without_secret_or_body(
        self, server: TestServer, http: aiohttp.ClientSession
    ) -> None:
        """Five bad signatures: one log line, naming the reason, never the secret or body."""
        with capture_logs() as logs:
            for n in range(5):
                body, headers = signed(job_event("ftjob-SENSITIVE"), secret=OTHER_SECRET,
                                       webhook_id=f"wh_{n}")  # fmt: skip
                await post(http, server, body, headers)
        refusals = [entry for entry in logs if entry["event"].startswith("webhook refused")]
        assert len(refusals) == 1
        assert refusals[0]["event"] == "webhook refused: bad signature"
        text = repr(logs)
        assert SECRET[6:] not in text
        assert OTHER_SECRET[6:] not in text
        assert "SENSITIVE" not in text


class TestConfiguration:
    async def test_no_secret_no_route(self, http: aiohttp.ClientSession) -> None:
        """Without a secret the path is not served."""
        app = make_app(FakeSource(), WebOptions(listen_host="127.0.0.1"))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            async with http.post(server.make_url("/webhooks/openai"), data=b"{}") as answer:
                assert answer.status in (404, 405)
            assert app[WEB_MOUNT].webhooks is None
        finally:
            await server.close()

    @pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!!", "   "])
    def test_bad_secret_fails_the_start(self, secret: str) -> None:
        from aiohttp import web

        with pytest.raises(ValueError, match="whsec_"):
            mount_web(web.Application(), FakeSource(), WebOptions("::1", webhook_secret=secret))


class TestSeenIds:
    def test_remembers_then_forgets_after_keep(self) -> None:
        """An id is a replay while remembered; after ``keep`` seconds it is forgotten."""
        now = [0.0]
        seen = SeenIds(keep=600.0, limit=100, clock=lambda: now[0])
        assert seen.first_time("a")
        assert not seen.first_time("a")
        now[0] = 601.0
        assert seen.first_time("b")  # the sweep drops "a"
        assert seen.first_time("a")

    def test_bounded(self) -> None:
        """At most ``limit`` ids are kept: memory is bounded whatever arrives."""
        seen = SeenIds(keep=600.0, limit=3, clock=lambda: 0.0)
        for n in range(10):
            assert seen.first_time(str(n))
        assert len(seen) == 3

    def test_rate_limited_log_counts_what_it_suppressed(self) -> None:
        now = [0.0]
        limited = RateLimitedLog("webhook refused", every=60.0, clock=lambda: now[0])
        with capture_logs() as logs:
            for _ in range(4):
                limited.warning("bad signature")
            now[0] = 61.0
            limited.warning("bad signature")
        assert [entry["suppressed_since_last"] for entry in logs] == [0, 3]
