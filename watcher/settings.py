"""The configuration: one YAML file plus ``WATCHER_*`` environment overrides, validated once.

Every configuration rule lives here. ``load_settings`` turns a file into a frozen
``Settings`` or raises one ``ConfigError`` listing every problem as
``field.path: message`` -- never echoing a value, since values may be secrets.

Sources, highest priority first: environment (``WATCHER_POLL__INTERVAL=30``), then
the YAML file, then the defaults below. Relative paths (``state.path``,
``cohere.api_key_file``) are relative to the current directory, not to the file.

Environment variables: ``WATCHER_<SECTION>__<KEY>`` (case-insensitive) overrides
``section.key``; lists and mappings take JSON (``WATCHER_NOTIFY__URLS='["json://h/p"]'``);
an empty value is ignored and ``null`` sets a key to null. A ``WATCHER_X__Y`` variable
whose section or key does not exist is an error (a typo must not vanish); a variable
without ``__`` that names no section (``WATCHER_CONFIG``, used by the CLI) is not ours
and is ignored.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from watcher.errors import ConfigError
from watcher.lifecycle import FAILED, KNOWN_STATUSES, READY
from watcher.redact import SECRETS, redact_url
from watcher.templates import PLACEHOLDERS, template_problems

__all__ = [
    "ALLOWED_PLACEHOLDERS",
    "ApiKey",
    "CohereSettings",
    "DiscoverSettings",
    "Duration",
    "HealthSettings",
    "ModelSettings",
    "NotifySettings",
    "PollSettings",
    "Settings",
    "StateSettings",
    "format_duration",
    "load_settings",
    "parse_duration",
    "register_secrets",
    "resolve_api_key",
    "summary_lines",
]

ENV_PREFIX = "WATCHER_"
ENV_DELIMITER = "__"
CREDENTIAL_NAME = "cohere-api-key"

#: Placeholders ``notify.title`` / ``notify.body`` may use (see ``watcher.templates``).
ALLOWED_PLACEHOLDERS = frozenset(PLACEHOLDERS)

# --- Durations ----------------------------------------------------------------

_DURATION_ERROR = 'must be a positive duration like 30, 0.5, "30s", "5m" or "1h"'
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# Units largest first, each at most once: "1h30m", "2d", "500ms", "1m30s".
_DURATION = re.compile(
    rf"(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m(?!s))?"
    rf"(?:(?P<s>{_NUMBER})s)?(?:(?P<ms>{_NUMBER})ms)?"
)


def parse_duration(value: object) -> float:
    """Seconds (> 0, finite) from a number or a string such as ``"0.2"``, ``"30s"``, ``"1h30m"``.

    Units: ``ms``, ``s``, ``m``, ``h``, ``d``, largest first, each at most once.
    Raises ``ValueError`` for zero, negative, non-finite, booleans and anything else.
    """
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif text and (match := _DURATION.fullmatch(text)):
            seconds = sum(
                float(amount) * _UNIT_SECONDS[unit]
                for unit, amount in match.groupdict().items()
                if amount is not None
            )
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(_DURATION_ERROR)
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``: ``0.5s``, ``45s``, ``5m``, ``1h30m``, ``2d``."""
    if seconds < 60:
        return f"{seconds:g}s"
    parts: list[str] = []
    rest = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _none_as_empty(value: object) -> object:
    # `urls:` with every item commented out is null in YAML; it means "none".
    return [] if value is None else value


# --- Apprise URLs -----------------------------------------------------------------


