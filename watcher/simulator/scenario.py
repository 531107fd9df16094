"""The simulator's script: which models exist, how their statuses unfold, which faults strike.

A scenario is plain data (YAML or a dict) validated once by the pydantic models below;
every problem becomes one line of a ``ConfigError`` naming its field path, never a traceback.

Providers: each model has ``provider:`` (``cohere`` by default, or ``openai``,
``azure-openai``, ``mistral``, ``together``, ``fireworks``) and its ``timeline`` uses that
provider's own status strings (``PROVIDER_STATUSES``; e.g. OpenAI ``validating_files ->
queued -> running -> succeeded``, Fireworks ``JOB_STATE_CREATING ... JOB_STATE_COMPLETED``).
Cohere's statuses are not checked (as before); elsewhere an unknown status is refused
unless ``allow_unknown_statuses: true``. ``error: {message, code}`` is the failure reason
of a job whose timeline fails, at the providers that report one (OpenAI, Azure, Together,
Fireworks). Ids are unique across providers. ``generate`` takes a ``provider`` too.
Faults take an optional ``provider`` (None: every provider; a fault naming a model is at
that model's provider), and are refused where they could never strike (e.g.
``naive_timestamp`` at a provider of unix seconds, ``repeat_token`` at Together, which
does not page, ``events`` at Mistral or Fireworks, which have no events endpoint).
``provider_rate_limits`` overrides ``rate_limit_per_minute`` per provider;
``fireworks_account`` is the one Fireworks account the simulator knows.
``cohere_deprecation: {deprecation, sunset}`` makes every Cohere answer carry those
``Deprecation`` / ``Sunset`` response headers (RFC 9745 / RFC 8594), as a deprecated API may.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.errors import ConfigError
from watcher.providers.cohere import FAILED, FINETUNING, READY

FaultKind: TypeAlias = Literal[
    "http_401",
    "http_403",
    "http_404",
    "http_429",
    "http_500",
    "http_503",
    "slow",
    "malformed_json",
    "wrong_content_type",
    "huge_body",
    "wrong_shape",
    "repeat_token",
    "endless_pages",
    "naive_timestamp",
    "future_timestamp",
    "unknown_status",
    "missing_fields",
    "reset_connection",
]
Endpoint: TypeAlias = Literal["events", "model", "list", "metrics"]
FaultEndpoint: TypeAlias = Literal["events", "model", "list", "metrics", "any"]
Provider: TypeAlias = Literal[
    "cohere", "openai", "azure-openai", "mistral", "together", "fireworks"
]

ENDPOINTS: tuple[Endpoint, ...] = ("events", "model", "list", "metrics")
PROVIDERS: tuple[Provider, ...] = (
    "cohere",
    "openai",
    "azure-openai",
    "mistral",
    "together",
    "fireworks",
)
DEFAULT_PROVIDER: Provider = "cohere"

_ALL_ENDPOINTS: frozenset[Endpoint] = frozenset(ENDPOINTS)
_OPENAI_LIKE: frozenset[Endpoint] = frozenset({"events", "model", "list"})
_JOB_AND_LIST: frozenset[Endpoint] = frozenset({"model", "list"})
_NONE: frozenset[Endpoint] = frozenset()

#: The endpoints each fake provider serves (Cohere's ``metrics`` is its training-step metrics).
PROVIDER_ENDPOINTS: dict[str, frozenset[Endpoint]] = {
    "cohere": _ALL_ENDPOINTS,
    "openai": _OPENAI_LIKE,
    "azure-openai": _OPENAI_LIKE,
    "mistral": _JOB_AND_LIST,  # the job embeds its events; there is no events endpoint
    "together": _OPENAI_LIKE,
    "fireworks": _JOB_AND_LIST,  # the current state only
}
# Which endpoints page (token, cursor or page number): repeat_token and endless_pages.
_PAGINATED: dict[str, frozenset[Endpoint]] = {
    "cohere": frozenset({"events", "list", "metrics"}),
    "openai": frozenset({"events", "list"}),
    "azure-openai": frozenset({"events", "list"}),
    "mistral": frozenset({"list"}),
    "together": _NONE,  # one response, no parameters
    "fireworks": frozenset({"list"}),
}
# Which endpoints carry a status string: unknown_status.
_WITH_STATUS: dict[str, frozenset[Endpoint]] = {
    "cohere": frozenset({"events", "model", "list"}),
    "openai": _JOB_AND_LIST,  # events are messages, no status
    "azure-openai": _JOB_AND_LIST,
    "mistral": _JOB_AND_LIST,
    "together": _JOB_AND_LIST,
    "fireworks": _JOB_AND_LIST,
}
# Which endpoints carry zoned timestamp strings: naive_timestamp (unix seconds have no zone).
_ZONED: dict[str, frozenset[Endpoint]] = {
    "cohere": _ALL_ENDPOINTS,
    "openai": _NONE,
    "azure-openai": _NONE,
    "mistral": _NONE,
    "together": _OPENAI_LIKE,
    "fireworks": _JOB_AND_LIST,
}
_KIND_TABLES: dict[str, dict[str, frozenset[Endpoint]]] = {
    "repeat_token": _PAGINATED,
    "endless_pages": _PAGINATED,
    "unknown_status": _WITH_STATUS,
    "naive_timestamp": _ZONED,
}
# Kept for callers of the Cohere-only simulator: Cohere's restrictions by kind.
FAULT_ENDPOINTS: dict[str, frozenset[Endpoint]] = {
    "repeat_token": _PAGINATED["cohere"],
    "endless_pages": _PAGINATED["cohere"],
    "unknown_status": _WITH_STATUS["cohere"],
}

#: Each provider's own status strings (Cohere's are not checked: any string, as before).
PROVIDER_STATUSES: dict[str, tuple[str, ...]] = {
    "openai": (
        "validating_files",
        "queued",
        "running",
        "pausing",
        "paused",
        "succeeded",
        "failed",
        "cancelled",
    ),
    "azure-openai": (
        "created",
        "pending",
        "notRunning",
        "validating_files",
        "queued",
        "running",
        "pausing",
        "paused",
        "succeeded",
        "failed",
        "cancelled",
        "canceled",
    ),
    "mistral": (
        "QUEUED",
        "STARTED",
        "VALIDATING",
        "VALIDATED",
        "RUNNING",
        "CANCELLATION_REQUESTED",
        "SUCCESS",
        "FAILED_VALIDATION",
        "FAILED",
        "CANCELLED",
    ),
    "together": (
        "pending",
        "queued",
        "running",
        "compressing",
        "uploading",
        "cancel_requested",
        "completed",
        "user_error",
        "error",
        "cancelled",
    ),
    "fireworks": tuple(
        f"JOB_STATE_{name}"
        for name in (
            "UNSPECIFIED",
            "CREATING",
            "CREATING_INPUT_DATASET",
            "PENDING",
            "RE_QUEUEING",
            "VALIDATING",
            "RUNNING",
            "WRITING_RESULTS",
            "CANCELLING",
            "IDLE",
            "PAUSED",
            "COMPLETED",
            "EARLY_STOPPED",
            "EXPIRED",
            "FAILED",
            "CANCELLED",
            "DELETING",
            "DELETING_CLEANING_UP",
        )
    ),
}
#: Statuses whose job carries a failure reason (the providers that report one).
FAILURE_STATUSES: dict[str, frozenset[str]] = {
    "openai": frozenset({"failed"}),
    "azure-openai": frozenset({"failed"}),
    "mistral": frozenset({"FAILED", "FAILED_VALIDATION"}),
    "together": frozenset({"error", "user_error"}),
    "fireworks": frozenset({"JOB_STATE_FAILED", "JOB_STATE_EXPIRED"}),
}
#: Statuses after which a job is finished (``finished_at``, ``completedTime``).
TERMINAL_STATUSES: dict[str, frozenset[str]] = {
    "openai": frozenset({"succeeded", "failed", "cancelled"}),
    "azure-openai": frozenset({"succeeded", "failed", "cancelled", "canceled"}),
    "mistral": frozenset({"SUCCESS", "FAILED", "FAILED_VALIDATION", "CANCELLED"}),
    "together": frozenset({"completed", "error", "user_error", "cancelled"}),
    "fireworks": frozenset(
        f"JOB_STATE_{name}"
        for name in ("COMPLETED", "EARLY_STOPPED", "FAILED", "EXPIRED", "CANCELLED")
    ),
}
#: Statuses that produce the fine-tuned model.
SUCCESS_STATUSES: dict[str, frozenset[str]] = {
    "cohere": frozenset({READY}),
    "openai": frozenset({"succeeded"}),
    "azure-openai": frozenset({"succeeded"}),
    "mistral": frozenset({"SUCCESS"}),
    "together": frozenset({"completed"}),
    "fireworks": frozenset({"JOB_STATE_COMPLETED", "JOB_STATE_EARLY_STOPPED"}),
}
# Providers that give a failure reason; Cohere and Mistral report none.
_WITH_ERROR: frozenset[str] = frozenset({"openai", "azure-openai", "together", "fireworks"})
DEFAULT_BASE_MODELS: dict[str, str] = {
    "cohere": "command-r-08-2024",
    "openai": "gpt-4o-mini-2024-07-18",
    "azure-openai": "gpt-4o-mini-2024-07-18",
    "mistral": "open-mistral-nemo",
    "together": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
    "fireworks": "accounts/fireworks/models/llama-v3p1-8b-instruct",
}
# What a generated model does when its timeline is not given: it keeps training.
_RUNNING: dict[str, str] = {
    "cohere": FINETUNING,
    "openai": "running",
    "azure-openai": "running",
    "mistral": "RUNNING",
    "together": "running",
    "fireworks": "JOB_STATE_RUNNING",
}

#: Statuses after which training-step metrics are published.
OUTCOMES: frozenset[str] = frozenset({READY, FAILED})

# Ids end up in URL paths: no slashes, whitespace, query or fragment markers.
_MODEL_ID = re.compile(r"^[^/\s?#%]+$")
_GENERATED_DIGITS = 5


def fault_endpoints(kind: str, provider: str = DEFAULT_PROVIDER) -> frozenset[Endpoint]:
    """The endpoints of ``provider`` that a fault of ``kind`` can affect."""
    table = _KIND_TABLES.get(kind)
    if table is not None:
        return table[provider]
    return PROVIDER_ENDPOINTS[provider]


def _default_for_provider(data: Any, field: str, table: dict[str, Any]) -> Any:
    """Fill ``field`` of a raw mapping with ``provider``'s default when it is absent."""
    if isinstance(data, dict) and field not in data:
        provider = data.get("provider", DEFAULT_PROVIDER)
        if isinstance(provider, str) and provider in table:
            value = table[provider]
            return {**data, field: [(0.0, value)] if field == "timeline" else value}
    return data


