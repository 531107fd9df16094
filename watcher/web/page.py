"""The server-rendered HTML: the status page, a model's page, the login and refusal pages.

Pure functions from documents to text. Everything that came from outside (model names,
ids, errors, statuses) goes through :func:`_text`, which scrubs known secrets and
HTML-escapes. The same markup is what ``static/page.js`` rebuilds from the stream
(with ``textContent``, never ``innerHTML``), so both must change together; without
JavaScript this page is the whole experience.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from watcher.redact import SECRETS
from watcher.web.source import DaemonFacts

__all__ = [
    "PHASES",
    "Assets",
    "StatusView",
    "human_duration",
    "model_path",
    "render_locked_page",
    "render_login_page",
    "render_model_page",
    "render_not_found_page",
    "render_starting_page",
    "render_status_page",
    "status_view",
]

#: The common lifecycle words (``watcher.lifecycle.Phase``) plus ``unknown`` (nothing known yet).
PHASES = ("queued", "running", "ready", "failed", "cancelled", "other", "unknown")

_ICONS = {
    "ready": '<circle cx="8" cy="8" r="6.5"/><path d="M5 8.3l2.1 2.1L11 6.2"/>',
    "failed": '<circle cx="8" cy="8" r="6.5"/><path d="M5.7 5.7l4.6 4.6M10.3 5.7l-4.6 4.6"/>',
    "running": (
        '<circle cx="8" cy="8" r="6.5"/>'
        '<path d="M8 3.5a4.5 4.5 0 0 1 0 9z" fill="currentColor" stroke="none"/>'
    ),
    "queued": '<circle cx="8" cy="8" r="6.5"/><path d="M8 4.6V8l2.4 1.6"/>',
    "cancelled": '<circle cx="8" cy="8" r="6.5"/><path d="M3.5 12.5l9-9"/>',
    "other": (
        '<circle cx="8" cy="8" r="6.5"/>'
        '<circle cx="8" cy="8" r="1.7" fill="currentColor" stroke="none"/>'
    ),
    "unknown": '<circle cx="8" cy="8" r="6.5" stroke-dasharray="2.5 2.1"/>',
}


@dataclass(frozen=True, slots=True)
class Assets:
    """URLs of the stylesheet, the script and the icon (versioned: browsers may cache them)."""

    css: str
    js: str
    icon: str


@dataclass(frozen=True, slots=True)
class StatusView:
    """How a model's status reads: the icon's phase, the word, the provider's own spelling."""

    phase: str
    word: str
    detail: str | None


Phases = Mapping[str, Mapping[str, str]]


def status_view(model: Mapping[str, Any], phases: Phases | None = None) -> StatusView:
    """The status cell of one model object of the status document.

    The phase (the common lifecycle word: the model's ``phase`` if the document has
    one, else ``phases[provider][status]``) picks the icon and is the word shown, with
    the provider's status as the detail; a status of phase ``other`` is its own word.
    A null status reads ``not polled yet`` / ``unknown`` (only failed polls) /
    ``no events yet``, as in ``finetune-watcher status``.
    """
    status = model.get("status")
    if not isinstance(status, str) or not status:
        if not model.get("last_poll_at"):
            return StatusView("unknown", "not polled yet", None)
        if not model.get("last_success_at"):
            return StatusView("unknown", "unknown", None)
        return StatusView("unknown", "no events yet", None)
    phase = model.get("phase")
    if phase is None and phases is not None:
        phase = phases.get(str(model.get("provider") or "cohere"), {}).get(status)
    if isinstance(phase, str) and phase in PHASES and phase != "other":
        return StatusView(phase, phase, status if status != phase else None)
    return StatusView("other", status, None)


def human_duration(seconds: float) -> str:
    """``45s``, ``14m 5s``, ``2h 14m``, ``3h``, ``3d 4h``: the largest unit and the next one
    (left out when zero), truncated, never negative."""
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    whole = max(0, int(seconds))
    for index, (unit, size) in enumerate(units):
        if whole >= size or unit == "s":
            text = f"{whole // size}{unit}"
            if index + 1 < len(units):
                next_unit, next_size = units[index + 1]
                amount = whole % size // next_size
                text += f" {amount}{next_unit}" if amount else ""
            return text
    raise AssertionError("unreachable")  # pragma: no cover


def model_path(provider: str, model_id: str) -> str:
    """The model page's path; both parts percent-encoded (ids may hold ``/``)."""
    return f"/models/{quote(provider, safe='')}/{quote(model_id, safe='')}"


