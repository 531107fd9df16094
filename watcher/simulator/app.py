"""The fake fine-tuning APIs: one aiohttp.web application, driven by a ``Scenario``.

One simulator serves a mixed fleet: each model of the scenario is at one provider
(``provider:``, default ``cohere``) and is served only under that provider's prefix.
The base URL a client must use, per provider (each official SDK's convention: OpenAI's
and Azure's include ``/v1``, the others are host-only and their paths carry ``/v1``):

- cohere: ``http://HOST:PORT`` (the root, exactly as before):
  ``/v1/finetuning/finetuned-models`` (list, ``page_size``/``page_token``),
  ``.../{id}``, ``.../{id}/events``, ``.../{id}/training-step-metrics``.
- openai: ``http://HOST:PORT/openai/v1``: ``/fine_tuning/jobs?limit=&after=`` (list,
  newest first), ``/fine_tuning/jobs/{id}``, ``/fine_tuning/jobs/{id}/events?limit=&after=``
  (message events, newest first, ``has_more``; ``after`` is the last item's id).
- azure-openai: ``http://HOST:PORT/azure/openai/v1``: as OpenAI (v1 API; ``api-version``
  accepted and ignored).
- mistral: ``http://HOST:PORT/mistral``: ``/v1/fine_tuning/jobs?page=&page_size=`` (``page``
  from 0, ``total``), ``/v1/fine_tuning/jobs/{id}`` (embeds ``events[]``, newest first).
- together: ``http://HOST:PORT/together``: ``/v1/fine-tunes`` (one page),
  ``/v1/fine-tunes/{id}``, ``/v1/fine-tunes/{id}/events`` (``{"data": [...]}``).
- fireworks: ``http://HOST:PORT/fireworks`` with account ``fireworks_account`` (default
  ``sim-account``): ``/v1/accounts/{account}/supervisedFineTuningJobs?pageSize=&pageToken=``
  and ``.../supervisedFineTuningJobs/{id}`` (the current ``state`` only).

Auth: one accepted key for every provider (``api_key``; rotate it with ``POST /_sim/api-key``),
sent as ``Authorization: Bearer KEY``; Azure also accepts ``api-key: KEY``. Every error body
is in the provider's own shape (``tests/fixtures/providers/``): Cohere ``{"message"}``,
OpenAI/Together ``{"error": {"message", "type", "param", "code"}}``, Azure ``{"error":
{"code", "message", ...}}``, Mistral ``{"detail"}`` (422 with FastAPI's ``detail[]`` for
an id that is no UUID), Fireworks google.rpc.Status ``{"code": <int>, "message", "details"}``.
Another Fireworks account than the scenario's is 403. Payloads are in ``dialects``.
With ``cohere_deprecation`` set, every Cohere answer carries its ``Deprecation`` / ``Sunset``
headers.

``Simulation`` owns the state (sim clock, models, faults, rate limiter, counters) and
answers each request in O(page size + log events + faults of that model), never
O(all models), so benchmarks can run it with 10,000 models at thousands of requests/s.

Request path for an API request: count it (totals and ``by_provider``), check the key,
apply the rate limit (per provider and key), pick the faults that strike this request
(scoped by provider, model and endpoint; ``after``/``times`` counted per matching
request, every matching fault counts), then: ``reset_connection`` closes the socket;
``slow`` sleeps; an ``http_*`` fault answers with its status in the provider's shape
(``http_404``: that provider's job-not-found answer); otherwise the endpoint computes
its payload (``naive_timestamp``, ``future_timestamp``, ``unknown_status``,
``missing_fields``, ``repeat_token``, ``endless_pages`` shape it) and the body faults
(``wrong_shape``, ``huge_body``, ``malformed_json``, ``wrong_content_type``) spoil it.
Control paths (``/_sim/...``) need no key and are not counted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import math
import re
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from typing import Any, Final, Literal, TypeVar

import anyio
from aiohttp import web
from pydantic import ValidationError

from watcher.errors import ConfigError
from watcher.providers.cohere import READY, UNSPECIFIED
from watcher.simulator import dialects
from watcher.simulator.dialects import BadRequest, SimModel, View
from watcher.simulator.scenario import (
    DEFAULT_BASE_MODELS,
    DEFAULT_PROVIDER,
    ENDPOINTS,
    PROVIDER_ENDPOINTS,
    PROVIDERS,
    FaultSpec,
    ModelSpec,
    Scenario,
    fault_model_problem,
    validation_problems,
)

SIM_USER_ID: Final = "7a317d97-4d05-427d-9396-f31b9fb92c55"
SIM_ORGANIZATION_ID: Final = "sim-organization"
UNKNOWN_STATUS: Final = "STATUS_SOMETHING_NEW"
DEFAULT_PAGE_SIZE: Final = 50  # what Cohere uses when page_size is 0 or absent
RATE_WINDOW_SECONDS: Final = 60.0
HUGE_BODY_BYTES: Final = 5 * 1024 * 1024
FUTURE_SHIFT: Final = timedelta(days=3653)  # "ten years ahead"
HTTP_DATE_AHEAD: Final = timedelta(seconds=2)
SHUTDOWN_TIMEOUT: Final = 1.0  # seconds to let in-flight requests finish on cleanup
FINAL_STEP_NUMBER: Final = 1

RATE_LIMIT_MESSAGE: Final = (
    "You are past the per minute request limit, please wait and try again later"
)
_STATUS_FAULTS: Final[dict[str, tuple[int, str]]] = {
    "http_401": (401, "invalid api token"),
    "http_403": (403, "you are not allowed to access this resource"),
    "http_404": (404, "not found"),  # the job is gone: each provider's not-found answer
    "http_429": (429, RATE_LIMIT_MESSAGE),
    "http_500": (500, "internal server error (simulated)"),
    "http_503": (503, "service unavailable (simulated)"),
}
_MALFORMED_JSON: Final = b'{"events": [{"status": "STATUS_READY", "created_at": '
_HTML_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    "<body><h1>We'll be right back</h1></body></html>"
)
_PAYLOAD_KEYS: Final[dict[str, str]] = {
    "events": "events",
    "list": "finetuned_models",
    "metrics": "step_metrics",
}
_TOKEN_TEXT = re.compile(r"^page:(\d{1,9})$")
# The one token ``repeat_token`` answers with: page one, again and again.
_REPEATED_TOKEN_INDEX: Final = 0

Seconds = float
_Spec = TypeVar("_Spec", ModelSpec, FaultSpec)


class ClockError(RuntimeError):
    """The sim clock cannot do that: it is real, or the time would go backwards."""


class ConflictError(ValueError):
    """A model with that id already exists."""


class _BadRequest(Exception):
    """Turns into a 400 answer with this message."""


# --- Time -------------------------------------------------------------------------------


class SimClock:
    """Sim time in seconds since t=0: monotonic since the app was built, or manual."""

    def __init__(self, mode: Literal["real", "manual"], source: Callable[[], float]) -> None:
        self.manual = mode == "manual"
        self._source = source
        self._origin = source()
        self._manual_now = 0.0

    def now(self) -> Seconds:
        if self.manual:
            return self._manual_now
        return self._source() - self._origin

    def advance(self, seconds: Seconds) -> Seconds:
        if not math.isfinite(seconds) or seconds < 0:
            raise ClockError("advance must be a finite, non-negative number of seconds")
        return self.set(self.now() + seconds)

    def set(self, seconds: Seconds) -> Seconds:
        if not self.manual:
            raise ClockError("the clock is real; use clock: manual to move time by hand")
        if not math.isfinite(seconds) or seconds < self._manual_now:
            raise ClockError(f"time cannot go backwards (now {self._manual_now:g} s)")
        self._manual_now = float(seconds)
        return self._manual_now


class Stamper:
    """Renders sim times as ``created_at`` strings in the scenario's format."""

    def __init__(self, start: datetime, style: Literal["iso_z", "space_offset", "mixed"]) -> None:
        self.start = start.astimezone(UTC)
        self.style = style

    def moment(self, seconds: Seconds) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def render(self, moment: datetime, index: int, *, naive: bool = False) -> str:
        """``index`` picks the format in ``mixed`` style (even: ISO ``Z``, odd: space)."""
        if self.style == "space_offset" or (self.style == "mixed" and index % 2 == 1):
            if naive:
                moment = moment.replace(tzinfo=None)
            return moment.isoformat(sep=" ", timespec="microseconds")
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        if moment.microsecond:
            text += f".{moment.microsecond:06d}"
        return text if naive else text + "Z"


