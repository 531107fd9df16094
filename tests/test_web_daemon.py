"""The web layer over the real daemon: a Watcher polling the simulator, its store, and
``WatcherSource`` (``/api/status`` is what ``status --json`` prints, changes stream live,
webhooks poll)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import AsyncIterator, Mapping, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from tests.conftest import SIM_KEY, base_config, wait_until, write_config
from tests.test_web import SseReader
from watcher.cli import main
from watcher.commands.status import status_command
from watcher.daemon import Watcher, serve
from watcher.errors import ConfigError
from watcher.fleet import WatchedModel
from watcher.lifecycle import ModelKey
from watcher.providers.cohere import FINETUNING, QUEUED, READY
from watcher.schedule import Schedule
from watcher.settings import ApiKey, Settings, load_settings, resolve_api_keys
from watcher.simulator import Scenario, running_simulator
from watcher.watcher_source import WatcherSource
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
async def serving(
    settings: Settings, api_keys: Mapping[str, ApiKey]
) -> AsyncIterator[tuple[Watcher, str, list[MutableMapping[str, Any]]]]:
    """``daemon.serve`` itself -- the health server with the web layer mounted, the
    ``WatcherSource`` attached, the real loops -- until the block ends; yields the Watcher,
    the base URL (from the daemon's "status page" start line) and the captured logs."""
    watchers: list[Watcher] = []
    started = anyio.Event()

    async def on_started(watcher: Watcher) -> None:
        watchers.append(watcher)
        started.set()

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(serve, settings, api_keys, handle_signals=False,
                                  on_started=on_started))  # fmt: skip
            with anyio.fail_after(15):
                await started.wait()
            (line,) = [e for e in logs if e["event"] == "status page"]
            base = str(line["url"]).rstrip("/").replace("0.0.0.0", "127.0.0.1")  # noqa: S104
            try:
                yield watchers[0], base, logs
            finally:
                watchers[0].stop()


@asynccontextmanager
async def running_daemon(
    tmp_path: Path, **sections: Any
) -> AsyncIterator[tuple[Watcher, str, Path, Any]]:
    """The simulator and the real daemon (``serve``) watching it, its status page on
    ``health.listen`` (127.0.0.1, a free port; ``sections`` add to the configuration)."""
    async with running_simulator(scenario()) as sim:
        models = [{"id": "m-ready", "name": "support-classifier"}, {"id": "m-slow"}]
        config = base_config(sim.base_url, tmp_path, models, [])
        config["health"] = {"listen": "127.0.0.1:0"}
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        path = write_config(tmp_path / "watcher.yaml", config)
        settings = load_settings(path, environ={})
        api_keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
        async with serving(settings, api_keys) as (watcher, base, _):
            yield watcher, base, path, sim


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
            await anyio.sleep(0.3)
            # The daemon runs on: a batched "polled" write (every 5 s) may fall between the
            # two reads and move last_poll_at; then read both again.
            for _ in range(3):
                api = await get_json(http, base + "/api/status")
                cli = await anyio.to_thread.run_sync(partial(status_json, path))
                for document in (api, cli):
                    document.pop("generated_at")
                if api == cli:
                    break
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
        secret_file = tmp_path / "webhook-secret"
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        scn = Scenario.model_validate(
            {"api_key": SIM_KEY, "clock": "manual",
             "models": [{"id": "ftjob-1", "provider": "openai",
                         "timeline": [[0, "queued"], [5, "running"], [20, "succeeded"]]}]}
        )  # fmt: skip
        async with running_simulator(scn) as sim:
            config = base_config(sim.base_url, tmp_path, [], [])
            config["openai"] = {"base_url": sim.provider_url("openai"), "timeout": 5,
                                "webhook_secret_file": str(secret_file)}  # fmt: skip
            config["models"] = [{"id": "ftjob-1", "provider": "openai"}]
            config["poll"] |= {"interval": 30, "settled_interval": 60}
            config["health"] = {"listen": "127.0.0.1:0"}
            settings = load_settings(write_config(tmp_path / "watcher.yaml", config), environ={})
            api_keys = resolve_api_keys(settings, {"OPENAI_API_KEY": SIM_KEY})
            key = ModelKey("openai", "ftjob-1")
            sim.advance(10)
            async with (
                serving(settings, api_keys) as (watcher, base, logs),
                aiohttp.ClientSession() as http,
            ):
                await wait_until(lambda: watcher.models[key].status == "running", what="running")
                (line,) = [e for e in logs if e["event"] == "status page"]
                assert "POST /webhooks/openai verifies signatures" in line["rule"]
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
                async with http.post(base + "/webhooks/openai", data=body, headers=headers) as a:
                    assert a.status == 200
                await wait_until(
                    lambda: watcher.models[key].status == "succeeded", timeout=5.0,
                    what="succeeded after the webhook",
                )  # fmt: skip
                latency = time.monotonic() - started
                print(f"webhook -> status recorded: {latency * 1000:.0f} ms")
                assert latency < 1.5
                assert secret not in json.dumps(logs, default=str)


