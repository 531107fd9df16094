"""``finetune-watcher events``: a model's status timeline from its provider's API.

Without ``--follow``: print the timeline, exit 0. With it: poll until the model
settles and exit 0 when it became ready, 1 when it ended any other way (failed,
cancelled, deleted: it cannot be deployed), 130 on Ctrl-C (143 on SIGTERM). What a
status *means* comes from the provider's :class:`~watcher.lifecycle.StatusScheme`,
which failures are worth retrying from :func:`watcher.policy.follow_retry_delay`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from watcher.commands.base import (
    Subparsers,
    add_command,
    default_config_path,
    positive_seconds,
)
from watcher.commands.console import Console, isatty
from watcher.errors import EX_FAILURE, EX_OK, ApiError, ConfigError

if TYPE_CHECKING:
    from watcher.lifecycle import StatusScheme
    from watcher.providers.base import Provider
    from watcher.settings import ApiKey, ProviderSettings
    from watcher.views import Stage

__all__ = ["CONFIG_HELP", "DEFAULT_FOLLOW_INTERVAL", "add_parser", "events_command"]

CONFIG_HELP: str | None = (
    "take the provider, key and base URL from this configuration (default: "
    "$WATCHER_CONFIG or the default configuration file, when it exists)"
)
#: Seconds between two polls of ``events --follow``.
DEFAULT_FOLLOW_INTERVAL = 10.0
#: Exit codes after SIGINT (Ctrl-C) and SIGTERM, as shells report them.
EX_INTERRUPTED = 130
EX_TERMINATED = 143

EPILOG = """\
example:
  finetune-watcher events 7a317d97-4d05-427d-9396-f31b9fb92c55 --follow && ./deploy.sh

The provider: --provider; else the configured model's (when -c is given or the default
configuration file exists and names MODEL_ID); else cohere. The key and base URL come
from that configuration; else from the provider's environment variables (Cohere:
$CO_API_KEY or $COHERE_API_KEY, and $CO_API_URL, default https://api.cohere.com).
--json prints JSON Lines: one {"provider", "status", "created_at", "duration_seconds"}
per status (duration null while current), and with --follow a last
{"provider", "final_status", "exit_code"}. While following, server errors, timeouts,
rate limits and malformed answers are retried with a warning on stderr.

exit codes:
  0   the timeline was printed; with --follow: the model became ready
  1   with --follow: the model ended otherwise (Cohere: FAILED or DELETED); or an API
      error (key rejected, model not found, ...)
  78  the configuration is invalid, or no API key was found
  130 interrupted (Ctrl-C); 143 terminated (SIGTERM) while following
"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "events",
        _from_args,
        summary="Show a model's status timeline from the API; --follow waits for it.",
        description=(
            "Show a fine-tuned model's timeline from its provider's API: each status, when it\n"
            "began and how long the model spent in it. With --follow, keep polling, print each\n"
            "new status as it arrives (with a live one-line status on a terminal) and exit 0\n"
            "when the model becomes ready, 1 when it ends otherwise (Cohere: FAILED or\n"
            "DELETED): usable in scripts."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("model_id", metavar="MODEL_ID", help="the fine-tuned model's id")
    parser.add_argument(
        "--provider",
        metavar="NAME",
        type=_provider_name,
        default=None,
        help="the provider that runs it (default: the configured model's, else cohere)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep polling and print each new status; exit 0 when ready, 1 when it ended otherwise",
    )
    parser.add_argument("--json", action="store_true", help="print JSON Lines (see below)")
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=DEFAULT_FOLLOW_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between polls with --follow (default {DEFAULT_FOLLOW_INTERVAL:g})",
    )
    return parser


def _provider_name(text: str) -> str:
    """An argparse ``type=``: a registered provider's name (the registry is read only when
    ``--provider`` is given: every command's parser is built at start-up)."""
    from watcher.providers import PROVIDERS

    if text not in PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"no provider {text!r} (choose from {', '.join(map(repr, PROVIDERS))})"
        )
    return text


