"""Tests of ``watcher.messages``, ``watcher.notify`` and ``watcher.outbox``: rendering,
sending to real receivers, and the outbox loop.

Receivers are real servers on loopback (``tests/receivers.py``), the store a real
SQLite file; time is driven by passing ``now``, never by sleeping.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import apprise
import pytest
import structlog
from structlog.testing import capture_logs

from tests.receivers import refused_url, smtp_receiver, webhook_receiver
from watcher import messages
from watcher.lifecycle import Event, Notice, observe
from watcher.messages import Message, format_duration
from watcher.notify import Notifier, Target, TargetResult, make_target
from watcher.outbox import DeliveryRound, deliver_due
from watcher.providers.cohere import (
    COHERE_SCHEME,
    DELETED,
    DEPLOYING_API,
    FAILED,
    FINETUNING,
    QUEUED,
    READY,
)
from watcher.redact import SECRETS
from watcher.store import OutboxItem, Store
from watcher.store.sqlite import SqliteStore
from watcher.templates import PLACEHOLDERS, TemplateError, render_template, template_problems

DASHBOARD = "https://dashboard.cohere.com/fine-tuning/{model_id}"
MODEL = "7a317d97-4d05-427d-9396-f31b9fb92c55"
T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
HOUR = 3600.0

# Rendering as the daemon does it for a Cohere model.
render_notice = partial(messages.render_notice, scheme=COHERE_SCHEME, provider_title="Cohere")
notice_fields = partial(messages.notice_fields, scheme=COHERE_SCHEME)
human_status = partial(messages.human_status, scheme=COHERE_SCHEME)


# A target that raises inside apprise, with a secret in the exception text.
# Registration is process-global; the schema name is unique to this module.
@apprise.decorators.notify(on="ftwraise", name="Raising test target")
def _raising_target(body: str, title: str, notify_type: str, **_: Any) -> bool:
    raise RuntimeError("boom at ftwraise://SECRETTOKEN123")


def notice(
    status: str = READY,
    *,
    previous: str | None = DEPLOYING_API,
    first: bool = False,
    started: datetime | None = T0,
    previous_since: datetime | None = T0 + timedelta(hours=2, minutes=4),
    event_at: datetime = T0 + timedelta(hours=2, minutes=14, seconds=30),
) -> Notice:
    return Notice(
        model_id=MODEL,
        status=status,
        previous_status=previous,
        event_at=event_at,
        previous_since=previous_since,
        started_at=started,
        first_observation=first,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await SqliteStore.open(tmp_path / "state.db")
    try:
        yield opened
    finally:
        await opened.aclose()


async def queue_ready(store: Store, model_id: str = MODEL, at: datetime = T0) -> int:
    """Put one READY notice in the outbox the way the daemon does: via an observation."""
    events = [
        Event(QUEUED, at - timedelta(hours=2)),
        Event(FINETUNING, at - timedelta(hours=1, minutes=50)),
        Event(READY, at - timedelta(minutes=1)),
    ]
    previous = observe(None, model_id, events[:2], scheme=COHERE_SCHEME)
    await store.record_observation(previous.state, (), polled_at=at - timedelta(minutes=5))
    observation = observe(previous.state, model_id, events, scheme=COHERE_SCHEME)
    assert len(observation.notices) == 1
    (outbox_id,) = await store.record_observation(
        observation.state, observation.notices, polled_at=at, name="support-classifier"
    )
    return outbox_id


def render_item(item: OutboxItem) -> Message:
    if item.notice is not None:
        return render_notice(item.notice, name="support-classifier", dashboard_url=DASHBOARD)
    return Message(item.title or "", item.body or "", item.notify_type or "info")


def fixed_targets(*targets: Target) -> Any:
    return lambda item: targets


def rand_half() -> float:
    return 0.5


class TestRenderNotice:
    def test_ready_is_a_success_with_every_fact(self) -> None:
        """READY: a success titled with the name; the body has the facts and the link."""
        message = render_notice(notice(), name="support-classifier", dashboard_url=DASHBOARD)
        assert message.title == "✅ support-classifier is ready"
        assert message.notify_type == "success"
        body = message.body
        assert "support-classifier" in body
        assert f"Model: support-classifier ({MODEL})" in body
        assert "Status: ready (previously deploying)" in body
        assert "When: 2026-03-01T12:14:30Z" in body
        assert "Time deploying: 10m 30s" in body
        assert "Total time: 2h 14m since its first event" in body
        assert f"Dashboard: https://dashboard.cohere.com/fine-tuning/{MODEL}" in body
        assert "first saw" not in body

    def test_failed_is_a_failure_that_says_what_is_known_and_where_to_look(self) -> None:
        """FAILED: a failure titled with the name; the body says how long and where to look."""
        message = render_notice(
            notice(FAILED, previous=FINETUNING), name="intent-router", dashboard_url=DASHBOARD
        )
        assert message.title == "❌ intent-router failed"
        assert message.notify_type == "failure"
        assert "The fine-tune of intent-router failed." in message.body
        assert "What is known: it failed 2h 14m after its first event" in message.body
        assert "while fine-tuning (for 10m 30s)" in message.body
        assert "Where to look" in message.body
        assert MODEL in message.body

    def test_deleted_is_information(self) -> None:
        """Any other status is an info message titled "name: status"."""
        message = render_notice(
            notice(DELETED, previous=READY), name="support-classifier", dashboard_url=DASHBOARD
        )
        assert message.title == "support-classifier: deleted"
        assert message.notify_type == "info"
        assert "support-classifier is now deleted." in message.body
        assert "previously ready" in message.body

    def test_first_observation_says_it_was_already_in_that_status(self) -> None:
        """A model first seen already READY is announced as such, not as a fresh change."""
        message = render_notice(
            notice(first=True), name="support-classifier", dashboard_url=DASHBOARD
        )
        assert "first saw this model already ready" in message.body
        assert "In this status since: 2026-03-01T12:14:30Z" in message.body
        assert "When:" not in message.body

    def test_unknown_status_is_spelled_out(self) -> None:
        """A status Cohere adds later is shown readably and sent as info."""
        message = render_notice(
            notice("STATUS_ARCHIVED_FOREVER", previous=READY), name="x", dashboard_url=DASHBOARD
        )
        assert message.title == "x: archived forever"
        assert message.notify_type == "info"

    def test_without_name_or_history_the_id_stands_in_and_unknowns_are_omitted(self) -> None:
        """No name: the id is the name; no previous status or start: those lines are left out."""
        message = render_notice(
            notice(previous=None, started=None, previous_since=None),
            name=None,
            dashboard_url=DASHBOARD,
        )
        assert message.title == f"✅ {MODEL} is ready"
        assert f"Model: {MODEL}\n" in message.body
        assert "previously" not in message.body
        assert "Total time" not in message.body
        assert "unknown" not in message.body

    def test_base_model_and_metrics_appear_when_known(self) -> None:
        """Enrichment (base model, final metrics) is shown when the caller has it."""
        message = render_notice(
            notice(),
            name="support-classifier",
            dashboard_url=DASHBOARD,
            base_model="command-r-08-2024",
            metrics={"accuracy": 0.91234, "loss": 0.0841},
        )
        assert "Base model: command-r-08-2024" in message.body
        assert "Final metrics: accuracy=0.9123, loss=0.0841" in message.body

    def test_dashboard_url_only_fills_model_id(self) -> None:
        """Other braces in the configured dashboard URL do not break rendering."""
        fields = notice_fields(notice(), name=None, dashboard_url="https://x/{model_id}?q={x}")
        assert fields["dashboard_url"] == f"https://x/{MODEL}?q={{x}}"


class TestFields:
    def test_every_placeholder_has_a_value(self) -> None:
        """notice_fields fills exactly PLACEHOLDERS, human-friendly."""
        fields = notice_fields(
            notice(),
            name="support-classifier",
            dashboard_url=DASHBOARD,
            base_model="command-r",
            metrics={"accuracy": 0.5},
        )
        assert tuple(fields) == PLACEHOLDERS
        assert fields == {
            "model_id": MODEL,
            "name": "support-classifier",
            "status": "STATUS_READY",
            "status_label": "ready",
            "previous_status": "deploying",
            "event_at": "2026-03-01T12:14:30Z",
            "previous_since": "2026-03-01T12:04:00Z",
            "time_in_previous": "10m 30s",
            "duration": "2h 14m",
            "base_model": "command-r",
            "dashboard_url": f"https://dashboard.cohere.com/fine-tuning/{MODEL}",
            "metrics": "accuracy=0.5",
            "provider": "cohere",
            "fine_tuned_model": "unknown",
            "error_message": "unknown",
        }

    def test_the_providers_reason_is_in_the_failure_body(self) -> None:
        """A failure names the provider's own reason when it gives one (issue 10)."""
        failed = notice(status="STATUS_FAILED")
        message = render_notice(
            failed, name="x", dashboard_url=DASHBOARD, error_message="invalid file format"
        )
        assert "Reason given by Cohere: invalid file format" in message.body
        assert "does not say why" not in message.body
        without = render_notice(failed, name="x", dashboard_url=DASHBOARD)
        assert "Cohere does not say why" in without.body

    def test_missing_values_read_unknown(self) -> None:
        """What nobody knows is "unknown" (metrics: "none"), never "None"."""
        fields = notice_fields(
            notice(previous=None, started=None, previous_since=None),
            name=None,
            dashboard_url=DASHBOARD,
        )
        assert fields["name"] == MODEL
        assert fields["previous_status"] == "unknown"
        assert fields["previous_since"] == "unknown"
        assert fields["time_in_previous"] == "unknown"
        assert fields["duration"] == "unknown"
        assert fields["base_model"] == "unknown"
        assert fields["metrics"] == "none"

    def test_times_are_utc(self) -> None:
        """An event time in another zone is shown in UTC."""
        plus_two = timezone(timedelta(hours=2))
        at = datetime(2026, 3, 1, 14, 0, tzinfo=plus_two)
        fields = notice_fields(notice(event_at=at), name=None, dashboard_url=DASHBOARD)
        assert fields["event_at"] == "2026-03-01T12:00:00Z"

    @pytest.mark.parametrize(
        ("seconds", "shown"),
        [
            (None, "unknown"),
            (0, "0s"),
            (0.9, "0s"),
            (45, "45s"),
            (60, "1m"),
            (845, "14m 5s"),
            (3600, "1h"),
            (8040, "2h 14m"),
            (86_400, "1d"),
            (3 * 86_400 + 4 * 3600 + 59, "3d 4h"),
            (-5, "0s"),
            (float("nan"), "unknown"),
        ],
    )
    def test_durations(self, seconds: float | None, shown: str) -> None:
        """Durations are short and truncated to the two largest units."""
        assert format_duration(seconds) == shown

    @pytest.mark.parametrize(
        ("status", "shown"),
        [
            (READY, "ready"),
            (FINETUNING, "fine-tuning"),
            ("STATUS_TEMPORARILY_OFFLINE", "temporarily offline"),
            ("STATUS_SOMETHING_NEW", "something new"),
            ("WEIRD", "weird"),
            (None, "unknown"),
        ],
    )
    def test_status_labels(self, status: str | None, shown: str) -> None:
        """Statuses are shown to people without the STATUS_ prefix and underscores."""
        assert human_status(status) == shown