def model_at(key: ModelKey) -> WatchedModel:
    return WatchedModel(key, name=None, targets=(), state=None)


class TestPollSoon:
    """``Watcher.poll_soon`` / ``Schedule.soon``: a webhook's hint is never lost."""

    async def test_an_idle_model_is_due_now(self) -> None:
        key = ModelKey("cohere", "m")
        model = model_at(key)
        schedule = Schedule({key: model})
        schedule.after(model, 3600)
        schedule.soon(model)
        with anyio.fail_after(1):
            assert await schedule.next_due() is model

    async def test_a_model_in_flight_is_polled_once_more_right_after(self) -> None:
        key = ModelKey("cohere", "m")
        model = model_at(key)
        schedule = Schedule({key: model})
        schedule.after(model, 0)
        assert await schedule.next_due() is model  # taken: in flight
        schedule.soon(model)
        assert model.poll_again
        with anyio.move_on_after(0.2) as waited:  # never a second poll while in flight
            await schedule.next_due()
        assert waited.cancelled_caught
        schedule.after(model, 3600)  # what the ending poll plans ...
        schedule.release(model)  # ... is replaced: once more, now
        assert not model.poll_again
        with anyio.fail_after(1):
            assert await schedule.next_due() is model

    async def test_a_model_removed_meanwhile_is_not_revived(self) -> None:
        key = ModelKey("cohere", "m")
        model = model_at(key)
        models = {key: model}
        schedule = Schedule(models)
        schedule.after(model, 0)
        await schedule.next_due()
        schedule.soon(model)
        del models[key]  # a reload removed it while it was polled
        schedule.release(model)
        assert len([e for e in schedule._heap if e[3] == model.token]) == 0

    async def test_the_watcher_answers_for_watched_models_only(self, tmp_path: Path) -> None:
        async with running_daemon(tmp_path) as (watcher, _, _, _):
            assert watcher.poll_soon(ModelKey("cohere", "m-slow")) is True
            assert watcher.poll_soon(ModelKey("cohere", "unknown")) is False
            assert watcher.poll_soon(ModelKey("openai", "m-slow")) is False


