"""Delivery of outbox items through apprise, and the messages people read.

Rendering is pure: a ``Notice`` plus what the config knows (name, dashboard link,
templates) becomes a ``Message``. ``Notifier`` sends one message to many targets
at once, each bounded by a timeout, one apprise object per target so every result
is exact. ``deliver_due`` is the outbox loop: it sends each due item to the targets
that have not had it yet, records every success at once (a target that got an item
never gets it again), and retries the rest with backoff until they are given up.

A target's URL is a secret: only its ``label`` (``redact_url``) and its ``key`` (a
hash prefix, stored in the database instead of the URL) ever leave this module.
"""

from __future__ import annotations

import hashlib
import html
import math
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import apprise
import structlog

from watcher.lifecycle import (
    DEPLOYING_API,
    FAILED,
    FINETUNING,
    READY,
    TEMPORARILY_OFFLINE,
    Notice,
    backoff_delay,
)
from watcher.redact import SECRETS, redact_url
from watcher.templates import TemplateError, render_template

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from watcher.store import OutboxItem, Store

# --- Targets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One apprise URL to deliver to. ``url`` is secret: it is never shown or logged."""

    key: str  # sha256 of the URL, first 16 hex digits: what the database stores
    url: str = field(repr=False)
    label: str  # redact_url(url): what people and logs see


def make_target(url: str) -> Target:
    """The ``Target`` for ``url``; registers its credentials with the log scrubber."""
    url = url.strip()
    SECRETS.add_url(url)
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return Target(key=key, url=url, label=redact_url(url))


# --- Messages -----------------------------------------------------------------------

NOTIFY_TYPES = ("info", "success", "warning", "failure")
BODY_FORMATS = ("text", "markdown", "html")


@dataclass(frozen=True)
class Message:
    """What a target receives. ``notify_type`` is one of ``NOTIFY_TYPES``."""

    title: str
    body: str
    notify_type: str


#: Shown for a value nobody knows (no previous status, no first event, ...).
UNKNOWN = "unknown"

_STATUS_LABELS: dict[str, str] = {
    FINETUNING: "fine-tuning",
    DEPLOYING_API: "deploying",
    TEMPORARILY_OFFLINE: "temporarily offline",
}


def human_status(status: str | None) -> str:
    """``STATUS_READY`` -> ``ready``; unknown statuses are spelled out the same way."""
    if not status:
        return UNKNOWN
    if status in _STATUS_LABELS:
        return _STATUS_LABELS[status]
    return status.removeprefix("STATUS_").replace("_", " ").lower() or UNKNOWN