class TestTemplates:
    def test_every_placeholder_renders(self) -> None:
        """A template using every placeholder renders each value."""
        template = "|".join(f"{{{name}}}" for name in PLACEHOLDERS)
        message = render_notice(
            notice(FAILED, previous=FINETUNING),
            name="intent-router",
            dashboard_url=DASHBOARD,
            title_template="{name} is {status_label}",
            body_template=template,
            base_model="command-r",
            metrics={"loss": 1.25},
        )
        assert message.title == "intent-router is failed"
        assert message.notify_type == "failure"
        assert message.body.split("|") == [
            MODEL,
            "intent-router",
            "STATUS_FAILED",
            "failed",
            "fine-tuning",
            "2026-03-01T12:14:30Z",
            "2026-03-01T12:04:00Z",
            "10m 30s",
            "2h 14m",
            "command-r",
            f"https://dashboard.cohere.com/fine-tuning/{MODEL}",
            "loss=1.25",
            "Cohere",
            "unknown",
            "unknown",
        ]

    def test_format_specs_are_allowed(self) -> None:
        """Ordinary format specs work on the string values."""
        assert render_template("[{name:>5}]", {"name": "ab"}) == "[   ab]"

    @pytest.mark.parametrize(
        "template",
        [
            "{nmae}",
            "{}",
            "{0}",
            "{name.__class__}",
            "{name[0]}",
            "{name:{width}}",
            "{name",
            "{name:d}",
        ],
    )
    def test_bad_templates_are_reported_not_crashed_on(self, template: str) -> None:
        """Unknown or unsafe placeholders and broken syntax are problems (TemplateError)."""
        assert template_problems(template)
        with pytest.raises(TemplateError):
            render_notice(notice(), name=None, dashboard_url=DASHBOARD, body_template=template)

    def test_problem_names_the_placeholder_and_the_known_ones(self) -> None:
        """The problem line says which placeholder is wrong and which exist."""
        (problem,) = template_problems("Hi {nmae}")
        assert "{nmae}" in problem
        assert "model_id" in problem

    def test_literal_braces_are_fine(self) -> None:
        """Doubled braces are literal text."""
        assert template_problems("{{not a placeholder}} {name}") == []


