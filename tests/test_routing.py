"""Routing (issue 13, item 5): different outcomes to different places, globally and per model.

A real configuration file, a real Watcher against the simulator, real apprise deliveries
to ``json://`` receivers on loopback (``tests/receivers.py``): a READY goes only to the
route of ready, a FAILED only to the route of failed; a model's own route adds a target
for that model only; a URL in both ``notify.urls`` and a route gets one copy; routes
reload live; configurations without routes behave as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIM_KEY, write_config
from tests.receivers import WebhookReceiver, webhook_receiver
from watcher.daemon import Watcher, open_watcher
from watcher.errors import ConfigError
from watcher.providers.cohere import FAILED, FINETUNING, PAUSED, QUEUED, READY
from watcher.redact import SECRETS
from watcher.settings import load_settings, register_secrets, resolve_api_keys, summary_lines
from watcher.simulator import RunningSimulator, Scenario, running_simulator

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
READY_ID, FAILED_ID, OTHER_READY_ID, PAUSED_ID = "m-ready", "m-failed", "m-ready-2", "m-paused"


def scenario() -> Scenario:
    def model(model_id: str, outcome: str) -> dict[str, Any]:
        return {"id": model_id, "name": model_id,
                "timeline": [[0, QUEUED], [5, FINETUNING], [60, outcome]]}  # fmt: skip

    return Scenario.model_validate(
        {
            "api_key": SIM_KEY,
            "clock": "manual",
            "start": START.isoformat(),
            "models": [
                model(READY_ID, READY),
                model(FAILED_ID, FAILED),
                model(OTHER_READY_ID, READY),
                model(PAUSED_ID, PAUSED),
            ],
        }
    )


def config(
    tmp_path: Path, sim: RunningSimulator, notify: dict[str, Any], models: list[Any]
) -> Path:
    return write_config(
        tmp_path / "watcher.yaml",
        {
            "cohere": {"base_url": sim.base_url, "timeout": 5},
            "state": {"path": str(tmp_path / "state.db")},
            "notify": {"timeout": 5, **notify},
            "models": models,
        },
    )


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.at = moment

    def __call__(self) -> datetime:
        return self.at


@asynccontextmanager
async def watching(path: Path) -> AsyncIterator[Watcher]:
    settings = load_settings(path)
    keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
    async with open_watcher(settings, keys, now=Clock(START), rand=lambda: 0.5) as watcher:
        yield watcher


async def run_to_outcomes(watcher: Watcher, sim: RunningSimulator) -> None:
    """Every model seen training, then at its outcome; everything due delivered."""
    sim.advance(10)
    for model in list(watcher.models.values()):
        await watcher.poll_model(model)
    sim.advance(60)
    for model in list(watcher.models.values()):
        await watcher.poll_model(model)
    await watcher.deliver_once()


def models_in(hook: WebhookReceiver) -> list[str]:
    """Which models' notices a receiver got (the default title names the model)."""
    found: list[str] = []
    for message in hook.messages:
        text = message["title"]
        found.extend(m for m in (READY_ID, FAILED_ID, OTHER_READY_ID, PAUSED_ID)
                     if text.startswith(f"✅ {m} ") or text.startswith(f"❌ {m} ")
                     or text.startswith(f"{m}:"))  # fmt: skip
    return sorted(found)


async def test_ready_and_failed_go_each_to_their_own_route(tmp_path: Path) -> None:
    """notify.routes: a READY only to the ready receiver, a FAILED only to the failed one."""
    async with (
        running_simulator(scenario()) as sim,
        webhook_receiver() as ready_hook,
        webhook_receiver() as failed_hook,
    ):
        path = config(tmp_path, sim, {"routes": [
            {"on": ["failed"], "urls": [failed_hook.url]},
            {"on": ["ready"], "urls": [ready_hook.url]},
        ]}, [READY_ID, FAILED_ID])  # fmt: skip
        async with watching(path) as watcher:
            await run_to_outcomes(watcher, sim)
    assert models_in(ready_hook) == [READY_ID]
    assert models_in(failed_hook) == [FAILED_ID]
    assert ready_hook.messages[0]["type"] == "success"
    assert failed_hook.messages[0]["type"] == "failure"


