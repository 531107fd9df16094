"""Mistral's fine-tuning jobs API (``/v1/fine_tuning/jobs``) as a provider: HTTP in, typed data out.

**Deprecated upstream.** Mistral lists its fine-tuning API as deprecated with no
replacement, and ``mistralai`` 2.6.0 and later have no job endpoints any more
(tests/fixtures/providers/mistral.md). The endpoints may keep answering for existing
jobs, so this client stays small; everything here follows ``mistralai`` 2.5.0, the
last SDK with the jobs API. 404 and 410 both mean "job gone", and so does 422 on a
job's URL (FastAPI's answer to an id that is no UUID: that job cannot exist).

The status history is embedded in the job: ``GET /v1/fine_tuning/jobs/{id}`` carries
``events[]``, newest first, each ``{"name": "status-updated", "data": {"status": ...},
"created_at": <unix seconds>}``. Mistral also documents ``status-updated`` events
*without* ``data`` (no status at all, several sharing one timestamp): those are
skipped, not counted as malformed, and the job's own ``(modified_at, status)`` stands
in as one synthetic event whenever the events do not already end on the job's status.
So a poll is one request, and a caller that passes the digest of the last body
(``unless_digest=``) gets ``unchanged=True`` without a decode.

The job list (discovery) pages with ``page`` (from **0**) and ``page_size``; ``total``
counts every job. Listing stops on an empty page or once ``total`` jobs have arrived
(counted, not computed from ``page_size``: a server may cap the page size), refuses
a page with nothing new (a server ignoring ``page``) and gives up after ``max_pages``.

Mistral gives no failure reason (only ``FAILED`` vs ``FAILED_VALIDATION``), so
:attr:`~watcher.providers.base.JobDetails.error_message` is always None, and no
per-job console URL is verified, so :meth:`MistralProvider.dashboard_url` is "".
The last checkpoint's metrics come with the job: :meth:`final_metrics` reads them.

This module does not import aiohttp: the statuses and the scheme are importable
alone (``watcher.settings`` checks ``notify.on`` against them).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from watcher.errors import ApiError, BadResponseError, NotFoundError
from watcher.lifecycle import Event, Phase, StatusScheme
from watcher.providers.base import History, JobDetails, numbers, path_segment, total

if TYPE_CHECKING:
    import aiohttp

    from watcher.pacing import RequestPacer
    from watcher.providers.http import ApiTransport

__all__ = [
    "CANCELLATION_REQUESTED",
    "CANCELLED",
    "FAILED",
    "FAILED_VALIDATION",
    "KNOWN_STATUSES",
    "MISTRAL_SCHEME",
    "QUEUED",
    "RUNNING",
    "SETTLED",
    "STARTED",
    "SUCCESS",
    "VALIDATED",
    "VALIDATING",
    "MistralProvider",
    "MistralSection",
    "parse_unix_time",
]

NAME = "mistral"

# Statuses as Mistral spells them (mistralai 2.5.0; the SDK types the enum as open).
# An unknown status is data, never an error.
QUEUED = "QUEUED"
STARTED = "STARTED"
VALIDATING = "VALIDATING"
VALIDATED = "VALIDATED"
RUNNING = "RUNNING"
CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"
SUCCESS = "SUCCESS"
FAILED_VALIDATION = "FAILED_VALIDATION"
FAILED = "FAILED"
CANCELLED = "CANCELLED"

#: Statuses after which a job does not change: polled at ``settled_interval``.
SETTLED: frozenset[str] = frozenset({SUCCESS, FAILED_VALIDATION, FAILED, CANCELLED})

#: Mistral's statuses on the common lifecycle, ranked as every provider is
#: (fixtures README, decision 9: queued < running < unknown 60 < ready < failed <
#: cancelled). A requested cancellation is still running (decision 3): the job may
#: yet end another way, and only the terminal CANCELLED is announced as cancelled.
MISTRAL_TABLE: Mapping[str, tuple[Phase, int]] = {
    QUEUED: (Phase.QUEUED, 10),
    STARTED: (Phase.QUEUED, 15),
    VALIDATING: (Phase.QUEUED, 20),
    VALIDATED: (Phase.QUEUED, 25),
    RUNNING: (Phase.RUNNING, 30),
    CANCELLATION_REQUESTED: (Phase.RUNNING, 40),
    SUCCESS: (Phase.READY, 70),
    FAILED_VALIDATION: (Phase.FAILED, 78),
    FAILED: (Phase.FAILED, 80),
    CANCELLED: (Phase.CANCELLED, 85),
}

MISTRAL_SCHEME = StatusScheme(provider=NAME, table=MISTRAL_TABLE, settled=SETTLED, unknown_rank=60)

KNOWN_STATUSES: tuple[str, ...] = MISTRAL_SCHEME.known

JOBS_PATH = "/v1/fine_tuning/jobs"
DEFAULT_PAGE_SIZE = 100  # the SDK's default and the settings' maximum
DEFAULT_MAX_PAGES = 200
_MAX_UNIX = 253402300799  # 9999-12-31T23:59:59Z: beyond it datetime overflows
# On a job's URL these mean the job is not (or no longer) there; see the module docstring.
_GONE = frozenset({404, 410, 422})


def parse_unix_time(value: object) -> datetime:
    """A unix time in seconds (int or float) as an aware UTC datetime; ``ValueError`` else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a unix time")
    if not 0 <= value <= _MAX_UNIX:  # NaN fails too; a huge int is not converted
        raise ValueError("unix time out of range")
    return datetime.fromtimestamp(value, UTC)


