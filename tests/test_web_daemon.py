"""The web layer over the real daemon: a Watcher polling the simulator, its store, and
``WatcherSource`` (``/api/status`` is what ``status --json`` prints, changes stream live,
webhooks poll)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

from tests.conftest import SIM_KEY, base_config, wait_until, write_config
from tests.test_web import SseReader
from watcher.commands.status import status_command
from watcher.daemon import Watcher, open_watcher
from watcher.lifecycle import ModelKey
from watcher.providers.cohere import FINETUNING, QUEUED, READY
from watcher.settings import load_settings, resolve_api_keys
from watcher.simulator import Scenario, running_simulator
from watcher.watcher_source import WatcherSource
from watcher.web import WebOptions, make_app
from watcher.web.source import SourceUnavailable


def scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "api_key": SIM_KEY,
            "clock": "manual",
            "models": [
                {"id": "m-ready", "name": "support-classifier",
                 "timeline": [[0, QUEUED], [5, FINETUNING], [60, READY]]},
                {"id": "m-slow", "name": "slow-one", "timeline": [[0, QUEUED], [5, FINETUNING]]},
            ],
        }
    )  # fmt: skip


@asynccontextmanager
async def running_daemon(tmp_path: Path) -> AsyncIterator[tuple[Watcher, str, Path, Any]]:
    """The simulator, a running Watcher (its real loops) and the web layer over it."""
    async with running_simulator(scenario()) as sim:
        models = [{"id": "m-ready", "name": "support-classifier"}, {"id": "m-slow"}]
        config = base_config(sim.base_url, tmp_path, models, [])
        path = write_config(tmp_path / "watcher.yaml", config)
        settings = load_settings(path)
        api_keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
        async with open_watcher(settings, api_keys) as watcher, anyio.create_task_group() as tg:
            await tg.start(watcher.run)
            started = anyio.current_time()
            source = WatcherSource(watcher, listening_since=lambda: started)
            server = TestServer(make_app(source, WebOptions(listen_host="127.0.0.1")), port=0)
            await server.start_server()
            try:
                yield watcher, str(server.make_url("")).rstrip("/"), path, sim
            finally:
                await server.close()
                watcher.stop()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as answer:
        assert answer.status == 200
        return await answer.json()


def status_json(path: Path) -> dict[str, Any]:
    out = io.StringIO()
    status_command(path, as_json=True, out=out)
    return dict(json.loads(out.getvalue()))


class TestAgainstTheDaemon:
    async def test_api_status_is_what_status_json_prints(self, tmp_path: Path) -> None:
        """/api/status and ``status --json`` agree on every field but the time of reading."""
        async with (
            running_daemon(tmp_path) as (watcher, base, path, sim),
            aiohttp.ClientSession() as http,
        ):
            sim.advance(10)
            await wait_until(lambda: all(m.status == FINETUNING for m in watcher.models.values()),
                             what="both models FINETUNING")  # fmt: skip
            watcher.stop()  # nothing changes between the two reads
            await anyio.sleep(0.3)
            api = await get_json(http, base + "/api/status")
            cli = await anyio.to_thread.run_sync(partial(status_json, path))
        for document in (api, cli):
            document.pop("generated_at")
        assert api == cli
        assert sorted(m["id"] for m in api["models"]) == ["m-ready", "m-slow"]

    async def test_page_lists_models_and_streams_a_change(self, tmp_path: Path) -> None:
        """The page lists every model; READY reaches an open stream about a second later."""
        async with (
            running_daemon(tmp_path) as (watcher, base, _, sim),
            aiohttp.ClientSession() as http,
        ):
            sim.advance(10)
            await wait_until(lambda: all(m.status == FINETUNING for m in watcher.models.values()),
                             what="both models FINETUNING")  # fmt: skip
            async with http.get(base + "/") as answer:
                page = await answer.text()
            assert "support-classifier" in page
            assert "m-slow" in page
            assert '<span class="word">running</span>' in page  # phase from Cohere's scheme
            async with http.get(base + "/api/stream") as stream:
                reader = SseReader(stream)
                phases = await reader.next_of("phases")
                assert phases["cohere"][READY] == "ready"
                await reader.next_of("status")
                sim.advance(60)
                started = time.monotonic()
                while True:
                    document = await reader.next_of("status", timeout=3.0)
                    statuses = {m["id"]: m["status"] for m in document["models"]}
                    if statuses["m-ready"] == READY:
                        break
                # poll interval 0.2 s + the round's bump: well under a second.
                assert time.monotonic() - started < 1.5
            model = await get_json(http, base + "/api/models/cohere/m-ready")
            assert model["model"]["status"] == READY
            assert model["timeline"][-1]["phase"] == "ready"

    async def test_request_poll_knows_watched_models(self, tmp_path: Path) -> None:
        """A webhook's hint polls a watched model; an unknown one is refused; facts read."""
        async with running_daemon(tmp_path) as (watcher, _, _, _):
            started = anyio.current_time()
            source = WatcherSource(watcher, listening_since=lambda: started)
            assert await source.request_poll("cohere", "m-slow") is True
            assert await source.request_poll("cohere", "unknown") is False
            assert await source.request_poll("openai", "m-slow") is False
            facts = await source.daemon_facts()
            assert facts.alive
            assert facts.role is None