async def test_a_model_route_adds_a_target_for_that_model_only(tmp_path: Path) -> None:
    """A route under a model reaches that model's notices only; notify.urls gets all."""
    async with (
        running_simulator(scenario()) as sim,
        webhook_receiver() as everyone,
        webhook_receiver() as team,
    ):
        models = [
            {"id": READY_ID, "routes": [{"on": ["ready"], "urls": [team.url]}]},
            OTHER_READY_ID,
            {"id": FAILED_ID, "routes": [{"on": ["ready"], "urls": [team.url]}]},
        ]
        path = config(tmp_path, sim, {"urls": [everyone.url]}, models)
        async with watching(path) as watcher:
            await run_to_outcomes(watcher, sim)
    assert models_in(everyone) == [FAILED_ID, READY_ID, OTHER_READY_ID]
    # FAILED_ID's route names ready only: its failure does not reach the team.
    assert models_in(team) == [READY_ID]


async def test_one_send_per_target_when_a_url_is_in_urls_and_routes(tmp_path: Path) -> None:
    """The same URL in notify.urls, a global route and the model's route: one copy."""
    async with running_simulator(scenario()) as sim, webhook_receiver() as hook:
        models = [{"id": READY_ID, "urls": [hook.url],
                   "routes": [{"on": ["ready", "failed"], "urls": [hook.url]}]}]  # fmt: skip
        notify = {"urls": [hook.url], "routes": [{"on": ["ready"], "urls": [f" {hook.url}"]}]}
        path = config(tmp_path, sim, notify, models)
        async with watching(path) as watcher:
            await run_to_outcomes(watcher, sim)
            await watcher.deliver_once()
    assert models_in(hook) == [READY_ID]
    assert len(hook.requests) == 1


async def test_a_route_may_name_a_status_notify_on_leaves_out(tmp_path: Path) -> None:
    """notify.on [ready]; a route on paused (a provider status) gets the pause, and
    notify.urls does not."""
    async with (
        running_simulator(scenario()) as sim,
        webhook_receiver() as everyone,
        webhook_receiver() as me,
    ):
        notify = {"urls": [everyone.url], "on": ["ready"],
                  "routes": [{"on": ["paused"], "urls": [me.url]}]}  # fmt: skip
        path = config(tmp_path, sim, notify, [READY_ID, FAILED_ID, PAUSED_ID])
        async with watching(path) as watcher:
            await run_to_outcomes(watcher, sim)
    assert models_in(everyone) == [READY_ID]  # no failure (not in notify.on), no pause
    assert models_in(me) == [PAUSED_ID]


async def test_provider_statuses_work_in_a_route(tmp_path: Path) -> None:
    """A route's on takes a provider's own status (Cohere's STATUS_FAILED, or FAILED)."""
    async with running_simulator(scenario()) as sim, webhook_receiver() as hook:
        path = config(tmp_path, sim, {"routes": [{"on": ["FAILED"], "urls": [hook.url]}]},
                      [READY_ID, FAILED_ID])  # fmt: skip
        async with watching(path) as watcher:
            await run_to_outcomes(watcher, sim)
    assert models_in(hook) == [FAILED_ID]


async def test_without_routes_notify_urls_get_every_notice_as_before(tmp_path: Path) -> None:
    async with running_simulator(scenario()) as sim, webhook_receiver() as hook:
        path = config(tmp_path, sim, {"urls": [hook.url]}, [READY_ID, FAILED_ID, PAUSED_ID])
        async with watching(path) as watcher:
            await run_to_outcomes(watcher, sim)
    assert models_in(hook) == [FAILED_ID, READY_ID]  # notify.on's default: ready, failed


async def test_routes_reload_live(tmp_path: Path) -> None:
    """A reload that moves ready from one receiver to another: the next READY follows it."""
    async with (
        running_simulator(scenario()) as sim,
        webhook_receiver() as before,
        webhook_receiver() as after,
    ):
        path = config(tmp_path, sim, {"routes": [{"on": ["ready"], "urls": [before.url]}]},
                      [READY_ID, FAILED_ID])  # fmt: skip
        async with watching(path) as watcher:
            sim.advance(10)
            for model in list(watcher.models.values()):
                await watcher.poll_model(model)
            config(tmp_path, sim, {"routes": [
                {"on": ["ready"], "urls": [after.url]},
                {"on": ["failed"], "urls": [after.url]},
            ]}, [READY_ID, FAILED_ID])  # fmt: skip
            await watcher.reload(load_settings(path))
            sim.advance(60)
            for model in list(watcher.models.values()):
                await watcher.poll_model(model)
            await watcher.deliver_once()
    assert models_in(before) == []
    assert models_in(after) == [FAILED_ID, READY_ID]


