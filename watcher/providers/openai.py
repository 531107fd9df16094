"""OpenAI's fine-tuning API (``/fine_tuning/jobs``) as a provider: HTTP in, typed data out.

The status comes from the job object, not from its events: OpenAI's events carry a
free-text ``message`` and no status field, and turning prose into statuses would
break on the first rewording (tests/fixtures/providers/README.md, decision 1). So a
poll reads the job and yields one synthetic event, ``(time, job.status)``, whose
time is

* ``finished_at`` once the job is settled (succeeded, failed, cancelled);
* otherwise the later of ``created_at`` and the newest event's ``created_at``
  (one event, ``limit=1``: events are newest first). A job has no ``updated_at``,
  and every status change logs an event, so paused -> running -> paused still
  sorts right in the core.

Polling is the hot path: the job's URL is built once per job as one string, and a
caller that passes the digest of the last job body (``unless_digest=``) gets
``unchanged=True`` without a decode and without the events request. The digest is
that of the job body alone: the same job body means the same status, and the
status is all the history an OpenAI job has.

Events (``/events``: ``limit``, ``after`` = id of the last item, ``has_more``) and
the job list (discovery) page the same way: :meth:`OpenAIProvider._pages` follows
``after`` while ``has_more`` is true (when ``has_more`` is absent: while the page
is full), refuses cursors that come back and gives up after ``max_pages``.

Azure OpenAI (:mod:`watcher.providers.azure_openai`) speaks the same API and reuses
this class; what differs is a class attribute or a constructor argument.

This module does not import aiohttp: the statuses and the scheme are importable
alone (``watcher.settings`` checks ``notify.on`` against them).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import quote, urlencode

from watcher.errors import BadResponseError
from watcher.lifecycle import Event, Phase, StatusScheme
from watcher.providers.base import History, JobDetails, finite_float, numbers, path_segment, total

if TYPE_CHECKING:
    import aiohttp

    from watcher.pacing import RequestPacer
    from watcher.providers.http import ApiTransport

__all__ = [
    "CANCELLED",
    "FAILED",
    "KNOWN_STATUSES",
    "OPENAI_SCHEME",
    "PAUSED",
    "PAUSING",
    "QUEUED",
    "RUNNING",
    "SETTLED",
    "SUCCEEDED",
    "VALIDATING_FILES",
    "JobEvent",
    "OpenAIProvider",
    "OpenAISection",
    "parse_unix_time",
]

NAME = "openai"

# Statuses as OpenAI spells them (the SDK's literal plus pausing/paused from the API
# reference). An unknown status is data, never an error.
VALIDATING_FILES = "validating_files"
QUEUED = "queued"
RUNNING = "running"
PAUSING = "pausing"
PAUSED = "paused"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

#: Statuses after which a job does not change: polled at ``settled_interval``.
SETTLED: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED})

#: OpenAI's statuses on the common lifecycle (fixtures README, decisions 5 and 9).
#: ``pausing`` is still running; ``paused`` is held (resumable, no outcome): OTHER,
#: not settled, like Cohere's PAUSED. Unknown statuses: OTHER, rank 60.
OPENAI_TABLE: Mapping[str, tuple[Phase, int]] = {
    VALIDATING_FILES: (Phase.QUEUED, 10),
    QUEUED: (Phase.QUEUED, 20),
    RUNNING: (Phase.RUNNING, 30),
    PAUSING: (Phase.RUNNING, 35),
    PAUSED: (Phase.OTHER, 40),
    SUCCEEDED: (Phase.READY, 70),
    FAILED: (Phase.FAILED, 80),
    CANCELLED: (Phase.CANCELLED, 85),
}

OPENAI_SCHEME = StatusScheme(provider=NAME, table=OPENAI_TABLE, settled=SETTLED, unknown_rank=60)

KNOWN_STATUSES: tuple[str, ...] = OPENAI_SCHEME.known

JOBS_PATH = "/fine_tuning/jobs"
DEFAULT_PAGE_SIZE = 100  # the API's maximum `limit`
DEFAULT_MAX_PAGES = 200
DASHBOARD_URL = "https://platform.openai.com/finetune/{id}"
_MAX_UNIX = 253402300799  # 9999-12-31T23:59:59Z: beyond it datetime overflows


def parse_unix_time(value: object) -> datetime:
    """A unix time in seconds (int or float) as an aware UTC datetime; ``ValueError`` else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a unix time")
    if not 0 <= value <= _MAX_UNIX:  # NaN fails too; a huge int is not converted
        raise ValueError("unix time out of range")
    return datetime.fromtimestamp(value, UTC)