def notify_type_for(status: str) -> str:
    """READY is good news, FAILED bad news, anything else information."""
    if status == READY:
        return "success"
    if status == FAILED:
        return "failure"
    return "info"


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``45s``, ``14m 5s``, ``2h 14m``, ``3d 4h`` (truncated)."""
    if seconds is None or not math.isfinite(seconds):
        return UNKNOWN
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def format_time(moment: datetime | None) -> str:
    """ISO 8601 in UTC to the second: ``2026-03-01T12:34:56Z``. Naive means UTC."""
    if moment is None:
        return UNKNOWN
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_metrics(metrics: Mapping[str, float] | None) -> str:
    """``accuracy=0.912, loss=0.0841`` in the given order; ``none`` when empty."""
    if not metrics:
        return "none"
    return ", ".join(f"{name}={value:.4g}" for name, value in metrics.items())


def dashboard_link(dashboard_url: str, model_id: str) -> str:
    """``dashboard_url`` with ``{model_id}`` filled in (other braces are left alone)."""
    return dashboard_url.replace("{model_id}", quote(model_id, safe=""))


def notice_fields(
    notice: Notice,
    *,
    name: str | None,
    dashboard_url: str,
    base_model: str | None = None,
    metrics: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """The value of every placeholder in ``PLACEHOLDERS`` for ``notice``.

    ``status`` is Cohere's spelling (``STATUS_READY``); ``status_label`` and
    ``previous_status`` are for people (``ready``, ``fine-tuning``). Times are ISO
    UTC, durations short (``2h 14m``), anything unknown is ``unknown``.
    """
    return {
        "model_id": notice.model_id,
        "name": name or notice.model_id,
        "status": notice.status,
        "status_label": human_status(notice.status),
        "previous_status": human_status(notice.previous_status),
        "event_at": format_time(notice.event_at),
        "previous_since": format_time(notice.previous_since),
        "time_in_previous": format_duration(notice.previous_duration_seconds),
        "duration": format_duration(notice.duration_seconds),
        "base_model": base_model or UNKNOWN,
        "dashboard_url": dashboard_link(dashboard_url, notice.model_id),
        "metrics": format_metrics(metrics),
    }


def render_notice(
    notice: Notice,
    *,
    name: str | None,
    dashboard_url: str,
    title_template: str | None = None,
    body_template: str | None = None,
    base_model: str | None = None,
    metrics: Mapping[str, float] | None = None,
    body_format: str = "text",
) -> Message:
    """The message announcing ``notice``: the templates if given, else the defaults.

    With ``body_format`` html, placeholder values in the body are HTML-escaped and the
    default body's lines become ``<br>`` lines; with markdown, they end in hard breaks.
    A template's own markup is left as written. Titles are plain text.
    """
    fields = notice_fields(
        notice, name=name, dashboard_url=dashboard_url, base_model=base_model, metrics=metrics
    )
    body_fields = fields
    if body_format == "html":
        body_fields = {key: html.escape(value) for key, value in fields.items()}
    title = (
        render_template(title_template, fields)
        if title_template is not None
        else _default_title(notice, fields)
    )
    if body_template is not None:
        body = render_template(body_template, body_fields)
    else:
        body = _in_format(_default_body(notice, body_fields, named=bool(name)), body_format)
    return Message(title=title, body=body, notify_type=notify_type_for(notice.status))


def _in_format(text: str, body_format: str) -> str:
    """Plain lines of a default body, as ``body_format`` keeps them apart."""
    if body_format == "html":
        return "<br>\n".join(text.splitlines())
    if body_format == "markdown":
        # Two trailing spaces break a line; an empty line stays a paragraph break.
        lines = [line.strip() for line in text.splitlines()]
        nexts = [*lines[1:], ""]
        return "\n".join(
            f"{line}  " if line and nxt else line for line, nxt in zip(lines, nexts, strict=True)
        )
    return text


def _default_title(notice: Notice, f: Mapping[str, str]) -> str:
    if notice.status == READY:
        return f"✅ {f['name']} is ready"
    if notice.status == FAILED:
        return f"❌ {f['name']} failed"
    return f"{f['name']}: {f['status_label']}"


def _default_body(notice: Notice, f: Mapping[str, str], *, named: bool) -> str:
    has_previous = notice.previous_status is not None
    if notice.status == READY:
        headline = f"The fine-tuned model {f['name']} is ready to use."
    elif notice.status == FAILED:
        headline = f"The fine-tune of {f['name']} failed."
    else:
        headline = f"{f['name']} is now {f['status_label']}."
    paragraphs = [headline]
    if notice.first_observation:
        paragraphs.append(
            f"The watcher first saw this model already {f['status_label']}: it got there"
            " before the watcher was watching, so this is not a fresh change."
        )

    details = [f"Model: {f['name']} ({f['model_id']})" if named else f"Model: {f['model_id']}"]
    status_line = f"Status: {f['status_label']}"
    if has_previous:
        status_line += f" (previously {f['previous_status']})"
    details.append(status_line)
    details.append(
        f"In this status since: {f['event_at']}"
        if notice.first_observation
        else f"When: {f['event_at']}"
    )
    if has_previous and notice.previous_since is not None:
        details.append(f"Time {f['previous_status']}: {f['time_in_previous']}")
    if notice.started_at is not None:
        details.append(f"Total time: {f['duration']} since its first event")
    if f["base_model"] != UNKNOWN:
        details.append(f"Base model: {f['base_model']}")
    if f["metrics"] != "none":
        details.append(f"Final metrics: {f['metrics']}")
    details.append(f"Dashboard: {f['dashboard_url']}")
    paragraphs.append("\n".join(details))

    if notice.status == FAILED:
        known = "What is known: it failed"
        if notice.started_at is not None:
            known += f" {f['duration']} after its first event"
        if has_previous:
            known += f", while {f['previous_status']}"
            if notice.previous_since is not None:
                known += f" (for {f['time_in_previous']})"
        paragraphs.append(
            known + ". The events API does not say why. Where to look: the model's page"
            " in the Cohere dashboard (link above) shows Cohere's error message;"
            " the training data and the fine-tune's settings are the usual suspects."
        )
    return "\n\n".join(paragraphs)


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


class Notifier:
    """Sends messages to apprise targets, concurrently and with bounded time.

    One ``apprise.Apprise`` per target (cached by key), so each result is exact and
    apprise's per-object throttling applies per target. Apprise's plugins run in
    its worker threads: cancelling a send does not stop one, so a send is bounded
    twice, by apprise's own ``timeout=`` and by ``anyio.fail_after`` a little later.
    """

    def __init__(self, *, timeout: float = 30.0, body_format: str = "text") -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if body_format not in BODY_FORMATS:
            raise ValueError(f"body_format must be one of {', '.join(BODY_FORMATS)}")
        self.timeout = timeout
        self.body_format = body_format
        # The backstop when apprise itself does not return in time.
        self._hard_timeout = timeout + max(1.0, timeout * 0.1)
        self._asset = apprise.AppriseAsset()
        self._apprise: dict[str, Any] = {}
        self._build_lock = threading.Lock()
        self._closed = False

    async def send(
        self,
        message: Message,
        targets: Sequence[Target],
        *,
        on_result: Callable[[TargetResult], None] | None = None,
    ) -> list[TargetResult]:
        """Send ``message`` to every target at once; one result per distinct target.

        Never raises for a target's failure: a refused connection, an HTTP error, a
        timeout or an exception in apprise is a ``TargetResult(ok=False)``.
        ``on_result`` is called as each target finishes (to record a success before
        a slower target is done); an exception it raises is re-raised at the end.
        """
        if self._closed:
            raise RuntimeError("Notifier is closed")
        unique = list({t.key: t for t in targets}.values())
        results: dict[str, TargetResult] = {}
        callback_errors: list[Exception] = []

        async def send_one(target: Target) -> None:
            result = await self._send_one(message, target)
            results[target.key] = result
            if on_result is not None:
                try:
                    on_result(result)
                except Exception as exc:  # re-raised once every send has finished
                    callback_errors.append(exc)

        async with anyio.create_task_group() as tg:
            for target in unique:
                tg.start_soon(send_one, target)
        if callback_errors:
            raise callback_errors[0]
        return [results[t.key] for t in unique]

    async def _send_one(self, message: Message, target: Target) -> TargetResult:
        try:
            with anyio.fail_after(self._hard_timeout):
                sender = await self._apprise_for(target)
                if sender is None:
                    return TargetResult(target, False, "invalid or unsupported apprise URL")
                # tag= stays the default: each object holds exactly this one target.
                outcome = await sender.async_notify(
                    body=message.body,
                    title=message.title,
                    notify_type=message.notify_type,
                    body_format=self.body_format,
                    timeout=self.timeout,
                )
        except TimeoutError:
            return TargetResult(target, False, f"timed out after {self.timeout:g}s")
        except Exception as exc:
            # The exception's text may quote the URL: only its type is kept.
            return TargetResult(target, False, f"unexpected error ({type(exc).__name__})")
        try:
            return TargetResult(target, bool(outcome), _failure_reason(outcome, self.timeout))
        finally:
            outcome.close()

    async def _apprise_for(self, target: Target) -> Any:
        cached = self._apprise.get(target.key)
        if cached is not None:
            return cached
        # Parsing the first URL loads apprise's plugins (~0.2 s): not on the event loop.
        sender = await anyio.to_thread.run_sync(self._build, target.url)
        if sender is not None:
            self._apprise[target.key] = sender
        return sender

    def _build(self, url: str) -> Any:
        with self._build_lock:
            sender = apprise.Apprise(asset=self._asset)
            if not sender.add(url):
                return None
            for plugin in sender:
                # apprise sleeps up to 5.5 s between two sends of one object (e-mail). A
                # sleep longer than our timeout means a send we report as failed still goes
                # out, and the retry duplicates it. The outbox already sends one item at a
                # time per target; keep a 1 s gap for chat services' rate limits.
                plugin.request_rate_per_sec = min(plugin.request_rate_per_sec, MAX_THROTTLE)
            return sender

    async def aclose(self) -> None:
        """Forget every apprise object. Sends still running in apprise's threads finish alone."""
        self._closed = True
        self._apprise.clear()


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