async def test_webhooks_in_routes_get_the_document(tmp_path: Path) -> None:
    """A route's webhooks: the JSON document of the notices it names, nothing else."""
    async with running_simulator(scenario()) as sim, webhook_receiver() as hook:
        notify = {"routes": [{"on": ["failed"], "webhooks": [hook.http_url]}]}
        path = config(tmp_path, sim, notify, [READY_ID, FAILED_ID])
        async with watching(path) as watcher:
            await run_to_outcomes(watcher, sim)
    (document,) = hook.messages
    assert (document["kind"], document["model_id"], document["status"]) == (
        "finetune-watcher.notice", FAILED_ID, "failed",
    )  # fmt: skip


# --- Configuration --------------------------------------------------------------------------


def write(tmp_path: Path, notify: dict[str, Any], models: list[Any] | None = None) -> Path:
    return write_config(
        tmp_path / "watcher.yaml",
        {"state": {"path": str(tmp_path / "w.db")}, "notify": notify,
         "models": models or ["m-1"]},
    )  # fmt: skip


def test_route_words_are_notify_on_words(tmp_path: Path) -> None:
    notify = {"routes": [{"on": ["failed", "STATUS_PAUSED"], "urls": ["json://127.0.0.1:9/a"]}]}
    models = [{"id": "m-1", "routes": [{"on": ["ready"], "urls": ["json://127.0.0.1:9/b"]}]}]
    settings = load_settings(write(tmp_path, notify, models))
    assert settings.notify.routes[0].on == ["failed", "STATUS_PAUSED"]
    assert settings.models[0].routes[0].on == ["ready"]


@pytest.mark.parametrize(
    ("route", "where", "says"),
    [
        ({"on": ["redy"], "urls": ["json://127.0.0.1:9/a"]}, "notify.routes.0.on.0", "unknown"),
        ({"on": [], "urls": ["json://127.0.0.1:9/a"]}, "notify.routes.0.on", "empty"),
        ({"urls": ["json://127.0.0.1:9/a"]}, "notify.routes.0.on", "required"),
        ({"on": ["ready"]}, "notify.routes.0", "needs urls or webhooks"),
        ({"on": ["ready"], "urls": ["nope://secret-in-url-77"]}, "notify.routes.0.urls.0",
         "apprise"),
        ({"on": ["ready"], "url": ["json://127.0.0.1:9/a"]}, "notify.routes.0.url", "unknown key"),
    ],
)  # fmt: skip
def test_a_bad_route_is_named(tmp_path: Path, route: dict[str, Any], where: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, {"routes": [route]}))
    text = str(info.value)
    assert where in text
    assert says in text
    assert "secret-in-url-77" not in text


def test_route_and_webhook_urls_are_registered_as_secrets(tmp_path: Path) -> None:
    """Tokens in route URLs (global and per model) and webhooks are scrubbed like others."""
    settings = load_settings(write(
        tmp_path,
        {"routes": [{"on": ["failed"], "urls": ["json://user:route-pass-1234@127.0.0.1:9/a"],
                     "webhooks": ["https://ci.example.com/h?token=hook-token-5678"]}],
         "webhooks": ["https://u:global-hook-pass-99@ci.example.com/x"]},
        [{"id": "m-1", "routes": [{"on": ["ready"],
                                   "urls": ["json://u:model-route-pass-4321@127.0.0.1:9/b"]}]}],
    ))  # fmt: skip
    register_secrets(settings, None, {})
    text = SECRETS.scrub(
        "route-pass-1234 hook-token-5678 global-hook-pass-99 model-route-pass-4321"
    )
    for secret in ("route-pass-1234", "hook-token-5678", "global-hook-pass-99",
                   "model-route-pass-4321"):  # fmt: skip
        assert secret not in text
    summary = "\n".join(summary_lines(settings, None))
    assert "route on failed" in summary
    assert "route of m-1 on ready" in summary
    for secret in ("route-pass-1234", "hook-token-5678", "model-route-pass-4321"):
        assert secret not in summary
