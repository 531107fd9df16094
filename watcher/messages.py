"""The words people read: notices rendered as messages, and the watcher's own reports.

Pure: a ``Notice`` plus what the configuration and the provider know (a name, the
provider's title, status scheme and dashboard link, templates) becomes a ``Message``;
the ops reports (key rejected, API unreachable, model not found, stuck, given up) are
built here too, so no other module holds message text. Nothing here names a provider:
the provider's ``title`` and its ``StatusScheme`` are parameters.

Values from outside (a model's name and id, statuses, an API's error text, base model,
metrics) are made safe here, once, before any message holds them: every registered
secret masked, on one line without control characters (a newline cannot forge a line),
capped (names and statuses ``NAME_LIMIT``, errors ``ERROR_LIMIT`` characters, with
``…``), then escaped for the message's format: ``html`` escapes them in the title and the
body, ``markdown`` backslash-escapes the characters that make links, emphasis, code and
HTML (:func:`escape_value`). A template's own markup is left as written.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from watcher.lifecycle import Notice, Phase, StatusScheme
from watcher.redact import ERROR_LIMIT, NAME_LIMIT, safe_text
from watcher.templates import render_template

__all__ = [
    "BODY_FORMATS",
    "NOTIFY_TYPES",
    "UNKNOWN",
    "Message",
    "ago",
    "auth_failing_message",
    "auth_recovered_message",
    "dashboard_link",
    "escape_value",
    "format_duration",
    "format_metrics",
    "format_time",
    "given_up_message",
    "human_status",
    "not_found_message",
    "notice_fields",
    "notify_type_for",
    "reachable_again_message",
    "render_notice",
    "stuck_message",
    "unreachable_message",
]

NOTIFY_TYPES = ("info", "success", "warning", "failure")
BODY_FORMATS = ("text", "markdown", "html")

#: Shown for a value nobody knows (no previous status, no first event, ...).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Message:
    """What a target receives. ``notify_type`` is one of ``NOTIFY_TYPES``, ``body_format``
    one of ``BODY_FORMATS`` (how the body is written, so the notifier sends it as such).
    ``document``: a notice's JSON document (``watcher.notice_doc``), what ``webhooks:``
    targets receive; None for the watcher's own reports."""

    title: str
    body: str
    notify_type: str
    body_format: str = "text"
    document: str | None = None


# --- Values as people read them -------------------------------------------------------


def human_status(status: str | None, scheme: StatusScheme | None = None) -> str:
    """A status as people say it: the scheme's label for it, else its name spelled out.

    Spelled out: without the scheme's ``prefix``, lower case, ``_`` as spaces
    (``STATUS_SOMETHING_NEW`` -> ``something new``).
    """
    if not status:
        return UNKNOWN
    if scheme is None:
        return status.replace("_", " ").lower().strip() or UNKNOWN
    if status in scheme.labels:
        return scheme.labels[status]
    prefix = scheme.prefix
    return status.removeprefix(prefix).replace("_", " ").lower().strip() or UNKNOWN


def notify_type_for(status: str, scheme: StatusScheme) -> str:
    """Reaching READY is good news, FAILED bad news, anything else information."""
    phase = scheme.phase(status)
    if phase is Phase.READY:
        return "success"
    if phase is Phase.FAILED:
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


def ago(seconds: float) -> str:
    """A coarse age for one-line summaries: ``42s``, ``17m``, ``3h``."""
    if seconds < 90:
        return f"{max(0, math.floor(seconds))}s"
    if seconds < 5400:
        return f"{math.floor(seconds / 60)}m"
    return f"{math.floor(seconds / 3600)}h"


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
    """``dashboard_url`` with ``{model_id}`` filled in (other braces are left alone).

    A link that has no ``{model_id}`` (a provider's ready-made link) is returned as is.
    """
    return dashboard_url.replace("{model_id}", quote(model_id, safe=""))


# --- Outside values ---------------------------------------------------------------------

# What makes markup in (CommonMark / Slack-style) markdown: links and images ``[]()!``,
# emphasis ``*_~``, code `````, raw HTML ``<>``, headings ``#``, tables ``|``, escapes ``\``.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#!|~])")
#: Fields that are no outside words (times, durations) or are links made of quoted parts.
_UNESCAPED_IN_MARKDOWN = frozenset({"dashboard_url"})


