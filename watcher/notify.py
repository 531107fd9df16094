"""Delivery through apprise: targets, and sending one message to many of them at once.

``Notifier`` sends one ``Message`` to many targets concurrently, each bounded by a
timeout, one apprise object per target so every result is exact. A webhook target
(``make_webhook_target``) gets the message's JSON document (``watcher.notice_doc``) as
the body of one aiohttp POST instead. What to send and when is decided elsewhere
(``watcher.messages`` renders, ``watcher.outbox`` retries).

A target's URL is a secret: only its ``label`` (``redact_url``) and its ``key`` (a
hash prefix, stored in the database instead of the URL) ever leave this module.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import anyio
import anyio.to_thread
import apprise

from watcher.apprise_urls import add as add_urls
from watcher.messages import BODY_FORMATS, Message
from watcher.redact import SECRETS, redact_url

__all__ = [
    "MAX_THROTTLE",
    "Notifier",
    "Target",
    "TargetResult",
    "make_target",
    "make_targets",
    "make_webhook_target",
    "unique_targets",
]

# --- Targets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One apprise URL to deliver to. ``url`` is secret: it is never shown or logged.

    ``webhook``: not apprise but a plain ``http(s)://`` URL that gets the message's JSON
    document (``Message.document``) as the body of a POST (``make_webhook_target``).
    """

    key: str  # sha256 of the URL, first 16 hex digits: what the database stores
    url: str = field(repr=False)
    label: str  # redact_url(url): what people and logs see
    webhook: bool = False


def make_target(url: str) -> Target:
    """The ``Target`` for ``url``; registers its credentials with the log scrubber."""
    url = url.strip()
    SECRETS.add_url(url)
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return Target(key=key, url=url, label=redact_url(url))


def make_webhook_target(url: str) -> Target:
    """The ``Target`` that POSTs notices' JSON documents to ``url``; registers its secrets.

    Its key differs from an apprise target's of the same text (another kind of delivery).
    """
    url = url.strip()
    SECRETS.add_url(url)
    key = hashlib.sha256(f"webhook {url}".encode()).hexdigest()[:16]
    return Target(key=key, url=url, label=redact_url(url), webhook=True)


def make_targets(urls: Iterable[str]) -> tuple[Target, ...]:
    """``make_target`` of each URL, duplicates dropped (first one kept, order kept)."""
    return unique_targets(make_target(url) for url in urls)


def unique_targets(targets: Iterable[Target]) -> tuple[Target, ...]:
    """``targets`` without repeats of one key: the one de-duplication rule."""
    return tuple({t.key: t for t in targets}.values())


# --- Sending ------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetResult:
    """How sending one message to one target went. ``error`` is safe to log and store."""

    target: Target
    ok: bool
    error: str | None


# Apprise plugins report failures in their log lines; only these safe facts are read.
_HTTP_ERROR = re.compile(r"\berror=(\d{3})\b")
_CONNECTION_ERROR = re.compile(r"connection error", re.IGNORECASE)


#: Longest pause apprise may put between two sends to one target (see ``Notifier._build``).
MAX_THROTTLE = 1.0
#: Threads apprise may run plugin sends on (its own default: min(32, CPUs + 4)).
SEND_THREADS = 32


def _widen_apprise_pool(workers: int) -> None:
    """Give apprise's process-wide send pool at least ``workers`` threads.

    apprise runs every plugin's ``send`` in one shared ``ThreadPoolExecutor`` of
    min(32, CPUs + 4) threads: 6 on two cores, which would cap the outbox's bounded
    concurrency (``outbox.DELIVERY_CONCURRENCY``) and let a few slow targets hold
    every thread. The pool is apprise's private module state (apprise 2.x creates it
    lazily through ``get_shared_executor``); if that ever changes, this does nothing.
    """
    module = getattr(apprise, "apprise", None)
    lock = getattr(module, "_shared_executor_lock", None)
    if module is None or lock is None or not hasattr(module, "_shared_executor"):
        return
    with lock:
        current = module._shared_executor
        if current is None or getattr(current, "_max_workers", workers) < workers:
            # A replaced pool finishes what it runs; apprise asks for the pool per send.
            module._shared_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="apprise-send"
            )


