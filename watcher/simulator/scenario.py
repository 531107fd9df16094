"""The simulator's script: which models exist, how their statuses unfold, which faults strike.

A scenario is plain data (YAML or a dict) validated once by the pydantic models below;
every problem becomes one line of a ``ConfigError`` naming its field path, never a traceback.
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
from watcher.lifecycle import FAILED, FINETUNING, READY

FaultKind: TypeAlias = Literal[
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

ENDPOINTS: tuple[Endpoint, ...] = ("events", "model", "list", "metrics")
_PAGINATED: frozenset[Endpoint] = frozenset({"events", "list", "metrics"})
_WITH_STATUS: frozenset[Endpoint] = frozenset({"events", "model", "list"})

#: The endpoints each fault kind can affect; a kind never matches other endpoints.
FAULT_ENDPOINTS: dict[str, frozenset[Endpoint]] = {
    "repeat_token": _PAGINATED,
    "endless_pages": _PAGINATED,
    "unknown_status": _WITH_STATUS,
}
_ALL_ENDPOINTS: frozenset[Endpoint] = frozenset(ENDPOINTS)

#: Statuses after which training-step metrics are published.
OUTCOMES: frozenset[str] = frozenset({READY, FAILED})

# Ids end up in URL paths: no slashes, whitespace, query or fragment markers.
_MODEL_ID = re.compile(r"^[^/\s?#%]+$")
_GENERATED_DIGITS = 5


def fault_endpoints(kind: str) -> frozenset[Endpoint]:
    """The endpoints a fault of ``kind`` can affect."""
    return FAULT_ENDPOINTS.get(kind, _ALL_ENDPOINTS)


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


class ModelSpec(_Strict):
    """One fine-tuned model and its scripted status history."""

    id: Annotated[str, Field(min_length=1)]
    name: str | None = None  # defaults to the id
    base_model: str = "command-r-08-2024"
    # (seconds after the model was added, status); offsets never decrease.
    timeline: list[Step]
    equal_timestamps: bool = False  # every event reports its first event's created_at
    metrics: dict[str, float] | None = None  # final training-step metrics

    @field_validator("id")
    @classmethod
    def _url_safe_id(cls, value: str) -> str:
        if not _MODEL_ID.match(value):
            raise ValueError("must not contain '/', '?', '#', '%' or whitespace")
        return value

    @field_validator("timeline")
    @classmethod
    def _ordered_timeline(cls, value: list[Step]) -> list[Step]:
        return _check_timeline(value)

    @property
    def display_name(self) -> str:
        return self.name if self.name is not None else self.id


class GenerateSpec(_Strict):
    """``count`` extra models ``f"{prefix}{i:05d}"`` sharing one timeline (for benchmarks)."""

    count: Annotated[int, Field(ge=0, le=99_999)] = 0
    prefix: str = "bench-"
    timeline: list[Step] = Field(default_factory=lambda: [(0.0, FINETUNING)])
    stagger: Offset = 0.0  # seconds added per model index to every offset

    @field_validator("prefix")
    @classmethod
    def _url_safe_prefix(cls, value: str) -> str:
        if value and not _MODEL_ID.match(value):
            raise ValueError("must not contain '/', '?', '#', '%' or whitespace")
        return value

    @field_validator("timeline")
    @classmethod
    def _ordered_timeline(cls, value: list[Step]) -> list[Step]:
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
    endpoint: FaultEndpoint = "events"
    after: Annotated[int, Field(ge=0)] = 0  # let the first N matching requests through
    times: Annotated[int, Field(ge=1)] | None = 1  # None: forever
    retry_after: RetryAfter = 2  # http_429 only
    delay: Offset = 5.0  # slow only, real seconds

    @field_validator("endpoint")
    @classmethod
    def _endpoint_fits(cls, value: FaultEndpoint, info: ValidationInfo) -> FaultEndpoint:
        # ``kind`` and ``model`` are declared first, so they are validated already.
        kind = info.data.get("kind")
        if info.data.get("model") is not None and value == "list":
            raise ValueError("the list endpoint concerns no model: use model: null")
        if kind is not None and value != "any" and value not in fault_endpoints(kind):
            allowed = ", ".join(sorted(fault_endpoints(kind)))
            raise ValueError(f"{kind} applies to {allowed} or any, not {value}")
        return value

    def matches(self, endpoint: str, model_id: str | None) -> bool:
        """True when a request to ``endpoint`` for ``model_id`` is a candidate for this fault."""
        if self.endpoint != "any" and self.endpoint != endpoint:
            return False
        if self.model is not None and self.model != model_id:
            return False
        return endpoint in fault_endpoints(self.kind)


class Scenario(_Strict):
    """Everything the simulator needs: auth, pagination, time, models and faults."""

    api_key: str | None = None  # None: any non-empty bearer token is accepted
    page_size_cap: Annotated[int, Field(ge=1)] = 50
    default_order: Literal["asc", "desc"] = "asc"
    honour_order_by: bool = True
    timestamp_format: Literal["iso_z", "space_offset", "mixed"] = "iso_z"
    clock: Literal["real", "manual"] = "real"
    start: datetime | None = None  # wall-clock time of t=0; None: now at app start
    rate_limit_per_minute: Annotated[int, Field(ge=1)] | None = None
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
            if fault.model is None or fault.model in first_index:
                continue
            if self.generate is None or not self.generate.generates(fault.model):
                problems.append(f"faults.{index}.model: unknown model {fault.model!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


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


__all__ = [
    "ENDPOINTS",
    "OUTCOMES",
    "Endpoint",
    "FaultKind",
    "FaultSpec",
    "GenerateSpec",
    "ModelSpec",
    "Scenario",
    "bundled_scenario_path",
    "demo_scenario",
    "fault_endpoints",
    "load_scenario",
    "parse_scenario",
    "validation_problems",
]
