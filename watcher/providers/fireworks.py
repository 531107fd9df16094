"""Fireworks AI's supervised fine-tuning jobs as a provider: HTTP in, typed data out.

Fireworks has no event history for a job, only its current ``state`` (an open enum
of ``JOB_STATE_*`` values) and ``updateTime``. So a poll is one request,
``GET /v1/accounts/{account}/supervisedFineTuningJobs/{id}``, and yields one
synthetic event ``(updateTime, state)`` (tests/fixtures/providers/README.md,
decision 1); a caller that passes the digest of the last job body
(``unless_digest=``) gets ``unchanged=True`` without a decode. Timestamps are
RFC 3339 with 0 to 9 fractional digits. A job with a state but no usable time
(``updateTime``, else ``completedTime``, else ``createTime``) is one malformed row
(the poller warns), not an error; a body that is no job at all is a
:class:`~watcher.errors.BadResponseError`.

The base URL is the host only (``https://api.fireworks.ai``: the paths carry
``/v1``, as in the official SDK); the account comes from ``fireworks.account_id``
(``watcher.settings`` fills it from ``$FIREWORKS_ACCOUNT_ID``). The job list pages
with ``pageSize``/``pageToken`` until ``nextPageToken`` is empty or absent,
repeating the same ``pageSize`` on every page, with guards against tokens that
come back and pages that never end.

Errors are google.rpc.Status bodies (``{"code": 5, "message": ...}``, at the top or
under ``error``): the shared transport reads their ``message`` and classifies by
the HTTP status, never by the body's integer code. A failed job's reason is its
``status.message`` (``status.code`` is a string such as ``INVALID_ARGUMENT``).
There are no training metrics in the API: no final metrics. No per-job console page
is verified, so :meth:`FireworksProvider.dashboard_url` is the account's
fine-tuning page (fixtures fireworks.md, "Dashboard").

This module does not import aiohttp: the statuses and the scheme are importable
alone (``watcher.settings`` checks ``notify.on`` against them).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from watcher.errors import BadResponseError, ConfigError
from watcher.lifecycle import Event, Phase, StatusScheme
from watcher.providers.base import History, JobDetails, path_segment, total

if TYPE_CHECKING:
    import aiohttp

    from watcher.pacing import RequestPacer
    from watcher.providers.http import ApiTransport

__all__ = [
    "ARCHIVED",
    "CANCELLED",
    "CANCELLING",
    "COMPLETED",
    "CREATING",
    "CREATING_INPUT_DATASET",
    "DASHBOARD_URL",
    "DELETED",
    "DELETING",
    "DELETING_CLEANING_UP",
    "EARLY_STOPPED",
    "EXPIRED",
    "FAILED",
    "FIREWORKS_SCHEME",
    "IDLE",
    "KNOWN_STATUSES",
    "PAUSED",
    "PENDING",
    "RE_QUEUEING",
    "RUNNING",
    "SDK_STATES",
    "SETTLED",
    "UNSPECIFIED",
    "VALIDATING",
    "WRITING_RESULTS",
    "FireworksProvider",
    "FireworksSection",
    "parse_rfc3339",
]

NAME = "fireworks"

# States as Fireworks spells them: the SDK literal's 18 (types/supervised_fine_tuning_job.py).
# An unknown state is data, never an error: the enum is open and grows.
UNSPECIFIED = "JOB_STATE_UNSPECIFIED"
CREATING = "JOB_STATE_CREATING"
CREATING_INPUT_DATASET = "JOB_STATE_CREATING_INPUT_DATASET"
PENDING = "JOB_STATE_PENDING"
RE_QUEUEING = "JOB_STATE_RE_QUEUEING"
VALIDATING = "JOB_STATE_VALIDATING"
RUNNING = "JOB_STATE_RUNNING"
WRITING_RESULTS = "JOB_STATE_WRITING_RESULTS"
CANCELLING = "JOB_STATE_CANCELLING"
IDLE = "JOB_STATE_IDLE"
PAUSED = "JOB_STATE_PAUSED"
COMPLETED = "JOB_STATE_COMPLETED"
EARLY_STOPPED = "JOB_STATE_EARLY_STOPPED"
EXPIRED = "JOB_STATE_EXPIRED"
FAILED = "JOB_STATE_FAILED"
CANCELLED = "JOB_STATE_CANCELLED"
DELETING = "JOB_STATE_DELETING"
DELETING_CLEANING_UP = "JOB_STATE_DELETING_CLEANING_UP"
# Not in the job's literal: the training SDK's "tombstone" states. Known, so that a
# job that ends that way is settled rather than polled fast for ever.
DELETED = "JOB_STATE_DELETED"
ARCHIVED = "JOB_STATE_ARCHIVED"

#: The SDK literal, exactly (tests check the table covers it).
SDK_STATES: tuple[str, ...] = (
    UNSPECIFIED, CREATING, RUNNING, COMPLETED, FAILED, CANCELLED, DELETING, WRITING_RESULTS,
    VALIDATING, DELETING_CLEANING_UP, PENDING, EXPIRED, RE_QUEUEING, CREATING_INPUT_DATASET,
    IDLE, CANCELLING, EARLY_STOPPED, PAUSED,
)  # fmt: skip

#: States after which a job does not change: polled at ``settled_interval``, never "stuck".
#: ``PAUSED`` is not among them (a held job may resume; like Cohere's and OpenAI's paused).
SETTLED: frozenset[str] = frozenset(
    {COMPLETED, EARLY_STOPPED, EXPIRED, FAILED, CANCELLED, DELETING, DELETING_CLEANING_UP,
     DELETED, ARCHIVED}
)  # fmt: skip

#: Fireworks' states on the common lifecycle, ranked as every provider is (fixtures
#: README, decision 9: queued < running < held < unknown 60 < ready < failed <
#: cancelled < deleted; values from fixtures fireworks.md). ``EARLY_STOPPED`` is a
#: normal end with the best checkpoint kept: ready (decision 4; the notice shows the
#: raw state). ``CANCELLING`` is still running (decision 3): only the terminal
#: ``CANCELLED`` is announced as cancelled. ``PAUSED`` (account suspended or manual
#: intervention) and ``IDLE`` are held: other, unsettled (decision 5).
FIREWORKS_TABLE: Mapping[str, tuple[Phase, int]] = {
    UNSPECIFIED: (Phase.OTHER, 0),
    CREATING: (Phase.QUEUED, 5),
    CREATING_INPUT_DATASET: (Phase.QUEUED, 8),
    PENDING: (Phase.QUEUED, 10),
    RE_QUEUEING: (Phase.QUEUED, 12),
    VALIDATING: (Phase.QUEUED, 15),
    RUNNING: (Phase.RUNNING, 30),
    WRITING_RESULTS: (Phase.RUNNING, 35),
    CANCELLING: (Phase.RUNNING, 45),
    IDLE: (Phase.OTHER, 50),
    PAUSED: (Phase.OTHER, 55),
    COMPLETED: (Phase.READY, 70),
    EARLY_STOPPED: (Phase.READY, 72),
    EXPIRED: (Phase.FAILED, 78),
    FAILED: (Phase.FAILED, 80),
    CANCELLED: (Phase.CANCELLED, 85),
    DELETING: (Phase.OTHER, 90),
    DELETING_CLEANING_UP: (Phase.OTHER, 90),
    DELETED: (Phase.OTHER, 95),
    ARCHIVED: (Phase.OTHER, 95),
}

FIREWORKS_SCHEME = StatusScheme(
    provider=NAME,
    table=FIREWORKS_TABLE,
    settled=SETTLED,
    unknown_rank=60,
    prefix="JOB_STATE_",  # notify.on: [early_stopped] means JOB_STATE_EARLY_STOPPED
)

KNOWN_STATUSES: tuple[str, ...] = FIREWORKS_SCHEME.known

JOBS_PATH = "/v1/accounts/{account}/supervisedFineTuningJobs"
#: The account's fine-tuning page: no per-job console URL is verified (fixtures fireworks.md).
DASHBOARD_URL = "https://app.fireworks.ai/dashboard/fine-tuning"
DEFAULT_MAX_PAGES = 200
DEFAULT_PAGE_SIZE = 200  # the API's maximum; larger values are coerced
_OK = "OK"
_MAX_MESSAGE = 500  # characters of a failure message kept for the notice
_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_rfc3339(value: object) -> datetime:
    """``2026-11-30T08:00:00.123456789Z`` (0-9 fractional digits, any offset) as aware UTC.

    A time without an offset is taken as UTC; digits beyond microseconds are dropped.
    Raises ``ValueError``.
    """
    if not isinstance(value, str) or not value:
        raise ValueError("not a timestamp")
    text = value.strip()
    if "." in text:
        text = _FRACTION.sub(r"\1", text)
    parsed = datetime.fromisoformat(text)
    tz = parsed.tzinfo
    if tz is UTC:
        return parsed
    if tz is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise ValueError("timestamp out of range") from None


class FireworksSection(Protocol):
    """What :meth:`FireworksProvider.from_settings` reads (``FireworksSettings``)."""

    @property
    def base_url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def account_id(self) -> str | None: ...
    @property
    def page_size(self) -> int: ...


@total
class FireworksProvider:
    """Typed access to one account's supervised fine-tuning jobs through a transport."""

    name = NAME
    title = "Fireworks AI"
    scheme = FIREWORKS_SCHEME
    supports_discovery = True

    def __init__(
        self,
        transport: ApiTransport,
        *,
        base_url: str,
        account_id: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        if not account_id:
            raise ConfigError(
                "fireworks",
                ["account_id: required for fireworks models (or set $FIREWORKS_ACCOUNT_ID)"],
            )
        self._transport = transport
        # Bound once: called on every poll.
        self._get_raw = transport.get_raw
        self._decode = transport.decode
        self._decode_async = transport.decode_async  # big bodies off the loop
        self._digest = transport.digest
        self.account_id = account_id
        self._base = base_url.rstrip("/") + JOBS_PATH.replace("{account}", _quote(account_id))
        self._jobs = transport.url_base(self._base)  # the poll's URL without parsing
        self._page_size = page_size
        self._max_pages = max_pages

    @staticmethod
    def session_headers(section: FireworksSection, api_key: str) -> dict[str, str]:
        """The headers every request carries (the session holds them, not the logs)."""
        return {"Authorization": f"Bearer {api_key}"}

    @classmethod
    def from_settings(
        cls,
        section: FireworksSection,
        session: aiohttp.ClientSession,
        pacer: RequestPacer | None,
    ) -> FireworksProvider:
        """The provider for a ``fireworks:`` section over ``session`` (opened with
        :meth:`session_headers`), charging ``pacer`` for every request.

        ``ConfigError`` when the section names no account (settings already refuse
        that for configured fireworks models, filling it from ``$FIREWORKS_ACCOUNT_ID``).
        """
        from watcher.providers.http import ApiTransport  # deferred: keeps aiohttp out of settings

        transport = ApiTransport(session, provider=NAME, pacer=pacer, timeout=section.timeout)
        return cls(
            transport,
            base_url=section.base_url,
            account_id=section.account_id or "",
            page_size=section.page_size,
        )

    def dashboard_url(self, job_id: str) -> str:
        """The account's fine-tuning page in the Fireworks console (no per-job page is verified)."""
        return DASHBOARD_URL

    # --- The hot path ------------------------------------------------------------

    async def fetch_history(self, job_id: str, *, unless_digest: bytes | None = None) -> History:
        """The job's current state as one synthetic event at its ``updateTime``.

        With ``unless_digest`` (the ``digest`` of an earlier answer), a body with that
        digest is not decoded: the result says ``unchanged``.
        """
        what = f"job {job_id}"
        raw = await self._get_raw(self._jobs.url("/" + _quote(job_id)), None, what=what)
        digest = self._digest(raw)
        if unless_digest is not None and digest == unless_digest:
            return History([], 0, 1, digest, unchanged=True)
        job = await self._decode_async(raw, what)
        state = _text(job.get("state"))
        if state is None:
            raise _bad(f"{what}: no state")
        at = (
            _optional_time(job.get("updateTime"))
            or _optional_time(job.get("completedTime"))
            or _optional_time(job.get("createTime"))
        )
        if at is None:
            # A state without a time cannot be placed in the history: one malformed
            # row, and no digest, so the next answer is read again.
            return History([], 1, 1, None)
        # Interned: a handful of states repeat across every model, and states keep them.
        return History([Event(sys.intern(state), at)], 0, 1, digest)

    # --- Enrichment and discovery -------------------------------------------------

    async def job_details(self, job_id: str) -> JobDetails:
        """Display name, base model, output model and, when it failed, why."""
        what = f"job {job_id}"
        job = await self._transport.get_json(f"{self._base}/{_quote(job_id)}", None, what=what)
        details = _details_from(job, fallback_id=job_id)
        if details is None:
            raise _bad(f"{what}: not a fine-tuning job")
        return details

    async def final_metrics(self, job_id: str) -> dict[str, float] | None:
        """None: Fireworks' job API has progress (percent, epoch), no training metrics."""
        return None

    async def list_jobs(self) -> list[JobDetails]:
        """Every supervised fine-tuning job of the account (all pages)."""
        what = "job list"
        jobs: list[JobDetails] = []
        seen_tokens: set[str] = set()
        token = ""
        for _ in range(self._max_pages):
            # The same parameters on every page, plus the token (the API insists).
            query = {"pageSize": str(self._page_size)}
            if token:
                query["pageToken"] = token
            body = await self._transport.get_json(self._base, query, what=what)
            rows = body.get("supervisedFineTuningJobs")
            if rows is None:
                rows = []
            if not isinstance(rows, list):
                raise _bad(f"{what}: 'supervisedFineTuningJobs' is not a list")
            jobs.extend(job for job in map(_details_from, rows) if job is not None)
            token = _next_token(body, seen_tokens, what)
            if not token:
                return jobs
        raise _bad(f"{what}: more than {self._max_pages} pages; giving up")


def _bad(message: str) -> BadResponseError:
    return BadResponseError(message, provider=NAME)


def _quote(value: str) -> str:
    return path_segment(value, provider=NAME)  # on every poll: bound at import (no aiohttp)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_time(value: object) -> datetime | None:
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def _next_token(body: Mapping[str, Any], seen_tokens: set[str], what: str) -> str:
    """The page token to follow ("" at the end); refuses tokens that come back."""
    token = body.get("nextPageToken") or ""
    if not isinstance(token, str):
        raise _bad(f"{what}: nextPageToken is not a string")
    if token:
        if token in seen_tokens:
            raise _bad(f"{what}: the API repeated a page token")
        seen_tokens.add(token)
    return token


def _job_id(name: object) -> str | None:
    """``accounts/{a}/supervisedFineTuningJobs/{id}`` -> ``{id}`` (the URL's short id)."""
    text = _text(name)
    if text is None:
        return None
    return text.rsplit("/", 1)[-1] or None


def _failure_message(status: object) -> str | None:
    """``status.message``, with ``status.code`` unless ``OK``: ``"... (INVALID_ARGUMENT)"``."""
    if not isinstance(status, dict):
        return None
    code = _text(status.get("code"))
    if code == _OK:
        code = None
    message = _text(status.get("message"))
    if message is not None:
        message = " ".join(message.split())[:_MAX_MESSAGE] or None
    if message is None:
        return f"error code {code}" if code else None
    return f"{message} ({code})" if code and code not in message else message


def _details_from(raw: object, *, fallback_id: str | None = None) -> JobDetails | None:
    if not isinstance(raw, dict):
        return None
    job_id = _job_id(raw.get("name")) or fallback_id
    if job_id is None:
        return None
    state = _text(raw.get("state"))
    error = _failure_message(raw.get("status"))
    completed_at = _optional_time(raw.get("completedTime"))
    updated_at = _optional_time(raw.get("updateTime"))
    if completed_at is None and FIREWORKS_SCHEME.is_settled(state):
        completed_at = updated_at
    return JobDetails(
        id=job_id,
        name=_text(raw.get("displayName")),
        status=state,
        base_model=_text(raw.get("baseModel")) or _text(raw.get("warmStartFrom")),
        fine_tuned_model=_text(raw.get("outputModel")),
        # A reason only where the job ended badly: a running job's status is "OK".
        error_message=error if FIREWORKS_SCHEME.phase(state) is not Phase.READY else None,
        created_at=_optional_time(raw.get("createTime")),
        updated_at=updated_at,
        completed_at=completed_at,
    )


if TYPE_CHECKING:
    from watcher.providers import ProviderClass
    from watcher.providers.base import Provider

    def _conforms(provider: FireworksProvider) -> tuple[Provider, ProviderClass]:
        return provider, FireworksProvider  # mypy checks both protocols here