# --- Models, faults, limits, counters ---------------------------------------------------


@dataclass(slots=True)
class ActiveFault:
    """A fault and how many matching requests it has seen."""

    spec: FaultSpec
    matched: int = 0

    def strikes(self) -> bool:
        """Count one matching request; True when this one is affected."""
        seen = self.matched
        self.matched += 1
        if seen < self.spec.after:
            return False
        return self.spec.times is None or seen < self.spec.after + self.spec.times


class SlidingWindow:
    """Per-key limit of ``limit`` admitted requests in any ``window`` seconds."""

    def __init__(self, limit: int, window: Seconds = RATE_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._admitted: dict[str, deque[Seconds]] = {}

    def admit(self, key: str, now: Seconds) -> Seconds | None:
        """Record and admit a request (None), or say how long until a slot frees."""
        admitted = self._admitted.setdefault(key, deque())
        cutoff = now - self.window
        while admitted and admitted[0] <= cutoff:
            admitted.popleft()
        if len(admitted) < self.limit:
            admitted.append(now)
            return None
        return admitted[0] + self.window - now


# The endpoint whose requests count as a model's status polls in ``by_model``.
_POLL_ENDPOINT: Final[dict[str, str]] = {str(p): "model" for p in PROVIDERS} | {"cohere": "events"}


@dataclass(slots=True)
class ProviderCounters:
    """One provider's share of the counters (``by_provider`` in ``/_sim/stats``)."""

    requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status_code: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    connections_reset: int = 0

    def snapshot(self, provider: str) -> dict[str, Any]:
        by_endpoint = dict.fromkeys((*sorted(PROVIDER_ENDPOINTS[provider]), "other"), 0)
        by_endpoint.update(self.by_endpoint)
        return {
            "requests": self.requests,
            "by_endpoint": by_endpoint,
            "by_status_code": dict(self.by_status_code),
            "by_model": dict(self.by_model),
            "rate_limited": self.rate_limited,
            "connections_reset": self.connections_reset,
        }


@dataclass(slots=True)
class Counters:
    """What ``/_sim/stats`` reports (besides the sim time): totals, then per provider.

    ``by_model`` counts each model's status polls: Cohere's events requests, the job
    requests at the other providers.
    """

    requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status_code: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    connections_reset: int = 0
    faults_applied: Counter[str] = field(default_factory=Counter)
    by_provider: dict[str, ProviderCounters] = field(
        default_factory=lambda: {provider: ProviderCounters() for provider in PROVIDERS}
    )

    def snapshot(self) -> dict[str, Any]:
        by_endpoint = dict.fromkeys((*ENDPOINTS, "other"), 0)
        by_endpoint.update(self.by_endpoint)
        return {
            "requests": self.requests,
            "by_endpoint": by_endpoint,
            "by_status_code": dict(self.by_status_code),
            "by_model": dict(self.by_model),
            "rate_limited": self.rate_limited,
            "connections_reset": self.connections_reset,
            "faults_applied": dict(self.faults_applied),
            "by_provider": {
                provider: counters.snapshot(provider)
                for provider, counters in self.by_provider.items()
            },
        }


@dataclass(frozen=True, slots=True)
class Page:
    """Which events (ascending positions, in answer order) and the next token."""

    positions: list[int]
    next_page_token: str


def encode_page_token(index: int) -> str:
    """An opaque token for the page starting at ``index``."""
    return base64.urlsafe_b64encode(f"page:{index}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The start index a token stands for; ``""`` is the first page."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise _BadRequest("invalid page_token") from None
    match = _TOKEN_TEXT.match(raw)
    if match is None:
        raise _BadRequest("invalid page_token")
    return int(match.group(1))


def paginate(
    total: int,
    start: int,
    size: int,
    *,
    descending: bool,
    endless: bool = False,
    repeat: bool = False,
) -> Page:
    """Cut ``total`` items into a page; faults make the token lie."""
    if endless:
        # A fresh token every time, wrapping around the items: pages never end.
        count = min(size, total)
        ranks = [(start + offset) % total for offset in range(count)]
        token = encode_page_token(start + size)
    else:
        stop = min(start + size, total)
        ranks = list(range(start, stop))
        token = encode_page_token(stop) if stop < total else ""
    if repeat:
        token = encode_page_token(_REPEATED_TOKEN_INDEX)
    positions = [total - 1 - rank for rank in ranks] if descending else ranks
    return Page(positions, token)


@cache
def _padding() -> str:
    return "x" * HUGE_BODY_BYTES


# --- The simulation ---------------------------------------------------------------------


class Simulation:
    """The simulator's state and request handling, independent of sockets."""

    def __init__(self, scenario: Scenario, *, clock: Callable[[], float] | None = None) -> None:
        self.scenario = scenario
        self.clock = SimClock(scenario.clock, clock or time.monotonic)
        start = scenario.start or datetime.now(UTC).replace(microsecond=0)
        self.stamper = Stamper(start, scenario.timestamp_format)
        self.models: dict[str, SimModel] = {}
        self.model_list: list[SimModel] = []  # in order of addition, every provider
        # Each provider's models in order of addition, for its list endpoint.
        self.provider_models: dict[str, list[SimModel]] = {p: [] for p in PROVIDERS}
        self.global_faults: list[ActiveFault] = []
        self.faults_by_model: dict[str, list[ActiveFault]] = {}
        self.counters = Counters()
        self.limiter = (
            SlidingWindow(scenario.rate_limit_per_minute)
            if scenario.rate_limit_per_minute is not None
            else None
        )
        # Per provider: its override, else the shared limit (each counts per provider and key).
        self.limiters: dict[str, SlidingWindow | None] = {}
        for provider in PROVIDERS:
            limit = scenario.provider_rate_limits.get(provider, scenario.rate_limit_per_minute)
            if provider == DEFAULT_PROVIDER and provider not in scenario.provider_rate_limits:
                self.limiters[provider] = self.limiter
            else:
                self.limiters[provider] = SlidingWindow(limit) if limit is not None else None
        self._api_key = scenario.api_key.encode() if scenario.api_key is not None else None
        for spec in scenario.models:
            self._add(self._from_spec(spec, added_at=0.0))
        self._generate()
        for fault in scenario.faults:
            self._add_fault(fault)

    # -- building

    def _from_spec(self, spec: ModelSpec, *, added_at: Seconds) -> SimModel:
        return SimModel.build(
            model_id=spec.id,
            name=spec.display_name,
            base_model=spec.base_model,
            added_at=added_at,
            times=[added_at + offset for offset, _ in spec.timeline],
            statuses=[status for _, status in spec.timeline],
            equal_timestamps=spec.equal_timestamps,
            metrics=dict(spec.metrics) if spec.metrics is not None else None,
            provider=spec.provider,
            error_message=spec.error.message if spec.error is not None else None,
            error_code=spec.error.code if spec.error is not None else None,
        )

    def _generate(self) -> None:
        spec = self.scenario.generate
        if spec is None or spec.count == 0:
            return
        # Generated models share their status list, and their times when not staggered.
        statuses = [status for _, status in spec.timeline]
        offsets = [offset for offset, _ in spec.timeline]
        for index in range(spec.count):
            shift = index * spec.stagger
            times = [offset + shift for offset in offsets] if shift else offsets
            model_id = spec.model_id(index)
            self._add(
                SimModel.build(
                    model_id=model_id,
                    name=model_id,
                    base_model=DEFAULT_BASE_MODELS[spec.provider],
                    added_at=0.0,
                    times=times,
                    statuses=statuses,
                    provider=spec.provider,
                )
            )

    def _add(self, model: SimModel) -> None:
        model.position = len(self.model_list)
        self.models[model.id] = model
        self.model_list.append(model)
        self.provider_models[model.provider].append(model)

    def _add_fault(self, spec: FaultSpec) -> None:
        active = ActiveFault(spec)
        if spec.model is None:
            self.global_faults.append(active)
        else:
            self.faults_by_model.setdefault(spec.model, []).append(active)

    # -- control

    def add_model(self, entry: object) -> SimModel:
        """Add a model whose timeline offsets count from the current sim time."""
        spec = _validated(ModelSpec, entry, source="model")
        if spec.id in self.models:
            raise ConflictError(f"model {spec.id} already exists")
        model = self._from_spec(spec, added_at=self.clock.now())
        self._add(model)
        return model

    def add_fault(self, entry: object) -> FaultSpec:
        """Add a fault; its ``after``/``times`` count from now."""
        spec = _validated(FaultSpec, entry, source="fault")
        if spec.model is not None:
            model = self.models.get(spec.model)
            if model is None:
                raise ConfigError("fault", [f"model: unknown model {spec.model!r}"])
            problem = fault_model_problem(spec, model.provider)
            if problem:
                raise ConfigError("fault", [problem])
        self._add_fault(spec)
        return spec

    def set_api_key(self, api_key: str | None) -> None:
        """Accept ``api_key`` from now on (None: any bearer), as if the key were rotated."""
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must be a non-empty string or null")
        self._api_key = api_key.encode() if api_key is not None else None

    def stats(self) -> dict[str, Any]:
        snapshot = self.counters.snapshot()
        snapshot["sim_time"] = self.clock.now()
        return snapshot

    def reset_stats(self) -> None:
        self.counters = Counters()

    # -- the API

    async def handle(
        self, request: web.Request, endpoint: str, provider: str = DEFAULT_PROVIDER
    ) -> web.StreamResponse:
        """Answer one API request to ``provider``'s ``endpoint`` and count it."""
        model_id = request.match_info.get("model_id")
        counters = self.counters
        mine = counters.by_provider[provider]
        counters.requests += 1
        mine.requests += 1
        counters.by_endpoint[endpoint] += 1
        mine.by_endpoint[endpoint] += 1
        if endpoint == _POLL_ENDPOINT[provider] and model_id is not None:
            counters.by_model[model_id] += 1
            mine.by_model[model_id] += 1
        response = await self._answer(request, endpoint, model_id, provider)
        if response is None:
            counters.connections_reset += 1
            mine.connections_reset += 1
            return web.Response(status=500)  # never sent: the transport is gone
        counters.by_status_code[str(response.status)] += 1
        mine.by_status_code[str(response.status)] += 1
        if provider == DEFAULT_PROVIDER and self.scenario.cohere_deprecation is not None:
            response.headers.update(self.scenario.cohere_deprecation.headers())
        return response

    async def _answer(
        self, request: web.Request, endpoint: str, model_id: str | None, provider: str
    ) -> web.Response | None:
        key = self._key(request, provider)
        if key is None:
            return _provider_error(provider, 401, "invalid api token")
        limiter = self.limiters[provider]
        if limiter is not None:
            wait = limiter.admit(key, self.clock.now())
            if wait is not None:
                self.counters.rate_limited += 1
                self.counters.by_provider[provider].rate_limited += 1
                seconds = max(1, math.ceil(wait))
                headers = {"Retry-After": str(seconds)}
                if provider == "azure-openai":
                    headers["retry-after-ms"] = str(seconds * 1000)
                return _provider_error(provider, 429, RATE_LIMIT_MESSAGE, headers=headers)
        if endpoint not in PROVIDER_ENDPOINTS[provider]:
            if provider == DEFAULT_PROVIDER:
                return _error(404, "not found")
            path = request.path.removeprefix(_PROVIDER_ROOTS[provider])
            body = dialects.unknown_path_body(provider, request.method, path)
            return _json(body, status=404)
        if request.method != "GET":
            message = f"method {request.method} not allowed"
            return _provider_error(provider, 405, message, message=message)
        account = request.match_info.get("account")
        if account is not None and account != self.scenario.fireworks_account:
            message = f"permission denied: this API key cannot access accounts/{account}"
            return _provider_error(provider, 403, message, message=message)

        strikes = self._strikes(endpoint, model_id, provider)
        kinds = frozenset(fault.kind for fault in strikes)
        if "reset_connection" in kinds:
            _reset(request)
            return None
        for fault in strikes:
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
        for fault in strikes:
            if fault.kind in _STATUS_FAULTS:
                return self._status_fault(fault, provider, model_id)

        try:
            if provider == DEFAULT_PROVIDER:
                payload = self._payload(endpoint, model_id, request, kinds)
            else:
                payload = self._provider_payload(provider, endpoint, model_id, request, kinds)
        except _BadRequest as problem:
            return _error(400, str(problem))
        except BadRequest as problem:
            body = problem.body or dialects.error_body(provider, problem.status, str(problem))
            return _json(body, status=problem.status)
        if isinstance(payload, web.Response):
            return payload
        return _spoiled(endpoint, payload, kinds, provider)

    def _key(self, request: web.Request, provider: str) -> str | None:
        """The accepted key of the request (``api-key`` or Bearer at Azure), else None."""
        candidates: list[str] = []
        if provider == "azure-openai":
            candidates.append(request.headers.get("api-key", "").strip())
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(token.strip())
        for candidate in candidates:
            if candidate and (
                self._api_key is None
                or hmac.compare_digest(candidate.encode(errors="surrogateescape"), self._api_key)
            ):
                return candidate
        return None

    def _strikes(self, endpoint: str, model_id: str | None, provider: str) -> list[FaultSpec]:
        if not self.global_faults and not self.faults_by_model:
            return []
        candidates: list[ActiveFault] = list(self.global_faults)
        if model_id is not None:
            model = self.models.get(model_id)
            if model is not None and model.provider == provider:
                candidates += self.faults_by_model.get(model_id, ())
        strikes: list[FaultSpec] = []
        for fault in candidates:
            if fault.spec.matches(endpoint, model_id, provider) and fault.strikes():
                strikes.append(fault.spec)
                self.counters.faults_applied[fault.spec.kind] += 1
        return strikes

    def _status_fault(self, fault: FaultSpec, provider: str, model_id: str | None) -> web.Response:
        status, message = _STATUS_FAULTS[fault.kind]
        headers: dict[str, str] = {}
        if fault.kind == "http_429" and fault.retry_after is not None:
            if fault.retry_after == "http-date":
                moment = datetime.now(UTC) + HTTP_DATE_AHEAD
                headers["Retry-After"] = format_datetime(moment, usegmt=True)
            else:
                headers["Retry-After"] = str(fault.retry_after)
                if provider in ("openai", "azure-openai"):
                    headers["retry-after-ms"] = str(fault.retry_after * 1000)
        if provider == DEFAULT_PROVIDER:
            if status == 404 and model_id is not None:
                message = f"finetuned model {model_id} not found"
            return _error(status, message, headers=headers)
        if status == 404 and model_id is not None:  # the job is gone
            code, body = dialects.not_found_body(
                provider, model_id, self.scenario.fireworks_account
            )
            return _json(body, status=code, headers=headers)
        return _json(dialects.error_body(provider, status), status=status, headers=headers)

    def _view(self, kinds: frozenset[str]) -> View:
        return View(
            now=self.clock.now(),
            start=self.stamper.start,
            page_cap=self.scenario.page_size_cap,
            fireworks_account=self.scenario.fireworks_account,
            kinds=kinds,
        )

    def _provider_payload(
        self,
        provider: str,
        endpoint: str,
        model_id: str | None,
        request: web.Request,
        kinds: frozenset[str],
    ) -> dict[str, Any] | web.Response:
        """Another provider's document (see ``dialects``), or its 404 answer."""
        view = self._view(kinds)
        query = request.query
        models = self.provider_models[provider]
        if endpoint == "list":
            if provider in ("openai", "azure-openai"):
                return dialects.openai_list(models, view, query)
            if provider == "mistral":
                return dialects.mistral_list(models, view, query)
            if provider == "together":
                return dialects.together_list(models, view)
            return dialects.fireworks_list(models, view, query)
        model = self.models.get(model_id or "")
        if model is None or model.provider != provider or not model.visible(view.now):
            status, body = dialects.not_found_body(
                provider, model_id or "", self.scenario.fireworks_account
            )
            return _json(body, status=status)
        if provider in ("openai", "azure-openai"):
            if endpoint == "events":
                return dialects.openai_events(model, view, query)
            return dialects.openai_job(model, view)
        if provider == "mistral":
            return dialects.mistral_job(model, view)
        if provider == "together":
            if endpoint == "events":
                return dialects.together_events(model, view)
            return dialects.together_job(model, view)
        return dialects.fireworks_job(model, view)

    def _payload(
        self, endpoint: str, model_id: str | None, request: web.Request, kinds: frozenset[str]
    ) -> dict[str, Any] | web.Response:
        """The endpoint's JSON document, or an error answer (404); 400s are raised."""
        query = request.query
        now = self.clock.now()
        if endpoint == "list":
            return self._list(now, query, kinds)
        model = self.models.get(model_id or "")
        if model is None or model.provider != DEFAULT_PROVIDER:
            return _error(404, f"finetuned model {model_id} not found")
        if endpoint == "events":
            return self._events(model, now, query, kinds)
        if endpoint == "metrics":
            return self._metrics(model, now, query, kinds)
        return {"finetuned_model": self._model_object(model, now, kinds)}

    def _page_size(self, query: Mapping[str, str]) -> int:
        raw = query.get("page_size", "")
        try:
            size = int(raw) if raw else 0
        except ValueError:
            raise _BadRequest("page_size must be an integer") from None
        if size < 0:
            raise _BadRequest("page_size must not be negative")
        return min(size or DEFAULT_PAGE_SIZE, self.scenario.page_size_cap)

    def _descending(self, query: Mapping[str, str]) -> bool:
        default = self.scenario.default_order == "desc"
        raw = query.get("order_by", "")
        if not self.scenario.honour_order_by or not raw.strip():
            return default
        directions: list[bool] = []
        for item in raw.split(","):
            words = item.split()
            if not words or words[0] != "created_at" or len(words) > 2:
                raise _BadRequest(f"unsupported order_by {raw!r}: only created_at is supported")
            direction = words[1].lower() if len(words) == 2 else "asc"
            if direction not in ("asc", "desc"):
                raise _BadRequest(f"unsupported order_by direction {words[1]!r}")
            directions.append(direction == "desc")
        return directions[0]

    def _page(
        self, total: int, query: Mapping[str, str], kinds: frozenset[str], *, descending: bool
    ) -> Page:
        return paginate(
            total,
            decode_page_token(query.get("page_token", "")),
            self._page_size(query),
            descending=descending,
            endless="endless_pages" in kinds,
            repeat="repeat_token" in kinds,
        )

    def _events(
        self, model: SimModel, now: Seconds, query: Mapping[str, str], kinds: frozenset[str]
    ) -> dict[str, Any]:
        happened = model.visible(now)
        # unknown_status appends one event "now" after the real ones.
        total = happened + (1 if "unknown_status" in kinds else 0)
        page = self._page(total, query, kinds, descending=self._descending(query))
        naive = "naive_timestamp" in kinds
        future = "future_timestamp" in kinds
        with_user = "missing_fields" not in kinds
        events: list[dict[str, Any]] = []
        for position in page.positions:
            if position < happened:
                status = model.statuses[position]
                seconds = model.times[0] if model.equal_timestamps else model.times[position]
            else:
                status = UNKNOWN_STATUS
                seconds = model.times[0] if model.equal_timestamps and happened else now
            moment = self.stamper.moment(seconds)
            if future and position == total - 1:
                moment = self.stamper.moment(now) + FUTURE_SHIFT
            event: dict[str, Any] = {}
            if with_user:
                event["user_id"] = SIM_USER_ID
            event["status"] = status
            event["created_at"] = self.stamper.render(moment, position, naive=naive)
            events.append(event)
        if not with_user:
            return {"events": events}
        return {"events": events, "next_page_token": page.next_page_token, "total_size": total}

    def _model_object(self, model: SimModel, now: Seconds, kinds: frozenset[str]) -> dict[str, Any]:
        happened = model.visible(now)
        status = model.statuses[happened - 1] if happened else UNSPECIFIED
        if "unknown_status" in kinds:
            status = UNKNOWN_STATUS
        if "missing_fields" in kinds:
            return {"id": model.id, "status": status}
        naive = "naive_timestamp" in kinds
        render = self.stamper.render
        created = self.stamper.moment(model.added_at)
        updated = self.stamper.moment(model.times[happened - 1] if happened else model.added_at)
        if "future_timestamp" in kinds:
            updated = self.stamper.moment(now) + FUTURE_SHIFT
        answer: dict[str, Any] = {
            "id": model.id,
            "name": model.name,
            "creator_id": SIM_USER_ID,
            "organization_id": SIM_ORGANIZATION_ID,
            "settings": {
                "base_model": {"name": model.base_model, "base_type": "BASE_TYPE_CHAT"},
                "dataset_id": f"{model.id}-dataset",
            },
            "status": status,
            "created_at": render(created, 0, naive=naive),
            "updated_at": render(updated, 1, naive=naive),
        }
        if status == READY:
            answer["completed_at"] = render(updated, 2, naive=naive)
        return answer

    def _list(
        self, now: Seconds, query: Mapping[str, str], kinds: frozenset[str]
    ) -> dict[str, Any]:
        cohere = self.provider_models[DEFAULT_PROVIDER]
        total = len(cohere)
        page = self._page(total, query, kinds, descending=self._descending(query))
        models = [self._model_object(cohere[i], now, kinds) for i in page.positions]
        if "missing_fields" in kinds:
            return {"finetuned_models": models}
        return {
            "finetuned_models": models,
            "next_page_token": page.next_page_token,
            "total_size": total,
        }

    def _metrics(
        self, model: SimModel, now: Seconds, query: Mapping[str, str], kinds: frozenset[str]
    ) -> dict[str, Any]:
        outcome = model.outcome_index
        published = (
            model.metrics is not None and outcome is not None and model.times[outcome] <= now
        )
        page = self._page(1 if published else 0, query, kinds, descending=False)
        steps: list[dict[str, Any]] = []
        if page.positions and model.metrics is not None and outcome is not None:
            moment = self.stamper.moment(model.times[outcome])
            if "future_timestamp" in kinds:
                moment = self.stamper.moment(now) + FUTURE_SHIFT
            step: dict[str, Any] = {"step_number": FINAL_STEP_NUMBER}
            if "missing_fields" not in kinds:
                step["created_at"] = self.stamper.render(
                    moment, 0, naive="naive_timestamp" in kinds
                )
            step["metrics"] = dict(model.metrics)
            steps = [step for _ in page.positions]
        if "missing_fields" in kinds:
            return {"step_metrics": steps}
        return {"step_metrics": steps, "next_page_token": page.next_page_token}


def _validated(model: type[_Spec], entry: object, *, source: str) -> _Spec:
    try:
        return model.model_validate(entry)
    except ValidationError as error:
        raise ConfigError(source, validation_problems(error)) from None


def _json(
    payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def _error(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"message": message}, status=status, headers=headers)


def _provider_error(
    provider: str,
    status: int,
    cohere_message: str,
    *,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error in ``provider``'s shape (``message`` or its usual text); Cohere's as before."""
    if provider == DEFAULT_PROVIDER:
        return _error(status, cohere_message, headers=headers)
    return _json(dialects.error_body(provider, status, message), status=status, headers=headers)


# Where each provider's payload keeps its list, for wrong_shape.
_LIST_KEYS: Final[dict[str, str]] = {
    "openai": "data",
    "azure-openai": "data",
    "mistral": "data",
    "together": "data",
    "fireworks": "supervisedFineTuningJobs",
}


def _spoiled(
    endpoint: str, payload: dict[str, Any], kinds: frozenset[str], provider: str = "cohere"
) -> web.Response:
    """Apply the body faults to a good payload."""
    if "wrong_content_type" in kinds:
        return web.Response(text=_HTML_PAGE, content_type="text/html")
    if "malformed_json" in kinds:
        if provider == DEFAULT_PROVIDER:
            return web.Response(body=_MALFORMED_JSON, content_type="application/json")
        text = json.dumps(payload, separators=(",", ":")).encode()
        return web.Response(body=text[: max(1, len(text) // 2)], content_type="application/json")
    document: dict[str, Any] | list[Any] = payload
    if "wrong_shape" in kinds:
        # A string where a list belongs, or a list where an object belongs.
        if provider == DEFAULT_PROVIDER:
            key = _PAYLOAD_KEYS.get(endpoint)
        else:
            key = _LIST_KEYS[provider] if endpoint in ("list", "events") else None
        document = {key: "nope"} if key else [payload]
    if "huge_body" in kinds:
        padded: dict[str, Any] = (
            dict(document) if isinstance(document, dict) else {"data": document}
        )
        padded["padding"] = _padding()
        document = padded
    return _json(document)


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP reset, answering nothing."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout turns close() into an RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- Control endpoints ------------------------------------------------------------------


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _BadRequest("the body must be JSON") from None


def _control_handlers(
    sim: Simulation,
) -> dict[str, Callable[[web.Request], Awaitable[web.Response]]]:
    async def stats(request: web.Request) -> web.Response:
        return _json(sim.stats())

    async def reset_stats(request: web.Request) -> web.Response:
        sim.reset_stats()
        return _json(sim.stats())

    async def move_clock(request: web.Request) -> web.Response:
        if not sim.clock.manual:
            return _error(409, "the clock is real; use clock: manual to move time by hand")
        try:
            body = await _json_body(request)
            if not isinstance(body, dict) or len(body) != 1 or not {"advance", "set"} & set(body):
                raise _BadRequest('send {"advance": seconds} or {"set": seconds}')
            ((action, value),) = body.items()
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _BadRequest(f"{action} must be a number of seconds")
            now = sim.clock.advance(value) if action == "advance" else sim.clock.set(value)
        except _BadRequest as problem:
            return _error(400, str(problem))
        except ClockError as problem:
            return _error(400, str(problem))
        return _json({"sim_time": now})

    async def add_model(request: web.Request) -> web.Response:
        try:
            model = sim.add_model(await _json_body(request))
        except _BadRequest as problem:
            return _error(400, str(problem))
        except ConfigError as problem:
            return _json({"message": str(problem), "problems": problem.problems}, status=400)
        except ConflictError as problem:
            return _error(409, str(problem))
        return _json({"id": model.id, "added_at": model.added_at}, status=201)

    async def add_fault(request: web.Request) -> web.Response:
        try:
            fault = sim.add_fault(await _json_body(request))
        except _BadRequest as problem:
            return _error(400, str(problem))
        except ConfigError as problem:
            return _json({"message": str(problem), "problems": problem.problems}, status=400)
        return _json(fault.model_dump(mode="json"), status=201)

    async def set_api_key(request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            if not isinstance(body, dict) or set(body) != {"api_key"}:
                raise _BadRequest('send {"api_key": "<key>"} or {"api_key": null}')
            key = body["api_key"]
            if key is not None and not isinstance(key, str):
                raise _BadRequest("api_key must be a string or null")
            sim.set_api_key(key)
        except (_BadRequest, ValueError) as problem:
            return _error(400, str(problem))
        return _json({"api_key_required": key is not None})

    return {
        "GET /_sim/stats": stats,
        "POST /_sim/reset-stats": reset_stats,
        "POST /_sim/clock": move_clock,
        "POST /_sim/models": add_model,
        "POST /_sim/faults": add_fault,
        "POST /_sim/api-key": set_api_key,
    }


# --- Wiring -----------------------------------------------------------------------------

SIMULATION: Final = web.AppKey("simulation", Simulation)

_API_ROUTES: Final[tuple[tuple[str, str], ...]] = (
    ("list", "/v1/finetuning/finetuned-models"),
    ("events", "/v1/finetuning/finetuned-models/{model_id}/events"),
    ("metrics", "/v1/finetuning/finetuned-models/{model_id}/training-step-metrics"),
    ("model", "/v1/finetuning/finetuned-models/{model_id}"),
)
_OPENAI_PATHS: Final[tuple[tuple[str, str], ...]] = (
    ("list", "/fine_tuning/jobs"),
    ("model", "/fine_tuning/jobs/{model_id}"),
    ("events", "/fine_tuning/jobs/{model_id}/events"),
)
#: Every other provider: (name, URL prefix = the base URL a client uses, its routes).
#: Paths are the SDK's, appended to the base URL the way each official SDK does.
PROVIDER_ROUTES: Final[tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]] = (
    ("openai", "/openai/v1", _OPENAI_PATHS),
    ("azure-openai", "/azure/openai/v1", _OPENAI_PATHS),
    (
        "mistral",
        "/mistral",
        (("list", "/v1/fine_tuning/jobs"), ("model", "/v1/fine_tuning/jobs/{model_id}")),
    ),
    (
        "together",
        "/together",
        (
            ("list", "/v1/fine-tunes"),
            ("model", "/v1/fine-tunes/{model_id}"),
            ("events", "/v1/fine-tunes/{model_id}/events"),
        ),
    ),
    (
        "fireworks",
        "/fireworks",
        (
            ("list", "/v1/accounts/{account}/supervisedFineTuningJobs"),
            ("model", "/v1/accounts/{account}/supervisedFineTuningJobs/{model_id}"),
        ),
    ),
)
#: What to append to the simulator's URL to get each provider's base URL (SDK convention).
PROVIDER_BASE_PATHS: Final[dict[str, str]] = {"cohere": ""} | {
    provider: prefix for provider, prefix, _ in PROVIDER_ROUTES
}
# Each provider's own first path segment: anything under it not routed is that provider's 404.
_PROVIDER_ROOTS: Final[dict[str, str]] = {
    "openai": "/openai",
    "azure-openai": "/azure",
    "mistral": "/mistral",
    "together": "/together",
    "fireworks": "/fireworks",
}


def build_app(scenario: Scenario, *, clock: Callable[[], float] | None = None) -> web.Application:
    """The simulator as an aiohttp application.

    ``clock`` is the monotonic time source of a ``clock: real`` scenario (default
    ``time.monotonic``), read relative to now; a manual clock ignores it.
    ``app[SIMULATION]`` is the ``Simulation`` behind it.
    """
    sim = Simulation(scenario, clock=clock)
    app = web.Application()
    app[SIMULATION] = sim
    for route, handler in _control_handlers(sim).items():
        method, path = route.split(" ")
        app.router.add_route(method, path, handler)

    def api_handler(
        endpoint: str, provider: str = DEFAULT_PROVIDER
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await sim.handle(request, endpoint, provider)

        return handle

    for endpoint, path in _API_ROUTES:
        app.router.add_route("*", path, api_handler(endpoint), name=endpoint)
    for provider, prefix, routes in PROVIDER_ROUTES:
        for endpoint, path in routes:
            name = f"{provider}:{endpoint}"
            app.router.add_route("*", prefix + path, api_handler(endpoint, provider), name=name)
        root = _PROVIDER_ROOTS[provider]
        for tail in (root, root + "/{tail:.*}"):
            app.router.add_route("*", tail, api_handler("other", provider))

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return _error(404, f"no control endpoint {request.method} {request.path}")
        return await sim.handle(request, "other")

    app.router.add_route("*", "/{tail:.*}", elsewhere)
    return app


@dataclass(slots=True)
class RunningSimulator:
    """A simulator listening on a real socket (see ``running_simulator``)."""

    base_url: str
    port: int
    simulation: Simulation

    def provider_url(self, provider: str) -> str:
        """The base URL a client of ``provider`` uses (e.g. ``http://HOST:PORT/openai/v1``)."""
        return self.base_url + PROVIDER_BASE_PATHS[provider]

    def stats(self) -> dict[str, Any]:
        """The same document as ``GET /_sim/stats``."""
        return self.simulation.stats()

    def reset_stats(self) -> None:
        self.simulation.reset_stats()

    def sim_time(self) -> Seconds:
        return self.simulation.clock.now()

    def advance(self, seconds: Seconds) -> Seconds:
        """Move a manual clock forward; returns the new sim time (``ClockError`` if real)."""
        return self.simulation.clock.advance(seconds)

    def set_time(self, seconds: Seconds) -> Seconds:
        """Set a manual clock (never backwards); returns the new sim time."""
        return self.simulation.clock.set(seconds)

    def add_model(self, entry: Mapping[str, Any]) -> None:
        """Add a model (offsets from now).

        Raises ``ConfigError`` if ``entry`` is invalid, ``ConflictError`` if the id is taken.
        """
        self.simulation.add_model(entry)

    def add_fault(self, entry: Mapping[str, Any]) -> None:
        """Add a fault; ``ConfigError`` if invalid or naming an unknown model."""
        self.simulation.add_fault(entry)

    def set_api_key(self, api_key: str | None) -> None:
        """Require ``api_key`` from now on (None: accept any bearer); the key "rotates"."""
        self.simulation.set_api_key(api_key)


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def running_simulator(
    scenario: Scenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Serve ``scenario`` on ``host:port`` (0: a free port) for the duration of the block."""
    app = build_app(scenario, clock=clock)
    runner = web.AppRunner(
        app,
        access_log=None,  # benchmarks send thousands of requests a second
        handler_cancellation=True,  # a client that gives up stops a ``slow`` answer
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        yield RunningSimulator(_base_url(host, bound_port), bound_port, app[SIMULATION])
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def serve_forever(
    scenario: Scenario,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``scenario`` until cancelled; ``on_ready`` gets the base URL once listening."""
    async with running_simulator(scenario, host=host, port=port) as simulator:
        if on_ready is not None:
            on_ready(simulator.base_url)
        await anyio.sleep_forever()