def _check_statuses(timeline: list[Step], provider: str | None, allow_unknown: bool) -> None:
    known = PROVIDER_STATUSES.get(provider or DEFAULT_PROVIDER)
    if known is None or allow_unknown:
        return
    for index, (_, status) in enumerate(timeline):
        if status not in known:
            raise ValueError(
                f"entry {index}: {status!r} is not a {provider} status "
                f"({', '.join(known)}); set allow_unknown_statuses: true to script one"
            )


def _retry_after(value: object) -> int | Literal["http-date"] | None:
    if value is None or value == "http-date":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError('must be a non-negative integer, "http-date" or null')


Offset = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Status = Annotated[str, Field(min_length=1)]
Step = tuple[Offset, Status]
RetryAfter = Annotated[int | Literal["http-date"] | None, PlainValidator(_retry_after)]


def _check_timeline(timeline: list[Step]) -> list[Step]:
    for index in range(1, len(timeline)):
        if timeline[index][0] < timeline[index - 1][0]:
            raise ValueError(
                f"offsets must not decrease (entry {index}: "
                f"{timeline[index][0]:g} after {timeline[index - 1][0]:g})"
            )
    return timeline


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeprecationSpec(_Strict):
    """Response headers announcing a deprecated API: sent verbatim, either may be left out."""

    deprecation: Annotated[str, Field(min_length=1)] | None = None  # e.g. "@1757894400"
    sunset: Annotated[str, Field(min_length=1)] | None = None  # an HTTP date

    def headers(self) -> dict[str, str]:
        """The headers to add to each answer (none for a field left out)."""
        found = {"Deprecation": self.deprecation, "Sunset": self.sunset}
        return {name: value for name, value in found.items() if value is not None}