# --- The outbox ---------------------------------------------------------------------


#: Tries a notification gets before it can be given up, however old it is.
MIN_ATTEMPTS = 3


@dataclass(frozen=True)
class DeliveryRound:
    """What one pass over the due outbox items did (counts of items)."""

    delivered: int  # every target has it now: marked done
    failed: int  # some target still lacks it: retry scheduled
    given_up: int  # still undelivered after ``give_up_after``: abandoned
    skipped_no_targets: int  # nobody to send it to: marked done, with a warning
    given_up_models: int = 0  # of ``given_up``, model notifications (not the watcher's own)


async def deliver_due(
    store: Store,
    notifier: Notifier,
    *,
    targets_for: Callable[[OutboxItem], Sequence[Target]],
    render: Callable[[OutboxItem], Message],
    now: datetime,
    give_up_after: float,
    retry_base: float = 30.0,
    retry_cap: float = 3600.0,
    rand: Callable[[], float] = random.random,
    log: FilteringBoundLogger | None = None,
) -> DeliveryRound:
    """Deliver every due outbox item to the targets that do not have it yet.

    Items go out one after the other (so a target gets them in order), each to all
    its targets at once. A success is recorded the moment it happens and is never
    repeated. A target that fails is not tried again for later items of this
    round: a dead target costs one timeout per round, not one per item, and gets
    no item out of order. An item some target still lacks is retried with
    full-jitter backoff, or given up once ``now - created_at >= give_up_after``.
    """
    log = log if log is not None else structlog.get_logger()
    delivered = skipped = 0
    outcome = _RetryTally()
    down: dict[str, str] = {}  # target key -> why it failed earlier in this round

    for item in store.due_notifications(now):
        context = _item_context(item)
        try:
            wanted = list({t.key: t for t in targets_for(item)}.values())
        except Exception as exc:
            log.error(
                "notification targets could not be resolved; will retry",
                **context,
                error=type(exc).__name__,
            )
            outcome.count(item, _retry_or_give_up(
                store, item, now, give_up_after, retry_base, retry_cap, rand, log, context,
                error=f"cannot resolve targets ({type(exc).__name__})",
            ))  # fmt: skip
            continue
        if not wanted:
            log.warning("notification has no targets; marked done", **context)
            store.mark_done(item.id, now)
            skipped += 1
            continue

        already = store.delivered_targets(item.id)
        pending = [t for t in wanted if t.key not in already]
        outcomes: list[TargetResult] = [
            TargetResult(t, False, f"not tried: {down[t.key]} earlier in this round")
            for t in pending
            if t.key in down
        ]
        to_send = [t for t in pending if t.key not in down]
        if to_send:
            try:
                message = render(item)
            except Exception as exc:
                # A template problem is safe to show; other exceptions may quote anything.
                reason = str(exc) if isinstance(exc, TemplateError) else type(exc).__name__
                log.error("notification could not be rendered; will retry", **context, error=reason)
                outcome.count(item, _retry_or_give_up(
                    store, item, now, give_up_after, retry_base, retry_cap, rand, log, context,
                    error=f"cannot render message ({type(exc).__name__})",
                ))  # fmt: skip
                continue

            def record(result: TargetResult, item_id: int = item.id) -> None:
                if result.ok:
                    store.mark_delivered(item_id, result.target.key, now)

            outcomes += await notifier.send(message, to_send, on_result=record)

        for result in outcomes:
            if result.ok:
                log.info("notification delivered", **context, target=result.target.label)
            else:
                down.setdefault(result.target.key, result.error or "failed")
                log.warning(
                    "notification target failed",
                    **context,
                    target=result.target.label,
                    error=result.error,
                )
        missing = [r for r in outcomes if not r.ok]
        if not missing:
            store.mark_done(item.id, now)
            delivered += 1
            continue
        error = "; ".join(f"{r.target.label}: {r.error}" for r in missing)
        outcome.count(
            item,
            _retry_or_give_up(
                store, item, now, give_up_after, retry_base, retry_cap, rand, log, context,
                error=error,
            ),
        )  # fmt: skip

    return DeliveryRound(
        delivered=delivered,
        failed=outcome.failed,
        given_up=outcome.given_up,
        skipped_no_targets=skipped,
        given_up_models=outcome.given_up_models,
    )