def _from_args(args: argparse.Namespace) -> int:
    return events_command(
        args.model_id,
        provider=args.provider,
        config=args.config,
        follow=args.follow,
        as_json=args.json,
        interval=args.interval,
    )


def events_command(
    model_id: str,
    *,
    provider: str | None = None,
    config: Path | None,
    follow: bool,
    as_json: bool,
    interval: float = DEFAULT_FOLLOW_INTERVAL,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """A model's timeline from the API, optionally followed; returns the exit code.

    Transient API errors (:func:`watcher.policy.is_transient`) are retried with a
    warning on stderr while following; the others raise their ``ApiError``.
    """
    import anyio

    access = _api_access(model_id, provider, config, os.environ if environ is None else environ)
    return anyio.run(
        lambda: _events(
            access,
            model_id,
            follow=follow,
            as_json=as_json,
            interval=interval,
            out=out or sys.stdout,
            err=err or sys.stderr,
        )
    )


# --- which API, with which key ----------------------------------------------------------


@dataclass(frozen=True)
class _ApiAccess:
    """The provider to ask, its settings section and the key to ask it with."""

    provider: str
    section: ProviderSettings
    api_key: ApiKey


def _api_access(
    model_id: str, provider: str | None, config: Path | None, environ: Mapping[str, str]
) -> _ApiAccess:
    """The provider, its key and base URL: from the configuration if there is one, else the
    environment (the provider's own variables, as its SDK reads them).

    ``config`` None means "the default configuration if it exists". Raises
    ``ConfigError`` (78).
    """
    from watcher.lifecycle import DEFAULT_PROVIDER
    from watcher.settings import load_settings, register_secrets, resolve_api_key, targets_unparsed

    if config is None:
        default = default_config_path(environ)
        config = default if default.is_file() else None
    if config is None:
        name = provider or DEFAULT_PROVIDER
        return _ApiAccess(name, *_from_environment(name, environ))
    with targets_unparsed():  # it sends no notification: apprise need not parse the targets
        settings = load_settings(config, environ)
    if provider is None:
        configured = [m.provider for m in settings.models if m.id == model_id]
        provider = configured[0] if configured else DEFAULT_PROVIDER
    api_key = resolve_api_key(settings, environ, provider=provider)
    register_secrets(settings, {provider: api_key}, environ)
    return _ApiAccess(provider, settings.provider_section(provider), api_key)


#: The variables a provider's SDK reads its base URL from, until its settings section
#: declares them (``base_url_variables``, beside ``key_variables``).
_BASE_URL_VARIABLES: dict[str, tuple[str, ...]] = {"cohere": ("CO_API_URL",)}


def _from_environment(provider: str, environ: Mapping[str, str]) -> tuple[ProviderSettings, ApiKey]:
    """``provider``'s default section, its base URL and key from its SDK's variables."""
    from pydantic import SecretStr, ValidationError

    from watcher.redact import SECRETS
    from watcher.settings import ApiKey, ProviderSettings, Settings, section_name

    default = Settings.model_fields[section_name(provider)].default  # the section's defaults
    if not isinstance(default, ProviderSettings):  # pragma: no cover -- every provider has one
        raise TypeError(f"settings section {provider!r} is no provider section")
    section_type = type(default)
    url_variables: tuple[str, ...] = getattr(
        section_type, "base_url_variables", _BASE_URL_VARIABLES.get(provider, ())
    )
    section = default
    for variable in url_variables:
        base_url = (environ.get(variable) or "").strip()
        if base_url:
            try:
                section = section_type.model_validate({"base_url": base_url})
            except ValidationError:
                raise ConfigError(f"${variable}", ["must be an http:// or https:// URL"]) from None
            password = urlsplit(section.base_url).password
            if password:
                SECRETS.add(password)
            break
    for variable in section_type.key_variables:
        value = (environ.get(variable) or "").strip()
        if value:
            SECRETS.add(value)
            return section, ApiKey(SecretStr(value), f"${variable}")
    names = section_type.key_variables
    where = f"set {names[0]}" + (f" (or {' or '.join(names[1:])})" if names[1:] else "") + ", or "
    raise ConfigError(
        "finetune-watcher events",
        [f"no API key: {where if names else ''}name a configuration with -c FILE"],
    )


# --- the timeline ---------------------------------------------------------------------


def _final_exit_code(status: str, scheme: StatusScheme) -> int:
    """``--follow`` ends on a settled status: 0 when ready, 1 otherwise (failed, deleted)."""
    from watcher.lifecycle import Phase

    return EX_OK if scheme.phase(status) is Phase.READY else EX_FAILURE


def _stage_json(stage: Stage, provider: str) -> str:
    from watcher.views import iso

    return json.dumps(
        {
            "provider": provider,
            "status": stage.status,
            "created_at": iso(stage.since),
            "duration_seconds": stage.duration_seconds,
        }
    )


class _Timeline:
    """Prints a model's stages once each, as text rows or JSON Lines."""

    def __init__(
        self, console: Console, model_id: str, scheme: StatusScheme, *, as_json: bool
    ) -> None:
        self.console = console
        self.model_id = model_id
        self.scheme = scheme
        self.as_json = as_json
        self._printed: set[tuple[str, datetime]] = set()
        self._headed = False

    def show(self, timeline: Sequence[Stage], now: datetime) -> None:
        """Print the stages not printed yet: all of them the first time, then the new ones.

        The first time, each row says how long the model spent in that status; a row
        added later (``--follow``) says how long the status before it lasted.
        """
        first = not self._headed
        self._headed = True
        if first and not self.as_json:
            self.console.print(f"{self.model_id}: timeline (UTC)")
            if not timeline:
                self.console.print("  no events yet")
        previous: Stage | None = None
        for stage in timeline:
            if stage.key not in self._printed:
                self._printed.add(stage.key)
                self.console.print(self._row(stage, previous, now, first=first))
            previous = stage

    def _row(self, stage: Stage, previous: Stage | None, now: datetime, *, first: bool) -> str:
        from watcher.messages import format_duration
        from watcher.views import short_status

        if self.as_json:
            return _stage_json(stage, self.scheme.provider)
        if first or previous is None or previous.duration_seconds is None:
            note = self._note(stage, now)
        else:
            lasted = format_duration(previous.duration_seconds)
            note = f"new, after {lasted} in {short_status(previous.status, self.scheme)}"
        return "  " + self._line(stage, note)

    def _line(self, stage: Stage, note: str) -> str:
        from watcher.messages import format_time
        from watcher.views import short_status

        moment = format_time(stage.since)  # to the second: JSON has the exact time
        status = short_status(stage.status, self.scheme).ljust(22)
        painted = self.console.style.phase(
            status, self.scheme.phase(stage.status), settled=self.scheme.is_settled(stage.status)
        )
        return f"{moment}  {painted}  {note}".rstrip()

    @staticmethod
    def _note(stage: Stage, now: datetime) -> str:
        from watcher.messages import format_duration

        if stage.duration_seconds is not None:
            return format_duration(stage.duration_seconds)
        return f"{format_duration((now - stage.since).total_seconds())} so far (current)"

    def finish(self, status: str, code: int) -> None:
        from watcher.views import short_status

        if self.as_json:
            self.console.print(
                json.dumps(
                    {"provider": self.scheme.provider, "final_status": status, "exit_code": code}
                )
            )
        elif code == EX_OK:
            self.console.print(f"{self.model_id} is {short_status(status, self.scheme)}.")
        else:
            status_text = short_status(status, self.scheme)
            self.console.print(f"{self.model_id} ended {status_text} (exit {code}).")


@dataclass
class _FollowState:
    """What the live line shows; updated by the poll loop, read by the redraw loop."""

    scheme: StatusScheme
    current: Stage | None = None
    last_success: datetime | None = None
    failures: int = 0

    def line(self, now: datetime) -> str:
        from watcher.messages import format_duration
        from watcher.views import short_status, time_ago

        if self.current is None:
            text = "no events yet"
        else:
            elapsed = (now - self.current.since).total_seconds()
            text = (
                f"{short_status(self.current.status, self.scheme)} for {format_duration(elapsed)}"
            )
        text += f" · polled {time_ago(self.last_success, now)}"
        if self.failures:
            text += f" · retrying ({self.failures} failed)"
        return text


async def _follow(
    provider: Provider,
    model_id: str,
    *,
    interval: float,
    console: Console,
    timeline: _Timeline,
    clock: Callable[[], datetime],
) -> int:
    """Poll until the model settles; the exit code says how it ended."""
    import anyio

    from watcher.messages import format_duration
    from watcher.policy import follow_retry_delay
    from watcher.redact import ERROR_LIMIT, safe_text
    from watcher.signals import first_signal
    from watcher.views import stages

    scheme = provider.scheme
    state = _FollowState(scheme)

    async def redraw() -> None:
        while True:
            if state.last_success is not None or state.failures:
                console.show_live(state.line(clock()))
            await anyio.sleep(1.0)

    async def poll() -> int:
        while True:
            try:
                history = await provider.fetch_history(model_id)
            except ApiError as exc:
                delay = follow_retry_delay(exc, interval=interval)
                if delay is None:  # not transient: a rejected key, an unknown model
                    raise
                state.failures += 1
                reason = safe_text(str(exc), ERROR_LIMIT)  # the API's words: one clean line
                console.warn(
                    f"{reason}; retrying in "
                    f"{format_duration(delay) if delay >= 1 else f'{delay:g}s'}"
                )
                await anyio.sleep(delay)
                continue
            now = clock()
            state.failures = 0
            state.last_success = now
            current = stages(history.events, scheme=scheme)
            timeline.show(current, now)
            state.current = current[-1] if current else None
            if state.current is not None and scheme.is_settled(state.current.status):
                code = _final_exit_code(state.current.status, scheme)
                timeline.finish(state.current.status, code)
                return code
            console.show_live(state.line(now))
            await anyio.sleep(interval)

    outcome: list[int] = []

    async def run(scope: anyio.CancelScope) -> None:
        outcome.append(await poll())
        scope.cancel()

    async def watch_signals(scope: anyio.CancelScope) -> None:
        received = await first_signal(signal.SIGINT, signal.SIGTERM)
        outcome.append(EX_INTERRUPTED if received == signal.SIGINT else EX_TERMINATED)
        scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals, tg.cancel_scope)
            if console.live:
                tg.start_soon(redraw)
            tg.start_soon(run, tg.cancel_scope)
    finally:
        console.clear_live()
    return outcome[0] if outcome else EX_INTERRUPTED


async def _events(
    access: _ApiAccess,
    model_id: str,
    *,
    follow: bool,
    as_json: bool,
    interval: float,
    out: TextIO,
    err: TextIO,
) -> int:
    from watcher.views import stages

    console = Console(out, err, live=follow and not as_json and isatty(out))

    def clock() -> datetime:
        return datetime.now(UTC)

    async with _open_provider(access) as provider:
        timeline = _Timeline(console, model_id, provider.scheme, as_json=as_json)
        if follow:
            return await _follow(
                provider,
                model_id,
                interval=interval,
                console=console,
                timeline=timeline,
                clock=clock,
            )
        history = await provider.fetch_history(model_id)
        timeline.show(stages(history.events, scheme=provider.scheme), clock())
        return EX_OK


@asynccontextmanager
async def _open_provider(access: _ApiAccess) -> AsyncIterator[Provider]:
    """The provider over its own session (one request at a time, no pacer), closed after."""
    from watcher.providers import open_provider, open_provider_session

    session = open_provider_session(
        access.provider,
        access.section,
        api_key=access.api_key.value.get_secret_value(),
        concurrency=1,
    )
    try:
        yield open_provider(access.provider, access.section, session=session, pacer=None)
    finally:
        await session.close()
