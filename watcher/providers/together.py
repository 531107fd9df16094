"""Together AI's fine-tuning API (``/v1/fine-tunes``) as a provider: HTTP in, typed data out.

The status comes from the job object, not from its events: Together's events carry
a ``type`` (``job_start``, ``job_error``, ...) and a free-text ``message`` but no
status, and turning them into statuses would be guesswork (tests/fixtures/providers/
README.md, decision 1). So a poll is one request, ``GET /v1/fine-tunes/{id}``, and
yields one synthetic event ``(updated_at, status)``: the time the job last changed.
Should ``updated_at`` be missing, the newest embedded event's time stands in, then
``created_at``, then (one more request) the newest time of the job's ``/events``.
Timestamps are ISO-8601 (``2026-11-30T08:00:00.000Z``, with or without fractions).
When ``updated_at`` moves while the status stays, the core sees the same status again
at a later time: a longer run, no notice. A caller that passes the digest of the last
job body (``unless_digest=``) gets ``unchanged=True`` without a decode.

Casing differs between Together's own layers (fixtures README, decision 7): event
``type`` and ``level`` are compared lower-cased, and a status known in another case
(``COMPLETED``) is read as the known one; anything else is kept as sent.

The failure reason (``JobDetails.error_message``) is the ``message`` of the newest
event whose ``type`` is ``job_error`` or ``job_user_error`` or whose ``level`` is
``error``: from the job's embedded ``events``, else from ``/v1/fine-tunes/{id}/events``.
The job list (``GET /v1/fine-tunes``) is one response: no paging, no filters.
There are no training metrics short of downloading the model: no final metrics.

This module does not import aiohttp: the statuses and the scheme are importable
alone (``watcher.settings`` checks ``notify.on`` against them).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from watcher.errors import BadResponseError
from watcher.lifecycle import Event, Phase, StatusScheme
from watcher.providers.base import History, JobDetails, path_segment, total

if TYPE_CHECKING:
    import aiohttp

    from watcher.pacing import RequestPacer
    from watcher.providers.http import ApiTransport

__all__ = [
    "CANCELLED",
    "CANCEL_REQUESTED",
    "COMPLETED",
    "COMPRESSING",
    "ERROR",
    "KNOWN_STATUSES",
    "PENDING",
    "QUEUED",
    "RUNNING",
    "SETTLED",
    "TOGETHER_SCHEME",
    "UPLOADING",
    "USER_ERROR",
    "TogetherProvider",
    "TogetherSection",
    "parse_iso_time",
]

NAME = "together"

# Statuses as Together spells them: the generated type's nine, plus ``user_error``
# from the SDK's hand-written enum. An unknown status is data, never an error.
PENDING = "pending"
QUEUED = "queued"
RUNNING = "running"
COMPRESSING = "compressing"
UPLOADING = "uploading"
CANCEL_REQUESTED = "cancel_requested"
COMPLETED = "completed"
USER_ERROR = "user_error"
ERROR = "error"
CANCELLED = "cancelled"

#: Statuses after which a job does not change: polled at ``settled_interval``
#: (the SDK's ``COMPLETED_STATUSES``).
SETTLED: frozenset[str] = frozenset({COMPLETED, USER_ERROR, ERROR, CANCELLED})

#: Together's statuses on the common lifecycle, ranked as every provider is
#: (fixtures README, decision 9: queued < running < unknown 60 < ready < failed <
#: cancelled). A requested cancellation is still running (decision 3): the job may
#: yet end another way, and only the terminal ``cancelled`` is announced as cancelled.
TOGETHER_TABLE: Mapping[str, tuple[Phase, int]] = {
    PENDING: (Phase.QUEUED, 5),
    QUEUED: (Phase.QUEUED, 10),
    RUNNING: (Phase.RUNNING, 30),
    COMPRESSING: (Phase.RUNNING, 40),
    UPLOADING: (Phase.RUNNING, 50),
    CANCEL_REQUESTED: (Phase.RUNNING, 55),
    COMPLETED: (Phase.READY, 70),
    USER_ERROR: (Phase.FAILED, 78),
    ERROR: (Phase.FAILED, 80),
    CANCELLED: (Phase.CANCELLED, 85),
}

TOGETHER_SCHEME = StatusScheme(
    provider=NAME, table=TOGETHER_TABLE, settled=SETTLED, unknown_rank=60
)

KNOWN_STATUSES: tuple[str, ...] = TOGETHER_SCHEME.known

JOBS_PATH = "/v1/fine-tunes"
DASHBOARD_URL = "https://api.together.ai/fine-tuning/{id}"
#: Event types that say why a job failed (compared lower-cased: the SDK's layers disagree).
ERROR_EVENT_TYPES: frozenset[str] = frozenset({"job_error", "job_user_error"})
#: Event levels that mark an error (generated ``error``/``legacy_ierror``, hand-written ``Error``).
ERROR_LEVELS: frozenset[str] = frozenset({"error", "legacy_ierror"})
_MAX_MESSAGE = 500  # characters of a failure message kept for the notice
_FRACTION = re.compile(r"(\.\d{6})\d+")
_BY_LOWER: dict[str, str] = {status.lower(): status for status in TOGETHER_TABLE}


def parse_iso_time(value: object) -> datetime:
    """``2026-11-30T08:00:00.000Z`` (any fraction, any offset) as aware UTC; ``ValueError`` else.

    A time without an offset is taken as UTC; digits beyond microseconds are dropped.
    """
    if not isinstance(value, str) or not value:
        raise ValueError("not a timestamp")
    text = value.strip()
    if "." in text:
        text = _FRACTION.sub(r"\1", text)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise ValueError("timestamp out of range") from None


class TogetherSection(Protocol):
    """What :meth:`TogetherProvider.from_settings` reads (``watcher.settings.TogetherSettings``)."""

    @property
    def base_url(self) -> str: ...
    @property
    def timeout(self) -> float: ...


@total
class TogetherProvider:
    """Typed access to ``/v1/fine-tunes`` through a transport the caller's session backs."""

    name = NAME
    title = "Together AI"
    scheme = TOGETHER_SCHEME
    supports_discovery = True

    def __init__(self, transport: ApiTransport, *, base_url: str) -> None:
        self._transport = transport
        # Bound once: called on every poll.
        self._get_raw = transport.get_raw
        self._decode = transport.decode
        self._decode_async = transport.decode_async  # big bodies off the loop
        self._digest = transport.digest
        self._base = base_url.rstrip("/") + JOBS_PATH
        self._jobs = transport.url_base(self._base)  # the poll's URL without parsing

    @staticmethod
    def session_headers(section: TogetherSection, api_key: str) -> dict[str, str]:
        """The headers every request carries (the session holds them, not the logs)."""
        return {"Authorization": f"Bearer {api_key}"}

    @classmethod
    def from_settings(
        cls,
        section: TogetherSection,
        session: aiohttp.ClientSession,
        pacer: RequestPacer | None,
    ) -> TogetherProvider:
        """The provider for a ``together:`` section over ``session`` (opened with
        :meth:`session_headers`), charging ``pacer`` for every request."""
        from watcher.providers.http import ApiTransport  # deferred: keeps aiohttp out of settings

        transport = ApiTransport(session, provider=NAME, pacer=pacer, timeout=section.timeout)
        return cls(transport, base_url=section.base_url)

    def dashboard_url(self, job_id: str) -> str:
        """The job's page in Together's console (the URL the SDK's CLI prints)."""
        return DASHBOARD_URL.replace("{id}", quote(job_id, safe=""))  # a link: never raises

    # --- The hot path ------------------------------------------------------------

    async def fetch_history(self, job_id: str, *, unless_digest: bytes | None = None) -> History:
        """The job's current status as one synthetic event (see the module docstring).

        With ``unless_digest`` (the ``digest`` of an earlier answer), a body with that
        digest is not decoded: the result says ``unchanged``.
        """
        what = f"job {job_id}"
        raw = await self._get_raw(self._jobs.url("/" + _quote(job_id)), None, what=what)
        digest = self._digest(raw)
        if unless_digest is not None and digest == unless_digest:
            return History([], 0, 1, digest, unchanged=True)
        job = await self._decode_async(raw, what)
        status = _status_of(job.get("status"))
        if status is None:
            raise _bad(f"{what}: no status")
        at = _optional_time(job.get("updated_at"))
        if at is None:
            at = _newest_event_time(job.get("events")) or _optional_time(job.get("created_at"))
        pages = 1
        if at is None:  # a job stripped of every time: its event log still has them
            at = _newest_event_time(await self._events(job_id))
            pages = 2
        if at is None:
            raise _bad(f"{what}: no usable time (updated_at, events, created_at)")
        return History([Event(status, at)], 0, pages, digest)

    # --- Enrichment and discovery -------------------------------------------------

    async def job_details(self, job_id: str) -> JobDetails:
        """Names, base model, the output model and, when it failed, why.

        The reason comes from the job's embedded events; a failed job without them
        costs one more request (``/events``).
        """
        what = f"job {job_id}"
        job = await self._transport.get_json(f"{self._base}/{_quote(job_id)}", None, what=what)
        details = _details_from(job)
        if details is None:
            raise _bad(f"{what}: not a fine-tuning job")
        if not TOGETHER_SCHEME.is_failure(details.status):
            return details
        rows = job.get("events")
        if not isinstance(rows, list):
            rows = await self._events(job_id)
        message = _error_message(rows)
        return replace(details, error_message=message) if message else details

    async def _events(self, job_id: str) -> list[Any]:
        what = f"events of job {job_id}"
        body = await self._transport.get_json(
            f"{self._base}/{_quote(job_id)}/events", None, what=what
        )
        return _rows(body, what)

    async def final_metrics(self, job_id: str) -> dict[str, float] | None:
        """None: Together's API has no training metrics short of the model itself."""
        return None

    async def list_jobs(self) -> list[JobDetails]:
        """Every fine-tuning job of the account (one response: Together does not page)."""
        what = "job list"
        body = await self._transport.get_json(self._base, None, what=what)
        return [job for job in map(_details_from, _rows(body, what)) if job is not None]