@dataclass
class _RetryTally:
    failed: int = 0
    given_up: int = 0
    given_up_models: int = 0

    def count(self, item: OutboxItem, retrying: bool) -> None:
        if retrying:
            self.failed += 1
            return
        self.given_up += 1
        if item.kind == "model":
            self.given_up_models += 1


def _item_context(item: OutboxItem) -> dict[str, Any]:
    context: dict[str, Any] = {"outbox_id": item.id, "kind": item.kind}
    if item.model_id is not None:
        context["model_id"] = item.model_id
    if item.notice is not None:
        context["status"] = item.notice.status
    return context


def _retry_or_give_up(
    store: Store,
    item: OutboxItem,
    now: datetime,
    give_up_after: float,
    retry_base: float,
    retry_cap: float,
    rand: Callable[[], float],
    log: FilteringBoundLogger,
    context: Mapping[str, Any],
    *,
    error: str,
) -> bool:
    """Schedule the next attempt (True), or give the item up when it is too old (False).

    Giving up also takes ``MIN_ATTEMPTS`` tries: ages are wall-clock (they must
    survive restarts), and a clock jumping forward must not abandon the outbox at once.
    """
    attempts = item.attempts + 1
    deadline = item.created_at + timedelta(seconds=give_up_after)
    if now >= deadline and attempts >= MIN_ATTEMPTS:
        store.give_up(item.id, at=now, reason=error)
        log.error("notification given up", **context, attempts=attempts, error=error)
        return False
    delay = backoff_delay(attempts, retry_base, retry_cap, rand())
    # The last try happens at the deadline, so giving up is not later than promised.
    next_attempt_at = now + timedelta(seconds=delay)
    if now < deadline:
        next_attempt_at = min(next_attempt_at, deadline)
    store.schedule_retry(item.id, attempts=attempts, next_attempt_at=next_attempt_at, error=error)
    log.info(
        "notification retry scheduled",
        **context,
        attempts=attempts,
        retry_in=round((next_attempt_at - now).total_seconds(), 1),
    )
    return True