class TestTarget:
    def test_key_is_a_stable_hash_prefix(self) -> None:
        """The key is 16 hex digits, the same for the same URL, different for another."""
        a = make_target("json://127.0.0.1:8080/a")
        assert len(a.key) == 16
        assert int(a.key, 16) >= 0
        assert make_target(" json://127.0.0.1:8080/a ").key == a.key
        assert make_target("json://127.0.0.1:8080/b").key != a.key

    @pytest.mark.parametrize(
        "url",
        [
            "json://alice:HUNTER2PASS@hooks.example.com/notify?+X-Token=TOKENVALUE99",
            "mailto://bob:HUNTER2PASS@smtp.example.com?to=TOKENVALUE99@example.com",
            "slack://TOKENVALUE99/B00000000/HUNTER2PASS",
            "discord://HUNTER2PASS/TOKENVALUE99",
        ],
    )
    def test_label_and_repr_carry_no_secret(self, url: str) -> None:
        """Neither the label nor the repr of a target shows its password or token."""
        target = make_target(url)
        for shown in (target.label, repr(target), str(target)):
            assert "HUNTER2PASS" not in shown
            assert "TOKENVALUE99" not in shown
        assert "HUNTER2PASS" not in SECRETS.scrub(f"failed: {url}")


class TestNotifier:
    async def test_json_delivery_arrives_with_title_body_and_type(self) -> None:
        """A json:// target receives the title, the body and the notify type."""
        notifier = Notifier(timeout=5)
        async with webhook_receiver() as hook:
            target = make_target(hook.url)
            message = Message("✅ model is ready", "line one\nline two", "success")
            (result,) = await notifier.send(message, [target])
            assert result == TargetResult(target, True, None)
            (payload,) = await hook.wait_for(1)
        assert payload["title"] == "✅ model is ready"
        assert payload["message"] == "line one\nline two"
        assert payload["type"] == "success"
        await notifier.aclose()

    async def test_mailto_delivery_arrives(self) -> None:
        """A mailto:// target over plain SMTP receives the message as text."""
        notifier = Notifier(timeout=5)
        with smtp_receiver() as smtp:
            message = render_notice(notice(), name="support-classifier", dashboard_url=DASHBOARD)
            (result,) = await notifier.send(message, [make_target(smtp.url(to="ml@example.com"))])
            assert result.ok, result.error
            (mail,) = await smtp.wait_for(1)
        assert mail.subject == "✅ support-classifier is ready"
        assert mail.rcpt_tos == ("ml@example.com",)
        assert "Total time: 2h 14m since its first event" in mail.text
        await notifier.aclose()

    async def test_back_to_back_mails_are_not_throttled_past_the_timeout(self) -> None:
        """Two mails in a row to one target both succeed within a short timeout, once each.

        apprise would sleep 5.5 s between them; past our timeout the second would be
        reported failed yet still sent, and its retry would duplicate it.
        """
        notifier = Notifier(timeout=3)
        with smtp_receiver() as smtp:
            target = make_target(smtp.url(to="ml@example.com"))
            first = render_notice(notice(), name="first", dashboard_url=DASHBOARD)
            second = render_notice(notice(FAILED), name="second", dashboard_url=DASHBOARD)
            (a,) = await notifier.send(first, [target])
            (b,) = await notifier.send(second, [target])
            assert (a.ok, b.ok) == (True, True), (a.error, b.error)
            mails = await smtp.wait_for(2)
        assert sorted(m.subject for m in mails) == ["✅ first is ready", "❌ second failed"]
        assert len(smtp.messages) == 2
        await notifier.aclose()

    async def test_failures_are_results_with_safe_reasons(self) -> None:
        """500, refused connection, a raising plugin, a bad URL: each is one failed result."""
        notifier = Notifier(timeout=5)
        async with webhook_receiver() as healthy, webhook_receiver() as broken:
            broken.fail_with(500)
            targets = [
                make_target(healthy.url),
                make_target(broken.url),
                make_target(refused_url()),
                make_target("ftwraise://SECRETTOKEN123"),
                make_target("nosuchscheme://SECRETTOKEN123"),
            ]
            results = await notifier.send(Message("t", "b", "info"), targets)
            assert [(r.target, r.ok) for r in results] == [
                (targets[0], True),
                (targets[1], False),
                (targets[2], False),
                (targets[3], False),
                (targets[4], False),
            ]
            assert [r.error for r in results] == [
                None,
                "HTTP 500",
                "connection failed",
                "Raising test target delivery failed",
                "invalid or unsupported apprise URL",
            ]
            assert len(healthy.messages) == 1
            assert broken.messages == []
            assert [r.answered for r in broken.requests] == [500]
        await notifier.aclose()

    async def test_hanging_target_times_out_without_delaying_the_others(self) -> None:
        """A target that never answers fails after the timeout; the healthy one is not held up."""
        notifier = Notifier(timeout=1.0)
        finished: dict[str, float] = {}
        async with webhook_receiver() as healthy, webhook_receiver() as stuck:
            stuck.hang()
            good, bad = make_target(healthy.url), make_target(stuck.url)
            # Load apprise's plugins first, so the clock measures only the sends.
            await notifier.send(Message("warm", "up", "info"), [good])
            started = time.monotonic()

            async def note(result: TargetResult) -> None:
                finished[result.target.label] = time.monotonic() - started

            results = await notifier.send(Message("t", "b", "info"), [bad, good], on_result=note)
            elapsed = time.monotonic() - started
            assert [(r.ok, r.error) for r in results] == [
                (False, "timed out after 1s"),
                (True, None),
            ]
            assert finished[good.label] < 0.9  # delivered while the other was still hanging
            assert 1.0 <= elapsed < 2.5
            assert len(healthy.messages) == 2
            assert stuck.messages == []
        await notifier.aclose()

    async def test_duplicate_targets_are_sent_once(self) -> None:
        """The same URL twice (global and per model) receives the message once."""
        notifier = Notifier(timeout=5)
        async with webhook_receiver() as hook:
            results = await notifier.send(
                Message("t", "b", "info"), [make_target(hook.url), make_target(hook.url)]
            )
            assert len(results) == 1
            await hook.wait_for(1)
            assert len(hook.requests) == 1
        await notifier.aclose()

    async def test_rejects_nonsense_settings(self) -> None:
        """A non-positive timeout is refused at construction, an unknown body format at send."""
        with pytest.raises(ValueError, match="timeout"):
            Notifier(timeout=0)
        with pytest.raises(ValueError, match="body_format"):
            await Notifier().send(Message("t", "b", "info", body_format="rtf"), [])