def _text(value: object) -> str:
    """Outside data made safe for HTML text and attribute values (secrets scrubbed)."""
    return html.escape(SECRETS.scrub(str(value)), quote=True)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time(value: object, now: datetime | None, *, suffix: str, never: str) -> str:
    """A ``<time>`` with the relative form as text and the absolute one as its title."""
    moment = _parse_time(value)
    if moment is None:
        return f'<span class="none">{_text(never)}</span>'
    iso = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    shown = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if now is None:
        return f'<time datetime="{_text(iso)}">{_text(shown)}</time>'
    seconds = (now - moment).total_seconds()
    relative = "just now" if seconds < 1 else human_duration(seconds) + suffix
    return (
        f'<time datetime="{_text(iso)}" title="{_text(shown)}" data-rel="{_text(suffix)}">'
        f"{_text(relative)}</time>"
    )


def _icon(phase: str) -> str:
    return (
        f'<svg class="icon" aria-hidden="true" focusable="false" viewBox="0 0 16 16">'
        f'<use href="#icon-{phase}"></use></svg>'
    )


def _status_html(model: Mapping[str, Any], phases: Phases) -> str:
    view = status_view(model, phases)
    detail = f' <span class="detail">{_text(view.detail)}</span>' if view.detail else ""
    return (
        f'<span class="status phase-{view.phase}">{_icon(view.phase)}'
        f'<span class="word">{_text(view.word)}</span></span>{detail}'
    )


def _sprite() -> str:
    symbols = "".join(
        f'<symbol id="icon-{name}" viewBox="0 0 16 16">{body}</symbol>'
        for name, body in _ICONS.items()
    )
    return (
        '<svg class="sprite" aria-hidden="true" focusable="false" fill="none" '
        'stroke="currentColor" stroke-width="1.6" stroke-linecap="round" '
        f'stroke-linejoin="round">{symbols}</svg>'
    )


def _layout(
    *,
    title: str,
    body: str,
    assets: Assets,
    page: str,
    logout: bool = False,
    data: Mapping[str, str] | None = None,
    live: bool = False,
) -> str:
    attributes = "".join(f' data-{name}="{_text(value)}"' for name, value in (data or {}).items())
    live_note = (
        '<p id="live" class="live" role="status">'
        '<span class="dot" aria-hidden="true"></span>'
        '<span class="live-text">Not live: reload to refresh</span></p>'
        if live
        else ""
    )
    logout_form = (
        '<form class="logout" method="post" action="/logout">'
        '<button type="submit">Log out</button></form>'
        if logout
        else ""
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_text(title)}</title>"
        f'<link rel="icon" href="{_text(assets.icon)}" type="image/svg+xml">'
        f'<link rel="stylesheet" href="{_text(assets.css)}">'
        f'<script src="{_text(assets.js)}" defer></script>'
        f'</head><body data-page="{_text(page)}"{attributes}>'
        f'<a class="skip" href="#main">Skip to content</a>{_sprite()}'
        '<header class="top"><p class="brand"><a href="/">finetune-watcher</a></p>'
        f"{live_note}{logout_form}</header>"
        f'<main id="main" tabindex="-1">{body}</main>'
        '<footer class="foot"><p>finetune-watcher · '
        '<a href="/api/status">JSON</a> · <a href="/metrics">metrics</a></p></footer>'
        "</body></html>\n"
    )


def _health_html(facts: DaemonFacts) -> str:
    if not facts.alive:
        phase, word = "failed", "stalled"
    elif not facts.ready:
        phase, word = "queued", "not ready"
    else:
        phase, word = "ready", "healthy"
    reasons = f' <span class="detail">{_text("; ".join(facts.reasons))}</span>'
    return (
        f'<span class="status phase-{phase}">{_icon(phase)}<span class="word">{word}</span></span>'
        + (reasons if facts.reasons else "")
    )


def _role_text(facts: DaemonFacts) -> str:
    if facts.role is None:
        return ""
    if facts.leader and facts.role != "leader":
        return f"{facts.role} (leader: {facts.leader})"
    return facts.role


def _outbox_text(outbox: Mapping[str, Any]) -> str:
    return (
        f"{outbox.get('pending', 0)} pending · {outbox.get('done', 0)} delivered · "
        f"{outbox.get('given_up', 0)} given up"
    )


def _facts_html(document: Mapping[str, Any], facts: DaemonFacts, now: datetime | None) -> str:
    role = _role_text(facts)
    outbox = document.get("outbox") or {}
    return (
        '<dl class="facts" id="facts">'
        f'<div><dt>Daemon</dt><dd id="daemon-health">{_health_html(facts)}</dd></div>'
        f'<div id="daemon-role-row"{"" if role else " hidden"}><dt>Role</dt>'
        f'<dd id="daemon-role">{_text(role)}</dd></div>'
        f'<div><dt>Outbox</dt><dd id="outbox">{_text(_outbox_text(outbox))}</dd></div>'
        '<div><dt>Updated</dt><dd id="updated">'
        f"{_time(document.get('generated_at'), None, suffix='', never='-')}</dd></div>"
        f'<div class="wide"><dt>Summary</dt><dd id="daemon-summary">{_text(facts.summary)}</dd>'
        "</div></dl>"
    )