class TestServedByTheDaemon:
    """``serve`` mounts the web layer on ``health.listen`` and says who may read it."""

    async def test_loopback_is_open(self, tmp_path: Path) -> None:
        """On loopback the page, the API and the assets are open, next to the probes."""
        async with (
            running_daemon(tmp_path) as (_, base, _, _),
            aiohttp.ClientSession() as http,
        ):
            for path in (
                "/",
                "/api/status",
                "/models/cohere/m-slow",
                "/healthz",
                "/static/icon.svg",
            ):
                async with http.get(base + path) as answer:
                    assert answer.status == 200, path

    async def test_token_required_off_loopback(self, tmp_path: Path) -> None:
        """Beyond loopback the page and /api/* need the token; the probes stay open."""
        token = "0123456789abcdef0123456789abcdef"  # noqa: S105 -- a test's token
        token_file = tmp_path / "web-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        async with running_simulator(scenario()) as sim:
            config = base_config(sim.base_url, tmp_path, ["m-slow"], [])
            config["health"] = {"listen": "0.0.0.0:0"}
            config["web"] = {"token_file": str(token_file)}
            settings = load_settings(write_config(tmp_path / "w.yaml", config), environ={})
            api_keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
            async with (
                serving(settings, api_keys) as (_, base, logs),
                aiohttp.ClientSession() as http,
            ):
                (line,) = [e for e in logs if e["event"] == "status page"]
                assert (line["access"], line["log_level"]) == ("token", "info")
                assert "requires the token" in line["rule"]
                for path in ("/", "/api/status", "/api/stream", "/models/cohere/m-slow"):
                    async with http.get(base + path) as answer:
                        assert answer.status == 401, path
                bearer = {"Authorization": f"Bearer {token}"}
                async with http.get(base + "/api/status", headers=bearer) as answer:
                    assert answer.status == 200
                    assert [m["id"] for m in (await answer.json())["models"]] == ["m-slow"]
                for path in ("/healthz", "/metrics"):
                    async with http.get(base + path) as answer:
                        assert answer.status == 200, path
                assert token not in json.dumps(logs, default=str)

    async def test_beyond_loopback_without_token_is_locked(self, tmp_path: Path) -> None:
        async with running_simulator(scenario()) as sim:
            config = base_config(sim.base_url, tmp_path, ["m-slow"], [])
            config["health"] = {"listen": "0.0.0.0:0"}
            settings = load_settings(write_config(tmp_path / "w.yaml", config), environ={})
            api_keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
            async with (
                serving(settings, api_keys) as (_, base, logs),
                aiohttp.ClientSession() as http,
            ):
                (line,) = [e for e in logs if e["event"] == "status page"]
                assert (line["access"], line["log_level"]) == ("locked", "warning")
                async with http.get(base + "/api/status") as answer:
                    assert answer.status == 403
                async with http.get(base + "/healthz") as answer:
                    assert answer.status == 200

    async def test_a_bad_token_file_fails_before_anything_listens(self, tmp_path: Path) -> None:
        token_file = tmp_path / "web-token"
        token_file.write_text("short\n")
        token_file.chmod(0o600)
        config = base_config("http://127.0.0.1:9", tmp_path, ["m"], [])
        config["health"] = {"listen": "127.0.0.1:0"}
        config["web"] = {"token_file": str(token_file)}
        settings = load_settings(write_config(tmp_path / "w.yaml", config), environ={})
        api_keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
        with capture_logs() as logs, pytest.raises(ConfigError, match="at least 16"):
            await serve(settings, api_keys, handle_signals=False)
        assert not [e for e in logs if e["event"] == "health server listening"]

    async def test_streams_stay_below_the_connection_limit(self, tmp_path: Path) -> None:
        """web.max_streams above the health server's connection cap is lowered (and said so):
        open streams can never lock out the probes."""
        async with running_simulator(scenario()) as sim:
            config = base_config(sim.base_url, tmp_path, ["m-slow"], [])
            config["health"] = {"listen": "127.0.0.1:0"}
            config["web"] = {"max_streams": 10_000}
            settings = load_settings(write_config(tmp_path / "w.yaml", config), environ={})
            api_keys = resolve_api_keys(settings, {"CO_API_KEY": SIM_KEY})
            async with serving(settings, api_keys) as (_, _, logs):
                (line,) = [e for e in logs if e["event"].startswith("web.max_streams lowered")]
                assert line["max_streams"] == line["connection_limit"] - 16


class TestCheckConfig:
    @pytest.mark.parametrize(
        ("health", "web", "says"),
        [
            ({}, {}, "status page: off (health.listen is unset)"),
            ({"listen": "127.0.0.1:9464"}, {}, "status page: open (listening on loopback only)"),
            ({"listen": "0.0.0.0:9464"}, {}, "status page: disabled: health.listen is beyond"),
            ({"listen": "0.0.0.0:9464"}, {"public": True}, "status page: open to anyone"),
        ],
    )
    def test_says_who_may_read_the_page(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        health: dict[str, Any],
        web: dict[str, Any],
        says: str,
    ) -> None:
        config = {"models": ["m"], "health": health, "web": web,
                  "state": {"path": str(tmp_path / "w.db")}}  # fmt: skip
        path = write_config(tmp_path / "w.yaml", config)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CO_API_KEY", SIM_KEY)
            env.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
            assert main(["check-config", "-c", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"  {says}" in out