def escape_value(value: str, body_format: str) -> str:
    """``value`` as plain text inside a message of ``body_format`` (``text``: as it is)."""
    if body_format == "html":
        return html.escape(value, quote=True)
    if body_format == "markdown":
        return _MARKDOWN_SPECIAL.sub(r"\\\1", value)
    return value


def _outside(value: str | None, limit: int = NAME_LIMIT) -> str:
    """An outside value made safe for any message: no secret, one line, capped."""
    return safe_text(value, limit) if value else (value or "")


# --- Notices --------------------------------------------------------------------------


def notice_fields(
    notice: Notice,
    *,
    name: str | None,
    dashboard_url: str,
    scheme: StatusScheme,
    base_model: str | None = None,
    metrics: Mapping[str, float] | None = None,
    provider_title: str | None = None,
    fine_tuned_model: str | None = None,
    error_message: str | None = None,
) -> dict[str, str]:
    """The value of every placeholder in ``templates.PLACEHOLDERS`` for ``notice``.

    ``status`` is the provider's spelling (``STATUS_READY``); ``status_label`` and
    ``previous_status`` are for people (``ready``, ``fine-tuning``). Times are ISO
    UTC, durations short (``2h 14m``), anything unknown is ``unknown``.
    """
    return {
        "model_id": _outside(notice.model_id),
        "name": _outside(name or notice.model_id),
        "status": _outside(notice.status),
        "status_label": _outside(human_status(notice.status, scheme)),
        "previous_status": _outside(human_status(notice.previous_status, scheme)),
        "event_at": format_time(notice.event_at),
        "previous_since": format_time(notice.previous_since),
        "time_in_previous": format_duration(notice.previous_duration_seconds),
        "duration": format_duration(notice.duration_seconds),
        "base_model": _outside(base_model or UNKNOWN),
        "dashboard_url": _outside(dashboard_link(dashboard_url, notice.model_id), ERROR_LIMIT),
        "metrics": _outside(format_metrics(metrics), ERROR_LIMIT),
        "provider": _outside(provider_title or notice.provider),
        "fine_tuned_model": _outside(fine_tuned_model or UNKNOWN),
        "error_message": _outside(error_message or UNKNOWN, ERROR_LIMIT),
    }


def render_notice(
    notice: Notice,
    *,
    name: str | None,
    dashboard_url: str,
    scheme: StatusScheme,
    provider_title: str,
    title_template: str | None = None,
    body_template: str | None = None,
    base_model: str | None = None,
    metrics: Mapping[str, float] | None = None,
    body_format: str = "text",
    fine_tuned_model: str | None = None,
    error_message: str | None = None,
) -> Message:
    """The message announcing ``notice``: the templates if given, else the defaults.

    With ``body_format`` html, placeholder values in the title and the body are
    HTML-escaped and the default body's lines become ``<br>`` lines; with markdown,
    values are markdown-escaped (:func:`escape_value`) and lines end in hard breaks. A
    template's own markup is left as written.
    """
    fields = notice_fields(
        notice,
        name=name,
        dashboard_url=dashboard_url,
        scheme=scheme,
        base_model=base_model,
        metrics=metrics,
        provider_title=provider_title,
        fine_tuned_model=fine_tuned_model,
        error_message=error_message,
    )
    body_fields = fields
    if body_format in ("html", "markdown"):
        body_fields = {
            key: value
            if body_format == "markdown" and key in _UNESCAPED_IN_MARKDOWN
            else escape_value(value, body_format)
            for key, value in fields.items()
        }
    phase = scheme.phase(notice.status)
    title = (
        render_template(title_template, body_fields)
        if title_template is not None
        else _default_title(phase, body_fields)
    )
    if body_template is not None:
        body = render_template(body_template, body_fields)
    else:
        text = _default_body(notice, phase, body_fields, named=bool(name), provider=provider_title)
        body = _in_format(text, body_format)
    return Message(
        title=title,
        body=body,
        notify_type=notify_type_for(notice.status, scheme),
        body_format=body_format,
    )


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


def _default_title(phase: Phase, f: Mapping[str, str]) -> str:
    if phase is Phase.READY:
        return f"✅ {f['name']} is ready"
    if phase is Phase.FAILED:
        return f"❌ {f['name']} failed"
    return f"{f['name']}: {f['status_label']}"


