"""``finetune-watcher test-notify``: send a test message to every target, report each.

Without ``--model``: a plain test message to every target, global and per model.
With ``--model ID``: the global targets and that model's own, and the message the
model's last stored status would send (a sample ready message when nothing is
stored), its title prefixed with ``[test]``. Never prints a URL.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from watcher.commands.base import (
    CONFIG_HELP,
    Subparsers,
    add_command,
    config_path,
    exit_without_waiting_for_senders,
    load_settings_for_reading,
)
from watcher.commands.console import Console
from watcher.errors import EX_FAILURE, EX_OK, ConfigError, WatcherError

if TYPE_CHECKING:
    from watcher.lifecycle import ModelState, Notice, StatusScheme
    from watcher.messages import Message
    from watcher.notify import Target
    from watcher.settings import Settings
    from watcher.store.base import ModelRecord

__all__ = [
    "CONFIG_HELP",
    "TEST_TITLE",
    "ScopedTarget",
    "add_parser",
    "notice_from_state",
    "notification_targets",
    "send_test_notifications",
]

TEST_TITLE = "finetune-watcher test notification"

EPILOG = """\
example:
  finetune-watcher test-notify -c config/watcher.yaml --model 7a317d97-4d05-427d-9396-f31b9fb92c55

Without --model: a plain "finetune-watcher test notification" (type info) to every target,
global and per model. With --model: the global targets and that model's own, and the
message its last stored status would send (a sample ready message when nothing is stored),
its title prefixed with "[test]". One line per target: its redacted label, where it is
configured, and ok or why it failed. URLs are never printed.

exit codes:
  0   every target accepted the message
  1   some target failed (or there is no target, or the model is unknown)
  74  the state database is unusable (--model)
  78  the configuration is invalid
"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "test-notify",
        _from_args,
        summary="Send a test notification to every target; report each.",
        description=(
            "Send a test notification to every configured target (notify.urls and every\n"
            "model's own urls) and print one line per target: ok, or why it failed."
        ),
        epilog=EPILOG,
    )
    parser.add_argument(
        "--model",
        metavar="ID",
        default=None,
        help="only the global targets and this model's own, with the message its last "
        "stored status would send",
    )
    return parser


def _from_args(args: argparse.Namespace) -> int:
    code = send_test_notifications(config_path(args), model_id=args.model)
    exit_without_waiting_for_senders(code)
    return code


@dataclass(frozen=True)
class ScopedTarget:
    """A target and where the configuration names it (``notify.urls``, ``models[x].urls``)."""

    target: Target
    scope: str


def notification_targets(settings: Settings, model_id: str | None) -> list[ScopedTarget]:
    """The global targets plus every model's own (only ``model_id``'s, when given).

    A URL named in several places is one target, shown with the first place.
    """
    from watcher.notify import make_target

    scoped = [
        ScopedTarget(make_target(u.get_secret_value()), "notify.urls") for u in settings.notify.urls
    ]
    for model in settings.models:
        if model_id is not None and model.id != model_id:
            continue
        scoped.extend(
            ScopedTarget(make_target(u.get_secret_value()), f"models[{model.label}].urls")
            for u in model.urls
        )
    unique: dict[str, ScopedTarget] = {}
    for item in scoped:
        unique.setdefault(item.target.key, item)
    return list(unique.values())


def notice_from_state(state: ModelState, scheme: StatusScheme) -> Notice | None:
    """The notice announcing ``state``'s current status (None when it has none).

    The previous status and when it began come from the remembered events.
    """
    from watcher.lifecycle import Event, Notice
    from watcher.views import stages

    if state.status is None or state.status_since is None:
        return None
    events = [Event(ident.status, ident.created_at) for ident in state.seen]
    earlier = [s for s in stages(events, scheme=scheme) if s.since < state.status_since]
    previous_status: str | None = None
    previous_since: datetime | None = None
    if earlier and earlier[-1].status != state.status:
        previous_status, previous_since = earlier[-1].status, earlier[-1].since
    elif not earlier and state.floor is not None and state.floor.status != state.status:
        previous_status = state.floor.status  # forgotten history: its status, not its start
    return Notice(
        model_id=state.model_id,
        status=state.status,
        previous_status=previous_status,
        event_at=state.status_since,
        previous_since=previous_since,
        started_at=state.started_at,
        provider=state.provider,
    )


def _sample_notice(model_id: str, scheme: StatusScheme, now: datetime) -> Notice:
    """A ready notice after a plausible fine-tune, for models with nothing stored."""
    from watcher.lifecycle import Notice, Phase

    def first_in(phase: Phase) -> str | None:
        return next((s for s in scheme.known if scheme.phase(s) is phase), None)

    ready = first_in(Phase.READY)
    if ready is None:  # a scheme without a ready status cannot announce one
        raise WatcherError(f"provider {scheme.provider} has no ready status to sample")
    return Notice(
        model_id=model_id,
        status=ready,
        previous_status=first_in(Phase.RUNNING),
        event_at=now,
        previous_since=now - timedelta(hours=2, minutes=14),
        started_at=now - timedelta(hours=2, minutes=20),
        provider=scheme.provider,
    )