class MistralSection(Protocol):
    """What :meth:`MistralProvider.from_settings` reads (``watcher.settings.MistralSettings``)."""

    @property
    def base_url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def page_size(self) -> int: ...


@total
class MistralProvider:
    """Typed access to ``/v1/fine_tuning/jobs`` through a transport the caller's session backs."""

    name = NAME
    title = "Mistral"
    scheme = MISTRAL_SCHEME
    supports_discovery = True

    def __init__(
        self,
        transport: ApiTransport,
        *,
        base_url: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        self._transport = transport
        # Bound once: called on every poll.
        self._get_raw = transport.get_raw
        self._decode = transport.decode
        self._decode_async = transport.decode_async  # big bodies off the loop
        self._digest = transport.digest
        self._base = base_url.rstrip("/") + JOBS_PATH
        self._jobs = transport.url_base(self._base)  # the poll's URL without parsing
        self._page_size = page_size
        self._max_pages = max_pages

    @staticmethod
    def session_headers(section: MistralSection, api_key: str) -> dict[str, str]:
        """The headers every request carries (the session holds them, not the logs)."""
        return {"Authorization": f"Bearer {api_key}"}

    @classmethod
    def from_settings(
        cls,
        section: MistralSection,
        session: aiohttp.ClientSession,
        pacer: RequestPacer | None,
    ) -> MistralProvider:
        """The provider for a ``mistral:`` section over ``session`` (opened with
        :meth:`session_headers`), charging ``pacer`` for every request."""
        from watcher.providers.http import ApiTransport  # deferred: keeps aiohttp out of settings

        transport = ApiTransport(session, provider=NAME, pacer=pacer, timeout=section.timeout)
        return cls(transport, base_url=section.base_url, page_size=section.page_size)

    def dashboard_url(self, job_id: str) -> str:
        """No per-job page in Mistral's console is verified: "" (link nothing)."""
        return ""

    # --- The hot path ------------------------------------------------------------

    async def fetch_history(self, job_id: str, *, unless_digest: bytes | None = None) -> History:
        """The job's embedded status events (plus its current status; see the module docstring).

        With ``unless_digest`` (the ``digest`` of an earlier answer), a body with that
        digest is not decoded: the result says ``unchanged``.
        """
        what = f"job {job_id}"
        raw = await self._get_job_raw(job_id, what)
        digest = self._digest(raw)
        if unless_digest is not None and digest == unless_digest:
            return History([], 0, 1, digest, unchanged=True)
        job = await self._decode_async(raw, what)
        events, malformed = _status_events(job.get("events"), what)
        current = _current_event(job, events)
        if current is not None:
            events.append(current)
        elif not events:
            raise _bad(f"{what}: neither a status with a time nor status events")
        return History(events, malformed, 1, digest)

    async def _get_job_raw(self, job_id: str, what: str) -> bytes:
        try:
            return await self._get_raw(self._jobs.url("/" + _quote(job_id)), None, what=what)
        except ApiError as exc:
            if type(exc) is ApiError and exc.status in _GONE:
                # 410 (gone) and 422 (no such id can exist): the job is not there.
                raise NotFoundError(str(exc), status=exc.status, provider=NAME) from exc
            raise

    # --- Enrichment and discovery -------------------------------------------------

    async def job_details(self, job_id: str) -> JobDetails:
        """Names, base model, fine-tuned model and the last checkpoint's metrics.

        ``error_message`` is always None: Mistral gives no failure reason.
        """
        what = f"job {job_id}"
        job = await self._decode_async(await self._get_job_raw(job_id, what), what)
        details = _details_from(job)
        if details is None:
            raise _bad(f"{what}: not a fine-tuning job")
        return details

    async def final_metrics(self, job_id: str) -> dict[str, float] | None:
        """The metrics of the job's last checkpoint (they come with the job), or None."""
        what = f"job {job_id}"
        job = await self._decode_async(await self._get_job_raw(job_id, what), what)
        return _last_checkpoint_metrics(job.get("checkpoints")) or None

    async def list_jobs(self) -> list[JobDetails]:
        """Every fine-tuning job of the account (all pages; see the module docstring)."""
        what = "job list"
        jobs: dict[str, JobDetails] = {}
        received = 0
        for page in range(self._max_pages):
            query = {"page": str(page), "page_size": str(self._page_size)}
            body = await self._transport.get_json(self._base, query, what=what)
            rows = body.get("data")
            if rows is None:
                rows = []
            if not isinstance(rows, list):
                raise _bad(f"{what}: 'data' is not a list")
            if not rows:
                return list(jobs.values())
            before = len(jobs)
            for row in rows:
                job = _details_from(row)
                if job is not None:
                    jobs.setdefault(job.id, job)
            # Jobs created while we list shift rows onto the next page (a repeat now and
            # then is fine), but a page with nothing new means ``page`` is ignored.
            if len(jobs) == before:
                raise _bad(f"{what}: page {page} repeats jobs already listed")
            received += len(rows)
            total = body.get("total")
            if isinstance(total, int) and not isinstance(total, bool) and received >= total:
                return list(jobs.values())
        raise _bad(f"{what}: more than {self._max_pages} pages; giving up")


def _bad(message: str) -> BadResponseError:
    return BadResponseError(message, provider=NAME)


def _quote(job_id: str) -> str:
    return path_segment(job_id, provider=NAME)  # on every poll: bound at import (no aiohttp)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_time(value: object) -> datetime | None:
    try:
        return parse_unix_time(value)
    except ValueError:
        return None


def _status_events(rows: object, what: str) -> tuple[list[Event], int]:
    """The events that carry ``data.status``, and how many rows were unusable.

    A row without ``data`` is documented (a ``status-updated`` event with no status):
    skipped, not counted.
    """
    if rows is None:
        return [], 0
    if not isinstance(rows, list):
        raise _bad(f"{what}: 'events' is not a list")
    events: list[Event] = []
    malformed = 0
    for row in rows:
        if not isinstance(row, dict):
            malformed += 1
            continue
        data = row.get("data")
        if data is None:
            continue
        status = data.get("status") if isinstance(data, dict) else None
        if status is None and isinstance(data, dict):
            continue  # data without a status: another kind of event
        created_at = _optional_time(row.get("created_at"))
        if not isinstance(status, str) or not status or created_at is None:
            malformed += 1
            continue
        # Interned: a handful of statuses repeat across every model, and states keep them.
        events.append(Event(sys.intern(status), created_at))
    return events, malformed


def _current_event(job: Mapping[str, Any], events: list[Event]) -> Event | None:
    """The job's ``(modified_at, status)`` when the events do not already end on it.

    None when they do, or when the job has no usable status. Its time is never before
    the newest event's, so the job's own status stays the current one.
    """
    status = _text(job.get("status"))
    if status is None:
        return None
    newest = max(events, key=MISTRAL_SCHEME.event_key, default=None)
    if newest is not None and newest.status == status:
        return None
    times = [t for t in (_optional_time(job.get("modified_at")),) if t is not None]
    if newest is not None:
        times.append(newest.created_at)
    if not times:
        created_at = _optional_time(job.get("created_at"))
        if created_at is None:
            return None
        times.append(created_at)
    return Event(sys.intern(status), max(times))


def _last_checkpoint_metrics(rows: object) -> dict[str, float]:
    """The numeric metrics of the checkpoint with the highest step (then the newest)."""
    if not isinstance(rows, list):
        return {}
    best: dict[str, float] = {}
    best_order: tuple[int, float] | None = None
    for row in rows:
        raw = row.get("metrics") if isinstance(row, dict) else None
        if not isinstance(raw, dict):
            continue
        metrics = numbers(raw)
        step = row.get("step_number")
        at = _optional_time(row.get("created_at"))
        order = (
            step if isinstance(step, int) and not isinstance(step, bool) else -1,
            at.timestamp() if at is not None else -1.0,
        )
        if metrics and (best_order is None or order > best_order):
            best, best_order = metrics, order
    return best


def _details_from(raw: object) -> JobDetails | None:
    if not isinstance(raw, dict):
        return None
    job_id = _text(raw.get("id"))
    if job_id is None:
        return None
    status = _text(raw.get("status"))
    modified_at = _optional_time(raw.get("modified_at"))
    return JobDetails(
        id=job_id,
        name=_text(raw.get("suffix")),
        status=status,
        base_model=_text(raw.get("model")),
        fine_tuned_model=_text(raw.get("fine_tuned_model")),
        error_message=None,  # Mistral gives no reason (fixtures README, decision 11)
        created_at=_optional_time(raw.get("created_at")),
        updated_at=modified_at,
        # No finished_at: a settled job was last modified when it settled.
        completed_at=modified_at if MISTRAL_SCHEME.is_settled(status) else None,
        metrics=_last_checkpoint_metrics(raw.get("checkpoints")),
    )


if TYPE_CHECKING:
    from watcher.providers import ProviderClass
    from watcher.providers.base import Provider

    def _conforms(provider: MistralProvider) -> tuple[Provider, ProviderClass]:
        return provider, MistralProvider  # mypy checks both protocols here