class _ThisThreadOnly(logging.Filter):
    """Drops apprise's records from a thread that is validating URLs.

    Apprise logs rejected URLs with their tokens in clear ("Invalid Slack Token
    (xyz)"); while we only *check* a URL, nothing it says may reach a log.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "quiet", False)


_APPRISE_QUIET = _ThisThreadOnly()
logging.getLogger("apprise").addFilter(_APPRISE_QUIET)


@contextmanager
def _apprise_quiet() -> Iterator[None]:
    _APPRISE_QUIET.local.quiet = True
    try:
        yield
    finally:
        _APPRISE_QUIET.local.quiet = False


def _check_apprise_url(url: SecretStr) -> SecretStr:
    """Accept exactly one URL that apprise can instantiate; the error names only its label."""
    import apprise  # deferred: ~0.1 s, and only a config that has URLs needs it

    raw = url.get_secret_value().strip()
    label = redact_url(raw)
    with _apprise_quiet():
        checker = apprise.Apprise()
        accepted = bool(raw) and checker.add(raw)
    if not accepted:
        raise ValueError(f"not a URL apprise understands ({label})")
    if len(checker) != 1:
        raise ValueError(f"holds {len(checker)} URLs; put each in its own list item ({label})")
    return SecretStr(raw)


AppriseUrl = Annotated[SecretStr, AfterValidator(_check_apprise_url)]
AppriseUrls = Annotated[list[AppriseUrl], BeforeValidator(_none_as_empty)]

# --- Templates --------------------------------------------------------------------


def _check_template(template: str | None) -> str | None:
    """The one template rule (``watcher.templates``), as a validation error."""
    if template is not None:
        problems = template_problems(template)
        if problems:
            raise ValueError("; ".join(problems))
    return template


# --- Health listen address ----------------------------------------------------------

_LISTEN_ERROR = "must be HOST:PORT, [IPV6]:PORT or :PORT, e.g. 127.0.0.1:9464"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")


def _parse_listen(value: str) -> tuple[str, int]:
    """``(host, port)`` from ``host:port``, ``[v6]:port`` or ``:port`` (host 127.0.0.1)."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep or not _IPV6.fullmatch(host):
            raise ValueError(_LISTEN_ERROR)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or (host and not _HOST.fullmatch(host)):
            raise ValueError(_LISTEN_ERROR)
        # An omitted host means loopback: exposing metrics needs an explicit 0.0.0.0.
        host = host or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(_LISTEN_ERROR)
    return host, int(port_text)