def _plain_test_message(body_format: str) -> Message:
    from watcher.messages import Message

    return Message(
        title=TEST_TITLE,
        body=(
            f"This is a test notification from finetune-watcher on {socket.gethostname()}. "
            "If you can read it, this target works: notifications about your fine-tuned "
            "models will arrive here."
        ),
        notify_type="info",
        body_format=body_format,
    )


def _stored_record(settings: Settings, model_id: str) -> ModelRecord | None:
    """``model_id``'s record in the state database (None: no database, or not in it)."""
    import anyio

    from watcher.store import open_store_readonly

    if not settings.state.path.exists():
        return None

    async def read() -> list[ModelRecord]:
        async with open_store_readonly(settings.state) as store:
            return await store.model_records()

    configured = {m.provider for m in settings.models if m.id == model_id}
    return next(
        (
            r
            for r in anyio.run(read)
            if r.key.id == model_id and (not configured or r.key.provider in configured)
        ),
        None,
    )


def _model_test_message(settings: Settings, model_id: str, console: Console) -> Message:
    """The message ``model_id``'s last stored status would send, titled as a test."""
    from watcher.commands.base import scheme_for
    from watcher.lifecycle import DEFAULT_PROVIDER
    from watcher.messages import render_notice
    from watcher.providers import PROVIDERS
    from watcher.templates import TemplateError

    configured = next((m for m in settings.models if m.id == model_id), None)
    record = _stored_record(settings, model_id)
    if configured is None and record is None:
        raise WatcherError(
            f"model {model_id} is neither in the configuration nor in the state database"
        )
    provider = (
        record.key.provider
        if record is not None
        else configured.provider
        if configured is not None
        else DEFAULT_PROVIDER
    )
    scheme = scheme_for(provider)
    if scheme is None:
        raise WatcherError(f"model {model_id} belongs to provider {provider}, which is unknown")
    name = (configured.name if configured else None) or (record.name if record else None)
    notice = notice_from_state(record.state, scheme) if record is not None else None
    if notice is None:
        console.print(f"{model_id} has no stored status yet: sending a sample READY message")
        notice = _sample_notice(model_id, scheme, datetime.now(UTC))
    else:
        console.print(f"{model_id}: rendering its stored status {notice.status}")
        if not scheme.announces(notice.status, frozenset(settings.notify.on)):
            console.print(
                f"  (note: {notice.status} is not in notify.on, so the watcher would not send it)"
            )
    notify = settings.notify
    title_template, body_template = notify.templates_for(notice.status, scheme.phase(notice.status))
    try:
        message = render_notice(
            notice,
            name=name,
            dashboard_url=notify.dashboard_url,
            scheme=scheme,
            provider_title=PROVIDERS[provider].title,
            title_template=title_template,
            body_template=body_template,
            body_format=notify.format,
        )
    except TemplateError as exc:
        raise ConfigError(str(settings.config_path), [f"notify: {exc}"]) from None
    return replace(message, title=f"[test] {message.title}")


async def _send_test(
    settings: Settings, targets: Sequence[ScopedTarget], message: Message
) -> list[tuple[ScopedTarget, bool, str | None]]:
    from watcher.notify import Notifier

    notifier = Notifier(timeout=settings.notify.timeout)
    try:
        results = await notifier.send(message, [t.target for t in targets])
    finally:
        await notifier.aclose()
    by_key = {r.target.key: r for r in results}
    return [(t, by_key[t.target.key].ok, by_key[t.target.key].error) for t in targets]


def send_test_notifications(
    config: Path,
    *,
    model_id: str | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Send a test message to every target and print one line each; 1 when any failed."""
    import anyio

    console = Console(out or sys.stdout, err or sys.stderr, live=False)
    settings = load_settings_for_reading(config)
    targets = notification_targets(settings, model_id)
    if not targets:
        where = "notify.urls" + (
            f" or models[{model_id}].urls" if model_id else " or models[].urls"
        )
        raise WatcherError(f"no notification targets to test: {where} name none")
    message = (
        _model_test_message(settings, model_id, console)
        if model_id is not None
        else _plain_test_message(settings.notify.format)
    )
    console.print(f"sending: {message.title}")
    outcomes = anyio.run(_send_test, settings, targets, message)

    label_width = max(len(t.target.label) for t in targets)
    failed = 0
    for scoped, ok, error in outcomes:
        where = f"{scoped.target.label.ljust(label_width)}  ({scoped.scope})"
        if ok:
            console.print(f"{console.style.paint('ok    ', '32')}  {where}")
        else:
            failed += 1
            reason = error or "delivery failed"
            console.print(f"{console.style.paint('FAILED', '31')}  {where}: {reason}")
    total = len(outcomes)
    if failed:
        console.print(f"{failed} of {total} target{'s' if total != 1 else ''} failed")
        return EX_FAILURE
    console.print(f"all {total} target{'s' if total != 1 else ''} ok")
    return EX_OK
