"""The Watcher in-process against the simulator: enrichment, discovery, stuck warnings, reload
(what reloads live and what needs a restart, key by key).

Each test builds a real Watcher (real Store file, real HTTP client, real apprise
delivery to a webhook receiver) and drives it poll by poll, with the simulator's
manual clock and an injected wall clock, so nothing waits on real time.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from tests.conftest import SIM_KEY, base_config, daemon, wait_until, write_config
from tests.receivers import webhook_receiver
from watcher.daemon import Watcher, open_watcher
from watcher.errors import ConfigError
from watcher.lifecycle import ModelKey
from watcher.providers.cohere import FAILED, FINETUNING, QUEUED, READY
from watcher.settings import (
    PROVIDER_NAMES,
    RESTART_ONLY_KEYS,
    Settings,
    load_settings,
    resolve_api_keys,
    restart_only_changes,
    section_name,
)
from watcher.simulator import RunningSimulator, Scenario, running_simulator
from watcher.store import Store

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def key(model_id: str) -> ModelKey:
    """How the daemon names a Cohere model."""
    return ModelKey("cohere", model_id)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def scenario(models: list[dict[str, Any]], **extra: Any) -> Scenario:
    return Scenario.model_validate(
        {"api_key": SIM_KEY, "clock": "manual", "start": START.isoformat(), "models": models}
        | extra
    )


@asynccontextmanager
async def watcher_for(
    settings: Settings, *, now: Clock | None = None
) -> AsyncIterator[tuple[Watcher, Store]]:
    """A Watcher opened as ``serve`` opens it, minus the loops: the test drives it."""
    api_keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
    async with open_watcher(settings, api_keys, now=now or Clock(START), rand=lambda: 0.5) as w:
        yield w, w.store


async def poll_all(watcher: Watcher) -> None:
    for model in list(watcher.models.values()):
        await watcher.poll_model(model)


def settings_file(tmp_path: Path, base_url: str, models: list[Any], urls: list[str],
                  **sections: Any) -> Path:  # fmt: skip
    config = base_config(base_url, tmp_path, models, urls)
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return write_config(tmp_path / "watcher.yaml", config)


class TestEnrichment:
    async def test_ready_message_carries_base_model_metrics_and_cohere_name(
        self, tmp_path: Path
    ) -> None:
        """A READY notice names the model as Cohere does, with base model and final metrics."""
        scn = scenario(
            [
                {
                    "id": "m-ready",
                    "name": "support-classifier",
                    "base_model": "command-r-08-2024",
                    "timeline": [[0, QUEUED], [5, FINETUNING], [60, READY]],
                    "metrics": {"accuracy": 0.93},
                }
            ]
        )
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(tmp_path, sim.base_url, ["m-ready"], [hook.url])
            async with watcher_for(load_settings(path)) as (watcher, _):
                sim.advance(10)
                await poll_all(watcher)  # first sight: no name configured -> fetched
                assert watcher.models[key("m-ready")].label == "support-classifier"
                sim.advance(60)
                await poll_all(watcher)
                await watcher.deliver_once()
        (message,) = hook.messages
        assert "support-classifier" in message["title"]
        assert "command-r-08-2024" in message["message"]
        assert "accuracy" in message["message"]
        assert "0.93" in message["message"]

    async def test_enrichment_failure_never_blocks_the_notice(self, tmp_path: Path) -> None:
        """When the model endpoint fails, the notice still goes out, with the id as label."""
        scn = scenario(
            [{"id": "m-x", "timeline": [[0, QUEUED], [60, FAILED]]}],
            faults=[{"kind": "http_500", "endpoint": "model", "times": None}],
        )
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(tmp_path, sim.base_url, ["m-x"], [hook.url])
            async with watcher_for(load_settings(path)) as (watcher, _):
                sim.advance(1)
                await poll_all(watcher)
                sim.advance(60)
                await poll_all(watcher)
                await watcher.deliver_once()
        (message,) = hook.messages
        assert message["type"] == "failure"
        assert "m-x" in message["title"] + message["message"]


class TestUnchangedAnswers:
    async def test_identical_answer_is_skipped_and_the_next_change_is_seen(
        self, tmp_path: Path
    ) -> None:
        """A byte-identical answer changes nothing (skipped unparsed); a new event still counts."""
        scn = scenario([{"id": "u-1", "timeline": [[0, QUEUED], [10, FINETUNING], [20, READY]]}])
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(tmp_path, sim.base_url, ["u-1"], [hook.url])
            async with watcher_for(load_settings(path)) as (watcher, _):
                model = watcher.models[key("u-1")]
                sim.advance(1)
                await poll_all(watcher)
                first_digest, first_state = model.digest, model.state
                assert first_digest is not None
                await poll_all(watcher)  # the same bytes again
                assert model.state is first_state
                assert model.digest == first_digest
                sim.advance(20)
                await poll_all(watcher)
                assert model.state is not None
                assert model.state.status == READY
                assert model.digest != first_digest
                await watcher.deliver_once()
        assert [m["type"] for m in hook.messages] == ["success"]


class TestTemplates:
    async def test_per_status_override_is_used_for_that_status(self, tmp_path: Path) -> None:
        """A FAILED override shapes the FAILED message; READY keeps the default wording."""
        scn = scenario(
            [
                {"id": "t-1", "name": "ok-model", "timeline": [[0, QUEUED], [60, READY]]},
                {"id": "t-2", "name": "bad-model", "timeline": [[0, QUEUED], [60, FAILED]]},
            ]
        )
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(
                tmp_path, sim.base_url, ["t-1", "t-2"], [hook.url],
                notify={"templates": {"FAILED": {"title": "BROKEN {name} ({status_label})"}}},
            )  # fmt: skip
            async with watcher_for(load_settings(path)) as (watcher, _):
                sim.advance(1)
                await poll_all(watcher)
                sim.advance(60)
                await poll_all(watcher)
                await watcher.deliver_once()
        titles = sorted(m["title"] for m in hook.messages)
        assert titles[0] == "BROKEN bad-model (failed)"
        assert "ok-model" in titles[1]
        assert not titles[1].startswith("BROKEN")


class TestDiscovery:
    async def test_watches_unsettled_matches_and_new_models(self, tmp_path: Path) -> None:
        """Include/exclude globs pick unsettled models across pages, and new ones later."""
        scn = scenario(
            [
                {"id": "d-1", "name": "prod-classifier", "timeline": [[0, FINETUNING]]},
                {"id": "d-2", "name": "prod-old", "timeline": [[0, READY]]},
                {"id": "d-3", "name": "scratch-test", "timeline": [[0, FINETUNING]]},
                {"id": "d-4", "name": "prod-tmp-x", "timeline": [[0, QUEUED]]},
                {"id": "d-5", "name": "prod-ranker", "timeline": [[0, QUEUED]]},
            ],
            page_size_cap=2,
        )
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(
                tmp_path, sim.base_url, [], [hook.url],
                discover={"enabled": True, "include": ["prod-*"], "exclude": ["prod-tmp-*"]},
            )  # fmt: skip
            async with watcher_for(load_settings(path)) as (watcher, store):
                sim.advance(1)
                added = await watcher.discover_once()
                assert sorted(added) == [key("d-1"), key("d-5")]
                sim.add_model({"id": "d-6", "name": "prod-new", "timeline": [[0, QUEUED]]})
                assert await watcher.discover_once() == [key("d-6")]
                assert await watcher.discover_once() == []
                await poll_all(watcher)
                records = {r.state.model_id: r for r in await store.model_records()}
                assert records["d-1"].discovered
                assert records["d-1"].name == "prod-classifier"

    async def test_discovered_models_survive_a_restart(self, tmp_path: Path) -> None:
        """A discovered model that finishes while the watcher is down is still announced."""
        scn = scenario([{"id": "d-1", "name": "prod-a", "timeline": [[0, QUEUED], [100, READY]]}])
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(tmp_path, sim.base_url, [], [hook.url], discover={"enabled": True})
            async with watcher_for(load_settings(path)) as (watcher, _):
                sim.advance(1)
                assert await watcher.discover_once() == [key("d-1")]
                await poll_all(watcher)
            sim.advance(200)  # READY now: discovery alone would skip a settled model
            async with watcher_for(load_settings(path)) as (watcher, _):
                assert key("d-1") in watcher.models
                await poll_all(watcher)
                await watcher.deliver_once()
        (message,) = hook.messages
        assert message["type"] == "success"


class TestStuckWarnings:
    async def test_one_warning_per_span_and_none_after_restart(self, tmp_path: Path) -> None:
        """One warning per stuck span, one more a span later; a restart repeats none."""
        scn = scenario(
            [{"id": "s-1", "name": "slowpoke", "timeline": [[0, QUEUED], [60, FINETUNING]]}]
        )
        clock = Clock(START + timedelta(minutes=2))
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(
                tmp_path, sim.base_url, ["s-1"], [hook.url], notify={"stuck_after": "1h"}
            )
            async with watcher_for(load_settings(path), now=clock) as (watcher, _):
                sim.advance(120)
                await poll_all(watcher)
                clock.at = START + timedelta(minutes=30)
                await poll_all(watcher)
                assert (await watcher.deliver_once()).delivered == 0
                clock.at = START + timedelta(hours=1, minutes=2)  # FINETUNING since 09:01
                await poll_all(watcher)
                await poll_all(watcher)
                await watcher.deliver_once()
                assert len(hook.messages) == 1
                assert "slowpoke" in hook.messages[0]["title"]
                assert hook.messages[0]["type"] == "warning"
            async with watcher_for(load_settings(path), now=clock) as (watcher, _):
                await poll_all(watcher)
                await watcher.deliver_once()
                assert len(hook.messages) == 1
                clock.at = START + timedelta(hours=2, minutes=2)
                await poll_all(watcher)
                await watcher.deliver_once()
                assert len(hook.messages) == 2


class TestReload:
    async def test_reload_adds_removes_and_keeps_state(self, tmp_path: Path) -> None:
        """A reload watches added models, drops removed ones, and keeps pending notices."""
        scn = scenario(
            [
                {"id": "r-1", "timeline": [[0, QUEUED], [10, READY]]},
                {"id": "r-2", "timeline": [[0, QUEUED]]},
                {"id": "r-3", "timeline": [[0, QUEUED]]},
            ]
        )
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            hook.fail_with(500)
            path = settings_file(tmp_path, sim.base_url, ["r-1", "r-2"], [hook.url])
            async with watcher_for(load_settings(path)) as (watcher, store):
                sim.advance(1)
                await poll_all(watcher)
                sim.advance(20)
                await poll_all(watcher)
                await watcher.deliver_once()  # fails: stays pending
                settings_file(tmp_path, sim.base_url, ["r-1", "r-3"], [hook.url])
                added, removed = await watcher.reload(load_settings(path))
                assert (added, removed) == ([key("r-3")], [key("r-2")])
                assert set(watcher.models) == {key("r-1"), key("r-3")}
                assert (await store.outbox_counts()).pending == 1
                hook.recover()
                # The retry is scheduled after the (fixed) wall clock: make it due now.
                await store.pull_forward_retries(START)
                assert (await watcher.deliver_once()).delivered == 1
        assert len(hook.messages) == 1
        assert "r-1" in hook.messages[0]["title"] + hook.messages[0]["message"]

    def test_invalid_new_config_is_rejected_by_loading(self, tmp_path: Path) -> None:
        """An invalid file never reaches the running watcher: loading raises ConfigError."""
        path = write_config(tmp_path / "bad.yaml", {"models": ["a"], "poll": {"interval": 0}})
        with pytest.raises(ConfigError):
            load_settings(path)

    async def test_sighup_reloads_the_running_daemon(self, tmp_path: Path) -> None:
        """SIGHUP: an added model is polled, a removed one not; an invalid file changes nothing."""
        scn = scenario([{"id": m, "timeline": [[0, QUEUED]]} for m in ("h-1", "h-2", "h-3")])
        async with running_simulator(scn) as sim:
            path = settings_file(tmp_path, sim.base_url, ["h-1", "h-2"], [])

            def polls(model_id: str) -> int:
                return int(sim.stats()["by_model"].get(model_id, 0))

            async with daemon(path) as proc:
                await wait_until(lambda: polls("h-1") >= 2 and polls("h-2") >= 2, what="polls")
                settings_file(tmp_path, sim.base_url, ["h-1", "h-3"], [])
                proc.send(signal.SIGHUP)
                await wait_until(lambda: polls("h-3") >= 2, what="h-3 polled after reload")
                h2_after = polls("h-2")
                h1_now = polls("h-1")
                await wait_until(lambda: polls("h-1") >= h1_now + 4, what="more polls")
                assert polls("h-2") <= h2_after + 1  # at most one poll that was in flight

                path.write_text("models: [h-1\n")  # broken YAML
                proc.send(signal.SIGHUP)
                await wait_until(lambda: "reload rejected" in proc.log(), what="rejection")
                h3_now = polls("h-3")
                await wait_until(lambda: polls("h-3") >= h3_now + 2, what="still watching")
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit(5) == 0


# --- What a reload changes, key by key ---------------------------------------------------------

#: The settings sections of the providers: their keys reload live, except the key itself.
PROVIDER_SECTIONS = {section_name(name) for name in PROVIDER_NAMES}
PROVIDER_KEYS = {
    f"{section}.{key}"
    for section in PROVIDER_SECTIONS
    for key in getattr(Settings.model_fields[section].annotation, "model_fields", {})
}
#: Every settings key, by how a reload treats it. A new key outside the provider sections
#: fails ``test_every_key_is_classified`` until it is put in one of the two sets.
RESTART_ONLY = {
    "state.path",
    "state.url",
    "state.password_file",
    "state.lease_ttl",
    "health.listen",
    "web.token_file",
    "web.public",
    "web.max_streams",
    "openai.webhook_secret_file",
    *(f"{section}.{key}" for section in PROVIDER_SECTIONS for key in ("api_key", "api_key_file")),
}
LIVE = {
    "models",
    *(PROVIDER_KEYS - RESTART_ONLY),
    *(f"poll.{k}" for k in ("interval", "settled_interval", "concurrency", "jitter")),
    "poll.max_requests_per_minute",
    "poll.backoff_cap",
    *(f"notify.{k}" for k in ("urls", "on", "ops_urls", "give_up_after", "unreachable_after")),
    "notify.webhooks",
    "notify.routes",
    *(f"notify.{k}" for k in ("timeout", "dashboard_url", "title", "body", "templates")),
    "notify.format",
    "notify.stuck_after",
    *(f"discover.{k}" for k in ("enabled", "include", "exclude", "interval")),
}
#: Unequal to anything: the changed value of every key (the classification is pure data).
CHANGED = object()


def settings_keys() -> set[str]:
    keys = set()
    for section, field in Settings.model_fields.items():
        inner = getattr(field.annotation, "model_fields", None)
        keys |= {f"{section}.{k}" for k in inner} if inner else {section}
    return keys


def with_changed(settings: Settings, dotted: str) -> Settings:
    """``settings`` with ``dotted`` set to a new value (no validation: a pure table)."""
    if dotted == "models":
        return settings.model_copy(update={"models": []})
    section, _, key = dotted.partition(".")
    inner = getattr(settings, section).model_copy(update={key: CHANGED})
    return settings.model_copy(update={section: inner})


class TestReloadKeys:
    def test_every_key_is_classified(self) -> None:
        """Every settings key is either live or restart-only, and the code agrees on which."""
        assert settings_keys() == LIVE | RESTART_ONLY
        assert not LIVE & RESTART_ONLY
        assert set(RESTART_ONLY_KEYS) == RESTART_ONLY

    @pytest.mark.parametrize("dotted", sorted(LIVE | RESTART_ONLY))
    def test_change_of_one_key(self, tmp_path: Path, dotted: str) -> None:
        """restart_only_changes names a changed key exactly when it needs a restart."""
        old = load_settings(write_config(tmp_path / "w.yaml", {"models": ["m"]}), environ={})
        new = with_changed(old, dotted)
        assert new != old
        assert restart_only_changes(old, new) == ([dotted] if dotted in RESTART_ONLY else [])
        assert restart_only_changes(old, old) == []


def reload_settings(tmp_path: Path, base_url: str, models: list[Any], **sections: Any) -> Settings:
    config = base_config(base_url, tmp_path, models, [], max_requests_per_minute=60_000)
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return load_settings(write_config(tmp_path / "watcher.yaml", config), environ={})


class TestReloadLive:
    async def test_new_format_is_sent_as_such(self, tmp_path: Path) -> None:
        """notify.format text -> html: the next notice is rendered and sent as HTML."""
        scn = scenario([{"id": "f-1", "name": "a&b", "timeline": [[0, QUEUED], [10, READY]]}])
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            # A target that wants text: apprise converts an HTML body, and passes text as is.
            target = f"{hook.url}?format=text"
            settings = reload_settings(tmp_path, sim.base_url, ["f-1"], notify={"urls": [target]})
            async with watcher_for(settings) as (watcher, store):
                sim.advance(1)
                await poll_all(watcher)
                html = settings.notify.model_copy(update={"format": "html"})
                await watcher.reload(settings.model_copy(update={"notify": html}))
                sim.advance(20)
                await poll_all(watcher)
                (item,) = await store.due_notifications(START + timedelta(days=1))
                message = watcher.render(item)
                assert (message.body_format, "a&amp;b" in message.body) == ("html", True)
                assert (await watcher.deliver_once()).delivered == 1
        # Sent as HTML, apprise turned it into text for this target: no markup, entities decoded.
        (received,) = hook.messages
        assert "<br>" not in received["message"]
        assert "a&b" in received["message"]

    async def test_new_budget_is_enforced(self, tmp_path: Path) -> None:
        """poll.max_requests_per_minute 60000 -> 120: the pacer spaces requests 0.5 s apart."""
        scn = scenario([{"id": m, "timeline": [[0, QUEUED]]} for m in ("b-1", "b-2", "b-3")])
        async with running_simulator(scn) as sim:
            settings = reload_settings(tmp_path, sim.base_url, ["b-1", "b-2", "b-3"])
            async with watcher_for(settings) as (watcher, _):
                await poll_all(watcher)
                poll = settings.poll.model_copy(update={"max_requests_per_minute": 120})
                await watcher.reload(settings.model_copy(update={"poll": poll}))
                assert watcher.clients["cohere"].pacer.per_minute == 120
                started = anyio.current_time()
                await poll_all(watcher)
                assert anyio.current_time() - started >= 0.95  # 3 requests, 0.5 s apart
                gauge = "finetune_watcher_request_budget_per_minute"
                assert watcher.metrics.registry.get_sample_value(gauge) == 120

    async def test_new_base_url_and_timeout_are_used(self, tmp_path: Path) -> None:
        """cohere.base_url and cohere.timeout: the next poll goes to the new API, bounded anew."""
        first = scenario([{"id": "u-1", "timeline": [[0, QUEUED]]}])
        slow = {"kind": "slow", "model": "u-1", "delay": 1.0, "times": None}
        second = scenario([{"id": "u-1", "timeline": [[0, FINETUNING]]}], faults=[slow])
        async with running_simulator(first) as old, running_simulator(second) as new:
            settings = reload_settings(tmp_path, old.base_url, ["u-1"])
            async with watcher_for(settings) as (watcher, _):
                assert await poll_all_ok(watcher)
                cohere = settings.cohere.model_copy(update={"base_url": new.base_url})
                await watcher.reload(settings.model_copy(update={"cohere": cohere}))
                assert await poll_all_ok(watcher)  # slow, but within the 5 s timeout
                assert new.stats()["by_model"]["u-1"] == 1
                assert watcher.models[key("u-1")].status == FINETUNING
                quick = cohere.model_copy(update={"timeout": 0.3})
                await watcher.reload(settings.model_copy(update={"cohere": quick}))
                assert not await poll_all_ok(watcher)
                assert old.stats()["by_model"]["u-1"] == 1

    async def test_new_concurrency_is_used(self, tmp_path: Path) -> None:
        """poll.concurrency 1 -> 4 while running: four slow polls are in flight at once."""
        models = [f"c-{n}" for n in range(8)]
        slow = {"kind": "slow", "delay": 0.4, "times": None}
        scn = scenario([{"id": m, "timeline": [[0, QUEUED]]} for m in models], faults=[slow])
        async with running_simulator(scn) as sim:
            settings = reload_settings(tmp_path, sim.base_url, models, poll={"concurrency": 1})
            async with watcher_for(settings) as (watcher, _), anyio.create_task_group() as tg:
                await tg.start(lambda *, task_status: watcher.run(task_status=task_status))
                await anyio.sleep(1.0)
                before = polls(sim)
                await anyio.sleep(1.2)
                serial = polls(sim) - before
                poll = settings.poll.model_copy(update={"concurrency": 4})
                await watcher.reload(settings.model_copy(update={"poll": poll}))
                await anyio.sleep(0.5)
                before = polls(sim)
                await anyio.sleep(1.2)
                parallel = polls(sim) - before
                watcher.stop()
        assert serial <= 4
        assert parallel >= 2.5 * serial

    async def test_restart_only_keys_keep_their_value_with_one_warning(
        self, tmp_path: Path
    ) -> None:
        """state.path and health.listen changed: one warning naming both; the rest applies."""
        scn = scenario([{"id": m, "timeline": [[0, QUEUED]]} for m in ("k-1", "k-2")])
        async with running_simulator(scn) as sim:
            settings = reload_settings(tmp_path, sim.base_url, ["k-1"])
            async with watcher_for(settings) as (watcher, _):
                changed = reload_settings(
                    tmp_path, sim.base_url, ["k-1", "k-2"], health={"listen": "127.0.0.1:0"}
                )
                state = changed.state.model_copy(update={"path": tmp_path / "other.db"})
                with capture_logs() as logs:
                    await watcher.reload(changed.model_copy(update={"state": state}))
                (warning,) = [e for e in logs if e["log_level"] == "warning"]
                assert warning["keys"] == ["state.path", "health.listen"]
                assert watcher.settings.state.path == settings.state.path
                assert watcher.settings.health.listen is None
                assert set(watcher.models) == {key("k-1"), key("k-2")}


def polls(sim: RunningSimulator) -> int:
    """Event requests answered so far (polls; enrichment requests not counted)."""
    return sum(sim.stats()["by_model"].values())


async def poll_all_ok(watcher: Watcher) -> bool:
    return all([await watcher.poll_model(m) for m in list(watcher.models.values())])
