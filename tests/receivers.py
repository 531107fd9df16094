"""Real notification receivers on loopback, for tests that need somewhere to deliver.

``webhook_receiver()`` is an aiohttp server that answers apprise's ``json://`` POSTs
and can be told to fail (any HTTP status) or to hang; ``smtp_receiver()`` is an
aiosmtpd server for ``mailto://``. Both record what they received, and both offer
``wait_for(count)`` so tests wait on a condition instead of sleeping.

    async with webhook_receiver() as hook:
        ...  # deliver to hook.url ("json://127.0.0.1:PORT/notify")
        await hook.wait_for(1)
        assert hook.messages[0]["title"] == "..."

    with smtp_receiver() as smtp:
        ...  # deliver to smtp.url(to="ops@example.com")
        await smtp.wait_for(1)
        assert smtp.messages[0].subject == "..."
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import anyio.to_thread
from aiohttp import web
from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"

#: What a request left hanging answers once it is released (by ``recover()`` or
#: by closing the receiver). Apprise has long given up on it by then; it must not
#: count as a delivered message.
_RELEASED_STATUS = 503


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def refused_url(path: str = "/notify") -> str:
    """A ``json://`` URL on a loopback port where nobody listens: connection refused."""
    return f"json://{LOOPBACK}:{free_port()}{path}"


# --- Webhook (apprise json://) ---------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST as the webhook receiver saw it, and how it answered."""

    path: str
    body: bytes
    headers: dict[str, str]
    answered: int  # the HTTP status sent back
    payload: dict[str, Any] | None  # the JSON body, when it was a JSON object

    @property
    def accepted(self) -> bool:
        return 200 <= self.answered < 300


class WebhookReceiver:
    """An aiohttp server recording apprise ``json://`` notifications.

    ``messages`` holds the JSON bodies the receiver *accepted* (answered 200): what
    a real webhook would have delivered. ``requests`` holds every POST, including
    the ones answered with an error or left hanging, in arrival order.
    """

    def __init__(self, path: str = "/notify") -> None:
        self.path = path
        self.port = 0
        self.messages: list[dict[str, Any]] = []
        self.requests: list[ReceivedRequest] = []
        self._fail_status: int | None = None
        self._hanging = False
        self._release = asyncio.Event()
        self._changed = asyncio.Condition()
        self._hung_now = 0
        self._runner: web.AppRunner | None = None

    # -- what tests read --

    @property
    def url(self) -> str:
        """The apprise URL that delivers here."""
        return f"json://{LOOPBACK}:{self.port}{self.path}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.path}"

    @property
    def hanging_requests(self) -> int:
        """How many requests are being held open right now."""
        return self._hung_now

    # -- behaviour switches --

    def fail_with(self, status: int = 500) -> None:
        """Answer every following POST with ``status`` (recorded, not accepted)."""
        self._fail_status = status
        self._hanging = False

    def hang(self) -> None:
        """Hold every following POST open without answering until ``recover()``."""
        self._hanging = True
        self._fail_status = None
        if self._release.is_set():  # keep the event requests already hanging wait on
            self._release = asyncio.Event()

    def recover(self) -> None:
        """Accept POSTs again; requests still hanging are released with a 503."""
        self._fail_status = None
        self._hanging = False
        self._release.set()

    # -- waiting --

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages were accepted; returns them."""
        await self._wait(lambda: len(self.messages) >= count, timeout, f"{count} message(s)")
        return list(self.messages)

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` POSTs arrived (accepted or not)."""
        await self._wait(lambda: len(self.requests) >= count, timeout, f"{count} request(s)")
        return list(self.requests)

    async def _wait(self, ready: Any, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(ready)
        except TimeoutError:
            raise AssertionError(
                f"webhook receiver: waited {timeout}s for {what}; have "
                f"{len(self.messages)} message(s) from {len(self.requests)} request(s)"
            ) from None

    # -- server --

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 200
        if self._hanging:
            self._hung_now += 1
            try:
                await self._release.wait()
            finally:
                self._hung_now -= 1
            status = _RELEASED_STATUS
        elif self._fail_status is not None:
            status = self._fail_status
        payload = _json_object(body)
        self.requests.append(
            ReceivedRequest(request.path, body, dict(request.headers), status, payload)
        )
        if 200 <= status < 300:
            self.messages.append(payload if payload is not None else {"raw": body.decode()})
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status, text="ok" if status < 300 else "unavailable")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        # Release hanging requests first, so the senders' threads end promptly.
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@asynccontextmanager
async def webhook_receiver(path: str = "/notify") -> AsyncIterator[WebhookReceiver]:
    """A running ``WebhookReceiver`` on a free loopback port, closed on exit."""
    receiver = WebhookReceiver(path)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()


# --- SMTP (apprise mailto://) ----------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the SMTP receiver got it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage = field(repr=False)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def text(self) -> str:
        """The plain-text body (or the HTML one when there is no text part)."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return str(part.get_content()) if part is not None else ""


class _RecordingHandler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return self._receiver._record(
            ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), message)
        )


class SmtpReceiver:
    """An aiosmtpd server (its own thread) recording every message it accepts.

    ``messages`` are the accepted messages; ``rejected`` the ones refused while
    ``reject()`` was in force.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[ReceivedMail] = []
        self.rejected: list[ReceivedMail] = []
        self._reject_code: int | None = None
        self._cond = threading.Condition()
        self._controller = Controller(_RecordingHandler(self), hostname=LOOPBACK, port=port)

    def url(self, to: str = "team@example.com", sender: str = "watcher@example.com") -> str:
        """A plain-SMTP (no TLS, no login) apprise URL that delivers here."""
        return f"mailto://{LOOPBACK}:{self.port}?from={sender}&to={to}"

    def reject(self, code: int = 554) -> None:
        """Refuse every following message with SMTP reply ``code`` (after DATA)."""
        with self._cond:
            self._reject_code = code

    def recover(self) -> None:
        """Accept messages again."""
        with self._cond:
            self._reject_code = None

    def _record(self, mail: ReceivedMail) -> str:
        with self._cond:
            code = self._reject_code
            (self.rejected if code is not None else self.messages).append(mail)
            self._cond.notify_all()
        if code is not None:
            return f"{code} Rejected by the test receiver"
        return "250 Message accepted for delivery"

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Wait (without blocking the event loop) until ``count`` messages arrived."""

        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(lambda: len(self.messages) >= count, timeout)

        if not await anyio.to_thread.run_sync(wait):
            raise AssertionError(
                f"smtp receiver: waited {timeout}s for {count} message(s); "
                f"have {len(self.messages)}"
            )
        with self._cond:
            return list(self.messages)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """A running ``SmtpReceiver`` on a free loopback port, stopped on exit."""
    # The port is free when asked but could be taken before aiosmtpd binds it.
    for attempt in range(3):
        receiver = SmtpReceiver(free_port())
        try:
            receiver.start()
            break
        except OSError:
            if attempt == 2:
                raise
    try:
        yield receiver
    finally:
        receiver.stop()
