"""The Watcher in-process against the simulator: enrichment, discovery, stuck warnings, reload.

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

import pytest

from tests.conftest import SIM_KEY, base_config, daemon, wait_until, write_config
from tests.receivers import webhook_receiver
from watcher.daemon import Watcher, open_watcher
from watcher.errors import ConfigError
from watcher.lifecycle import FAILED, FINETUNING, QUEUED, READY
from watcher.settings import Settings, load_settings, resolve_api_key
from watcher.simulator import Scenario, running_simulator
from watcher.store import Store

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


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
    api_key = resolve_api_key(settings, {"CO_API_KEY": SIM_KEY})
    async with open_watcher(settings, api_key, now=now or Clock(START), rand=lambda: 0.5) as w:
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
                assert watcher.models["m-ready"].label == "support-classifier"
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
                model = watcher.models["u-1"]
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
                assert sorted(added) == ["d-1", "d-5"]
                sim.add_model({"id": "d-6", "name": "prod-new", "timeline": [[0, QUEUED]]})
                assert await watcher.discover_once() == ["d-6"]
                assert await watcher.discover_once() == []
                await poll_all(watcher)
                records = {r.state.model_id: r for r in store.model_records()}
                assert records["d-1"].discovered
                assert records["d-1"].name == "prod-classifier"

    async def test_discovered_models_survive_a_restart(self, tmp_path: Path) -> None:
        """A discovered model that finishes while the watcher is down is still announced."""
        scn = scenario([{"id": "d-1", "name": "prod-a", "timeline": [[0, QUEUED], [100, READY]]}])
        async with running_simulator(scn) as sim, webhook_receiver() as hook:
            path = settings_file(tmp_path, sim.base_url, [], [hook.url], discover={"enabled": True})
            async with watcher_for(load_settings(path)) as (watcher, _):
                sim.advance(1)
                assert await watcher.discover_once() == ["d-1"]
                await poll_all(watcher)
            sim.advance(200)  # READY now: discovery alone would skip a settled model
            async with watcher_for(load_settings(path)) as (watcher, _):
                assert "d-1" in watcher.models
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
    async def test_apply_settings_adds_removes_and_keeps_state(self, tmp_path: Path) -> None:
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
                added, removed = watcher.apply_settings(load_settings(path))
                assert (added, removed) == (["r-3"], ["r-2"])
                assert set(watcher.models) == {"r-1", "r-3"}
                assert store.outbox_counts().pending == 1
                hook.recover()
                # The retry is scheduled after the (fixed) wall clock: make it due now.
                store.pull_forward_retries(START)
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