class Notifier:
    """Sends messages to apprise targets, concurrently and with bounded time.

    One ``apprise.Apprise`` per target (cached by key), so each result is exact and
    apprise's per-object throttling applies per target. Apprise's plugins run in
    its worker threads: cancelling a send does not stop one, so a send is bounded
    three times: the plugin's own connect and read timeouts (apprise's ``cto`` /
    ``rto``, 4 s by default) are set to ``timeout`` when its object is built -- else
    a target answering in 5 s fails every attempt *after* taking the notice, and
    gets it again on every retry; then apprise's ``timeout=``; then
    ``anyio.fail_after`` a little later. So only a target slower than ``timeout``
    can see a duplicate.
    """

    def __init__(self, *, timeout: float = 30.0) -> None:
        self.timeout = 0.0
        self._hard_timeout = 0.0
        self._asset = apprise.AppriseAsset()
        self._apprise: dict[str, Any] = {}
        self._build_lock = threading.Lock()
        self._closed = False
        self._http: aiohttp.ClientSession | None = None  # webhook targets' (made on first use)
        self.set_timeout(timeout)
        _widen_apprise_pool(SEND_THREADS)

    def set_timeout(self, timeout: float) -> None:
        """Bound every later send by ``timeout`` seconds (``notify.timeout``; reloads live)."""
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        changed = timeout != self.timeout
        self.timeout = timeout
        # The backstop when apprise itself does not return in time.
        self._hard_timeout = timeout + max(1.0, timeout * 0.1)
        if changed:
            # The plugins' socket timeouts were set from the old value: rebuild lazily.
            with self._build_lock:
                self._apprise.clear()

    async def one_at_a_time(self, target: Target) -> bool:
        """True when sends to ``target`` must not overlap: apprise throttles it (e-mail,
        chat services with rate limits), which only works for one send at a time.
        Also True for a URL apprise cannot use (its sends fail at once anyway)."""
        if target.webhook:
            return False
        sender = await self._apprise_for(target)
        if sender is None:
            return True
        return any(plugin.request_rate_per_sec > 0 for plugin in sender)

    async def send(
        self,
        message: Message,
        targets: Sequence[Target],
        *,
        on_result: Callable[[TargetResult], Awaitable[None]] | None = None,
    ) -> list[TargetResult]:
        """Send ``message`` to every target at once; one result per distinct target.

        Never raises for a target's failure: a refused connection, an HTTP error, a
        timeout or an exception in apprise is a ``TargetResult(ok=False)``.
        ``on_result`` is awaited as each target finishes (to record a success before
        a slower target is done); an exception it raises is re-raised at the end.
        """
        if self._closed:
            raise RuntimeError("Notifier is closed")
        if message.body_format not in BODY_FORMATS:
            raise ValueError(f"body_format must be one of {', '.join(BODY_FORMATS)}")
        unique = unique_targets(targets)
        results: dict[str, TargetResult] = {}
        callback_errors: list[Exception] = []

        async def send_one(target: Target) -> None:
            result = await self._send_one(message, target)
            results[target.key] = result
            if on_result is not None:
                try:
                    await on_result(result)
                except Exception as exc:  # re-raised once every send has finished
                    callback_errors.append(exc)

        async with anyio.create_task_group() as tg:
            for target in unique:
                tg.start_soon(send_one, target)
        if callback_errors:
            raise callback_errors[0]
        return [results[t.key] for t in unique]

    async def _send_one(self, message: Message, target: Target) -> TargetResult:
        if target.webhook:
            return await self._post_document(message, target)
        try:
            with anyio.fail_after(self._hard_timeout):
                sender = await self._apprise_for(target)
                if sender is None:
                    return TargetResult(target, False, "invalid or unsupported apprise URL")
                # tag= stays the default: each object holds exactly this one target.
                started = anyio.current_time()
                outcome = await sender.async_notify(
                    body=message.body,
                    title=message.title,
                    notify_type=message.notify_type,
                    body_format=message.body_format,
                    timeout=self.timeout,
                )
        except TimeoutError:
            return TargetResult(target, False, f"timed out after {self.timeout:g}s")
        except Exception as exc:
            # The exception's text may quote the URL: only its type is kept.
            return TargetResult(target, False, f"unexpected error ({type(exc).__name__})")
        try:
            reason = _failure_reason(outcome, self.timeout)
            if reason is not None and anyio.current_time() - started >= self.timeout * 0.99:
                # The plugin's own socket timeout (set to ours) ended it: apprise
                # logs that as a connection error.
                reason = f"timed out after {self.timeout:g}s"
            return TargetResult(target, bool(outcome), reason)
        finally:
            outcome.close()

    async def _post_document(self, message: Message, target: Target) -> TargetResult:
        """POST ``message.document`` to a webhook target: any 2xx is delivered.

        Redirects are not followed (the document goes where it was configured to go).
        Errors name the HTTP status or the kind of failure, never the URL.
        """
        if message.document is None:
            return TargetResult(target, False, "not a notice: no JSON document to send")
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(headers={"User-Agent": "finetune-watcher"})
        try:
            with anyio.fail_after(self._hard_timeout):
                async with self._http.post(
                    target.url,
                    data=message.document.encode("utf-8"),
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    status = response.status
        except TimeoutError:
            return TargetResult(target, False, f"timed out after {self.timeout:g}s")
        except aiohttp.ClientError:
            return TargetResult(target, False, "connection failed")
        except Exception as exc:
            return TargetResult(target, False, f"unexpected error ({type(exc).__name__})")
        if 200 <= status < 300:
            return TargetResult(target, True, None)
        return TargetResult(target, False, f"HTTP {status}")

    async def _apprise_for(self, target: Target) -> Any:
        cached = self._apprise.get(target.key)
        if cached is not None:
            return cached
        # Building a target imports its apprise plugin (email: ~0.1 s): not on the event loop.
        return await anyio.to_thread.run_sync(self._build, target.key, target.url)

    def _build(self, key: str, url: str) -> Any:
        with self._build_lock:
            cached = self._apprise.get(key)
            if cached is not None:
                return cached
            sender = apprise.Apprise(asset=self._asset)
            if not add_urls(sender, url):
                return None
            own = _url_socket_timeouts(url)
            for plugin in sender:
                # apprise sleeps up to 5.5 s between two sends of one object (e-mail). A
                # sleep longer than our timeout means a send we report as failed still goes
                # out, and the retry duplicates it. The outbox sends one item at a time to
                # a throttled target (``one_at_a_time``); keep a 1 s gap for chat services'
                # rate limits.
                plugin.request_rate_per_sec = min(plugin.request_rate_per_sec, MAX_THROTTLE)
                # apprise's own connect/read timeouts (cto=/rto=, 4 s by default) would
                # cut a slower target short after it took the notice: they follow
                # notify.timeout (a URL's own shorter cto=/rto= is kept). Set on the
                # plugin, so the URL, the target's key and its label stay as they are.
                plugin.socket_connect_timeout = min(own.get("cto", self.timeout), self.timeout)
                plugin.socket_read_timeout = min(own.get("rto", self.timeout), self.timeout)
            self._apprise[key] = sender
            return sender

    async def aclose(self) -> None:
        """Forget every apprise object. Sends still running in apprise's threads finish alone."""
        self._closed = True
        self._apprise.clear()
        if self._http is not None:
            await self._http.close()


def _url_socket_timeouts(url: str) -> dict[str, float]:
    """The ``cto=`` / ``rto=`` a URL sets itself (valid positive numbers only)."""
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    found: dict[str, float] = {}
    for name, values in query.items():
        if name.lower() in ("cto", "rto") and values:
            try:
                value = float(values[-1])
            except ValueError:
                continue
            if value > 0 and math.isfinite(value):
                found[name.lower()] = value
    return found


def _failure_reason(outcome: Any, timeout: float) -> str | None:
    """A short reason without secrets for a failed apprise call, None on success."""
    if outcome:
        return None
    status = getattr(outcome.status, "name", str(outcome.status))
    if status == "TIMEOUT":
        return f"timed out after {timeout:g}s"
    if status == "NOMATCH":
        return "no apprise service to notify"
    service = ""
    for result in outcome:
        service = service or str(getattr(result, "name", "") or "")
        for entry in result.logs():
            text = str(getattr(entry, "message", ""))
            if match := _HTTP_ERROR.search(text):
                return f"HTTP {match.group(1)}"
            if _CONNECTION_ERROR.search(text):
                return "connection failed"
    return f"{service} delivery failed" if service else "delivery failed"