def _name_cell(model: Mapping[str, Any]) -> str:
    provider = str(model.get("provider") or "cohere")
    model_id = str(model.get("id") or "")
    label = model.get("name") or model_id
    id_line = f'<span class="id">{_text(model_id)}</span>' if model.get("name") else ""
    tags = ""
    if model.get("discovered"):
        tags += ' <span class="tag">discovered</span>'
    elif model.get("configured") is False:
        tags += ' <span class="tag">not in config</span>'
    return (
        f'<th scope="row" data-label="Name"><a href="{_text(model_path(provider, model_id))}">'
        f"{_text(label)}</a>{tags}{id_line}</th>"
    )


def _model_row(model: Mapping[str, Any], now: datetime | None, phases: Phases) -> str:
    provider = str(model.get("provider") or "cohere")
    error = model.get("last_error")
    pending = int(model.get("pending_notifications") or 0)
    error_html = (
        f'<span class="error">{_text(error)}</span>' if error else '<span class="none">-</span>'
    )
    key = f"{provider}/{model.get('id')}"
    return (
        f'<tr data-key="{_text(key)}">{_name_cell(model)}'
        f'<td data-label="Provider">{_text(provider)}</td>'
        f'<td data-label="Status">{_status_html(model, phases)}</td>'
        f'<td data-label="Since">'
        f"{_time(model.get('status_since'), now, suffix=' ago', never='-')}</td>"
        f'<td data-label="Last poll">'
        f"{_time(model.get('last_poll_at'), now, suffix=' ago', never='never')}</td>"
        f'<td data-label="Last error">{error_html}</td>'
        f'<td data-label="Unsent" class="num{" warn" if pending else ""}">{pending}</td></tr>'
    )


def _models_table(models: Sequence[Mapping[str, Any]], now: datetime | None, phases: Phases) -> str:
    rows = "".join(_model_row(model, now, phases) for model in models)
    return (
        '<div class="table-wrap"><table id="models"><caption class="visually-hidden">'
        "Every watched model: status, since when, last poll, last error and notifications "
        "not delivered yet</caption><thead><tr>"
        '<th scope="col">Name</th><th scope="col">Provider</th><th scope="col">Status</th>'
        '<th scope="col">Since</th><th scope="col">Last poll</th>'
        '<th scope="col">Last error</th><th scope="col" class="num">Unsent</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
        f'<p id="no-models" class="empty"{" hidden" if models else ""}>No models yet.</p>'
    )


def render_status_page(
    document: Mapping[str, Any],
    facts: DaemonFacts,
    *,
    phases: Phases,
    assets: Assets,
    logout: bool = False,
) -> str:
    """``GET /``: the daemon's facts, the outbox and every model of the status document."""
    now = _parse_time(document.get("generated_at"))
    models = [m for m in document.get("models") or [] if isinstance(m, Mapping)]
    body = (
        "<h1>Fine-tuning status</h1>"
        '<section aria-labelledby="daemon-heading">'
        '<h2 id="daemon-heading" class="visually-hidden">Daemon</h2>'
        f"{_facts_html(document, facts, now)}</section>"
        '<section aria-labelledby="models-heading">'
        f'<h2 id="models-heading">Models <span class="count" id="model-count">'
        f"({len(models)})</span></h2>{_models_table(models, now, phases)}</section>"
    )
    return _layout(
        title=f"finetune-watcher · {len(models)} models",
        body=body,
        assets=assets,
        page="status",
        logout=logout,
        live=True,
    )


def _timeline_html(
    timeline: Sequence[Mapping[str, Any]], now: datetime | None, phases: Phases, provider: str
) -> str:
    if not timeline:
        return '<p class="empty" id="no-timeline">No status recorded yet.</p>'
    items = []
    for stage in timeline:
        since, until = _parse_time(stage.get("since")), _parse_time(stage.get("until"))
        shown = {"status": stage.get("status"), "phase": stage.get("phase"), "provider": provider,
                 "last_poll_at": "x", "last_success_at": "x"}  # fmt: skip
        view = status_view(shown, phases)
        if since and until:
            lasted = human_duration((until - since).total_seconds())
        elif since and now:
            lasted = human_duration((now - since).total_seconds()) + " so far"
        else:
            lasted = ""
        detail = f' <span class="detail">{_text(view.detail)}</span>' if view.detail else ""
        items.append(
            f'<li><span class="status phase-{view.phase}">{_icon(view.phase)}'
            f'<span class="word">{_text(view.word)}</span></span>{detail}'
            f'<span class="when">{_time(stage.get("since"), None, suffix="", never="-")}'
            f' · <span class="lasted">{_text(lasted)}</span></span></li>'
        )
    return f'<ol class="timeline" id="timeline">{"".join(items)}</ol>'