class TestDeliverDue:
    async def test_failed_target_is_retried_and_the_successful_one_not_repeated(
        self, store: Store
    ) -> None:
        """Round 1: one target fails; round 2 (after its backoff): only that one is sent again."""
        notifier = Notifier(timeout=5)
        outbox_id = await queue_ready(store)
        async with webhook_receiver() as ok_hook, webhook_receiver() as flaky:
            flaky.fail_with(500)
            targets = fixed_targets(make_target(ok_hook.url), make_target(flaky.url))
            kwargs: dict[str, Any] = {
                "targets_for": targets,
                "render": render_item,
                "give_up_after": 24 * HOUR,
                "retry_first": 30.0,
                "rand": rand_half,
            }

            first = await deliver_due(store, notifier, now=T0, **kwargs)
            assert first == DeliveryRound(delivered=0, failed=1, given_up=0, skipped_no_targets=0)
            assert len(ok_hook.messages) == 1
            assert [r.answered for r in flaky.requests] == [500]
            assert await store.delivered_targets(outbox_id) == {make_target(ok_hook.url).key}
            (pending,) = await store.due_notifications(T0 + timedelta(hours=1))
            assert pending.attempts == 1
            assert pending.last_error == f"{make_target(flaky.url).label}: HTTP 500"

            # Not due before its backoff (30 s * 0.75: equal jitter) has passed.
            early = await deliver_due(store, notifier, now=T0 + timedelta(seconds=10), **kwargs)
            assert early == DeliveryRound(0, 0, 0, 0)
            assert len(flaky.requests) == 1

            flaky.recover()
            early = await deliver_due(store, notifier, now=T0 + timedelta(seconds=22), **kwargs)
            assert early == DeliveryRound(0, 0, 0, 0)
            second = await deliver_due(store, notifier, now=T0 + timedelta(seconds=23), **kwargs)
            assert second == DeliveryRound(delivered=1, failed=0, given_up=0, skipped_no_targets=0)
            (message,) = flaky.messages
            assert message["title"] == "✅ support-classifier is ready"
            assert message["type"] == "success"
            assert len(ok_hook.messages) == 1  # not sent twice
            assert (await store.outbox_counts()).done == 1

            third = await deliver_due(store, notifier, now=T0 + timedelta(hours=1), **kwargs)
            assert third == DeliveryRound(0, 0, 0, 0)
        assert len(ok_hook.requests) == 1
        assert len(flaky.requests) == 2

    async def test_item_delivered_everywhere_before_a_crash_is_not_resent(
        self, store: Store
    ) -> None:
        """Every target recorded as delivered (crash before mark_done): done, nothing sent."""
        notifier = Notifier(timeout=5)
        outbox_id = await queue_ready(store)
        async with webhook_receiver() as hook:
            target = make_target(hook.url)
            await store.mark_delivered(outbox_id, target.key, T0)
            result = await deliver_due(
                store,
                notifier,
                targets_for=fixed_targets(target),
                render=render_item,
                now=T0,
                give_up_after=HOUR,
            )
            assert result == DeliveryRound(delivered=1, failed=0, given_up=0, skipped_no_targets=0)
            assert hook.requests == []
        assert (await store.outbox_counts()).done == 1

    async def test_a_dead_target_is_tried_once_per_round(self, store: Store) -> None:
        """With several items due, a target that failed is not tried again in the same round."""
        notifier = Notifier(timeout=5)
        for n in range(3):
            await store.enqueue_message(
                kind="ops", title=f"t{n}", body="b", notify_type="warning", created_at=T0
            )
        async with webhook_receiver() as ok_hook, webhook_receiver() as down:
            down.fail_with(503)
            result = await deliver_due(
                store,
                notifier,
                targets_for=fixed_targets(make_target(ok_hook.url), make_target(down.url)),
                render=render_item,
                now=T0,
                give_up_after=24 * HOUR,
                rand=rand_half,
            )
            assert result == DeliveryRound(delivered=0, failed=3, given_up=0, skipped_no_targets=0)
            assert [m["title"] for m in ok_hook.messages] == ["t0", "t1", "t2"]
            assert len(down.requests) == 1
        later = await store.due_notifications(T0 + timedelta(hours=1))
        assert [item.last_error for item in later[1:]] == [
            f"{make_target(down.url).label}: not tried: HTTP 503 earlier in this round"
        ] * 2

    async def test_refused_and_hanging_targets_count_as_failures(self, store: Store) -> None:
        """Connection refused and a timeout are failures; the healthy target still gets it."""
        notifier = Notifier(timeout=1.0)
        await queue_ready(store)
        async with webhook_receiver() as ok_hook, webhook_receiver() as stuck:
            stuck.hang()
            with capture_logs() as logs:
                result = await deliver_due(
                    store,
                    notifier,
                    targets_for=fixed_targets(
                        make_target(ok_hook.url), make_target(refused_url()), make_target(stuck.url)
                    ),
                    render=render_item,
                    now=T0,
                    give_up_after=24 * HOUR,
                )
            assert result.failed == 1
            assert len(ok_hook.messages) == 1
        errors = sorted(e["error"] for e in logs if e["event"] == "notification target failed")
        assert errors == ["connection failed", "timed out after 1s"]

    async def test_clock_jumping_forward_does_not_abandon_the_outbox(self, store: Store) -> None:
        """A first attempt long past the deadline (wall clock jumped) is retried, not given up."""
        notifier = Notifier(timeout=5)
        await queue_ready(store)
        target = make_target(refused_url())
        result = await deliver_due(
            store,
            notifier,
            now=T0 + timedelta(days=10),
            targets_for=fixed_targets(target),
            render=render_item,
            give_up_after=2 * HOUR,
            rand=lambda: 0.5,
        )
        assert result.given_up == 0
        assert result.failed == 1
        assert (await store.outbox_counts()).pending == 1

    async def test_gives_up_after_the_deadline(self, store: Store) -> None:
        """An item still undelivered give_up_after after its creation is given up and logged."""
        notifier = Notifier(timeout=5)
        outbox_id = await queue_ready(store)
        target = make_target(refused_url())
        kwargs: dict[str, Any] = {
            "targets_for": fixed_targets(target),
            "render": render_item,
            "give_up_after": 2 * HOUR,
            "retry_first": HOUR,
            "retry_cap": 8 * HOUR,
            "rand": lambda: 0.999,
        }
        first = await deliver_due(store, notifier, now=T0, **kwargs)
        assert first.failed == 1
        # The second backoff (~2 h) would overshoot the deadline: the retry is at the deadline.
        now = T0
        for _ in range(8):
            now += timedelta(hours=1)
            due = await store.due_notifications(now)
            if not due:
                continue
            with capture_logs() as logs:
                result = await deliver_due(store, notifier, now=now, **kwargs)
            if result.given_up:
                break
        assert now == T0 + timedelta(hours=2)
        assert result == DeliveryRound(
            delivered=0, failed=0, given_up=1, skipped_no_targets=0, given_up_models=1
        )
        (entry,) = [e for e in logs if e["event"] == "notification given up"]
        assert entry["log_level"] == "error"
        assert entry["outbox_id"] == outbox_id
        assert entry["model_id"] == MODEL
        assert entry["status"] == READY
        assert entry["error"] == f"{target.label}: connection failed"
        assert await store.due_notifications(now + timedelta(days=30)) == []
        assert (await store.outbox_counts()).given_up == 1

    async def test_item_without_targets_is_done_with_a_warning(self, store: Store) -> None:
        """No target at all: the item is marked done and a warning says so (never silently)."""
        notifier = Notifier(timeout=5)
        outbox_id = await queue_ready(store)
        with capture_logs() as logs:
            result = await deliver_due(
                store,
                notifier,
                targets_for=lambda item: (),
                render=render_item,
                now=T0,
                give_up_after=HOUR,
                log=structlog.get_logger("test").bind(component="delivery"),
            )
        assert result == DeliveryRound(delivered=0, failed=0, given_up=0, skipped_no_targets=1)
        (entry,) = [e for e in logs if e["event"] == "notification has no targets; marked done"]
        assert entry["log_level"] == "warning"
        assert entry["outbox_id"] == outbox_id
        assert entry["model_id"] == MODEL
        assert entry["component"] == "delivery"  # the logger passed in was used
        assert await store.due_notifications(T0 + timedelta(days=1)) == []
        assert (await store.outbox_counts()).done == 1

    async def test_render_failure_is_retried_not_lost(self, store: Store) -> None:
        """A message that cannot be rendered (bad template) stays pending and is logged."""
        notifier = Notifier(timeout=5)
        await queue_ready(store)

        def broken_render(item: OutboxItem) -> Message:
            assert item.notice is not None
            return render_notice(
                item.notice, name=None, dashboard_url=DASHBOARD, body_template="{nmae}"
            )

        with capture_logs() as logs:
            result = await deliver_due(
                store,
                notifier,
                targets_for=fixed_targets(make_target(refused_url())),
                render=broken_render,
                now=T0,
                give_up_after=HOUR,
                rand=rand_half,
            )
        assert result.failed == 1
        (entry,) = [
            e for e in logs if e["event"] == "notification could not be rendered; will retry"
        ]
        assert "{nmae}" in entry["error"]
        (item,) = await store.due_notifications(T0 + timedelta(hours=1))
        assert item.last_error == "cannot render message (TemplateError)"

    async def test_secrets_stay_out_of_logs_errors_and_the_database(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A target URL's password and token appear in no log line, stored error or DB byte."""
        notifier = Notifier(timeout=5)
        await queue_ready(store)
        async with webhook_receiver() as hook:
            hook.fail_with(500)
            secret_url = (
                f"json://alice:HUNTER2PASS@127.0.0.1:{hook.port}/notify?+X-Token=TOKENVALUE99"
            )
            with capture_logs() as logs:
                await deliver_due(
                    store,
                    notifier,
                    targets_for=fixed_targets(make_target(secret_url)),
                    render=render_item,
                    now=T0,
                    give_up_after=HOUR,
                )
            (request,) = hook.requests
            assert request.headers["X-Token"] == "TOKENVALUE99"  # it was really used
        (item,) = await store.due_notifications(T0 + timedelta(hours=1))
        shown = repr(logs) + repr(item)
        await store.aclose()
        files = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        for secret in ("HUNTER2PASS", "TOKENVALUE99"):
            assert secret not in shown
            assert secret.encode() not in files

    async def test_logs_use_the_default_logger(self, store: Store) -> None:
        """Without a logger argument, deliver_due logs through structlog's default."""
        await store.enqueue_message(
            kind="ops", title="t", body="b", notify_type="info", created_at=T0
        )
        notifier = Notifier(timeout=5)
        async with webhook_receiver() as hook:
            with capture_logs() as logs:
                await deliver_due(
                    store,
                    notifier,
                    targets_for=fixed_targets(make_target(hook.url)),
                    render=render_item,
                    now=T0,
                    give_up_after=HOUR,
                )
        (entry,) = [e for e in logs if e["event"] == "notification delivered"]
        assert entry["target"] == f"json://127.0.0.1:{hook.port}"
        assert entry["kind"] == "ops"


async def test_smtp_rejection_is_a_failure() -> None:
    """An SMTP server refusing the message makes the target fail; after recover() it works."""
    notifier = Notifier(timeout=5)
    with smtp_receiver() as smtp:
        smtp.reject(554)
        target = make_target(smtp.url())
        (refused,) = await notifier.send(Message("t", "b", "warning"), [target])
        assert not refused.ok
        assert refused.error == "E-Mail delivery failed"
        assert len(smtp.rejected) == 1
        smtp.recover()
        # A fresh Notifier: apprise's mail plugin throttles ~5.5 s between two sends
        # of one object, which is harmless between delivery rounds but slow in a test.
        fresh = Notifier(timeout=5)
        (accepted,) = await fresh.send(Message("t", "b", "warning"), [target])
        assert accepted.ok, accepted.error
        (mail,) = await smtp.wait_for(1)
        assert mail.subject == "t"
        await fresh.aclose()
    await notifier.aclose()


async def test_receiver_wait_for_reports_what_it_has() -> None:
    """wait_for fails with a clear message instead of hanging when nothing arrives."""
    async with webhook_receiver() as hook:
        with pytest.raises(AssertionError, match="0 message"):
            await hook.wait_for(1, timeout=0.05)
    with smtp_receiver() as smtp, pytest.raises(AssertionError, match="have 0"):
        await smtp.wait_for(1, timeout=0.05)


class TestBodyFormats:
    def test_html_escapes_values_and_breaks_lines(self) -> None:
        """In html, a name with markup is escaped and each default line is its own line."""
        message = render_notice(
            notice(), name="<b>R&D</b>", dashboard_url=DASHBOARD, body_format="html"
        )
        assert "&lt;b&gt;R&amp;D&lt;/b&gt;" in message.body
        assert "<b>R&D</b>" not in message.body
        assert message.body.count("<br>") >= 3
        # Escaped like the body (issue 11).
        assert message.title == "✅ &lt;b&gt;R&amp;D&lt;/b&gt; is ready"

    def test_html_template_markup_is_kept(self) -> None:
        """A template's own markup stays; only the values in it are escaped."""
        message = render_notice(
            notice(),
            name="a<b",
            dashboard_url=DASHBOARD,
            body_template="<b>{name}</b> is {status_label}",
            body_format="html",
        )
        assert message.body == "<b>a&lt;b</b> is ready"

    def test_markdown_lines_end_in_hard_breaks(self) -> None:
        """In markdown, default lines are kept apart by hard line breaks, without indentation."""
        message = render_notice(notice(), name="m", dashboard_url=DASHBOARD, body_format="markdown")
        assert "  \n" in message.body
        assert not any(line.startswith(" ") for line in message.body.splitlines())


class TestSocketTimeouts:
    """Issue 11 finding 4: apprise's own read timeout (4 s) must not cut short a target
    that answers within ``notify.timeout``: it would take the notice, be reported failed,
    and get it again on every retry."""

    async def test_a_target_answering_in_5s_gets_one_post_with_timeout_10(
        self, store: Store
    ) -> None:
        """A webhook answering in 5 s, notify.timeout 10: delivered at the first attempt,
        exactly one POST (before the fix: a read timeout at 4 s and a second POST)."""
        import asyncio

        from aiohttp import web

        from tests.receivers import WebhookReceiver

        class SlowHook(WebhookReceiver):
            async def _handle(self, request: web.Request) -> web.Response:
                await asyncio.sleep(5.0)
                return await super()._handle(request)

        hook = SlowHook()
        await hook.start()
        notifier = Notifier(timeout=10)
        try:
            await queue_ready(store)
            kwargs: dict[str, Any] = {
                "targets_for": fixed_targets(make_target(hook.url)),
                "render": render_item,
                "give_up_after": 24 * HOUR,
                "rand": lambda: 0.0,
            }
            first = await deliver_due(store, notifier, now=T0, **kwargs)
            # Any retry the first pass scheduled is due within a minute: run it.
            later = await deliver_due(store, notifier, now=T0 + timedelta(minutes=1), **kwargs)
            await asyncio.sleep(5.5)  # a POST still on its way would land by now
            assert len(hook.requests) == 1
            assert (first.delivered, first.failed, later.delivered) == (1, 0, 0)
            assert (await store.outbox_counts()).done == 1
        finally:
            await notifier.aclose()
            await hook.close()

    def plugin_timeouts(self, notifier: Notifier, url: str) -> list[tuple[float, float]]:
        target = make_target(url)
        sender = notifier._build(target.key, target.url)
        return [(p.socket_connect_timeout, p.socket_read_timeout) for p in sender]

    def test_plugins_get_notify_timeout_and_keep_a_shorter_own_one(self) -> None:
        """Each target's apprise object gets notify.timeout as its connect and read timeouts;
        a URL's own shorter ``cto=``/``rto=`` is kept, a longer one is cut to the timeout."""
        notifier = Notifier(timeout=12)
        assert self.plugin_timeouts(notifier, "json://127.0.0.1:9/a") == [(12.0, 12.0)]
        assert self.plugin_timeouts(notifier, "json://127.0.0.1:9/b?rto=2&cto=3") == [(3.0, 2.0)]
        assert self.plugin_timeouts(notifier, "json://127.0.0.1:9/c?rto=60") == [(12.0, 12.0)]

    def test_a_reloaded_timeout_rebuilds_the_plugins(self) -> None:
        """notify.timeout reloads live: the cached apprise objects are rebuilt with it."""
        notifier = Notifier(timeout=12)
        assert self.plugin_timeouts(notifier, "json://127.0.0.1:9/a") == [(12.0, 12.0)]
        notifier.set_timeout(20)
        assert self.plugin_timeouts(notifier, "json://127.0.0.1:9/a") == [(20.0, 20.0)]

    def test_the_url_key_and_label_are_untouched(self) -> None:
        """The timeouts are set on the plugin: the target's key and label stay those of the
        configured URL (no cto/rto appended)."""
        url = "json://127.0.0.1:9/notify"
        target = make_target(url)
        notifier = Notifier(timeout=12)
        notifier._build(target.key, target.url)
        assert target == make_target(url)
        assert "rto" not in target.label
        assert "cto" not in target.label
