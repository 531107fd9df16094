"""The everyday commands: ``status``, ``events``, ``test-notify`` and ``healthcheck``.

``cli`` parses the arguments and calls one ``*_command`` function here; each returns
an exit code, writes its output to the streams it is given and raises typed errors
(``watcher.errors``) for ``cli.main`` to report as one line. The pieces that decide
what to show (``status_rows``, ``stages``, ``status_document`` ...) are pure and
take the current time as a parameter; only the ``*_command`` functions do I/O.

Only the standard library and the watcher's pure modules are imported at the top:
``healthcheck`` runs every few seconds in a container and must start fast, so
aiohttp, apprise and pydantic are imported by the commands that need them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from watcher.errors import (
    EX_FAILURE,
    EX_OK,
    BadResponseError,
    ConfigError,
    RateLimitedError,
    ServerError,
    TransportError,
    WatcherError,
)
from watcher.lifecycle import (
    FAILURES,
    FINETUNING,
    READY,
    Event,
    ModelState,
    Notice,
    is_settled,
    order_events,
)

if TYPE_CHECKING:
    from watcher.cohere import CohereClient
    from watcher.notify import Message, Target
    from watcher.settings import ApiKey, Settings
    from watcher.store import ModelRecord, OutboxCounts

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_FOLLOW_INTERVAL",
    "ModelRow",
    "ScopedTarget",
    "Stage",
    "events_command",
    "healthcheck_command",
    "healthcheck_target",
    "notice_from_state",
    "notification_targets",
    "positive_seconds",
    "send_test_notifications",
    "stages",
    "status_command",
    "status_document",
    "status_rows",
    "status_table",
]

#: Where ``events`` finds the API when neither a configuration nor ``$CO_API_URL`` says.
DEFAULT_API_URL = "https://api.cohere.com"
#: Seconds between two polls of ``events --follow``.
DEFAULT_FOLLOW_INTERVAL = 10.0
#: Exit code after SIGINT (Ctrl-C), as shells report it.
EX_INTERRUPTED = 130
EX_TERMINATED = 143

_LAST_ERROR_WIDTH = 40
_NAME_WIDTH = 32

# --- shared helpers -----------------------------------------------------------------


def positive_seconds(text: str) -> float:
    """An argparse ``type=``: a positive number of seconds (``10``, ``0.1``)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` (``2024-05-01T12:00:00Z``), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    """``45s``, ``14m 5s``, ``2h 14m``, ``3d 4h`` (truncated; never negative)."""
    from watcher.notify import format_duration

    return format_duration(max(0.0, seconds))


def _ago(moment: datetime | None, now: datetime, *, never: str = "never") -> str:
    """``just now``, ``45s ago``, ``2h 14m ago``; ``never`` for None."""
    if moment is None:
        return never
    seconds = (now - moment).total_seconds()
    if seconds < 1:
        return "just now"
    return f"{_duration(seconds)} ago"


def _short_status(status: str | None) -> str:
    """``STATUS_FINETUNING`` -> ``FINETUNING`` (what people read)."""
    return status.removeprefix("STATUS_") if status else "-"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Style:
    """ANSI colours for a terminal; plain text when colours are off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO) -> _Style:
        return cls(_isatty(stream) and not os.environ.get("NO_COLOR"))

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and code else text

    def status(self, text: str, status: str | None) -> str:
        return self.paint(text, _status_colour(status))

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def bold(self, text: str) -> str:
        return self.paint(text, "1")


def _status_colour(status: str | None) -> str:
    if status is None:
        return "2"  # dim: nothing known yet
    if status == READY:
        return "32"  # green
    if status in FAILURES:
        return "31"  # red
    if is_settled(status):
        return "2"
    return "33"  # yellow: still on its way


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


def _scrub(text: str) -> str:
    from watcher.redact import SECRETS

    return SECRETS.scrub(text)


def _load_settings(config: Path) -> Settings:
    """The configuration at ``config``, its secrets registered for scrubbing (no key needed)."""
    from watcher.settings import load_settings, register_secrets

    settings = load_settings(config)
    register_secrets(settings, None)
    return settings


# --- status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """One line of ``status``: a model from the state database and/or the configuration.

    ``polled`` is False for a configured model the daemon has no row for yet.
    """

    model_id: str
    name: str | None
    configured: bool
    discovered: bool
    polled: bool
    status: str | None
    status_since: datetime | None
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    failures: int
    pending_notifications: int

    @property
    def label(self) -> str:
        return self.name or self.model_id


def status_rows(
    records: Sequence[ModelRecord], configured: Mapping[str, str | None]
) -> list[ModelRow]:
    """Every model of the database plus the configured ones it does not know yet.

    ``configured`` maps each configured model id to its configured name (None: no
    name); a configured name wins over the stored one. Ordered by label, then id.
    """
    rows = [
        ModelRow(
            model_id=record.state.model_id,
            name=configured.get(record.state.model_id) or record.name,
            configured=record.state.model_id in configured,
            discovered=record.discovered,
            polled=True,
            status=record.state.status,
            status_since=record.state.status_since,
            last_poll_at=record.last_poll_at,
            last_success_at=record.last_success_at,
            last_error=record.last_error,
            failures=record.failures,
            pending_notifications=record.pending_notifications,
        )
        for record in records
    ]
    known = {row.model_id for row in rows}
    rows.extend(
        ModelRow(
            model_id=model_id,
            name=name,
            configured=True,
            discovered=False,
            polled=False,
            status=None,
            status_since=None,
            last_poll_at=None,
            last_success_at=None,
            last_error=None,
            failures=0,
            pending_notifications=0,
        )
        for model_id, name in configured.items()
        if model_id not in known
    )
    return sorted(rows, key=lambda row: (row.label.casefold(), row.model_id))


def status_document(
    rows: Sequence[ModelRow], counts: OutboxCounts, *, now: datetime, state_path: Path
) -> dict[str, Any]:
    """The ``status --json`` document (its shape is documented in the README).

    ::

        {"generated_at": "2024-05-01T12:00:00Z", "state_path": "/var/lib/.../watcher.db",
         "models": [{"id": str, "name": str | null, "status": str | null,
                     "status_since": time | null, "last_poll_at": time | null,
                     "last_success_at": time | null, "last_error": str | null,
                     "failures": int, "pending_notifications": int,
                     "discovered": bool, "configured": bool}, ...],
         "outbox": {"pending": int, "done": int, "given_up": int}}

    Times are ISO-8601 UTC strings ending in ``Z``. ``status`` is Cohere's spelling
    (``STATUS_READY``); null when the model has not been polled successfully yet.
    """
    return {
        "generated_at": _iso(now),
        "state_path": str(state_path.absolute()),
        "models": [
            {
                "id": row.model_id,
                "name": row.name,
                "status": row.status,
                "status_since": _iso(row.status_since),
                "last_poll_at": _iso(row.last_poll_at),
                "last_success_at": _iso(row.last_success_at),
                "last_error": row.last_error,
                "failures": row.failures,
                "pending_notifications": row.pending_notifications,
                "discovered": row.discovered,
                "configured": row.configured,
            }
            for row in rows
        ],
        "outbox": {"pending": counts.pending, "done": counts.done, "given_up": counts.given_up},
    }


def _status_text(row: ModelRow) -> str:
    if not row.polled:
        return "not polled yet"
    if row.last_success_at is None:
        return "unknown"  # only failed polls so far; the error column says why
    if row.status is None:
        return "no events yet"
    return _short_status(row.status)


def _name_text(row: ModelRow) -> str:
    name = _shorten(row.name, _NAME_WIDTH) if row.name else "-"
    if row.discovered:
        return f"{name} [discovered]"
    if not row.configured:
        return f"{name} [not in config]"
    return name


def status_table(
    rows: Sequence[ModelRow], counts: OutboxCounts, *, now: datetime, style: _Style
) -> list[str]:
    """The ``status`` table and its footer, one string per line."""
    headers = ("NAME", "ID", "STATUS", "SINCE", "LAST POLL", "LAST ERROR", "UNSENT")
    cells = [
        (
            _name_text(row),
            row.model_id,
            _status_text(row),
            _ago(row.status_since, now, never="-"),
            _ago(row.last_poll_at, now),
            _shorten(row.last_error, _LAST_ERROR_WIDTH) if row.last_error else "-",
            str(row.pending_notifications),
        )
        for row in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str], paint: Callable[[int, str], str]) -> str:
        padded = [
            paint(i, value.rjust(widths[i]) if i == len(values) - 1 else value.ljust(widths[i]))
            for i, value in enumerate(values)
        ]
        return "  ".join(padded).rstrip()

    lines = [line(headers, lambda _i, text: style.bold(text))]
    for row, values in zip(rows, cells, strict=True):

        def paint(i: int, text: str, row: ModelRow = row) -> str:
            if i == 2:
                return style.status(text, row.status if row.last_success_at else None)
            if i == 5 and row.last_error:
                return style.paint(text, "31")
            if i == 6 and row.pending_notifications:
                return style.paint(text, "33")
            return text

        lines.append(line(values, paint))
    if not rows:
        lines.append(style.dim("(no models yet)"))
    lines.append("")
    lines.append(
        f"outbox: {counts.pending} pending · {counts.done} delivered · {counts.given_up} given up"
    )
    return lines


def status_command(config: Path, *, as_json: bool, out: TextIO | None = None) -> int:
    """``finetune-watcher status``: read the state database (never the API) and show it.

    Safe while the daemon runs: the database is opened read-only and without the lock.
    Raises ``ConfigError`` (78) for a bad configuration and ``StateError`` (74) when
    the state file is missing or unusable.
    """
    from watcher.store import Store

    out = out or sys.stdout
    settings = _load_settings(config)
    with Store.open_readonly(settings.state.path) as store:
        records = store.model_records()
        counts = store.outbox_counts()
    now = datetime.now(UTC)
    rows = status_rows(records, {m.id: m.name for m in settings.models})
    if as_json:
        document = status_document(rows, counts, now=now, state_path=settings.state.path)
        out.write(_scrub(json.dumps(document, ensure_ascii=False, indent=2)) + "\n")
    else:
        lines = status_table(rows, counts, now=now, style=_Style.for_stream(out))
        out.write("".join(_scrub(text) + "\n" for text in lines))
    out.flush()
    return EX_OK


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A run of events with the same status: when it began and when the next began."""

    status: str
    since: datetime
    until: datetime | None  # None: the model is still in this status

    @property
    def duration_seconds(self) -> float | None:
        if self.until is None:
            return None
        return max(0.0, (self.until - self.since).total_seconds())

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.status, self.since)


def stages(events: Iterable[Event]) -> list[Stage]:
    """The model's timeline: events in ``order_events`` order, repeated statuses merged."""
    starts: list[tuple[str, datetime]] = []
    for event in order_events(events):
        if not starts or starts[-1][0] != event.status:
            starts.append((event.status, event.created_at))
    return [
        Stage(status, since, starts[i + 1][1] if i + 1 < len(starts) else None)
        for i, (status, since) in enumerate(starts)
    ]


def _final_exit_code(status: str) -> int:
    """``--follow`` ends on a settled status: 0 for READY, 1 for FAILED or DELETED."""
    return EX_OK if status == READY else EX_FAILURE


@dataclass(frozen=True)
class _ApiAccess:
    base_url: str
    api_key: ApiKey
    timeout: float
    page_size: int
    client_name: str


def _api_access(config: Path | None, environ: Mapping[str, str]) -> _ApiAccess:
    """The key and base URL: from the configuration if there is one, else the environment.

    ``config`` None means "the default configuration if it exists": ``$WATCHER_CONFIG``,
    else ``./config/watcher.yaml``. Raises ``ConfigError`` (78).
    """
    from pydantic import SecretStr

    from watcher.settings import ApiKey, load_settings, register_secrets, resolve_api_key

    if config is None:
        from watcher.cli import DEFAULT_CONFIG

        default = Path(environ.get("WATCHER_CONFIG") or DEFAULT_CONFIG)
        config = default if default.is_file() else None
    if config is not None:
        settings = load_settings(config, environ)
        api_key = resolve_api_key(settings, environ)
        register_secrets(settings, api_key)
        cohere = settings.cohere
        return _ApiAccess(
            cohere.base_url, api_key, cohere.timeout, cohere.page_size, cohere.client_name
        )

    from watcher.redact import SECRETS

    base_url = (environ.get("CO_API_URL") or "").strip() or DEFAULT_API_URL
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("$CO_API_URL", ["must be an http:// or https:// URL"])
    if parts.password:
        SECRETS.add(parts.password)
    for name in ("CO_API_KEY", "COHERE_API_KEY"):
        value = (environ.get(name) or "").strip()
        if value:
            SECRETS.add(value)
            key = ApiKey(SecretStr(value), f"${name}")
            return _ApiAccess(base_url.rstrip("/"), key, 30.0, 50, "finetune-watcher")
    raise ConfigError(
        "finetune-watcher events",
        ["no API key: set CO_API_KEY (or COHERE_API_KEY), or name a configuration with -c FILE"],
    )


class _Console:
    """stdout/stderr for ``events``: rows, warnings and a live status line on a TTY.

    The live line is redrawn in place with ``\\r``; it is wiped before any other
    output, so rows and warnings never mix with it.
    """

    def __init__(self, out: TextIO, err: TextIO, *, live: bool) -> None:
        self.out = out
        self.err = err
        self.live = live
        self.style = _Style.for_stream(out)
        self._showing = False

    def print(self, text: str) -> None:
        self.clear_live()
        self.out.write(_scrub(text) + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.clear_live()
        self.err.write(_scrub(f"finetune-watcher: warning: {text}") + "\n")
        self.err.flush()

    def show_live(self, text: str) -> None:
        if not self.live:
            return
        self.out.write("\r\x1b[K" + _scrub(text))
        self.out.flush()
        self._showing = True

    def clear_live(self) -> None:
        if self._showing:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._showing = False


def _stage_json(stage: Stage) -> str:
    return json.dumps(
        {
            "status": stage.status,
            "created_at": _iso(stage.since),
            "duration_seconds": stage.duration_seconds,
        }
    )


def _stage_line(stage: Stage, note: str, style: _Style) -> str:
    from watcher.notify import format_time

    moment = format_time(stage.since)  # to the second: JSON has the exact time
    status = _short_status(stage.status)
    return f"{moment}  {style.status(status.ljust(22), stage.status)}  {note}".rstrip()


def _stage_note(stage: Stage, now: datetime) -> str:
    if stage.duration_seconds is not None:
        return _duration(stage.duration_seconds)
    return f"{_duration((now - stage.since).total_seconds())} so far (current)"


@dataclass
class _FollowState:
    """What the live line shows; updated by the poll loop, read by the redraw loop."""

    current: Stage | None = None
    last_success: datetime | None = None
    failures: int = 0

    def line(self, now: datetime) -> str:
        if self.current is None:
            text = "no events yet"
        else:
            elapsed = (now - self.current.since).total_seconds()
            text = f"{_short_status(self.current.status)} for {_duration(elapsed)}"
        text += f" · polled {_ago(self.last_success, now)}"
        if self.failures:
            text += f" · retrying ({self.failures} failed)"
        return text


_TRANSIENT = (ServerError, TransportError, RateLimitedError, BadResponseError)


class _Timeline:
    """Prints a model's stages once each, as text rows or JSON Lines."""

    def __init__(self, console: _Console, model_id: str, *, as_json: bool) -> None:
        self.console = console
        self.model_id = model_id
        self.as_json = as_json
        self._printed: set[tuple[str, datetime]] = set()
        self._headed = False

    def show(self, timeline: Sequence[Stage], now: datetime) -> None:
        """Print the stages not printed yet: all of them the first time, then the new ones.

        The first time, each row says how long the model spent in that status; a row
        added later (``--follow``) says how long the status before it lasted.
        """
        first = not self._headed
        self._headed = True
        if first and not self.as_json:
            self.console.print(f"{self.model_id}: timeline (UTC)")
            if not timeline:
                self.console.print("  no events yet")
        previous: Stage | None = None
        for stage in timeline:
            if stage.key not in self._printed:
                self._printed.add(stage.key)
                self.console.print(self._row(stage, previous, now, first=first))
            previous = stage

    def _row(self, stage: Stage, previous: Stage | None, now: datetime, *, first: bool) -> str:
        if self.as_json:
            return _stage_json(stage)
        if first or previous is None or previous.duration_seconds is None:
            note = _stage_note(stage, now)
        else:
            lasted = _duration(previous.duration_seconds)
            note = f"new, after {lasted} in {_short_status(previous.status)}"
        return "  " + _stage_line(stage, note, self.console.style)

    def finish(self, status: str, code: int) -> None:
        if self.as_json:
            self.console.print(json.dumps({"final_status": status, "exit_code": code}))
        elif status == READY:
            self.console.print(f"{self.model_id} is READY.")
        else:
            self.console.print(f"{self.model_id} ended {_short_status(status)} (exit {code}).")


async def _follow(
    client: CohereClient,
    model_id: str,
    *,
    interval: float,
    console: _Console,
    timeline: _Timeline,
    clock: Callable[[], datetime],
) -> int:
    """Poll until the model settles; the exit code says how it ended."""
    import anyio

    state = _FollowState()

    async def redraw() -> None:
        while True:
            if state.last_success is not None or state.failures:
                console.show_live(state.line(clock()))
            await anyio.sleep(1.0)

    async def poll() -> int:
        while True:
            try:
                history = await client.list_events(model_id)
            except _TRANSIENT as exc:
                state.failures += 1
                delay = interval
                if isinstance(exc, RateLimitedError) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                console.warn(
                    f"{exc}; retrying in {_duration(delay) if delay >= 1 else f'{delay:g}s'}"
                )
                await anyio.sleep(delay)
                continue
            now = clock()
            state.failures = 0
            state.last_success = now
            current = stages(history.events)
            timeline.show(current, now)
            state.current = current[-1] if current else None
            if state.current is not None and is_settled(state.current.status):
                code = _final_exit_code(state.current.status)
                timeline.finish(state.current.status, code)
                return code
            console.show_live(state.line(now))
            await anyio.sleep(interval)

    outcome: list[int] = []

    async def run(scope: anyio.CancelScope) -> None:
        outcome.append(await poll())
        scope.cancel()

    async def watch_signals(scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for received in signals:
                outcome.append(EX_INTERRUPTED if received == signal.SIGINT else EX_TERMINATED)
                scope.cancel()
                return

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals, tg.cancel_scope)
            if console.live:
                tg.start_soon(redraw)
            tg.start_soon(run, tg.cancel_scope)
    finally:
        console.clear_live()
    return outcome[0] if outcome else EX_INTERRUPTED


async def _events(
    access: _ApiAccess,
    model_id: str,
    *,
    follow: bool,
    as_json: bool,
    interval: float,
    out: TextIO,
    err: TextIO,
) -> int:
    from watcher.cohere import CohereClient, open_session

    console = _Console(out, err, live=follow and not as_json and _isatty(out))
    timeline = _Timeline(console, model_id, as_json=as_json)

    def clock() -> datetime:
        return datetime.now(UTC)

    async with open_session(
        api_key=access.api_key.value.get_secret_value(),
        timeout=access.timeout,
        concurrency=1,
        client_name=access.client_name,
    ) as session:
        client = CohereClient(
            session, base_url=access.base_url, timeout=access.timeout, page_size=access.page_size
        )
        if follow:
            return await _follow(
                client,
                model_id,
                interval=interval,
                console=console,
                timeline=timeline,
                clock=clock,
            )
        history = await client.list_events(model_id)
        timeline.show(stages(history.events), clock())
        return EX_OK


def events_command(
    model_id: str,
    *,
    config: Path | None,
    follow: bool,
    as_json: bool,
    interval: float = DEFAULT_FOLLOW_INTERVAL,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``finetune-watcher events``: a model's timeline from the API, optionally followed.

    Without ``follow``: print the timeline, exit 0. With ``follow``: poll every
    ``interval`` seconds, print each new status as it arrives, and exit 0 when the
    model becomes READY, 1 when it becomes FAILED or DELETED, 130 on Ctrl-C (143 on
    SIGTERM). Transient API errors (5xx, transport, 429, malformed answers) are
    retried with a warning on stderr; the others raise their ``CohereError``.
    """
    import anyio

    access = _api_access(config, os.environ if environ is None else environ)
    return anyio.run(
        lambda: _events(
            access,
            model_id,
            follow=follow,
            as_json=as_json,
            interval=interval,
            out=out or sys.stdout,
            err=err or sys.stderr,
        )
    )


# --- test-notify ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScopedTarget:
    """A target and where the configuration names it (``notify.urls``, ``models[x].urls``)."""

    target: Target
    scope: str


def notification_targets(settings: Settings, model_id: str | None) -> list[ScopedTarget]:
    """The global targets plus every model's own (only ``model_id``'s, when given).

    A URL named in several places is one target, shown with the first place.
    """
    from watcher.notify import make_target

    scoped = [
        ScopedTarget(make_target(u.get_secret_value()), "notify.urls") for u in settings.notify.urls
    ]
    for model in settings.models:
        if model_id is not None and model.id != model_id:
            continue
        scoped.extend(
            ScopedTarget(make_target(u.get_secret_value()), f"models[{model.label}].urls")
            for u in model.urls
        )
    unique: dict[str, ScopedTarget] = {}
    for item in scoped:
        unique.setdefault(item.target.key, item)
    return list(unique.values())


def notice_from_state(state: ModelState) -> Notice | None:
    """The notice announcing ``state``'s current status (None when it has none).

    The previous status and when it began come from the remembered events.
    """
    if state.status is None or state.status_since is None:
        return None
    events = [Event(ident.status, ident.created_at) for ident in state.seen]
    earlier = [s for s in stages(events) if s.since < state.status_since]
    previous_status: str | None = None
    previous_since: datetime | None = None
    if earlier and earlier[-1].status != state.status:
        previous_status, previous_since = earlier[-1].status, earlier[-1].since
    elif not earlier and state.floor is not None and state.floor.status != state.status:
        previous_status = state.floor.status  # forgotten history: its status, not its start
    return Notice(
        model_id=state.model_id,
        status=state.status,
        previous_status=previous_status,
        event_at=state.status_since,
        previous_since=previous_since,
        started_at=state.started_at,
    )


def _sample_notice(model_id: str, now: datetime) -> Notice:
    """A READY notice after a plausible fine-tune, for models with nothing stored."""
    return Notice(
        model_id=model_id,
        status=READY,
        previous_status=FINETUNING,
        event_at=now,
        previous_since=now - timedelta(hours=2, minutes=14),
        started_at=now - timedelta(hours=2, minutes=20),
    )


TEST_TITLE = "finetune-watcher test notification"


def _plain_test_message() -> Message:
    from watcher.notify import Message

    return Message(
        title=TEST_TITLE,
        body=(
            f"This is a test notification from finetune-watcher on {socket.gethostname()}. "
            "If you can read it, this target works: notifications about your fine-tuned "
            "models will arrive here."
        ),
        notify_type="info",
    )


def _model_test_message(settings: Settings, model_id: str, console: _Console) -> Message:
    """The message ``model_id``'s last stored status would send, titled as a test."""
    from watcher.notify import Message, render_notice
    from watcher.store import Store
    from watcher.templates import TemplateError

    configured = settings.model_by_id().get(model_id)
    record = None
    if settings.state.path.exists():
        with Store.open_readonly(settings.state.path) as store:
            record = next((r for r in store.model_records() if r.state.model_id == model_id), None)
    if configured is None and record is None:
        raise WatcherError(
            f"model {model_id} is neither in the configuration nor in the state database"
        )
    name = (configured.name if configured else None) or (record.name if record else None)
    notice = notice_from_state(record.state) if record is not None else None
    if notice is None:
        console.print(f"{model_id} has no stored status yet: sending a sample READY message")
        notice = _sample_notice(model_id, datetime.now(UTC))
    else:
        console.print(f"{model_id}: rendering its stored status {notice.status}")
        if notice.status not in settings.notify.on:
            console.print(
                f"  (note: {notice.status} is not in notify.on, so the watcher would not send it)"
            )
    notify = settings.notify
    title_template, body_template = notify.templates_for(notice.status)
    try:
        message = render_notice(
            notice,
            name=name,
            dashboard_url=notify.dashboard_url,
            title_template=title_template,
            body_template=body_template,
            body_format=notify.format,
        )
    except TemplateError as exc:
        raise ConfigError(str(settings.config_path), [f"notify: {exc}"]) from None
    return Message(f"[test] {message.title}", message.body, message.notify_type)


async def _send_test(
    settings: Settings, targets: Sequence[ScopedTarget], message: Message
) -> list[tuple[ScopedTarget, bool, str | None]]:
    from watcher.notify import Notifier

    notifier = Notifier(timeout=settings.notify.timeout, body_format=settings.notify.format)
    try:
        results = await notifier.send(message, [t.target for t in targets])
    finally:
        await notifier.aclose()
    by_key = {r.target.key: r for r in results}
    return [(t, by_key[t.target.key].ok, by_key[t.target.key].error) for t in targets]


def send_test_notifications(
    config: Path,
    *,
    model_id: str | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``finetune-watcher test-notify``: send a test message to every target, report each.

    Prints one line per target (its redacted label, where it is configured, and ``ok``
    or why it failed); returns 1 when any target failed, else 0. Never prints a URL.
    """
    import anyio

    console = _Console(out or sys.stdout, err or sys.stderr, live=False)
    settings = _load_settings(config)
    targets = notification_targets(settings, model_id)
    if not targets:
        where = "notify.urls" + (
            f" or models[{model_id}].urls" if model_id else " or models[].urls"
        )
        raise WatcherError(f"no notification targets to test: {where} name none")
    message = (
        _model_test_message(settings, model_id, console)
        if model_id is not None
        else _plain_test_message()
    )
    console.print(f"sending: {message.title}")
    outcomes = anyio.run(_send_test, settings, targets, message)

    label_width = max(len(t.target.label) for t in targets)
    failed = 0
    for scoped, ok, error in outcomes:
        where = f"{scoped.target.label.ljust(label_width)}  ({scoped.scope})"
        if ok:
            console.print(f"{console.style.paint('ok    ', '32')}  {where}")
        else:
            failed += 1
            reason = error or "delivery failed"
            console.print(f"{console.style.paint('FAILED', '31')}  {where}: {reason}")
    total = len(outcomes)
    if failed:
        console.print(f"{failed} of {total} target{'s' if total != 1 else ''} failed")
        return EX_FAILURE
    console.print(f"all {total} target{'s' if total != 1 else ''} ok")
    return EX_OK


# --- healthcheck ----------------------------------------------------------------------


def healthcheck_target(url: str | None, config: Path | None, environ: Mapping[str, str]) -> str:
    """The ``/healthz`` URL to check, first match wins.

    ``--url``; the ``health.listen`` of the configuration given with ``-c`` (which
    ``$WATCHER_HEALTH__LISTEN`` overrides); ``$WATCHER_HEALTH__LISTEN``; the default
    ``http://127.0.0.1:9464/healthz``. Raises ``ConfigError`` for an unusable address.
    """
    from watcher.health import DEFAULT_HEALTHCHECK_URL, healthcheck_url

    if url:
        return url
    source = "$WATCHER_HEALTH__LISTEN"
    listen = environ.get("WATCHER_HEALTH__LISTEN") or None
    if config is not None:
        listen = _load_settings(config).health.listen
        source = f"{config}: health.listen"
    if listen is None:
        return DEFAULT_HEALTHCHECK_URL
    try:
        return healthcheck_url(listen)
    except ValueError as exc:
        raise ConfigError(source, [str(exc)]) from None


def healthcheck_command(
    url: str | None,
    *,
    config: Path | None,
    timeout: float,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``finetune-watcher healthcheck``: 0 when the daemon's ``/healthz`` answers 200, else 1."""
    from watcher.health import healthcheck

    target = healthcheck_target(url, config, os.environ if environ is None else environ)
    return healthcheck(target, timeout=timeout)