class FailureSpec(_Strict):
    """Why a job failed, as its provider reports it (OpenAI/Azure ``error``, Fireworks
    ``status``, Together's ``job_error`` event); Cohere and Mistral report no reason."""

    message: Annotated[str, Field(min_length=1)]
    code: Annotated[str, Field(min_length=1)] | None = None  # None: the provider's usual code


class ModelSpec(_Strict):
    """One fine-tuned model (a job, at the other providers) and its scripted status history."""

    id: Annotated[str, Field(min_length=1)]
    provider: Provider = DEFAULT_PROVIDER
    name: str | None = None  # defaults to the id
    base_model: str = DEFAULT_BASE_MODELS[DEFAULT_PROVIDER]  # default: the provider's usual one
    allow_unknown_statuses: bool = False  # let the timeline use statuses the provider never sent
    # (seconds after the model was added, status); offsets never decrease. Statuses are the
    # provider's own strings; a job other than Cohere's exists from its first entry on.
    timeline: list[Step]
    error: FailureSpec | None = None  # the failure reason, where the provider has one
    equal_timestamps: bool = False  # every event reports its first event's created_at
    metrics: dict[str, float] | None = None  # final training-step metrics

    @model_validator(mode="before")
    @classmethod
    def _provider_base_model(cls, data: Any) -> Any:
        return _default_for_provider(data, "base_model", DEFAULT_BASE_MODELS)

    @field_validator("id")
    @classmethod
    def _url_safe_id(cls, value: str) -> str:
        if not _MODEL_ID.match(value):
            raise ValueError("must not contain '/', '?', '#', '%' or whitespace")
        return value

    @field_validator("timeline")
    @classmethod
    def _ordered_timeline(cls, value: list[Step], info: ValidationInfo) -> list[Step]:
        provider = info.data.get("provider")
        if provider not in (None, DEFAULT_PROVIDER) and not value:
            raise ValueError(f"a {provider} job needs at least one status")
        _check_statuses(value, provider, bool(info.data.get("allow_unknown_statuses")))
        return _check_timeline(value)

    @field_validator("error")
    @classmethod
    def _error_fits(cls, value: FailureSpec | None, info: ValidationInfo) -> FailureSpec | None:
        provider = info.data.get("provider")
        if value is None or provider is None:
            return value
        if provider not in _WITH_ERROR:
            raise ValueError(f"{provider} reports no failure reason: leave error out")
        timeline = info.data.get("timeline")
        failures = FAILURE_STATUSES[provider]
        if timeline is not None and not any(status in failures for _, status in timeline):
            raise ValueError(
                f"the timeline never fails ({', '.join(sorted(failures))}): leave error out"
            )
        return value

    @property
    def display_name(self) -> str:
        return self.name if self.name is not None else self.id