def _default_body(
    notice: Notice, phase: Phase, f: Mapping[str, str], *, named: bool, provider: str
) -> str:
    has_previous = notice.previous_status is not None
    if phase is Phase.READY:
        headline = f"The fine-tuned model {f['name']} is ready to use."
    elif phase is Phase.FAILED:
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
    details.append(f"Provider: {f['provider']}")
    if f["fine_tuned_model"] != UNKNOWN and phase is Phase.READY:
        details.append(f"Fine-tuned model: {f['fine_tuned_model']}")
    if f["base_model"] != UNKNOWN:
        details.append(f"Base model: {f['base_model']}")
    if f["metrics"] != "none":
        details.append(f"Final metrics: {f['metrics']}")
    if f["dashboard_url"] not in ("", UNKNOWN):  # some providers have no per-job page
        details.append(f"Dashboard: {f['dashboard_url']}")
    paragraphs.append("\n".join(details))

    if phase is Phase.FAILED:
        known = "What is known: it failed"
        if notice.started_at is not None:
            known += f" {f['duration']} after its first event"
        if has_previous:
            known += f", while {f['previous_status']}"
            if notice.previous_since is not None:
                known += f" (for {f['time_in_previous']})"
        if f["error_message"] != UNKNOWN:
            paragraphs.append(known + ".")
            paragraphs.append(f"Reason given by {provider}: {f['error_message']}")
        else:
            paragraphs.append(
                known + f". {provider} does not say why. Where to look: the job's page"
                f" in the {provider} console (link above, where there is one); the training"
                " data and the fine-tune's settings are the usual suspects."
            )
    return "\n\n".join(paragraphs)


# --- The watcher's own reports (queued pre-rendered, as "ops" or "stuck" outbox items) ---


def auth_failing_message(provider_title: str, http_status: int | None, key_source: str) -> Message:
    return Message(
        "finetune-watcher cannot authenticate",
        f"The {provider_title} API answered HTTP {http_status} to the key from {key_source}. "
        "No model can be watched until the key is fixed.",
        "failure",
    )


def auth_recovered_message(provider_title: str) -> Message:
    return Message(
        "finetune-watcher can authenticate again",
        f"The {provider_title} API accepts the key again; watching resumed.",
        "success",
    )


def unreachable_message(provider_title: str, down_for: float, last_error: str | None) -> Message:
    return Message(
        f"finetune-watcher cannot reach the {provider_title} API",
        f"No poll has succeeded for {format_duration(down_for)}. Last error: "
        f"{_outside(last_error, ERROR_LIMIT) or 'none recorded'}. "
        "Notifications resume when it answers again.",
        "failure",
    )


def reachable_again_message(provider_title: str) -> Message:
    return Message(
        f"finetune-watcher reaches the {provider_title} API again",
        "Polling works again; notifications resume.",
        "success",
    )


def not_found_message(label: str, model_id: str, provider_title: str) -> Message:
    label, model_id = _outside(label), _outside(model_id)
    return Message(
        f"{label}: model not found",
        f"{provider_title} says fine-tuned model {model_id} does not exist "
        "(a typo in the configuration, or it was deleted). "
        "finetune-watcher keeps checking, slowly.",
        "warning",
    )


def stuck_message(
    *,
    label: str,
    model_id: str,
    status: str,
    status_since: datetime,
    now: datetime,
    scheme: StatusScheme,
    dashboard: str,
) -> Message:
    stuck_for = format_duration((now - status_since).total_seconds())
    label, model_id, shown = _outside(label), _outside(model_id), _outside(status)
    return Message(
        f"⏳ {label} has been {_outside(human_status(status, scheme))} for {stuck_for}",
        f"The fine-tuned model {label} ({model_id}) has been in {shown} since "
        f"{status_since.isoformat()} ({stuck_for}), longer than notify.stuck_after. "
        f"Dashboard: {dashboard}",
        "warning",
    )


def given_up_message(count: int, give_up_after: float) -> Message:
    return Message(
        f"finetune-watcher gave up {count} notification(s)",
        f"{count} model notification(s) could not be delivered within "
        f"notify.give_up_after ({format_duration(give_up_after)}). "
        "`finetune-watcher status` lists the models; the log names the failing targets.",
        "failure",
    )