def render_model_page(
    document: Mapping[str, Any], *, phases: Phases, assets: Assets, logout: bool = False
) -> str:
    """``GET /models/{provider}/{id}``: one model's facts and its status timeline."""
    now = _parse_time(document.get("generated_at"))
    model: Mapping[str, Any] = document.get("model") or {}
    provider = str(model.get("provider") or "cohere")
    model_id = str(model.get("id") or "")
    label = model.get("name") or model_id
    error = model.get("last_error")
    timeline = [s for s in document.get("timeline") or [] if isinstance(s, Mapping)]
    pending = int(model.get("pending_notifications") or 0)
    body = (
        '<p class="back"><a href="/">← All models</a></p>'
        f'<h1 id="model-name">{_text(label)}</h1>'
        f'<p class="id">{_text(provider)} · {_text(model_id)}</p>'
        '<section aria-labelledby="facts-heading">'
        '<h2 id="facts-heading" class="visually-hidden">Facts</h2><dl class="facts" id="facts">'
        f'<div><dt>Status</dt><dd id="model-status">{_status_html(model, phases)}</dd></div>'
        '<div><dt>Since</dt><dd id="model-since">'
        f"{_time(model.get('status_since'), now, suffix=' ago', never='-')}</dd></div>"
        '<div><dt>Last poll</dt><dd id="model-last-poll">'
        f"{_time(model.get('last_poll_at'), now, suffix=' ago', never='never')}</dd></div>"
        '<div><dt>Failed polls in a row</dt><dd id="model-failures">'
        f"{_text(model.get('failures') or 0)}</dd></div>"
        f'<div><dt>Unsent notifications</dt><dd id="model-pending">{pending}</dd></div>'
        '<div class="wide"><dt>Last error</dt><dd id="model-error">'
        f"{_text(error) if error else '-'}</dd></div></dl></section>"
        '<section aria-labelledby="timeline-heading"><h2 id="timeline-heading">Timeline</h2>'
        f"{_timeline_html(timeline, now, phases, provider)}</section>"
    )
    return _layout(
        title=f"{SECRETS.scrub(str(label))} · finetune-watcher",
        body=body,
        assets=assets,
        page="model",
        logout=logout,
        data={"api": "/api" + model_path(provider, model_id), "key": f"{provider}/{model_id}"},
        live=True,
    )


def render_login_page(*, assets: Assets, next_path: str, failed: bool) -> str:
    """The token form (``POST /login``); ``failed`` after a wrong token."""
    error = (
        '<p class="error" id="login-error" role="alert">That token is not right.</p>'
        if failed
        else ""
    )
    described = ' aria-describedby="login-error"' if failed else ""
    body = (
        "<h1>Log in</h1>"
        "<p>This status page needs the access token (the content of "
        "<code>web.token_file</code>).</p>"
        f"{error}"
        '<form class="login" method="post" action="/login">'
        f'<input type="hidden" name="next" value="{_text(next_path)}">'
        '<label for="token">Access token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        f"required{described}>"
        '<button type="submit">Log in</button></form>'
    )
    return _layout(title="Log in · finetune-watcher", body=body, assets=assets, page="login")


def render_locked_page(*, assets: Assets, proxied: bool = False) -> str:
    """The refusal when the page is disabled (listening beyond loopback, no token), or
    ``proxied``: reached by a name that is not loopback on a loopback-only listener."""
    why = (
        "This daemon listens on loopback only and was reached by another host name (a "
        "reverse proxy, or a page elsewhere), so its status page and API do not answer."
        if proxied
        else "This daemon listens beyond loopback and has no access token, so its status "
        "page and API are off."
    )
    body = (
        f"<h1>Status page disabled</h1><p>{why} Set <code>web.token_file</code> (or "
        "<code>web.public: true</code> to open them to anyone who can reach this address) "
        "and restart it.</p>"
    )
    return _layout(title="Disabled · finetune-watcher", body=body, assets=assets, page="locked")


def render_starting_page(why: str, *, assets: Assets) -> str:
    """503 while the daemon starts; the page reloads itself (no script needed)."""
    body = (
        f"<h1>Starting</h1><p>The daemon cannot show its models yet: {_text(why)}. "
        "This page reloads itself every few seconds.</p>"
    )
    page = _layout(title="Starting · finetune-watcher", body=body, assets=assets, page="starting")
    return page.replace("<title>", '<meta http-equiv="refresh" content="5"><title>', 1)


def render_not_found_page(*, assets: Assets) -> str:
    body = (
        "<h1>No such model</h1><p>The daemon does not know this model. "
        '<a href="/">All models</a></p>'
    )
    return _layout(title="Not found · finetune-watcher", body=body, assets=assets, page="missing")