class GenerateSpec(_Strict):
    """``count`` extra models ``f"{prefix}{i:05d}"`` sharing one timeline (for benchmarks)."""

    count: Annotated[int, Field(ge=0, le=99_999)] = 0
    prefix: str = "bench-"
    provider: Provider = DEFAULT_PROVIDER
    # Default: the provider's running status at t=0 (FINETUNING at Cohere).
    timeline: list[Step] = Field(default_factory=lambda: [(0.0, FINETUNING)])
    stagger: Offset = 0.0  # seconds added per model index to every offset

    @model_validator(mode="before")
    @classmethod
    def _provider_timeline(cls, data: Any) -> Any:
        return _default_for_provider(data, "timeline", _RUNNING)

    @field_validator("prefix")
    @classmethod
    def _url_safe_prefix(cls, value: str) -> str:
        if value and not _MODEL_ID.match(value):
            raise ValueError("must not contain '/', '?', '#', '%' or whitespace")
        return value

    @field_validator("timeline")
    @classmethod
    def _ordered_timeline(cls, value: list[Step], info: ValidationInfo) -> list[Step]:
        provider = info.data.get("provider")
        if provider not in (None, DEFAULT_PROVIDER) and not value:
            raise ValueError(f"a {provider} job needs at least one status")
        _check_statuses(value, provider, False)
        return _check_timeline(value)

    def model_id(self, index: int) -> str:
        return f"{self.prefix}{index:0{_GENERATED_DIGITS}d}"

    def generates(self, model_id: str) -> bool:
        """True when ``model_id`` is one of the generated ids (O(1))."""
        if not model_id.startswith(self.prefix):
            return False
        digits = model_id[len(self.prefix) :]
        return len(digits) == _GENERATED_DIGITS and digits.isdigit() and int(digits) < self.count