def _optional_time(value: object) -> datetime | None:
    try:
        return parse_unix_time(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One entry of a job's event log (``/events``): a message, not a status."""

    id: str
    created_at: datetime
    level: str = ""
    message: str = ""
    type: str = ""
    data: Mapping[str, Any] | None = None


class OpenAISection(Protocol):
    """What :meth:`OpenAIProvider.from_settings` reads (``watcher.settings.OpenAISettings``)."""

    @property
    def base_url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def page_size(self) -> int: ...


@total
class OpenAIProvider:
    """Typed access to ``/fine_tuning/jobs`` through a transport the caller's session backs.

    ``query``: parameters every request carries (Azure's ``api-version``).
    """

    name = NAME
    title = "OpenAI"
    scheme = OPENAI_SCHEME
    supports_discovery = True
    #: The job's page, ``{id}`` filled in; "" when the provider has none.
    dashboard: ClassVar[str] = DASHBOARD_URL

    def __init__(
        self,
        transport: ApiTransport,
        *,
        base_url: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_pages: int = DEFAULT_MAX_PAGES,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self._transport = transport
        # Bound once: called on every poll.
        self._get_raw = transport.get_raw
        self._decode = transport.decode
        self._decode_async = transport.decode_async  # big bodies off the loop
        self._digest = transport.digest
        self._base = base_url.rstrip("/") + JOBS_PATH
        self._page_size = page_size
        self._max_pages = max_pages
        self._query = dict(query or {})
        # Encoded once: the job's query (maybe empty) and the newest-event query.
        self._job_query = ("?" + urlencode(self._query)) if self._query else ""
        self._newest_query = "?" + urlencode({"limit": "1", **self._query})
        # The hot path's URLs, built from parts without parsing (http.UrlBase).
        self._jobs = transport.url_base(self._base)

    @staticmethod
    def session_headers(section: Any, api_key: str) -> dict[str, str]:
        """The headers every request carries: the key, and the organisation and project
        when the section names them (``OpenAI-Organization`` / ``OpenAI-Project``)."""
        headers = {"Authorization": f"Bearer {api_key}"}
        organization = getattr(section, "organization", None)
        project = getattr(section, "project", None)
        if organization:
            headers["OpenAI-Organization"] = organization
        if project:
            headers["OpenAI-Project"] = project
        return headers

    @classmethod
    def from_settings(
        cls,
        section: OpenAISection,
        session: aiohttp.ClientSession,
        pacer: RequestPacer | None,
    ) -> OpenAIProvider:
        """The provider for an ``openai:`` section over ``session`` (opened with
        :meth:`session_headers`), charging ``pacer`` for every request."""
        from watcher.providers.http import ApiTransport  # deferred: keeps aiohttp out of settings

        transport = ApiTransport(session, provider=cls.name, pacer=pacer, timeout=section.timeout)
        return cls(transport, base_url=section.base_url, page_size=section.page_size)

    def dashboard_url(self, job_id: str) -> str:
        """The job's page in the provider's console ("" when there is none)."""
        return self.dashboard.replace("{id}", quote(job_id, safe="")) if self.dashboard else ""

    # --- The hot path ------------------------------------------------------------

    async def fetch_history(self, job_id: str, *, unless_digest: bytes | None = None) -> History:
        """The job's current status as one synthetic event (see the module docstring).

        With ``unless_digest`` (the ``digest`` of an earlier answer), a job body with
        that digest is not decoded and no events are fetched: ``unchanged``.
        """
        what = f"job {job_id}"
        job_path = "/" + _quote(job_id)
        raw = await self._get_raw(self._jobs.url(job_path, self._job_query[1:]), None, what=what)
        digest = self._digest(raw)
        if unless_digest is not None and digest == unless_digest:
            return History([], 0, 1, digest, unchanged=True)
        job = await self._decode_async(raw, what)
        status = job.get("status")
        if not isinstance(status, str) or not status:
            raise self._bad(f"{what}: no status")
        status = sys.intern(status)  # a handful of statuses repeat across every model
        created_at = _optional_time(job.get("created_at"))
        pages = 1
        malformed = 0
        at: datetime | None = None
        if self.scheme.is_settled(status):
            at = _optional_time(job.get("finished_at"))
        if at is None:
            newest, malformed = await self._newest_event_time(job_path, what)
            pages += 1
            at = max((t for t in (created_at, newest) if t is not None), default=None)
        if at is None:
            raise self._bad(f"{what}: no usable time (created_at, finished_at, events)")
        return History([Event(status, at)], malformed, pages, digest)

    async def _newest_event_time(self, job_path: str, what: str) -> tuple[datetime | None, int]:
        """The newest event's time (None if none) and how many rows were unusable."""
        body = await self._transport.get_json(
            self._jobs.url(job_path + "/events", self._newest_query[1:]),
            None,
            what=f"events of {what}",
        )
        rows = self._rows(body, f"events of {what}")
        newest: datetime | None = None
        malformed = 0
        for row in rows:  # newest first, but a second look costs nothing
            at = _optional_time(row.get("created_at")) if isinstance(row, dict) else None
            if at is None:
                malformed += 1
            elif newest is None or at > newest:
                newest = at
        return newest, malformed

    # --- Enrichment, events, discovery --------------------------------------------

    async def job_details(self, job_id: str) -> JobDetails:
        """Names, base model, fine-tuned model, the failure's message (``error``)."""
        what = f"job {job_id}"
        body = await self._transport.get_json(
            f"{self._base}/{_quote(job_id)}{self._job_query}", None, what=what
        )
        details = _details_from(body)
        if details is None:
            raise self._bad(f"{what}: not a fine-tuning job")
        return details

    async def events(self, job_id: str, *, limit: int | None = None) -> tuple[list[JobEvent], int]:
        """The job's event log, newest first (all pages, or the newest ``limit``), and
        how many rows were unusable (skipped)."""
        found: list[JobEvent] = []
        malformed = 0
        what = f"events of job {job_id}"
        async for rows in self._pages(f"/{_quote(job_id)}/events", what=what, limit=limit):
            for row in rows:
                event = _event_from(row)
                if event is None:
                    malformed += 1
                else:
                    found.append(event)
            if limit is not None and len(found) >= limit:
                return found[:limit], malformed
        return found, malformed

    async def final_metrics(self, job_id: str) -> dict[str, float] | None:
        """The newest ``metrics`` event's numbers (step, losses, ...), or None."""
        events, _ = await self.events(job_id, limit=self._page_size)
        for event in events:
            if event.type == "metrics" and event.data:
                metrics = numbers(event.data)
                if metrics:
                    return metrics
        return None

    async def list_jobs(self) -> list[JobDetails]:
        """Every fine-tuning job of the organisation/project (all pages)."""
        jobs: list[JobDetails] = []
        async for rows in self._pages("", what="job list"):
            jobs.extend(job for job in map(_details_from, rows) if job is not None)
        return jobs

    async def _pages(
        self, path: str, *, what: str, limit: int | None = None
    ) -> AsyncIterator[list[Any]]:
        """Each page's rows of the list at ``path``, following ``after`` (see module docstring)."""
        page_size = min(self._page_size, limit) if limit else self._page_size
        seen: set[str] = set()
        after = ""
        for _ in range(self._max_pages):
            query = {"limit": str(page_size), **self._query}
            if after:
                query["after"] = after
            body = await self._transport.get_json(self._base + path, query, what=what)
            rows = self._rows(body, what)
            yield rows
            has_more = body.get("has_more")
            if has_more is None:
                has_more = len(rows) >= page_size  # absent: a full page may have a next one
            elif not isinstance(has_more, bool):
                raise self._bad(f"{what}: has_more is not a boolean")
            if not has_more or not rows:
                return
            last = rows[-1].get("id") if isinstance(rows[-1], dict) else None
            if not isinstance(last, str) or not last:
                raise self._bad(f"{what}: the last row has no id to page after")
            if last in seen:
                raise self._bad(f"{what}: the API repeated a page")
            seen.add(last)
            after = last
        raise self._bad(f"{what}: more than {self._max_pages} pages; giving up")

    def _rows(self, body: Mapping[str, Any], what: str) -> list[Any]:
        rows = body.get("data")
        if rows is None:
            return []
        if not isinstance(rows, list):
            raise self._bad(f"{what}: 'data' is not a list")
        return rows

    def _bad(self, message: str) -> BadResponseError:
        return BadResponseError(message, provider=self.name)


def _quote(job_id: str) -> str:
    return path_segment(job_id, provider=NAME)  # on every poll: bound at import (no aiohttp)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _event_from(row: object) -> JobEvent | None:
    if not isinstance(row, dict):
        return None
    event_id = _text(row.get("id"))
    created_at = _optional_time(row.get("created_at"))
    if event_id is None or created_at is None:
        return None
    data = row.get("data")
    return JobEvent(
        id=event_id,
        created_at=created_at,
        # v1 says "warn", Azure's dated API "warning": one spelling for readers.
        level=_level(row.get("level")),
        message=_text(row.get("message")) or "",
        type=_text(row.get("type")) or "",
        data=data if isinstance(data, dict) else None,
    )


def _level(value: object) -> str:
    level = (_text(value) or "").lower()
    return "warn" if level == "warning" else level


def _error_message(error: object) -> str | None:
    """``error.message`` with ``error.code`` when there is one: ``"... (invalid_file)"``."""
    if not isinstance(error, dict):
        return None
    message = _text(error.get("message"))
    code = error.get("code")
    code_text = str(code) if isinstance(code, str | int) and not isinstance(code, bool) else ""
    if message is None:
        return f"error code {code_text}" if code_text else None
    message = " ".join(message.split())
    return f"{message} ({code_text})" if code_text and code_text not in message else message


def _details_from(raw: object) -> JobDetails | None:
    if not isinstance(raw, dict):
        return None
    job_id = _text(raw.get("id"))
    if job_id is None:
        return None
    trained = finite_float(raw.get("trained_tokens"))
    metrics = {"trained_tokens": trained} if trained is not None else {}
    return JobDetails(
        id=job_id,
        name=_text(raw.get("user_provided_suffix")) or _text(raw.get("suffix")),
        status=_text(raw.get("status")),
        base_model=_text(raw.get("model")),
        fine_tuned_model=_text(raw.get("fine_tuned_model")),
        error_message=_error_message(raw.get("error")),
        created_at=_optional_time(raw.get("created_at")),
        completed_at=_optional_time(raw.get("finished_at")),
        metrics=metrics,
    )


if TYPE_CHECKING:
    from watcher.providers import ProviderClass
    from watcher.providers.base import Provider

    def _conforms(provider: OpenAIProvider) -> tuple[Provider, ProviderClass]:
        return provider, OpenAIProvider  # mypy checks both protocols here
