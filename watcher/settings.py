"""The configuration: one YAML file plus ``WATCHER_*`` environment overrides, validated once.

Every configuration rule lives here. ``load_settings`` turns a file into a frozen
``Settings`` or raises one ``ConfigError`` listing every problem as
``field.path: message`` -- never echoing a value, since values may be secrets.

Sources, highest priority first: environment (``WATCHER_POLL__INTERVAL=30``), then
the YAML file, then the defaults below. A relative ``state.path`` in the file is relative
to the file's folder (its default: ``watcher.paths.default_state_path``); key and secret
files (``cohere.api_key_file``, ...) are relative to the current directory.

Providers: each model names its provider (``provider: cohere``, the default), whose
section (``cohere:``) says where its API is, how to find its key and, optionally, its
own request budget (``max_requests_per_minute``; else ``poll.max_requests_per_minute``,
the legacy global budget, applies to each provider). ``notify.on`` and
``notify.templates`` take common words (``ready``, ``failed``, ``cancelled``,
``queued``, ``running``: a phase of any provider) or a provider's own status.

Environment variables: ``WATCHER_<SECTION>__<KEY>`` (case-insensitive) overrides
``section.key``; lists and mappings take JSON (``WATCHER_NOTIFY__URLS='["json://h/p"]'``);
an empty value is ignored and ``null`` sets a key to null. A ``WATCHER_X__Y`` variable
whose section or key does not exist is an error (a typo must not vanish); a variable
without ``__`` that names no section (``WATCHER_CONFIG``, used by the CLI) is not ours
and is ignored.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import re
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema, core_schema
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
from watcher.lifecycle import DEFAULT_PROVIDER, PHASE_WORDS, ModelKey, Phase
from watcher.paths import default_state_path
from watcher.providers import PROVIDERS, providers_in_use, scheme_for
from watcher.redact import SECRETS, redact_url
from watcher.templates import PLACEHOLDERS, template_problems
from watcher.web.access import listens_on_loopback

__all__ = [
    "ALLOWED_PLACEHOLDERS",
    "ApiKey",
    "AzureOpenAISettings",
    "CohereSettings",
    "DiscoverSettings",
    "Duration",
    "FireworksSettings",
    "HealthSettings",
    "MistralSettings",
    "ModelSettings",
    "ModelSpec",
    "NotifySettings",
    "OpenAISettings",
    "PollSettings",
    "ProviderSettings",
    "RouteSettings",
    "Settings",
    "StateSettings",
    "TogetherSettings",
    "format_duration",
    "key_file_warnings",
    "load_settings",
    "parse_duration",
    "register_secrets",
    "resolve_api_key",
    "resolve_api_keys",
    "section_name",
    "summary_lines",
]

ENV_PREFIX = "WATCHER_"
ENV_DELIMITER = "__"
CREDENTIAL_NAME = "cohere-api-key"  # systemd credential: "<provider>-api-key"

#: The names ``models[].provider`` accepts (the registry's, ``watcher.providers.PROVIDERS``).
PROVIDER_NAMES: tuple[str, ...] = tuple(PROVIDERS)

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


#: False while a command that sends nothing reads the configuration (``targets_unparsed``).
_PARSE_TARGETS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "watcher_parse_targets", default=True
)


@contextmanager
def targets_unparsed() -> Iterator[None]:
    """Within it, apprise URLs are taken as written (stripped, not empty), not parsed by
    their plugin: for the commands that send nothing (``status``, ``migrate``,
    ``healthcheck -c``), to which apprise and requests would add ~200 modules and most
    of their start. ``check-config``, ``run``, ``once`` and ``test-notify`` parse them."""
    token = _PARSE_TARGETS.set(False)
    try:
        yield
    finally:
        _PARSE_TARGETS.reset(token)


def _check_apprise_url(url: SecretStr) -> SecretStr:
    """Accept exactly one URL that apprise can instantiate; the error names only its label."""
    raw = url.get_secret_value().strip()
    label = redact_url(raw)
    if not _PARSE_TARGETS.get():
        if not raw:
            raise ValueError(f"not a URL apprise understands ({label})")
        return SecretStr(raw)

    import apprise  # deferred: ~0.1 s, and only a config that has URLs needs it

    from watcher.apprise_urls import add as add_urls  # only the plugins of these schemes

    with _apprise_quiet():
        checker = apprise.Apprise()
        accepted = bool(raw) and add_urls(checker, raw)
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


class ProviderSettings(BaseModel):
    """What every provider section has: where the API is, its key, its limits.

    ``max_requests_per_minute`` is this provider's budget (its limit is per key); None
    falls back to ``poll.max_requests_per_minute``. Subclasses set ``key_variables``,
    the environment variables its official SDK reads the key from, in order.
    """

    model_config = _MODEL_CONFIG
    key_variables: ClassVar[tuple[str, ...]] = ()

    base_url: str
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    timeout: Duration = 30.0
    max_requests_per_minute: Annotated[int | None, Field(ge=1)] = None

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
        if parts.username is not None or parts.password is not None:
            # aiohttp refuses user:pass next to an Authorization header: the first request
            # would fail; and a key belongs in api_key / api_key_file, not in a URL.
            raise ValueError(
                "must not contain credentials (user:password@); "
                "put the key in api_key or api_key_file"
            )
        return value.strip().rstrip("/")

    @field_validator("api_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return _readable_file(value)


class CohereSettings(ProviderSettings):
    """Where the Cohere API is and how to talk to it."""

    key_variables: ClassVar[tuple[str, ...]] = ("CO_API_KEY", "COHERE_API_KEY")

    base_url: str = "https://api.cohere.com"
    page_size: Annotated[int, Field(ge=1, le=1000)] = 50
    client_name: Annotated[str, Field(min_length=1)] = "finetune-watcher"


def _readable_file(value: Path | None) -> Path | None:
    if value is not None:
        try:
            with value.open("rb") as file:
                file.read(1)
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
    return value


def _blank_as_none(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


_Optional = Annotated[str | None, AfterValidator(_blank_as_none)]


class OpenAISettings(ProviderSettings):
    """Where the OpenAI API is (the SDK's convention: with ``/v1``) and whose account.

    ``organization`` / ``project`` are sent as ``OpenAI-Organization`` / ``OpenAI-Project``
    (else ``$OPENAI_ORG_ID`` / ``$OPENAI_PROJECT_ID``, as the SDK reads them).
    ``webhook_secret_file`` holds the webhook signing secret (``whsec_...``) for
    receiving OpenAI's webhooks. ``page_size``: jobs/events per list request.
    """

    key_variables: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)

    base_url: str = "https://api.openai.com/v1"
    organization: _Optional = None
    project: _Optional = None
    webhook_secret_file: Path | None = None
    page_size: Annotated[int, Field(ge=1, le=100)] = 100

    @field_validator("webhook_secret_file")
    @classmethod
    def _readable_secret(cls, value: Path | None) -> Path | None:
        return _readable_file(value)


class AzureOpenAISettings(ProviderSettings):
    """Where the Azure OpenAI resource is: ``https://RESOURCE.openai.azure.com/openai/v1``.

    ``base_url`` has no default and is required once a model uses ``azure-openai``.
    The v1 API needs no version; an older deployment's dated API
    (``https://RESOURCE.openai.azure.com/openai``) needs ``api_version`` (e.g.
    ``2024-10-21``), sent as ``?api-version=`` on every request; a base URL written with
    ``?api-version=X`` sets it too.
    """

    key_variables: ClassVar[tuple[str, ...]] = ("AZURE_OPENAI_API_KEY",)

    base_url: str = ""
    api_version: _Optional = None
    page_size: Annotated[int, Field(ge=1, le=100)] = 100

    @model_validator(mode="before")
    @classmethod
    def _version_from_url(cls, data: Any) -> Any:
        # "https://r.openai.azure.com/openai?api-version=2024-10-21" -> base URL + api_version.
        if isinstance(data, dict) and isinstance(data.get("base_url"), str):
            url, _, query = data["base_url"].strip().partition("?")
            if query:
                params = dict(part.partition("=")[::2] for part in query.split("&") if part)
                version = params.pop("api-version", None)
                if params or not version:
                    return data  # left for _http_url to reject
                data = {**data, "base_url": url}
                data.setdefault("api_version", version)
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Empty: not configured (an error only if a model uses Azure: Settings checks).
        if "?" in value:
            raise ValueError("must be an http(s) URL with no query but ?api-version=")
        return ProviderSettings._http_url(value) if value.strip() else ""


class MistralSettings(ProviderSettings):
    """Where the Mistral API is (the SDK's convention: host only, no ``/v1``)."""

    key_variables: ClassVar[tuple[str, ...]] = ("MISTRAL_API_KEY",)

    base_url: str = "https://api.mistral.ai"
    page_size: Annotated[int, Field(ge=1, le=100)] = 100


class TogetherSettings(ProviderSettings):
    """Where the Together AI API is (the SDK's convention: host only, no ``/v1``)."""

    key_variables: ClassVar[tuple[str, ...]] = ("TOGETHER_API_KEY",)

    base_url: str = "https://api.together.ai"


class FireworksSettings(ProviderSettings):
    """Where the Fireworks AI API is (host only, no ``/v1``) and which account.

    ``account_id`` (else ``$FIREWORKS_ACCOUNT_ID``) is required once a model uses
    ``fireworks``: every job URL names it.
    """

    key_variables: ClassVar[tuple[str, ...]] = ("FIREWORKS_API_KEY",)

    base_url: str = "https://api.fireworks.ai"
    account_id: _Optional = None
    page_size: Annotated[int, Field(ge=1, le=200)] = 200

    @field_validator("account_id")
    @classmethod
    def _plain_account(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("must be a Fireworks account id (letters, digits, '-', '_', '.')")
        return value


#: Environment variables an official SDK reads for a section key the file leaves unset.
_SECTION_ENV_DEFAULTS: dict[tuple[str, str], str] = {
    ("openai", "organization"): "OPENAI_ORG_ID",
    ("openai", "project"): "OPENAI_PROJECT_ID",
    ("fireworks", "account_id"): "FIREWORKS_ACCOUNT_ID",
}


def section_name(provider: str) -> str:
    """The settings section of provider ``provider``: ``azure-openai`` -> ``azure_openai``."""
    return provider.replace("-", "_")


class PollSettings(BaseModel):
    """How often models are polled and how hard the API may be used."""

    model_config = _MODEL_CONFIG

    interval: Duration = 60.0
    settled_interval: Duration = 1800.0
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    jitter: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    # Each provider's budget unless its section sets its own (legacy: once global).
    max_requests_per_minute: Annotated[int, Field(ge=1)] = 300
    backoff_cap: Duration = 600.0


_STATE_URL_SCHEMES = ("postgresql", "postgres")


class StateSettings(BaseModel):
    """Where the state lives: a SQLite file (``path``) or a PostgreSQL database shared by
    replicas (``url``); exactly one of them.

    ``path`` unset: :func:`watcher.paths.default_state_path` (``$STATE_DIRECTORY`` under
    systemd, ``/var/lib/finetune-watcher`` for ``/etc/finetune-watcher/watcher.yaml``,
    else ``$XDG_STATE_HOME/finetune-watcher``, else next to the configuration file),
    decided when the file is loaded, so every command finds the daemon's state the same
    way. A relative ``path`` in the file is relative to the file's folder, never to the
    working directory (a relative ``$WATCHER_STATE__PATH`` is relative to the working
    directory).

    ``url`` (``postgresql://…`` or ``postgres://…``) switches to PostgreSQL and
    high availability (docs/ha.md): libpq's ``PG*`` variables and passfile work, and
    ``password_file`` holds the password (never printed; the URL is shown without
    it). ``lease_ttl`` is how long a leader's lease lasts unrenewed: a standby takes
    over within it when the leader dies. ``path`` keeps its default while ``url`` is
    unset; setting both is an error, and an empty ``path`` (``WATCHER_STATE__PATH=""``,
    ``path: null``) switches an image's default path off.
    """

    model_config = _MODEL_CONFIG

    path: Path = Path("state/watcher.db")
    url: str | None = None
    password_file: Path | None = None
    lease_ttl: Annotated[Duration, Field(ge=0.5, le=3600)] = 15.0

    @model_validator(mode="before")
    @classmethod
    def _path_from_config_location(cls, data: Any) -> Any:
        # Loading a file (load_settings): no state.path means watcher.paths's default
        # (not the working directory's); a relative one written in the file is relative
        # to the file's folder. A relative $WATCHER_STATE__PATH stays relative to the
        # working directory, as any path typed in a shell.
        # (_LOADING is defined below: absent while Settings' default section is built.)
        loading: contextvars.ContextVar[_LoadContext | None] | None = globals().get("_LOADING")
        context = loading.get() if loading is not None else None
        if context is None or not isinstance(data, Mapping):
            return data
        if "path" not in data:
            if data.get("url") is None:
                default = default_state_path(context.environ, context.path)
                data = {**data, "path": default}
            return data
        value = data["path"]
        if isinstance(value, str | Path) and not Path(value).is_absolute():
            from_env = any(
                name.upper() == f"{ENV_PREFIX}STATE{ENV_DELIMITER}PATH" and text.strip()
                for name, text in context.environ.items()
            )
            if not from_env:
                data = {**data, "path": context.path.parent / value}
        return data

    @model_validator(mode="before")
    @classmethod
    def _blank_path_is_unset(cls, data: Any) -> Any:
        # Defined after _path_from_config_location so that it runs before it (pydantic
        # runs "before" model validators last-defined first): a blank path is no path.
        if isinstance(data, Mapping) and "path" in data:
            value = data["path"]
            if value is None or (isinstance(value, str) and not value.strip()):
                data = {k: v for k, v in data.items() if k != "path"}
        return data

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.lower() not in _STATE_URL_SCHEMES:
            raise ValueError("must be a postgresql:// or postgres:// URL")
        if "\x00" in value or not value.isprintable():
            raise ValueError("must not contain control characters")
        return value

    @model_validator(mode="after")
    def _one_location(self) -> StateSettings:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError(
                "set state.url (PostgreSQL) or state.path (SQLite), not both "
                "(an empty WATCHER_STATE__PATH switches an image's default path off)"
            )
        if self.password_file is not None and self.url is None:
            raise ValueError("state.password_file needs state.url (SQLite has no password)")
        return self

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        """Which store serves this state: ``postgresql`` when ``url`` is set."""
        return "postgresql" if self.url is not None else "sqlite"


def notify_statuses(word: str) -> list[str]:
    """Every status a ``notify.on`` / ``notify.templates`` word names, across providers.

    A common word in lower case (``ready``: a phase) stands for itself. Any other word
    names each provider's status it spells -- exactly, or as that scheme accepts it
    (case-insensitive, Cohere's ``STATUS_`` prefix optional) -- so Cohere's legacy
    ``FAILED`` still means ``STATUS_FAILED`` while Mistral's ``FAILED`` is meant too:
    announcing is per provider, and a status of another provider never matches.
    """
    word = word.strip()
    if word in PHASE_WORDS:
        return [word]
    found: list[str] = []
    schemes = [scheme_for(name) for name in PROVIDER_NAMES]
    for scheme in schemes:
        status = word if word in scheme.table else scheme.canonical(word)
        if status is not None and status not in found:
            found.append(status)
    if not found:
        default = scheme_for(PROVIDER_NAMES[0])
        raise ValueError(
            f"unknown status; valid: {', '.join(default.known)} "
            f"({PROVIDERS[default.provider].title}), another provider's own status "
            f"(README: Providers), or any of {', '.join(PHASE_WORDS)}"
        )
    return found


def _notify_word(value: object) -> object:
    """One word checked where it stands (so an error names ``notify.on.1``), kept as written."""
    if isinstance(value, str):
        notify_statuses(value)
        return value.strip()
    return value


def _expand_words(words: list[str]) -> list[str]:
    """``notify.on``: each word expanded to the statuses it names, first mention first."""
    return list(dict.fromkeys(status for word in words for status in notify_statuses(word)))


def _expand_template_keys(templates: dict[str, MessageTemplate]) -> dict[str, MessageTemplate]:
    """``notify.templates``: a key naming several statuses applies to each of them."""
    expanded: dict[str, MessageTemplate] = {}
    for word, template in templates.items():
        for status in notify_statuses(word):
            expanded.setdefault(status, template)
    return expanded


#: A ``notify.on`` / ``notify.templates`` key: a common word or a provider's status.
NotifyWord = Annotated[str, BeforeValidator(_notify_word)]


class MessageTemplate(BaseModel):
    """A title and/or body that replace the defaults for one status."""

    model_config = _MODEL_CONFIG

    title: str | None = None
    body: str | None = None

    @field_validator("title", "body")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        return _check_template(value)


# --- Routes and webhooks out (issue 13) -------------------------------------------------


def _check_webhook_url(url: SecretStr) -> SecretStr:
    """An ``http(s)://`` URL that receives notices as JSON documents; errors name its label."""
    raw = url.get_secret_value().strip()
    label = redact_url(raw)
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"must be an http:// or https:// URL ({label})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not raw.isprintable():
        raise ValueError(f"must be an http:// or https:// URL ({label})")
    return SecretStr(raw)


#: ``webhooks:`` (notify, a model, a route): URLs that get each notice as a JSON document.
WebhookUrl = Annotated[SecretStr, AfterValidator(_check_webhook_url)]
WebhookUrls = Annotated[list[WebhookUrl], BeforeValidator(_none_as_empty)]
#: ``on:`` of a route: the words of ``notify.on``, expanded to the statuses they name.
RouteWords = Annotated[list[NotifyWord], Field(min_length=1), AfterValidator(_expand_words)]


class RouteSettings(BaseModel):
    """Where the notices of the statuses ``on`` names go, besides ``urls`` everywhere else:
    ``urls`` (apprise: messages people read) and ``webhooks`` (JSON documents)."""

    model_config = _MODEL_CONFIG

    on: RouteWords
    urls: AppriseUrls = []
    webhooks: WebhookUrls = []

    @model_validator(mode="after")
    def _goes_somewhere(self) -> RouteSettings:
        if not self.urls and not self.webhooks:
            raise ValueError("a route needs urls or webhooks")
        return self


Routes = Annotated[list[RouteSettings], BeforeValidator(_none_as_empty)]


class NotifySettings(BaseModel):
    """Where notifications go, on which statuses, and what they say.

    ``urls`` and ``webhooks`` get every notice ``on`` names; each of ``routes`` gets
    the notices its own ``on`` names (also statuses ``on`` leaves out).
    """

    model_config = _MODEL_CONFIG

    urls: AppriseUrls = []
    on: Annotated[list[NotifyWord], Field(min_length=1), AfterValidator(_expand_words)] = [
        Phase.READY.value,
        Phase.FAILED.value,
    ]
    webhooks: WebhookUrls = []
    routes: Routes = []
    ops_urls: AppriseUrls = []
    give_up_after: Duration = 86400.0
    unreachable_after: Duration = 900.0
    timeout: Duration = 30.0
    dashboard_url: str = "https://dashboard.cohere.com/fine-tuning/{model_id}"
    title: str | None = None
    body: str | None = None
    # per-status (or phase) title/body
    templates: Annotated[
        dict[NotifyWord, MessageTemplate], AfterValidator(_expand_template_keys)
    ] = {}
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

    def templates_for(
        self, status: str, phase: Phase | str | None = None
    ) -> tuple[str | None, str | None]:
        """(title, body) templates for ``status`` (of ``phase``, from its provider's scheme):
        the override for the status, else the one for its phase's word, else the general ones.
        """
        override = self.templates.get(status)
        if override is None and phase is not None:
            override = self.templates.get(str(phase))
        if override is None:
            return self.title, self.body
        return override.title or self.title, override.body or self.body


class ModelSettings(BaseModel):
    """One watched model: its provider, its id there, a display name and its own targets
    (``urls`` and ``webhooks``: every notice of ``notify.on``; ``routes``: by status)."""

    model_config = _MODEL_CONFIG

    id: str
    name: str | None = None
    urls: AppriseUrls = []
    provider: str = DEFAULT_PROVIDER
    webhooks: WebhookUrls = []
    routes: Routes = []

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        value = value.strip().lower().replace("_", "-")  # azure_openai -> azure-openai
        if value not in PROVIDER_NAMES:
            raise ValueError("unknown provider; valid: " + ", ".join(PROVIDER_NAMES))
        return value

    @field_validator("id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace")
        # An id is one segment of an API path: "." / ".." or a "/" would address another
        # path, a control character (NUL, ESC) is no id any provider gives out.
        if value in (".", ".."):
            raise ValueError("must be a model id, not '.' or '..'")
        if "/" in value or not value.isprintable():
            raise ValueError("must not contain '/' or control characters")
        return value

    @field_validator("name")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    @property
    def label(self) -> str:
        """The name people see: ``name`` if given, else the id."""
        return self.name or self.id

    @property
    def key(self) -> ModelKey:
        """How every layer names this model: ``(provider, id)``."""
        return ModelKey(self.provider, self.id)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One configured model once validated: what ``Settings.models`` holds.

    ``ModelSettings`` is what a ``models:`` entry is validated against; the daemon keeps
    this slotted frozen copy of it instead (80 B against ~750 B for the pydantic
    instance with its three default lists: one per watched model, issue 15). Lists are tuples;
    models listing the same ``urls`` or ``webhooks`` share one tuple, and ``provider`` is
    the registry's own string.
    """

    id: str
    name: str | None = None
    urls: tuple[SecretStr, ...] = ()
    provider: str = DEFAULT_PROVIDER
    webhooks: tuple[SecretStr, ...] = ()
    routes: tuple[RouteSettings, ...] = ()

    @property
    def label(self) -> str:
        """The name people see: ``name`` if given, else the id."""
        return self.name or self.id

    @property
    def key(self) -> ModelKey:
        """How every layer names this model: ``(provider, id)``."""
        return ModelKey(self.provider, self.id)

    def as_settings(self) -> ModelSettings:
        """The pydantic form again (already valid: not validated twice)."""
        return ModelSettings.model_construct(
            id=self.id, name=self.name, urls=list(self.urls), provider=self.provider,
            webhooks=list(self.webhooks), routes=list(self.routes),
        )  # fmt: skip


#: Each provider name once: ``_known_provider`` builds a new string per model.
_PROVIDER_STRINGS: dict[str, str] = {name: name for name in PROVIDER_NAMES}


def _compact_models(models: list[ModelSettings]) -> tuple[ModelSpec, ...]:
    """The validated ``models`` as ``ModelSpec``s, equal target lists shared."""
    shared: dict[tuple[str, ...], tuple[SecretStr, ...]] = {}

    def share(urls: list[SecretStr]) -> tuple[SecretStr, ...]:
        if not urls:
            return ()
        return shared.setdefault(tuple(u.get_secret_value() for u in urls), tuple(urls))

    return tuple(
        ModelSpec(
            id=m.id,
            name=m.name,
            urls=share(m.urls),
            provider=_PROVIDER_STRINGS.get(m.provider, m.provider),
            webhooks=share(m.webhooks),
            routes=tuple(m.routes),
        )
        for m in models
    )


def _model_inputs(value: object) -> object:
    """``ModelSpec``s given back (``Settings(models=settings.models)``) as their pydantic form."""
    if isinstance(value, list | tuple):
        return [m.as_settings() if isinstance(m, ModelSpec) else m for m in value]
    return value


def _specs_as_settings(specs: tuple[ModelSpec, ...]) -> list[ModelSettings]:
    return [spec.as_settings() for spec in specs]


def _models_schema(source: object, handler: GetCoreSchemaHandler) -> CoreSchema:
    """Validated as ``list[ModelSettings]`` (every rule and error location as written),
    kept as ``tuple[ModelSpec, ...]``, serialised as the list again."""
    as_written = handler.generate_schema(list[ModelSettings])
    return core_schema.no_info_before_validator_function(
        _model_inputs,
        core_schema.no_info_after_validator_function(_compact_models, as_written),
        serialization=core_schema.plain_serializer_function_ser_schema(
            _specs_as_settings, return_schema=as_written
        ),
    )


#: ``models:`` -- validated entry by entry as ``ModelSettings``, kept as ``ModelSpec``s.
ModelSpecs = Annotated[tuple[ModelSpec, ...], GetPydanticSchema(_models_schema)]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; False for wildcards and other names.

    The health server asks it before it binds; the rule itself is the web layer's pure
    ``listens_on_loopback`` (one copy).
    """
    return listens_on_loopback(host)


#: A shorter web token could be guessed; ``openssl rand -hex 32`` makes a good one.
WEB_TOKEN_MIN_LENGTH = 16


class WebSettings(BaseModel):
    """The status page, the JSON API and webhooks in, served on ``health.listen``.

    Open on a loopback listener. Beyond loopback the page and ``/api/*`` need the token
    in ``token_file`` (``Authorization: Bearer``, or the login form's cookie) unless
    ``public`` is true; with neither they answer 403 (``/healthz``, ``/readyz`` and
    ``/metrics`` stay open). A token, when set, is required on loopback too (a reverse
    proxy may sit in front). ``max_streams`` caps the open live-update streams.
    """

    model_config = _MODEL_CONFIG

    token_file: Path | None = None
    public: bool = False
    max_streams: Annotated[int, Field(ge=1, le=10_000)] = 256

    @field_validator("token_file")
    @classmethod
    def _readable_token(cls, value: Path | None) -> Path | None:
        return _readable_file(value)


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
        return self.host is None or is_loopback(self.host)


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


_SECTIONS = (
    "cohere",
    "openai",
    "azure_openai",
    "mistral",
    "together",
    "fireworks",
    "poll",
    "state",
    "notify",
    "health",
    "web",
    "discover",
)


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
    openai: OpenAISettings = OpenAISettings()  # frozen: safe to share
    azure_openai: AzureOpenAISettings = AzureOpenAISettings()  # frozen: safe to share
    mistral: MistralSettings = MistralSettings()  # frozen: safe to share
    together: TogetherSettings = TogetherSettings()  # frozen: safe to share
    fireworks: FireworksSettings = FireworksSettings()  # frozen: safe to share
    poll: PollSettings = PollSettings()  # frozen: safe to share
    # Built per load: its default path depends on the file and the environment.
    state: StateSettings = Field(default_factory=StateSettings)
    notify: NotifySettings = NotifySettings()  # frozen: safe to share
    health: HealthSettings = HealthSettings()  # frozen: safe to share
    web: WebSettings = WebSettings()  # frozen: safe to share
    discover: DiscoverSettings = DiscoverSettings()  # frozen: safe to share
    models: ModelSpecs = ()

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
    def _unique_ids(cls, value: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
        # Unique per provider: two providers may well use the same job id.
        first: dict[ModelKey, int] = {}
        for index, model in enumerate(value):
            if model.key in first:
                raise ValueError(f"models.{first[model.key]} and models.{index} have the same id")
            first[model.key] = index
        return value

    @model_validator(mode="before")
    @classmethod
    def _sdk_environment(cls, data: Any) -> Any:
        # What an official SDK reads from its environment when the file leaves it unset
        # ($FIREWORKS_ACCOUNT_ID, $OPENAI_ORG_ID, ...), as if written in the section.
        if not isinstance(data, dict):
            return data
        context = _LOADING.get()
        environ = context.environ if context is not None else os.environ
        for (section, key), variable in _SECTION_ENV_DEFAULTS.items():
            value = environ.get(variable, "").strip()
            current = data.get(section)
            if not value or not isinstance(current, dict | None):
                continue
            if (current or {}).get(key) is None:
                data = {**data, section: {**(current or {}), key: value}}
        return data

    @model_validator(mode="after")
    def _used_providers_configured(self) -> Settings:
        used = self.providers_in_use()
        if "azure-openai" in used and not self.azure_openai.base_url:
            raise ValueError(
                "azure_openai.base_url: required for azure-openai models, "
                "e.g. https://RESOURCE.openai.azure.com/openai/v1"
            )
        if "fireworks" in used and not self.fireworks.account_id:
            raise ValueError(
                "fireworks.account_id: required for fireworks models (or set $FIREWORKS_ACCOUNT_ID)"
            )
        return self

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

    def model_by_id(self) -> dict[str, ModelSpec]:
        """The configured models keyed by id (in file order; see ``model_by_key``)."""
        return {model.id: model for model in self.models}

    def model_by_key(self) -> dict[ModelKey, ModelSpec]:
        """The configured models keyed by ``(provider, id)`` (in file order)."""
        return {model.key: model for model in self.models}

    def providers_in_use(self) -> tuple[str, ...]:
        """The providers the models use (and discovery's), in first-use order."""
        return providers_in_use(self, discovery=self.discover.enabled)

    def provider_section(self, name: str) -> ProviderSettings:
        """The settings section of provider ``name`` (``azure-openai`` -> ``self.azure_openai``)."""
        section = getattr(self, section_name(name), None)
        if not isinstance(section, ProviderSettings):
            raise KeyError(f"no provider section {name!r}")
        return section

    def requests_per_minute(self, name: str) -> int:
        """Provider ``name``'s request budget: its own, else ``poll.max_requests_per_minute``."""
        own = self.provider_section(name).max_requests_per_minute
        return self.poll.max_requests_per_minute if own is None else own

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


#: The largest configuration file read (1 MiB: a configuration of thousands of models
#: is a few hundred KB; parsing 1 MiB of YAML takes about a second).
MAX_CONFIG_BYTES = 1024 * 1024

_NOT_REGULAR = "is not a regular file (a FIFO, device or socket); give the path of a YAML file"


def _too_big(size: int) -> str:
    return f"is {size:,} bytes; a configuration file may have at most {MAX_CONFIG_BYTES:,} bytes"


def _check_config_file(path: Path, source: str) -> None:
    """Refuse what is no regular file, or is larger than ``MAX_CONFIG_BYTES``, before reading."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(source, [_NOT_REGULAR])
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(source, [_too_big(info.st_size)])


def _read_config_bytes(path: Path) -> bytes:
    """The file's bytes, bounded: opened without blocking (a FIFO swapped in after the
    check must not hang the reader) and checked again on the open descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _FileProblem(_NOT_REGULAR)
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise _FileProblem(_too_big(max(info.st_size, len(data))))
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = _read_config_bytes(path).decode("utf-8")
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

    The file must be a regular file (a FIFO, ``/dev/stdin`` or a device is refused, not
    read as "no file") of at most ``MAX_CONFIG_BYTES``. Blocking (file I/O and a parse
    of up to that size): a running event loop calls it in a worker thread
    (``await anyio.to_thread.run_sync(load_settings, path)``); it is thread-safe.
    """
    environ = os.environ if environ is None else environ
    source = str(path)
    if not path.exists():
        raise ConfigError(source, ["file not found"])
    if path.is_dir():
        raise ConfigError(source, ["is a directory, not a configuration file"])
    _check_config_file(path, source)

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


# --- The API keys ------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    """A provider's API key and a human label of where it came from (never the key)."""

    value: SecretStr
    source: str


def resolve_api_keys(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, ApiKey]:
    """The key of every provider in use (``Settings.providers_in_use``), by provider name.

    Each is found as ``resolve_api_key`` describes. Raises one ``ConfigError`` listing
    every provider whose key is missing or unreadable.
    """
    keys: dict[str, ApiKey] = {}
    problems: list[str] = []
    for name in settings.providers_in_use():
        try:
            keys[name] = resolve_api_key(settings, environ, provider=name)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(str(settings.config_path), problems)
    return keys


def resolve_api_key(
    settings: Settings, environ: Mapping[str, str] | None = None, *, provider: str = "cohere"
) -> ApiKey:
    """Find ``provider``'s key, first match wins; surrounding whitespace is stripped.

    Order, for Cohere: ``cohere.api_key_file`` -> ``$CREDENTIALS_DIRECTORY/cohere-api-key``
    (systemd ``LoadCredential``) -> ``cohere.api_key`` (also set by
    ``$WATCHER_COHERE__API_KEY``) -> ``$CO_API_KEY`` -> ``$COHERE_API_KEY``; another
    provider reads its own section, ``<name>-api-key`` and its SDK's variables
    (``key_variables``). Blank variables count as unset; a key file that exists must
    hold a key. Raises ``ConfigError``.
    """
    environ = os.environ if environ is None else environ
    source = str(settings.config_path)
    section = settings.provider_section(provider)
    credential = f"{provider}-api-key"
    prefix = section_name(provider)

    key_file = section.api_key_file
    if key_file is not None:
        field = f"{prefix}.api_key_file"
        return _key_from_file(key_file, f"{field} ({key_file})", source, field=field)

    credentials = environ.get("CREDENTIALS_DIRECTORY", "")
    if credentials:
        found = Path(credentials) / credential
        label = f"$CREDENTIALS_DIRECTORY/{credential}"
        try:
            present = found.exists()
        except OSError as exc:  # a folder we may not look into (systemd 252's ExecReload=)
            reason = exc.strerror or str(exc)
            raise ConfigError(source, [f"{label}: cannot read {found}: {reason}"]) from None
        if present:
            return _key_from_file(found, label, source, field=label)

    configured = section.api_key
    if configured is not None and configured.get_secret_value().strip():
        variable = f"{ENV_PREFIX}{prefix.upper()}{ENV_DELIMITER}API_KEY"
        from_env = any(
            name.upper() == variable and value.strip() for name, value in environ.items()
        )
        label = f"${variable}" if from_env else f"{prefix}.api_key"
        return ApiKey(SecretStr(configured.get_secret_value().strip()), label)

    variables = type(section).key_variables
    for name in variables:
        value = environ.get(name, "").strip()
        if value:
            return ApiKey(SecretStr(value), f"${name}")

    where = [f"{prefix}.api_key_file", f"or a systemd credential named {credential}"]
    if variables:
        alternatives = " or ".join(variables[1:])
        where.insert(0, f"{variables[0]}" + (f" (or {alternatives})" if alternatives else ""))
    raise ConfigError(source, [f"{provider}: no API key: set {', '.join(where)}"])


def _key_from_file(path: Path, label: str, source: str, *, field: str) -> ApiKey:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(source, [f"{field}: cannot read {path}: {reason}"]) from None
    if not value:
        raise ConfigError(source, [f"{field}: {path} is empty"])
    return ApiKey(SecretStr(value), label)


# --- Reporting and secrets -------------------------------------------------------------


def _targets(urls: Sequence[SecretStr]) -> str:
    if not urls:
        return "no targets"
    labels = ", ".join(redact_url(u.get_secret_value()) for u in urls)
    return f"{len(urls)} target{'s' if len(urls) > 1 else ''}: {labels}"


def _keys_by_provider(api_keys: Mapping[str, ApiKey] | ApiKey | None) -> Mapping[str, ApiKey]:
    # A single key is Cohere's (the callers from before there were providers).
    if api_keys is None:
        return {}
    if isinstance(api_keys, ApiKey):
        return {DEFAULT_PROVIDER: api_keys}
    return api_keys


def summary_lines(settings: Settings, api_keys: Mapping[str, ApiKey] | ApiKey | None) -> list[str]:
    """A short account of the configuration for ``check-config``; no secret in any line.

    ``api_keys``: the resolved keys by provider (``resolve_api_keys``), or Cohere's key.
    """
    keys = _keys_by_provider(api_keys)
    poll, notify = settings.poll, settings.notify
    shown = [f"{m.id} ({m.name})" if m.name else m.id for m in settings.models[:_SUMMARY_MODELS]]
    if len(settings.models) > _SUMMARY_MODELS:
        shown.append(f"… and {len(settings.models) - _SUMMARY_MODELS} more")
    lines = [f"models: {len(settings.models)}" + (f": {', '.join(shown)}" if shown else "")]
    lines.append(f"notify on {', '.join(notify.on)}: {_targets(notify.urls)}")
    lines.extend(f"notify {m.label} also: {_targets(m.urls)}" for m in settings.models if m.urls)
    routes: list[tuple[str | None, RouteSettings]] = [(None, r) for r in notify.routes]
    routes += [(m.label, r) for m in settings.models for r in m.routes]
    for label, route in routes:
        where = f" of {label}" if label else ""
        lines.append(f"route{where} on {', '.join(route.on)}: {_targets(route.urls)}"
                     + (f", {_targets(route.webhooks).replace('target', 'webhook')}"
                        if route.webhooks else ""))  # fmt: skip
    hooks = [*notify.webhooks, *(u for m in settings.models for u in m.webhooks)]
    if hooks:
        lines.append(f"JSON webhooks: {_targets(hooks).replace('target', 'webhook')}")
    lines.append(f"ops notify: {_targets(notify.ops_urls)}")
    lines.append(
        f"poll: every {format_duration(poll.interval)}, settled models every "
        f"{format_duration(poll.settled_interval)}, {poll.concurrency} at once, "
        f"budget {poll.max_requests_per_minute} requests/min"
    )
    for name in settings.providers_in_use() or (DEFAULT_PROVIDER,):
        section = settings.provider_section(name)
        key = keys[name].source if name in keys else "not resolved"
        budget = section.max_requests_per_minute
        own_budget = f", budget {budget} requests/min" if budget is not None else ""
        lines.append(f"{name}: {redact_url(section.base_url)}, key from {key}{own_budget}")
    lines.append(_state_line(settings.state))
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


def _state_line(state: StateSettings) -> str:
    """Which backend holds the state, and where (a URL without its password)."""
    if state.url is None:
        return f"state: SQLite {state.path} ({state.path.absolute()})"
    from watcher.store.postgres import redact_url as redact_database_url  # psycopg: on demand

    password = f", password from {state.password_file}" if state.password_file else ""
    return (
        f"state: PostgreSQL {redact_database_url(state.url)} (lease_ttl "
        f"{format_duration(state.lease_ttl)}{password})"
    )


def register_secrets(
    settings: Settings,
    api_keys: Mapping[str, ApiKey] | ApiKey | None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Add every secret the configuration knows to ``redact.SECRETS``: the resolved keys,
    every provider's key that can be found (its file, credential, setting or SDK
    variable, as ``resolve_api_key`` finds it: also for commands that need no key, so
    ``status`` scrubs a key an API error echoed), base-URL credentials, webhook
    secrets, the state database's password, and every apprise and webhook URL (global,
    ops, routes, per model).

    ``api_keys``: the resolved keys by provider (``resolve_api_keys``), or Cohere's key.
    ``environ`` defaults to ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    for api_key in _keys_by_provider(api_keys).values():
        SECRETS.add(api_key.value.get_secret_value())
    for name in PROVIDER_NAMES:
        section = settings.provider_section(name)
        if section.api_key is not None:
            SECRETS.add(section.api_key.get_secret_value().strip())
        with contextlib.suppress(ConfigError):  # no key for a provider not in use
            SECRETS.add(resolve_api_key(settings, environ, provider=name).value.get_secret_value())
        _register_url_credentials(section.base_url)
    webhook_file = settings.openai.webhook_secret_file
    if webhook_file is not None:
        SECRETS.add(_first_line(webhook_file))
    SECRETS.add(environ.get("OPENAI_WEBHOOK_SECRET", "").strip())
    # The state database's credentials, when the state is a server (state.url).
    state_url = getattr(settings.state, "url", None)
    if isinstance(state_url, SecretStr):
        state_url = state_url.get_secret_value()
    if isinstance(state_url, str):
        # The password only: a database URL's lone user name is a role, not a token.
        with contextlib.suppress(ValueError):
            password = urlsplit(state_url).password
            if password:
                SECRETS.add(password)
                SECRETS.add(unquote(password))
    password_file = getattr(settings.state, "password_file", None)
    if isinstance(password_file, Path):
        SECRETS.add(_first_line(password_file))
    SECRETS.add(environ.get("PGPASSWORD", ""))
    urls = [*settings.notify.urls, *settings.notify.ops_urls, *settings.notify.webhooks]
    for model in settings.models:
        urls.extend([*model.urls, *model.webhooks])
    for route in [*settings.notify.routes, *(r for m in settings.models for r in m.routes)]:
        urls.extend([*route.urls, *route.webhooks])
    for url in urls:
        SECRETS.add_url(url.get_secret_value())


def _register_url_credentials(url: str) -> None:
    """``user:password@`` of ``url`` (decoded and as written)."""
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return
    # A user name alone is how some services spell a token (https://TOKEN@host).
    for part in (password, None if password else username):
        if part:
            SECRETS.add(part)
            SECRETS.add(unquote(part))


def _first_line(path: Path) -> str:
    """The secret a file holds (its first line, stripped); empty when unreadable."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return text.splitlines()[0].strip() if text else ""


def key_file_warnings(settings: Settings) -> list[str]:
    """One line per secret file (any provider's ``api_key_file``, the OpenAI webhook
    secret, the web token) that every user of the machine may read: ``check-config``
    prints them, the daemon logs them at start. Empty when all are private."""
    files = [
        (f"{section_name(name)}.api_key_file", settings.provider_section(name).api_key_file)
        for name in PROVIDER_NAMES
    ]
    files.append(("openai.webhook_secret_file", settings.openai.webhook_secret_file))
    files.append(("web.token_file", settings.web.token_file))
    warnings: list[str] = []
    for field, path in files:
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:
            warnings.append(
                f"{field} ({path}) is readable by every user (mode {stat.S_IMODE(mode):04o}); "
                f"make it private: chmod 600 {path}"
            )
    return warnings


def resolve_web_token(settings: Settings) -> SecretStr | None:
    """The content of ``web.token_file`` (surrounding whitespace stripped); None when unset.

    Raises ``ConfigError`` when the file cannot be read, is empty, or holds fewer than
    ``WEB_TOKEN_MIN_LENGTH`` characters.
    """
    path = settings.web.token_file
    if path is None:
        return None
    source = str(settings.config_path)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(source, [f"web.token_file: cannot read {path}: {reason}"]) from None
    if len(value) < WEB_TOKEN_MIN_LENGTH:
        raise ConfigError(
            source,
            [f"web.token_file: {path} must hold at least {WEB_TOKEN_MIN_LENGTH} characters "
             "(e.g. `openssl rand -hex 32`)"],
        )  # fmt: skip
    return SecretStr(value)


WEBHOOK_SECRET_VARIABLE = "OPENAI_WEBHOOK_SECRET"  # noqa: S105 -- a variable name


def resolve_webhook_secret(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> SecretStr | None:
    """OpenAI's webhook signing secret: ``openai.webhook_secret_file``, else
    ``$OPENAI_WEBHOOK_SECRET`` (the SDK's variable); None when neither (then
    ``POST /webhooks/openai`` is not served).

    Raises ``ConfigError`` unless it is a ``whsec_`` secret (base64 after the prefix).
    """
    environ = os.environ if environ is None else environ
    source = str(settings.config_path)
    path = settings.openai.webhook_secret_file
    if path is not None:
        label = "openai.webhook_secret_file"
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(source, [f"{label}: cannot read {path}: {reason}"]) from None
    else:
        label = f"${WEBHOOK_SECRET_VARIABLE}"
        value = environ.get(WEBHOOK_SECRET_VARIABLE, "").strip()
        if not value:
            return None
    from standardwebhooks.webhooks import Webhook

    try:
        Webhook(value)  # the verifier's own parsing: what it accepts, we accept
    except Exception:  # binascii.Error, EmptyWebhookSecretError, RuntimeError
        value = ""
    if not value.startswith("whsec_"):
        raise ConfigError(source, [f"{label}: not an OpenAI webhook secret (whsec_...)"])
    return SecretStr(value)


# --- Reloading -----------------------------------------------------------------------------

#: Settings a running daemon cannot change (``state.path``: the open, locked store;
#: ``health.listen``: the bound socket; a provider's ``api_key`` / ``api_key_file``: keys are
#: resolved once at start, and systemd's ``ExecReload=`` has no ``$CREDENTIALS_DIRECTORY``;
#: ``web.*`` and ``openai.webhook_secret_file``: the web layer is mounted, its secrets read, once).
#: A reload keeps their running values and logs one warning naming them. Everything else
#: reloads live.
RESTART_ONLY_KEYS: tuple[str, ...] = (
    "state.path",
    "state.url",
    "state.password_file",
    "state.lease_ttl",
    "health.listen",
    # The web layer is mounted once, its secrets read once (issue 13).
    "web.token_file",
    "web.public",
    "web.max_streams",
    "openai.webhook_secret_file",
    *(
        f"{section_name(name)}.{key}"
        for name in PROVIDER_NAMES
        for key in ("api_key", "api_key_file")
    ),
)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The ``RESTART_ONLY_KEYS`` whose value differs between ``old`` and ``new``, in order."""
    changed: list[str] = []
    for dotted in RESTART_ONLY_KEYS:
        section, _, key = dotted.partition(".")
        if getattr(getattr(old, section), key) != getattr(getattr(new, section), key):
            changed.append(dotted)
    return changed