class FaultSpec(_Strict):
    """A scripted misbehaviour: which requests it hits and how."""

    kind: FaultKind
    model: str | None = None  # None: every model / every request
    provider: Provider | None = None  # None: every provider (a model's provider when model set)
    endpoint: FaultEndpoint = "events"  # the provider's endpoint: events, model (job), list
    after: Annotated[int, Field(ge=0)] = 0  # let the first N matching requests through
    times: Annotated[int, Field(ge=1)] | None = 1  # None: forever
    retry_after: RetryAfter = 2  # http_429 only (OpenAI and Azure also get retry-after-ms)
    delay: Offset = 5.0  # slow only, real seconds

    @field_validator("endpoint")
    @classmethod
    def _endpoint_fits(cls, value: FaultEndpoint, info: ValidationInfo) -> FaultEndpoint:
        # ``kind`` and ``model`` are declared first, so they are validated already.
        kind = info.data.get("kind")
        if info.data.get("model") is not None and value == "list":
            raise ValueError("the list endpoint concerns no model: use model: null")
        if kind is not None:
            _check_fault_endpoint(kind, value, info.data.get("provider"))
        return value

    def matches(self, endpoint: str, model_id: str | None, provider: str = "cohere") -> bool:
        """True when a request to ``provider``'s ``endpoint`` for ``model_id`` is a candidate."""
        if self.endpoint != "any" and self.endpoint != endpoint:
            return False
        if self.provider is not None and self.provider != provider:
            return False
        if self.model is not None and self.model != model_id:
            return False
        return endpoint in fault_endpoints(self.kind, provider)


def _check_fault_endpoint(kind: str, endpoint: str, provider: str | None) -> None:
    """Refuse a fault that can never strike ``provider``'s ``endpoint`` (None: any provider)."""
    allowed = fault_endpoints(kind, provider or DEFAULT_PROVIDER)  # Cohere has every endpoint
    where = f" at {provider}" if provider else ""
    if not allowed:
        raise ValueError(f"{kind} never applies{where}")
    if endpoint != "any" and endpoint not in allowed:
        names = ", ".join(sorted(allowed))
        raise ValueError(f"{kind} applies to {names} or any{where}, not {endpoint}")