class TestStarting:
    async def test_before_the_watcher_exists(self, tmp_path: Path) -> None:
        """Built before the store is open, the source says so, then follows ``attach``."""
        async with running_daemon(tmp_path) as (watcher, _, _, _):
            source = WatcherSource(None, listening_since=lambda: 0.0)
            with pytest.raises(SourceUnavailable, match="state database"):
                await source.status_document()
            facts = await source.daemon_facts()
            assert (facts.alive, facts.ready) == (True, False)
            assert await source.request_poll("cohere", "m-slow") is False
            attached = source.changed()
            assert not attached.is_set()
            source.attach(watcher)
            assert attached.is_set()
            assert len((await source.status_document())["models"]) == 2
            assert source.changed() is watcher.progress.changed


class TestWebhookDetection:
    async def test_signed_webhook_beats_the_poll_interval(self, tmp_path: Path) -> None:
        """With a 30 s poll interval, a signed ``fine_tuning.job.succeeded`` webhook makes the
        daemon see the new status in about a second (the API is still the truth)."""
        secret = "whsec_" + base64.b64encode(b"integration-secret-0123456789ab").decode()
        scn = Scenario.model_validate(
            {"api_key": SIM_KEY, "clock": "manual",
             "models": [{"id": "ftjob-1", "provider": "openai",
                         "timeline": [[0, "queued"], [5, "running"], [20, "succeeded"]]}]}
        )  # fmt: skip
        async with running_simulator(scn) as sim:
            config = base_config(sim.base_url, tmp_path, [], [])
            config["openai"] = {"base_url": sim.provider_url("openai"), "timeout": 5}
            config["models"] = [{"id": "ftjob-1", "provider": "openai"}]
            config["poll"] |= {"interval": 30, "settled_interval": 60}
            settings = load_settings(write_config(tmp_path / "watcher.yaml", config))
            api_keys = resolve_api_keys(settings, {"OPENAI_API_KEY": SIM_KEY})
            key = ModelKey("openai", "ftjob-1")
            async with (
                open_watcher(settings, api_keys) as watcher,
                anyio.create_task_group() as tg,
                aiohttp.ClientSession() as http,
            ):
                sim.advance(10)
                await tg.start(watcher.run)
                await wait_until(lambda: watcher.models[key].status == "running", what="running")
                started_at = anyio.current_time()
                source = WatcherSource(watcher, listening_since=lambda: started_at)
                options = WebOptions(listen_host="127.0.0.1", webhook_secret=secret)
                server = TestServer(make_app(source, options), port=0)
                await server.start_server()
                try:
                    sim.advance(20)  # succeeded at the API; the next poll is ~30 s away
                    body = json.dumps(
                        {"id": "evt_1", "object": "event", "created_at": 0,
                         "type": "fine_tuning.job.succeeded", "data": {"id": "ftjob-1"}}
                    )  # fmt: skip
                    at = datetime.now(UTC)
                    headers = {
                        "webhook-id": "wh_int_1",
                        "webhook-timestamp": str(int(at.timestamp())),
                        "webhook-signature": Webhook(secret).sign("wh_int_1", at, body),
                        "Content-Type": "application/json",
                    }
                    started = time.monotonic()
                    async with http.post(
                        server.make_url("/webhooks/openai"), data=body, headers=headers
                    ) as answer:
                        assert answer.status == 200
                    await wait_until(
                        lambda: watcher.models[key].status == "succeeded", timeout=5.0,
                        what="succeeded after the webhook",
                    )  # fmt: skip
                    latency = time.monotonic() - started
                    print(f"webhook -> status recorded: {latency * 1000:.0f} ms")
                    assert latency < 1.5
                finally:
                    await server.close()
                    watcher.stop()