def _bad(message: str) -> BadResponseError:
    return BadResponseError(message, provider=NAME)


def _quote(job_id: str) -> str:
    return path_segment(job_id, provider=NAME)  # on every poll: bound at import (no aiohttp)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _status_of(value: object) -> str | None:
    """The status as sent, or the known status it spells in another case; None if none."""
    status = _text(value)
    if status is None:
        return None
    if status not in TOGETHER_TABLE:
        status = _BY_LOWER.get(status.lower(), status)
    # Interned: a handful of statuses repeat across every model, and states keep them.
    return sys.intern(status)


def _optional_time(value: object) -> datetime | None:
    try:
        return parse_iso_time(value)
    except ValueError:
        return None


def _rows(body: Mapping[str, Any], what: str) -> list[Any]:
    rows = body.get("data")
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise _bad(f"{what}: 'data' is not a list")
    return rows


def _newest_event_time(rows: object) -> datetime | None:
    if not isinstance(rows, list):
        return None
    times = [_optional_time(row.get("created_at")) for row in rows if isinstance(row, dict)]
    return max((t for t in times if t is not None), default=None)


def _lower(value: object) -> str:
    return value.lower() if isinstance(value, str) else ""


def _error_message(rows: object) -> str | None:
    """The message of the newest error event (see the module docstring); None if none.

    Newest by ``created_at``; among equal times (or none), the later in the list.
    Rows that are not objects or have no message are skipped.
    """
    if not isinstance(rows, list):
        return None
    best: tuple[datetime, int] | None = None
    message: str | None = None
    floor = datetime.min.replace(tzinfo=UTC)
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        if (
            _lower(row.get("type")) not in ERROR_EVENT_TYPES
            and _lower(row.get("level")) not in ERROR_LEVELS
        ):
            continue
        text = _text(row.get("message"))
        if text is None:
            continue
        order = (_optional_time(row.get("created_at")) or floor, index)
        if best is None or order > best:
            best, message = order, text
    if message is None:
        return None
    return " ".join(message.split())[:_MAX_MESSAGE] or None


def _details_from(raw: object) -> JobDetails | None:
    if not isinstance(raw, dict):
        return None
    job_id = _text(raw.get("id"))
    if job_id is None:
        return None
    status = _status_of(raw.get("status"))
    updated_at = _optional_time(raw.get("updated_at"))
    return JobDetails(
        id=job_id,
        name=_text(raw.get("suffix")),
        status=status,
        base_model=(
            _text(raw.get("model"))
            or _text(raw.get("from_checkpoint"))
            or _text(raw.get("from_hf_model"))
        ),
        fine_tuned_model=(
            _text(raw.get("model_output_name"))
            or _text(raw.get("model_object_name"))
            or _text(raw.get("adapter_object_name"))
        ),
        created_at=_optional_time(raw.get("created_at")),
        updated_at=updated_at,
        # No finished_at: a settled job was last updated when it settled.
        completed_at=updated_at if TOGETHER_SCHEME.is_settled(status) else None,
    )


if TYPE_CHECKING:
    from watcher.providers import ProviderClass
    from watcher.providers.base import Provider

    def _conforms(provider: TogetherProvider) -> tuple[Provider, ProviderClass]:
        return provider, TogetherProvider  # mypy checks both protocols here