class Scenario(_Strict):
    """Everything the simulator needs: auth, pagination, time, models and faults."""

    api_key: str | None = None  # None: any non-empty key is accepted (every provider)
    page_size_cap: Annotated[int, Field(ge=1)] = 50  # every provider's page size / limit
    default_order: Literal["asc", "desc"] = "asc"
    honour_order_by: bool = True
    timestamp_format: Literal["iso_z", "space_offset", "mixed"] = "iso_z"  # Cohere's
    clock: Literal["real", "manual"] = "real"
    start: datetime | None = None  # wall-clock time of t=0; None: now at app start
    rate_limit_per_minute: Annotated[int, Field(ge=1)] | None = None  # per provider and key
    # Per-provider overrides of rate_limit_per_minute (limits are per key and differ).
    provider_rate_limits: dict[Provider, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    fireworks_account: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")] = "sim-account"
    # Deprecation / Sunset headers on every Cohere answer (None: none, as before).
    cohere_deprecation: DeprecationSpec | None = None
    models: list[ModelSpec] = Field(default_factory=list)
    generate: GenerateSpec | None = None
    faults: list[FaultSpec] = Field(default_factory=list)

    @field_validator("start")
    @classmethod
    def _aware_start(cls, value: datetime | None) -> datetime | None:
        # A naive start is read as UTC: the simulator's wall clock is always aware.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        problems: list[str] = []
        first_index: dict[str, int] = {}  # model id -> index of its first definition
        for index, model in enumerate(self.models):
            if model.id in first_index:
                problems.append(
                    f"models.{index}.id: duplicate id {model.id!r} "
                    f"(also models.{first_index[model.id]}.id)"
                )
            else:
                first_index[model.id] = index
            if self.generate is not None and self.generate.generates(model.id):
                problems.append(
                    f"models.{index}.id: {model.id!r} collides with a generated id "
                    f"(generate.prefix {self.generate.prefix!r})"
                )
        for index, fault in enumerate(self.faults):
            if fault.model is None:
                continue
            if fault.model in first_index:
                provider: str = self.models[first_index[fault.model]].provider
            elif self.generate is not None and self.generate.generates(fault.model):
                provider = self.generate.provider
            else:
                problems.append(f"faults.{index}.model: unknown model {fault.model!r}")
                continue
            problem = fault_model_problem(fault, provider)
            if problem:
                problems.append(f"faults.{index}.{problem}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def fault_model_problem(fault: FaultSpec, provider: str) -> str | None:
    """Why ``fault`` cannot strike its model, which is at ``provider`` ("field: reason")."""
    if fault.provider is not None and fault.provider != provider:
        return f"provider: model {fault.model!r} is at {provider}, not {fault.provider}"
    try:
        _check_fault_endpoint(fault.kind, fault.endpoint, provider)
    except ValueError as error:
        return f"endpoint: {error}"
    return None


def validation_problems(error: ValidationError) -> list[str]:
    """One line per problem, ``"field.path: message"``, never echoing input values."""
    problems: list[str] = []
    for detail in error.errors(include_url=False, include_input=False, include_context=False):
        message = str(detail["msg"]).removeprefix("Value error, ")
        path = ".".join(str(part) for part in detail["loc"])
        # Cross-field checks sit at the root (empty path) and name their own paths.
        problems.extend(f"{path}: {line}" if path else line for line in message.splitlines())
    return problems


def parse_scenario(data: object, *, source: str) -> Scenario:
    """Validate ``data`` (a mapping) as a scenario; raise ``ConfigError`` naming ``source``."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ConfigError(source, [f"a scenario must be a mapping, not {kind}"])
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, validation_problems(error)) from None


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario YAML file; every failure is a ``ConfigError``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(source, [f"cannot read the file: {reason}"]) from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(source, [f"{where}{problem}"]) from None
    return parse_scenario(data, source=source)


def bundled_scenario_path(name: str) -> Path:
    """The path of a scenario shipped in ``watcher/simulator/scenarios`` (e.g. ``"demo"``)."""
    return Path(__file__).with_name("scenarios") / f"{name}.yaml"


def demo_scenario() -> Scenario:
    """The bundled demo: one model becomes READY, one FAILS, one keeps training.

    ``page_size_cap`` is 2 so that clients must paginate.
    """
    return load_scenario(bundled_scenario_path("demo"))


def mixed_scenario() -> Scenario:
    """The bundled mixed fleet: one job at each of the six providers, done within 6 s.

    Ready (Cohere, Azure, Fireworks), failed with a reason (OpenAI), still running
    (Together) and cancelled (Mistral); ``page_size_cap`` is 2.
    """
    return load_scenario(bundled_scenario_path("mixed"))


__all__ = [
    "DEFAULT_BASE_MODELS",
    "DEFAULT_PROVIDER",
    "ENDPOINTS",
    "FAILURE_STATUSES",
    "OUTCOMES",
    "PROVIDERS",
    "PROVIDER_ENDPOINTS",
    "PROVIDER_STATUSES",
    "SUCCESS_STATUSES",
    "TERMINAL_STATUSES",
    "DeprecationSpec",
    "Endpoint",
    "FailureSpec",
    "FaultKind",
    "FaultSpec",
    "GenerateSpec",
    "ModelSpec",
    "Provider",
    "Scenario",
    "bundled_scenario_path",
    "demo_scenario",
    "fault_endpoints",
    "fault_model_problem",
    "load_scenario",
    "mixed_scenario",
    "parse_scenario",
    "validation_problems",
]