# --- The models ---------------------------------------------------------------------

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class CohereSettings(BaseModel):
    """Where the Cohere API is and how to talk to it."""

    model_config = _MODEL_CONFIG

    base_url: str = "https://api.cohere.com"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    timeout: Duration = 30.0
    page_size: Annotated[int, Field(ge=1, le=1000)] = 50
    client_name: Annotated[str, Field(min_length=1)] = "finetune-watcher"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value.strip())
            parts.port  # noqa: B018 -- raises ValueError for a bad port
        except ValueError:
            raise ValueError("must be an http:// or https:// URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.strip().rstrip("/")

    @field_validator("api_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                with value.open("rb") as file:
                    file.read(1)
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
        return value


class PollSettings(BaseModel):
    """How often models are polled and how hard the API may be used."""

    model_config = _MODEL_CONFIG

    interval: Duration = 60.0
    settled_interval: Duration = 1800.0
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    jitter: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    max_requests_per_minute: Annotated[int, Field(ge=1)] = 300
    backoff_cap: Duration = 600.0


class StateSettings(BaseModel):
    """Where the SQLite state lives (relative to the current directory)."""

    model_config = _MODEL_CONFIG

    path: Path = Path("state/watcher.db")


def _status_name(value: object) -> object:
    """``"ready"`` / ``"READY"`` -> ``"STATUS_READY"``; only known statuses pass."""
    if not isinstance(value, str):
        return value
    name = value.strip().upper()
    if not name.startswith("STATUS_"):
        name = "STATUS_" + name
    if name not in KNOWN_STATUSES:
        raise ValueError("unknown status; valid: " + ", ".join(KNOWN_STATUSES))
    return name


Status = Annotated[str, BeforeValidator(_status_name)]


class MessageTemplate(BaseModel):
    """A title and/or body that replace the defaults for one status."""

    model_config = _MODEL_CONFIG

    title: str | None = None
    body: str | None = None

    @field_validator("title", "body")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        return _check_template(value)


class NotifySettings(BaseModel):
    """Where notifications go, on which statuses, and what they say."""

    model_config = _MODEL_CONFIG

    urls: AppriseUrls = []
    on: Annotated[list[Status], Field(min_length=1)] = [READY, FAILED]
    ops_urls: AppriseUrls = []
    give_up_after: Duration = 86400.0
    unreachable_after: Duration = 900.0
    timeout: Duration = 30.0
    dashboard_url: str = "https://dashboard.cohere.com/fine-tuning/{model_id}"
    title: str | None = None
    body: str | None = None
    templates: dict[Status, MessageTemplate] = {}  # per-status overrides of title/body
    format: Literal["text", "markdown", "html"] = "text"
    stuck_after: Duration | None = None

    @field_validator("on")
    @classmethod
    def _deduplicated(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("dashboard_url")
    @classmethod
    def _has_model_id(cls, value: str) -> str:
        # Filled by plain replacement (notify.dashboard_link): other braces stay as written.
        if "{model_id}" not in value:
            raise ValueError("must contain {model_id}")
        return value

    @field_validator("title", "body")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        return _check_template(value)

    def templates_for(self, status: str) -> tuple[str | None, str | None]:
        """(title, body) templates for ``status``: its override, else the general ones."""
        override = self.templates.get(status)
        if override is None:
            return self.title, self.body
        return override.title or self.title, override.body or self.body


class ModelSettings(BaseModel):
    """One watched model: its id, a display name and its own extra targets."""

    model_config = _MODEL_CONFIG

    id: str
    name: str | None = None
    urls: AppriseUrls = []

    @field_validator("id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace")
        return value

    @field_validator("name")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    @property
    def label(self) -> str:
        """The name people see: ``name`` if given, else the id."""
        return self.name or self.id


class HealthSettings(BaseModel):
    """The optional health/metrics HTTP server; off while ``listen`` is unset.

    ``:9464`` (no host) binds loopback ``127.0.0.1``; all interfaces need an explicit
    ``0.0.0.0:9464`` or ``[::]:9464``. Port 0 asks the OS for a free port.
    """

    model_config = _MODEL_CONFIG

    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _parse_listen(value)
        return value.strip()

    @property
    def enabled(self) -> bool:
        return self.listen is not None

    @property
    def host(self) -> str | None:
        return None if self.listen is None else _parse_listen(self.listen)[0]

    @property
    def port(self) -> int | None:
        return None if self.listen is None else _parse_listen(self.listen)[1]

    @property
    def is_loopback(self) -> bool:
        """True when the server is off or only reachable from this machine."""
        if self.host is None or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name other than localhost
            return False


def _non_empty_patterns(value: list[str]) -> list[str]:
    if any(not p.strip() for p in value):
        raise ValueError("patterns must not be empty strings")
    return value


class DiscoverSettings(BaseModel):
    """Watch the account's models whose names match ``include`` and not ``exclude``."""

    model_config = _MODEL_CONFIG

    enabled: bool = False
    include: Annotated[list[str], Field(min_length=1), AfterValidator(_non_empty_patterns)] = ["*"]
    exclude: Annotated[
        list[str], BeforeValidator(_none_as_empty), AfterValidator(_non_empty_patterns)
    ] = []
    interval: Duration = 300.0


_SECTIONS = ("cohere", "poll", "state", "notify", "health", "discover")


class Settings(BaseSettings):
    """The whole configuration, frozen. Build it with ``load_settings``.

    ``config_path`` is the file it was loaded from (``Path(".")`` when built directly).
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
        env_ignore_empty=True,
        env_parse_none_str="null",
    )

    cohere: CohereSettings = CohereSettings()  # frozen: safe to share
    poll: PollSettings = PollSettings()  # frozen: safe to share
    state: StateSettings = StateSettings()  # frozen: safe to share
    notify: NotifySettings = NotifySettings()  # frozen: safe to share
    health: HealthSettings = HealthSettings()  # frozen: safe to share
    discover: DiscoverSettings = DiscoverSettings()  # frozen: safe to share
    models: list[ModelSettings] = []

    _config_path: Path = PrivateAttr(default_factory=lambda: Path("."))

    @model_validator(mode="before")
    @classmethod
    def _null_sections_are_empty(cls, data: Any) -> Any:
        # A section whose keys are all commented out is null in YAML: use its defaults.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (k in _SECTIONS and v is None)}
        return data

    @field_validator("models", mode="before")
    @classmethod
    def _plain_ids(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, list):
            return [{"id": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("models")
    @classmethod
    def _unique_ids(cls, value: list[ModelSettings]) -> list[ModelSettings]:
        first: dict[str, int] = {}
        for index, model in enumerate(value):
            if model.id in first:
                raise ValueError(f"models.{first[model.id]} and models.{index} have the same id")
            first[model.id] = index
        return value

    @model_validator(mode="after")
    def _something_to_watch(self) -> Settings:
        if not self.models and not self.discover.enabled:
            raise ValueError(
                "models: at least one model is required (or set discover.enabled: true)"
            )
        return self

    @property
    def config_path(self) -> Path:
        return self._config_path

    def model_by_id(self) -> dict[str, ModelSettings]:
        """The configured models keyed by id (in file order)."""
        return {model.id: model for model in self.models}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: environment over the file. No .env, no secrets dir:
        # the key has its own resolution order (resolve_api_key).
        context = _LOADING.get()
        if context is None:
            return init_settings, env_settings
        context.env_source = _EnvironSource(settings_cls, context.environ)
        return init_settings, context.env_source, _YamlSource(settings_cls, context.path)


# --- Loading ----------------------------------------------------------------------------


class _FileProblem(Exception):
    """The file itself is unusable; the message is the whole problem line."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans that rejects a key given twice in one mapping.

    YAML 1.1 reads ``on``/``off``/``yes``/``no`` as booleans, which would turn the
    ``notify.on:`` key into ``True``; here only ``true``/``false`` are booleans (pydantic
    still accepts ``yes``/``no`` strings for boolean fields). A duplicate key (two
    ``poll:`` sections) would otherwise silently keep the last one.
    """

    # PyYAML reads this class attribute; ClassVar would clash with its stubs.
    yaml_implicit_resolvers = {  # noqa: RUF012
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                mark = key_node.start_mark
                raise _FileProblem(
                    f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                    f"duplicate key {key!r}"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _FileProblem("cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise _FileProblem(f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the position and the parser's problem: str(exc) quotes the line (secrets!).
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _FileProblem(f"invalid YAML{where}: {exc.problem or 'cannot parse'}") from None
    except yaml.YAMLError:
        raise _FileProblem("invalid YAML") from None
    if data is None:
        raise _FileProblem("the file is empty (it needs at least a models: list)")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise _FileProblem(
            f"the top level must be a mapping of sections ({', '.join(_SECTIONS)}, models), "
            f"not {kind}"
        )
    return data


class _YamlSource(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, reading through our checked loader."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return _read_yaml(Path(file_path))


class _EnvironSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.failed_value: str | None = None
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            self.failed_value = value  # to name the variable if this ends the load
            raise


@dataclass
class _LoadContext:
    path: Path
    environ: Mapping[str, str]
    env_source: _EnvironSource | None = None


_LOADING: contextvars.ContextVar[_LoadContext | None] = contextvars.ContextVar(
    "watcher_settings_loading", default=None
)


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, merge (environment over file) and validate the configuration at ``path``.

    ``environ`` defaults to ``os.environ``. Raises ``ConfigError(source=str(path))``
    with one ``field.path: message`` line per problem; no line contains a value.
    """
    environ = os.environ if environ is None else environ
    source = str(path)
    if not path.exists():
        raise ConfigError(source, ["file not found"])
    if path.is_dir():
        raise ConfigError(source, ["is a directory, not a configuration file"])

    env_vars = _watcher_env_vars(environ)
    problems = _unknown_env_sections(env_vars)
    context = _LoadContext(path=path, environ=environ)
    token = _LOADING.set(context)
    try:
        settings = Settings()
    except _FileProblem as exc:
        raise ConfigError(source, [str(exc)]) from None
    except ValidationError as exc:
        problems += _describe_errors(exc, env_vars)
        raise ConfigError(source, problems) from None
    except SettingsError:
        problems.append(_describe_env_decode_error(context, env_vars))
        raise ConfigError(source, problems) from None
    finally:
        _LOADING.reset(token)
    if problems:
        raise ConfigError(source, problems)
    settings._config_path = path
    return settings


def _watcher_env_vars(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """``("poll", "interval") -> "WATCHER_POLL__INTERVAL"`` for every non-empty WATCHER_ var."""
    found: dict[tuple[str, ...], str] = {}
    for name, value in environ.items():
        if name.upper().startswith(ENV_PREFIX) and value != "":
            rest = name[len(ENV_PREFIX) :].lower()
            found[tuple(rest.split(ENV_DELIMITER))] = name
    return found


def _unknown_env_sections(env_vars: dict[tuple[str, ...], str]) -> list[str]:
    # pydantic-settings only looks at variables whose first part names a field, so
    # WATCHER_POLLL__INTERVAL would vanish silently. (Unknown keys *inside* a known
    # section reach validation and are reported there as "unknown key".)
    fields = Settings.model_fields
    return [
        f"${name}: no such setting (sections: {', '.join(fields)})"
        for parts, name in sorted(env_vars.items(), key=lambda item: item[1])
        if len(parts) > 1 and parts[0] not in fields
    ]


def _describe_errors(exc: ValidationError, env_vars: dict[tuple[str, ...], str]) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(str(part) for part in error["loc"])
        message = _friendly_message(error["type"], error["msg"], loc)
        origin = next(
            (name for parts, name in env_vars.items() if loc[: len(parts)] == parts and loc),
            None,
        )
        suffix = f" (from ${origin})" if origin else ""
        lines.append(f"{'.'.join(loc)}: {message}{suffix}" if loc else f"{message}{suffix}")
    return lines


def _friendly_message(kind: str, message: str, loc: tuple[str, ...]) -> str:
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "field required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if len(loc) == 2 and loc[0] == "models":
            return "must be a model id or a mapping with an id"
        return "must be a mapping"
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    if message.startswith("Input should be "):
        return "must be " + message[len("Input should be ") :]
    if message.startswith("List should have at least 1 item"):
        return "must not be empty"
    return message[:1].lower() + message[1:]


def _describe_env_decode_error(context: _LoadContext, env_vars: dict[tuple[str, ...], str]) -> str:
    failed = context.env_source.failed_value if context.env_source else None
    names = sorted(
        name for name in env_vars.values() if failed is not None and context.environ[name] == failed
    )
    culprit = f"${names[0]}" if names else "a WATCHER_ environment variable"
    return f"{culprit}: lists and mappings must be JSON, e.g. '[\"json://host/path\"]'"


# --- The API key ------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    """The Cohere API key and a human label of where it came from (never the key)."""

    value: SecretStr
    source: str


def resolve_api_key(settings: Settings, environ: Mapping[str, str] | None = None) -> ApiKey:
    """Find the key, first match wins; surrounding whitespace is stripped.

    Order: ``cohere.api_key_file`` -> ``$CREDENTIALS_DIRECTORY/cohere-api-key`` (systemd
    ``LoadCredential``) -> ``cohere.api_key`` (also set by ``$WATCHER_COHERE__API_KEY``)
    -> ``$CO_API_KEY`` -> ``$COHERE_API_KEY``. Blank variables count as unset; a key
    file that exists must hold a key. Raises ``ConfigError``.
    """
    environ = os.environ if environ is None else environ
    source = str(settings.config_path)

    key_file = settings.cohere.api_key_file
    if key_file is not None:
        return _key_from_file(key_file, f"cohere.api_key_file ({key_file})", source)

    credentials = environ.get("CREDENTIALS_DIRECTORY", "")
    if credentials:
        found = Path(credentials) / CREDENTIAL_NAME
        if found.exists():
            return _key_from_file(found, f"$CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}", source)

    configured = settings.cohere.api_key
    if configured is not None and configured.get_secret_value().strip():
        from_env = any(
            name.upper() == f"{ENV_PREFIX}COHERE{ENV_DELIMITER}API_KEY" and value.strip()
            for name, value in environ.items()
        )
        label = f"${ENV_PREFIX}COHERE{ENV_DELIMITER}API_KEY" if from_env else "cohere.api_key"
        return ApiKey(SecretStr(configured.get_secret_value().strip()), label)

    for name in ("CO_API_KEY", "COHERE_API_KEY"):
        value = environ.get(name, "").strip()
        if value:
            return ApiKey(SecretStr(value), f"${name}")

    raise ConfigError(
        source,
        [
            "cohere: no API key: set CO_API_KEY (or COHERE_API_KEY), cohere.api_key_file, "
            f"or a systemd credential named {CREDENTIAL_NAME}"
        ],
    )


def _key_from_file(path: Path, label: str, source: str) -> ApiKey:
    field = "cohere.api_key_file" if label.startswith("cohere.") else label
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(source, [f"{field}: cannot read {path}: {reason}"]) from None
    if not value:
        raise ConfigError(source, [f"{field}: {path} is empty"])
    return ApiKey(SecretStr(value), label)


# --- Reporting and secrets -------------------------------------------------------------


def _targets(urls: list[SecretStr]) -> str:
    if not urls:
        return "no targets"
    labels = ", ".join(redact_url(u.get_secret_value()) for u in urls)
    return f"{len(urls)} target{'s' if len(urls) > 1 else ''}: {labels}"


def summary_lines(settings: Settings, api_key: ApiKey | None) -> list[str]:
    """A short account of the configuration for ``check-config``; no secret in any line."""
    poll, notify = settings.poll, settings.notify
    shown = [f"{m.id} ({m.name})" if m.name else m.id for m in settings.models[:_SUMMARY_MODELS]]
    if len(settings.models) > _SUMMARY_MODELS:
        shown.append(f"… and {len(settings.models) - _SUMMARY_MODELS} more")
    lines = [f"models: {len(settings.models)}" + (f": {', '.join(shown)}" if shown else "")]
    lines.append(f"notify on {', '.join(notify.on)}: {_targets(notify.urls)}")
    lines.extend(f"notify {m.label} also: {_targets(m.urls)}" for m in settings.models if m.urls)
    lines.append(f"ops notify: {_targets(notify.ops_urls)}")
    lines.append(
        f"poll: every {format_duration(poll.interval)}, settled models every "
        f"{format_duration(poll.settled_interval)}, {poll.concurrency} at once, "
        f"budget {poll.max_requests_per_minute} requests/min"
    )
    key = api_key.source if api_key is not None else "not resolved"
    lines.append(f"cohere: {redact_url(settings.cohere.base_url)}, key from {key}")
    lines.append(f"state: {settings.state.path} ({settings.state.path.absolute()})")
    lines.append(f"health: {settings.health.listen or 'off'}")
    discover = settings.discover
    lines.append(
        f"discover: include {discover.include}, exclude {discover.exclude}, "
        f"every {format_duration(discover.interval)}"
        if discover.enabled
        else "discover: off"
    )
    return lines


_SUMMARY_MODELS = 10


def register_secrets(settings: Settings, api_key: ApiKey | None) -> None:
    """Add the key and every apprise URL (global, ops, per model) to ``redact.SECRETS``."""
    if api_key is not None:
        SECRETS.add(api_key.value.get_secret_value())
    if settings.cohere.api_key is not None:
        SECRETS.add(settings.cohere.api_key.get_secret_value().strip())
    password = urlsplit(settings.cohere.base_url).password
    if password:
        SECRETS.add(password)
    urls = [*settings.notify.urls, *settings.notify.ops_urls]
    urls.extend(url for model in settings.models for url in model.urls)
    for url in urls:
        SECRETS.add_url(url.get_secret_value())
