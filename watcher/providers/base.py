"""The provider seam: what the watcher needs from a fine-tuning API.

A provider turns one HTTP API into typed data and typed errors and decides
nothing: the pure core (:mod:`watcher.lifecycle`) decides what a status history
means, and :mod:`watcher.policy` what a failed request means. Each provider is one
module of ``watcher.providers`` holding one class that satisfies :class:`Provider`,
its :class:`~watcher.lifecycle.StatusScheme` (its statuses mapped onto the common
lifecycle, as one table) and its response parsing; the shared transport
(:mod:`watcher.providers.http`: pacing, timeouts, body cap, content type,
Retry-After, typed errors) is the same for all.

Adding a provider is: a module here, a settings section (``watcher.settings``), an
entry in ``watcher.providers.PROVIDERS``, its fake API in the simulator, and its
tests (see docs/architecture.md, "How to add a provider").
"""

from __future__ import annotations

import functools
import gc
import inspect
import math
import re
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from watcher.errors import ApiError, BadResponseError, NotFoundError
from watcher.lifecycle import Event, StatusScheme

__all__ = [
    "DATA_ERRORS",
    "History",
    "JobDetails",
    "Provider",
    "finite_float",
    "gc_paused",
    "numbers",
    "path_segment",
    "total",
]

#: What parsing code raises on data it did not expect: nesting past the recursion limit,
#: a number or a date out of range (OverflowError), a wrong type, a bad string
#: (UnicodeError is a ValueError), a missing key or index.
DATA_ERRORS: tuple[type[Exception], ...] = (
    RecursionError,
    ArithmeticError,
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
)

_C = TypeVar("_C", bound=type)

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a big answer is parsed (in a worker thread).

    Decoding 50,000 events allocates some 200,000 objects; the collections they trigger
    run in the parsing thread while it holds the GIL and traverse the whole heap: most of
    the event loop's stall (issue 11, finding 8). Those temporaries die by reference
    counting anyway. Nested and concurrent pauses count; the last one out resumes the
    collector if it was running.
    """
    global _gc_pausers, _gc_resume
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_resume:
                gc.enable()


#: An id made of unreserved characters only (RFC 3986): what ``quote`` leaves as it is.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+", re.ASCII)


def path_segment(value: str, *, provider: str = "") -> str:
    """``value`` (a job or model id) quoted as exactly one URL path segment.

    Every character but the unreserved ones is percent-encoded (``/`` too: an id never
    adds a path level). ``.`` and ``..`` (which a URL normalises into "this" or "the
    parent" path), the empty id and ids with control characters name no job: they
    raise :class:`~watcher.errors.NotFoundError` (that model's typed error, never a
    request to another path). Called on every poll, so an id of unreserved characters
    only (the usual case) is returned as it is, without ``quote``.

    Here rather than in :mod:`watcher.providers.http` so that the provider modules,
    which must not import aiohttp at import time, bind it once instead of importing
    it inside every call.
    """
    if _UNRESERVED.fullmatch(value) is not None and value != "." and value != "..":
        return value
    if value in ("", ".", "..") or not value.isprintable():
        raise NotFoundError(f"{value!r} is not a usable id", provider=provider)
    return quote(value, safe="")


def finite_float(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else (a bool, NaN, infinity,
    an integer too large for a float such as ``1`` followed by 400 zeros)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def numbers(raw: Mapping[Any, Any]) -> dict[str, float]:
    """A metrics object's entries whose values are usable numbers (:func:`finite_float`)."""
    found: dict[str, float] = {}
    for key, value in raw.items():
        number = finite_float(value)
        if number is not None:
            found[str(key)] = number
    return found


def total(cls: _C) -> _C:
    """Make every public coroutine method of a provider class total (issue 11, finding 1).

    Whatever an answer contains, a call ends in its result or in an
    :class:`~watcher.errors.ApiError`: any of :data:`DATA_ERRORS` raised while reading
    the answer becomes a :class:`~watcher.errors.BadResponseError` for that call (the
    original chained), so a hostile or broken API costs one model a typed error, never
    the daemon. The parsers still skip what they can; this is the boundary's backstop.
    Applied to a subclass it wraps what is not wrapped yet (inherited methods are).
    """
    for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction):
        if not name.startswith("_") and not getattr(member, "_total", False):
            setattr(cls, name, _guarded(member))
    return cls


def _guarded(
    method: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except ApiError:
            raise
        except DATA_ERRORS as exc:
            subject = f" {args[0]}" if args and isinstance(args[0], str) else ""
            raise BadResponseError(
                f"{method.__name__}{subject}: unusable answer ({type(exc).__name__})",
                provider=getattr(self, "name", ""),
            ) from exc

    guarded._total = True  # type: ignore[attr-defined]
    return guarded


@dataclass(frozen=True, slots=True)
class History:
    """A job's status history as fetched; ``malformed`` counts rows that had to be skipped.

    Providers without an event history (only a current status) return one synthetic
    event: the current status at the time the provider says it began (or last changed).
    ``digest`` identifies the raw body when the history came in one response (None
    otherwise). ``unchanged`` is True when that body was byte for byte the one whose
    digest the caller passed as ``unless_digest``: then ``events`` is empty and was not
    decoded, because the caller already has it.
    """

    events: list[Event]
    malformed: int = 0
    pages: int = 1
    digest: bytes | None = None
    unchanged: bool = False


@dataclass(frozen=True, slots=True)
class JobDetails:
    """What a provider says about one job beyond its status; every field may be missing.

    ``name`` is the human name (Cohere's model name, a job's suffix); ``fine_tuned_model``
    the resulting model's name at the provider (OpenAI ``fine_tuned_model``, Together
    ``model_output_name``, Fireworks ``outputModel``); ``error_message`` why it failed.
    """

    id: str
    name: str | None = None
    status: str | None = None
    base_model: str | None = None
    fine_tuned_model: str | None = None
    error_message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Provider(Protocol):
    """One fine-tuning API, as the daemon and the commands use it.

    Every method raises only :class:`~watcher.errors.ApiError` subclasses (with
    ``provider`` set) for anything that went wrong, however hostile the answer.
    """

    #: The registry key and ``models[].provider`` value: ``"cohere"``, ``"openai"``, ...
    name: str
    #: How people spell it: ``"Cohere"``, ``"OpenAI"``, ...
    title: str
    #: Its statuses mapped onto the common lifecycle.
    scheme: StatusScheme
    #: True when :meth:`list_jobs` can list the account's jobs (for ``discover``).
    supports_discovery: bool

    async def fetch_history(self, job_id: str, *, unless_digest: bytes | None = None) -> History:
        """Everything known about the job's status: its events, or its current status."""
        ...

    async def job_details(self, job_id: str) -> JobDetails:
        """Names, base model, error message (enrichment); may cost a request."""
        ...

    async def final_metrics(self, job_id: str) -> dict[str, float] | None:
        """The last training step's metrics, where the API has them; else None."""
        ...

    async def list_jobs(self) -> list[JobDetails]:
        """Every job of the account (all pages). Only when ``supports_discovery``."""
        ...

    def dashboard_url(self, job_id: str) -> str:
        """Where a person sees the job in the provider's web console."""
        ...
