"""Fault behaviour: what the watcher does when the API, a target, the state or the clock misbehave.

Each test is one row of ``docs/reliability.md``. Two kinds of test live here:

* in-process: a real ``Watcher`` built the way ``serve()`` builds it (real ``Store`` on a
  SQLite file, real ``CohereClient`` over aiohttp, real ``Notifier`` through apprise, a
  real ``RequestPacer``) against the simulator and webhook receivers on loopback. The
  tests call ``poll_model`` / ``deliver_once`` themselves and inject the wall clock
  (``now=``) and the randomness (``rand=``), so time is driven exactly;
* subprocess: ``finetune-watcher run`` as a real process with real signals.

Nothing sleeps for a fixed time: tests wait on conditions (a poll counted by the
simulator, a message accepted by a receiver, a line in the log).
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import anyio
import pytest
import structlog
from pydantic import SecretStr

from tests.conftest import (
    ROOT,
    SIM_KEY,
    base_config,
    cli_env,
    daemon,
    run_cli,
    wait_until,
    write_config,
)
from tests.receivers import WebhookReceiver, free_port, refused_url, webhook_receiver
from watcher.daemon import WatchedModel, Watcher
from watcher.daemon import open_watcher as open_daemon_watcher
from watcher.errors import EX_CONFIG, EX_LOCKED, EX_STATE
from watcher.lifecycle import ModelKey
from watcher.outbox import MIN_ATTEMPTS
from watcher.pacing import RequestPacer
from watcher.providers.cohere import FAILED, FINETUNING, QUEUED, READY
from watcher.settings import ApiKey, Settings, load_settings
from watcher.simulator import RunningSimulator, Scenario, running_simulator
from watcher.store import ModelRecord, OutboxItem, Store
from watcher.store.sqlite import SCHEMA_VERSION, SqliteStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRAINING = "c0ffee00-training"  # FINETUNING for ever
FINISHING = "4f9d0c1e-finishing"  # READY at sim t=10
FAILING = "8a2b7e55-failing"  # FAILED at sim t=10
FAST_BUDGET = 60_000  # requests/min: 1 ms apart, so the pacer never slows in-process tests


def timeline(outcome: str | None = None, at: float = 10) -> list[list[Any]]:
    steps: list[list[Any]] = [[0, QUEUED], [1, FINETUNING]]
    if outcome is not None:
        steps.append([at, outcome])
    return steps


def scenario(*, faults: Sequence[dict[str, Any]] = (), **overrides: Any) -> Scenario:
    """Three models on a manual clock: one trains for ever, one becomes READY, one FAILS."""
    data: dict[str, Any] = {
        "api_key": SIM_KEY,
        "clock": "manual",
        "start": T0.isoformat(),
        "models": [
            {"id": TRAINING, "timeline": timeline()},
            {"id": FINISHING, "timeline": timeline(READY)},
            {"id": FAILING, "timeline": timeline(FAILED)},
        ],
        "faults": list(faults),
    }
    data.update(overrides)
    return Scenario.model_validate(data)


class Wall:
    """An injectable wall clock: fixed unless moved, or following real time with an offset."""

    def __init__(self, start: datetime | None = T0) -> None:
        self._fixed = start
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        base = self._fixed if self._fixed is not None else datetime.now(UTC)
        return base + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Rig:
    """A real Watcher wired like ``serve()`` does, and what the tests poke at."""

    watcher: Watcher
    store: Store
    pacer: RequestPacer
    settings: Settings

    def model(self, model_id: str) -> WatchedModel:
        return self.watcher.models[ModelKey("cohere", model_id)]

    async def poll(self, model_id: str) -> bool:
        return await self.watcher.poll_model(self.model(model_id))

    async def record(self, model_id: str) -> ModelRecord:
        records = await self.store.model_records()
        (record,) = [r for r in records if r.state.model_id == model_id]
        return record

    async def outbox(self) -> list[OutboxItem]:
        """Every pending outbox item, whenever it is due."""
        return await self.store.due_notifications(datetime(9999, 1, 1, tzinfo=UTC))


def settings_for(
    tmp_path: Path,
    base_url: str,
    models: list[Any],
    urls: list[str],
    *,
    poll: dict[str, Any] | None = None,
    notify: dict[str, Any] | None = None,
    cohere: dict[str, Any] | None = None,
) -> Settings:
    config = base_config(
        base_url, tmp_path, models, urls, **{"max_requests_per_minute": FAST_BUDGET, **(poll or {})}
    )
    config["notify"].update(notify or {})
    config["cohere"].update(cohere or {})
    return load_settings(write_config(tmp_path / "watcher.yaml", config), environ={})


@asynccontextmanager
async def open_watcher(
    settings: Settings,
    *,
    now: Callable[[], datetime] | None = None,
    rand: Callable[[], float] = lambda: 0.5,
) -> AsyncIterator[Rig]:
    """The resources ``serve()`` opens, through the same ``open_watcher``."""
    api_keys = {"cohere": ApiKey(SecretStr(SIM_KEY), "$CO_API_KEY")}
    async with open_daemon_watcher(settings, api_keys, now=now or Wall(), rand=rand) as watcher:
        yield Rig(watcher, watcher.store, watcher.clients["cohere"].pacer, settings)


@asynccontextmanager
async def running(watcher: Watcher) -> AsyncIterator[None]:
    """``watcher.run()`` in the background for the duration of the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(lambda *, task_status: watcher.run(task_status=task_status))
        try:
            yield
        finally:
            watcher.stop()


async def eventually(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 15.0, what: str = "condition"
) -> None:
    """``wait_until`` for a predicate that awaits (a store query)."""
    with anyio.move_on_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@asynccontextmanager
async def state_readonly(path: Path) -> AsyncIterator[Store]:
    """The state file as ``status`` reads it, while a daemon runs."""
    store = await SqliteStore.open_readonly(path)
    try:
        yield store
    finally:
        await store.aclose()


async def create_state(path: Path, *, failed_models: int = 0) -> None:
    """A real state file at ``path``, with ``failed_models`` rows of failed polls; closed."""
    store = await SqliteStore.open(path)
    try:
        for i in range(failed_models):
            model = ModelKey("cohere", f"m{i}")
            await store.record_poll_failure(model, polled_at=T0, error="x" * 200, failures=1)
    finally:
        await store.aclose()


def events_named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def polls_of(sim: RunningSimulator, model_id: str) -> int:
    return int(sim.stats()["by_model"].get(model_id, 0))


def status_count(sim: RunningSimulator, code: int) -> int:
    return int(sim.stats()["by_status_code"].get(str(code), 0))


def titles(hook: WebhookReceiver) -> list[str]:
    return [str(m["title"]) for m in hook.messages]


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a daemon (anything else, e.g. a crash, is kept as text)."""
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"message": raw, "unparsed": True})
    return lines


def logged(text: str, event: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(text) if line.get("message") == event]


def failed_models(text: str) -> set[str]:
    """The models a daemon's log says it backed off from."""
    return {line["model_id"] for line in logged(text, "poll failed; backing off")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- The Cohere side --------------------------------------------------------------------


class TestRetries:
    # fault kind -> (extra fault fields, text the stored error contains)
    KINDS: ClassVar[dict[str, tuple[dict[str, Any], str]]] = {
        "http_500": ({"times": 4}, "HTTP 500"),
        "http_503": ({"times": 4}, "HTTP 503"),
        "slow": ({"times": 4, "delay": 1.0}, "no answer within 0.3s"),
        # aiohttp itself retries a GET once when a pooled connection is reset.
        "reset_connection": ({"times": 8}, "ClientOSError"),
        "malformed_json": ({"times": 4}, "not valid JSON"),
    }

    @pytest.mark.parametrize("kind", list(KINDS))
    async def test_failures_back_off_are_stored_and_reset_on_success(
        self, tmp_path: Path, kind: str
    ) -> None:
        """4 failed polls back off exponentially up to the cap, are counted in the model's record
        and logged; a success resets them."""
        extra, error_text = self.KINDS[kind]
        fault = {"kind": kind, "model": TRAINING, **extra}
        async with running_simulator(scenario(faults=[fault])) as sim:
            settings = settings_for(
                tmp_path, sim.base_url, [TRAINING, FINISHING], [],
                poll={"interval": 1, "backoff_cap": "3s"}, cohere={"timeout": 0.3},
            )  # fmt: skip
            async with open_watcher(settings, rand=lambda: 0.99) as rig:
                sim.advance(2)
                with structlog.testing.capture_logs() as logs:
                    for failures in range(1, 5):
                        assert await rig.poll(TRAINING) is False
                        record = await rig.record(TRAINING)
                        assert record.failures == failures
                        assert error_text in (record.last_error or ""), record.last_error
                    assert await rig.poll(FINISHING) is True  # another model is unaffected
                    assert (await rig.record(FINISHING)).failures == 0
                    assert await rig.poll(TRAINING) is True
                backoffs = events_named(logs, "poll failed; backing off")
                # max(interval, full jitter of interval * 2^(n-1)) with rand 0.99, capped at 3 s
                assert [b["retry_in"] for b in backoffs] == [1.0, 1.98, 2.97, 2.97]
                assert [b["failures"] for b in backoffs] == [1, 2, 3, 4]
                assert all(b["model_id"] == TRAINING for b in backoffs)
                (recovered,) = events_named(logs, "polling recovered")
                assert recovered["after_failures"] == 4
                record = await rig.record(TRAINING)
                assert (record.failures, record.last_error) == (0, None)
                assert record.state.status == FINETUNING
                assert rig.model(TRAINING).failures == 0


class TestRateLimit:
    async def test_retry_after_seconds_pauses_every_model(self, tmp_path: Path) -> None:
        """A 429 with Retry-After: 1 on one model pauses the shared pacer, so the next request of
        *another* model waits ≥ 1 s."""
        fault = {"kind": "http_429", "model": TRAINING, "retry_after": 1}
        async with running_simulator(scenario(faults=[fault])) as sim:
            settings = settings_for(tmp_path, sim.base_url, [TRAINING, FINISHING], [])
            async with open_watcher(settings) as rig:
                with structlog.testing.capture_logs() as logs:
                    assert await rig.poll(TRAINING) is False
                    paused_for = rig.pacer.paused_until - anyio.current_time()
                    assert 0.5 < paused_for <= 1.0
                    started = anyio.current_time()
                    assert await rig.poll(FINISHING) is True
                    assert anyio.current_time() - started >= 0.95
                (warning,) = events_named(logs, "rate limited by the API; pausing every request")
                assert warning["pause_seconds"] == 1.0
                assert (await rig.record(TRAINING)).failures == 1
                assert "HTTP 429" in ((await rig.record(TRAINING)).last_error or "")

    async def test_retry_after_http_date_is_honoured(self, tmp_path: Path) -> None:
        """Retry-After as an HTTP date (2 s ahead, whole seconds) pauses until about then."""
        fault = {"kind": "http_429", "model": TRAINING, "retry_after": "http-date"}
        async with running_simulator(scenario(faults=[fault])) as sim:
            settings = settings_for(tmp_path, sim.base_url, [TRAINING], [])
            async with open_watcher(settings) as rig:
                assert await rig.poll(TRAINING) is False
                paused_for = rig.pacer.paused_until - anyio.current_time()
                assert 0.5 < paused_for <= 2.1

    async def test_without_retry_after_backs_off_exponentially(self, tmp_path: Path) -> None:
        """A 429 without Retry-After pauses everyone for a full-jitter backoff that grows."""
        fault = {"kind": "http_429", "model": TRAINING, "retry_after": None, "times": 2}
        async with running_simulator(scenario(faults=[fault])) as sim:
            settings = settings_for(tmp_path, sim.base_url, [TRAINING], [], poll={"interval": 1})
            async with open_watcher(settings, rand=lambda: 0.5) as rig:
                with structlog.testing.capture_logs() as logs:
                    assert await rig.poll(TRAINING) is False
                    first_pause = rig.pacer.paused_until - anyio.current_time()
                    assert await rig.poll(TRAINING) is False  # waits out the first pause
                    second_pause = rig.pacer.paused_until - anyio.current_time()
                    assert await rig.poll(TRAINING) is True
                pauses = [
                    w["pause_seconds"]
                    for w in events_named(logs, "rate limited by the API; pausing every request")
                ]
                assert pauses == [0.5, 1.0]  # base 1 s x 2^(n-1) x rand 0.5
                assert 0.25 < first_pause <= 0.5
                assert 0.75 < second_pause <= 1.0


class TestPollSchedule:
    async def test_a_short_interval_is_kept(self, tmp_path: Path) -> None:
        """One model at interval 0.2 s is polled 5 times a second, not once (the loop wakes for a
        reschedule)."""
        async with running_simulator(scenario()) as sim:
            settings = settings_for(tmp_path, sim.base_url, [TRAINING], [])
            async with open_watcher(settings) as rig, running(rig.watcher):
                await wait_until(lambda: polls_of(sim, TRAINING) >= 1, what="the first poll")
                first = polls_of(sim, TRAINING)
                # 4 more polls are due within 0.8 s; allow 2 s.
                await wait_until(
                    lambda: polls_of(sim, TRAINING) >= first + 4, timeout=2, what="4 more polls"
                )


class TestRequestBudget:
    async def test_budget_below_the_api_limit_means_no_429_and_even_polls(
        self, tmp_path: Path
    ) -> None:
        """10 models at 0.2 s want 3000 requests/min; with a budget of 600/min under an API limit of
        720/min the daemon gets no 429, spreads polls evenly and says so once."""
        models = [f"budget-{i:02d}" for i in range(10)]
        spec = {
            "api_key": SIM_KEY,
            # The simulator's 60 s sliding window runs 60x faster than real time: its
            # "12 per minute" is 12 per real second (720/min), just above the 600/min budget.
            "rate_limit_per_minute": 12,
            "models": [{"id": m, "timeline": timeline()} for m in models],
        }
        origin = time.monotonic()
        fast = lambda: (time.monotonic() - origin) * 60  # noqa: E731
        async with running_simulator(Scenario.model_validate(spec), clock=fast) as sim:
            config = base_config(
                sim.base_url, tmp_path, [{"id": m, "name": m} for m in models], [],
                interval=0.2, max_requests_per_minute=600, concurrency=4,
            )  # fmt: skip
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path) as proc:
                await wait_until(lambda: sim.stats()["requests"] >= 1, what="the first poll")
                started, first = time.monotonic(), sim.stats()["requests"]
                await wait_until(
                    lambda: sim.stats()["requests"] >= first + 30, timeout=15, what="30 requests"
                )
                elapsed = time.monotonic() - started
                stats = sim.stats()
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            assert stats["by_status_code"].get("429", 0) == 0, stats
            assert stats["rate_limited"] == 0
            # Never over budget: 30 more requests 0.1 s apart take at least ~2.9 s.
            assert elapsed >= 2.8, elapsed
            counts = [stats["by_model"].get(m, 0) for m in models]
            assert max(counts) - min(counts) <= 1, counts
            (warning,) = logged(
                proc.log(), "request budget too small for the interval; polls are spread out"
            )
            assert warning["effective_interval"] == 1.0
            assert warning["budget_per_minute"] == 600
            # The limit is real: a burst from the test itself is refused.
            async with aiohttp.ClientSession() as session:
                codes = []
                for _ in range(15):
                    async with session.get(
                        f"{sim.base_url}/v1/finetuning/finetuned-models",
                        headers={"Authorization": f"Bearer {SIM_KEY}"},
                    ) as answer:
                        codes.append(answer.status)
            assert 429 in codes


class TestAuth:
    async def test_401_one_ops_message_slow_retries_then_one_recovery_message(
        self, tmp_path: Path
    ) -> None:
        """A rejected key: one error line naming the key's source (never the key), one ops
        notification, retries every min(backoff_cap, 60 s) instead of every 0.2 s, and one
        recovery notification when the key is accepted again."""
        spec = scenario(api_key="the-rotated-key-0000")
        async with (
            running_simulator(spec) as sim,
            webhook_receiver() as hook,
            webhook_receiver() as ops,
        ):
            config = base_config(
                sim.base_url, tmp_path, [TRAINING, FINISHING], [hook.url],
                backoff_cap="3s",
            )  # fmt: skip
            config["notify"]["ops_urls"] = [ops.url]
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path) as proc:
                await ops.wait_for(1)
                assert titles(ops) == ["finetune-watcher cannot authenticate"]
                assert "$CO_API_KEY" in ops.messages[0]["message"]
                await wait_until(lambda: status_count(sim, 401) >= 2, what="both models")
                rejected, started = status_count(sim, 401), time.monotonic()
                await wait_until(
                    lambda: status_count(sim, 401) >= rejected + 2, what="2 more rejected polls"
                )
                # Auth failures wait min(backoff_cap, 60 s) = 3 s between polls; other
                # failures would start at the 0.2 s interval and back off from there.
                assert time.monotonic() - started >= 2.0
                assert len(ops.messages) == 1
                sim.set_api_key(SIM_KEY)
                await ops.wait_for(2)
                assert titles(ops)[1] == "finetune-watcher can authenticate again"
                served = sim.stats()["by_status_code"].get("200", 0)
                await wait_until(
                    lambda: sim.stats()["by_status_code"].get("200", 0) >= served + 2,
                    what="polls after recovery",
                )
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            assert len(ops.messages) == 2
            assert hook.messages == []  # the watcher's own trouble goes to ops_urls only
            text = proc.log()
            (error,) = logged(text, "the Cohere API rejects the key; retrying slowly")
            assert error["key_source"] == "$CO_API_KEY"
            assert error["status"] == 401
            assert len(logged(text, "authentication works again")) == 1
            assert SIM_KEY not in text


class TestNotFound:
    async def test_404_warned_once_notified_once_polled_slowly(self, tmp_path: Path) -> None:
        """A model that does not exist: one warning and one notification over several polls, which
        come at settled_interval (1.5 s) while the other model keeps its pace."""
        missing = "typo-in-the-model-id"
        async with running_simulator(scenario()) as sim, webhook_receiver() as hook:
            config = base_config(
                sim.base_url, tmp_path, [missing, TRAINING], [hook.url], settled_interval=1.5
            )
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path) as proc:
                await wait_until(lambda: polls_of(sim, missing) >= 1, what="the first 404")
                started, healthy = time.monotonic(), polls_of(sim, TRAINING)
                await wait_until(lambda: polls_of(sim, missing) >= 2, what="the second 404")
                assert time.monotonic() - started >= 1.5 * 0.9
                assert polls_of(sim, TRAINING) > healthy  # the other model was not held up
                await hook.wait_for(1)
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            assert len(logged(proc.log(), "model not found; checking again slowly")) == 1
            assert titles(hook) == [f"{missing}: model not found"]
            assert missing in hook.messages[0]["message"]


# Fault kind -> None when the answer is tolerated, else text of the typed error.
HOSTILE: dict[str, str | None] = {
    "huge_body": "exceeds",
    "wrong_content_type": "expected JSON, got text/html",
    "malformed_json": "not valid JSON",
    "wrong_shape": "'events' is not a list",
    "repeat_token": "repeated a page token",
    "endless_pages": "more than 200 pages",
    "naive_timestamp": None,
    "future_timestamp": None,
    "unknown_status": None,
    "missing_fields": None,
}
# What a tolerated oddity leaves as the model's status (TRAINING is FINETUNING since t=1).
TOLERATED_STATUS = {
    "naive_timestamp": FINETUNING,  # read as UTC
    # The newest event (FINETUNING) is dated ten years ahead: quarantined (lifecycle's
    # FUTURE_TOLERANCE), so the status is what the real events say.
    "future_timestamp": QUEUED,
    "unknown_status": "STATUS_SOMETHING_NEW",  # data, not an error
    "missing_fields": FINETUNING,  # no user_id, no next_page_token: one page
}


class TestHostileResponses:
    @pytest.mark.parametrize("kind", list(HOSTILE))
    async def test_each_is_a_typed_error_or_tolerated(self, tmp_path: Path, kind: str) -> None:
        """A hostile answer for one model becomes a stored typed error (or is tolerated); another
        model still reaches READY and is announced."""
        fault = {"kind": kind, "model": TRAINING, "times": None}
        async with (
            running_simulator(scenario(faults=[fault])) as sim,
            webhook_receiver() as hook,
        ):
            settings = settings_for(tmp_path, sim.base_url, [TRAINING, FINISHING], [hook.url])
            async with open_watcher(settings) as rig:
                sim.advance(2)
                with anyio.fail_after(20):  # never a hang
                    ok = await rig.poll(TRAINING)
                    assert await rig.poll(FINISHING) is True
                    sim.advance(10)
                    ok_again = await rig.poll(TRAINING)
                    assert await rig.poll(FINISHING) is True
                    await rig.watcher.deliver_once()
                expected = HOSTILE[kind]
                record = await rig.record(TRAINING)
                if expected is None:
                    assert ok
                    assert ok_again
                    assert record.failures == 0
                    assert record.state.status == TOLERATED_STATUS[kind]
                    if kind == "naive_timestamp":
                        assert record.state.status_since == T0 + timedelta(seconds=1)
                else:
                    assert not ok
                    assert not ok_again
                    assert record.failures == 2
                    assert expected in (record.last_error or ""), record.last_error
                assert (await rig.record(FINISHING)).state.status == READY
                assert [m["type"] for m in hook.messages] == ["success"]
                assert FINISHING in hook.messages[0]["message"]

    async def test_every_kind_at_once_leaves_the_daemon_running(self, tmp_path: Path) -> None:
        """Ten models each answered with a different hostile response forever: the daemon keeps
        running, announces the one healthy model, logs no traceback and stops cleanly."""
        hostile = [f"hostile-{kind.replace('_', '-')}" for kind in HOSTILE]
        spec = scenario(
            page_size_cap=2,
            models=[
                *({"id": m, "timeline": timeline()} for m in hostile),
                {"id": FINISHING, "timeline": timeline(READY)},
            ],
            faults=[
                {"kind": kind, "model": m, "times": None, "endpoint": "any"}
                for kind, m in zip(HOSTILE, hostile, strict=True)
            ],
        )
        async with running_simulator(spec) as sim, webhook_receiver() as hook:
            config = base_config(
                sim.base_url, tmp_path, [*hostile, FINISHING], [hook.url],
                max_requests_per_minute=FAST_BUDGET, backoff_cap="1s",
            )  # fmt: skip
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path) as proc:
                await wait_until(
                    lambda: all(polls_of(sim, m) >= 2 for m in [*hostile, FINISHING]),
                    what="two polls of every model",
                )
                sim.advance(20)
                await hook.wait_for(1)
                before = {m: polls_of(sim, m) for m in hostile}
                await wait_until(
                    lambda: all(polls_of(sim, m) > before[m] for m in hostile),
                    what="every hostile model polled again",
                )
                # An endless-pages poll takes 200 requests: let every failing poll finish.
                erroring = {f"hostile-{k.replace('_', '-')}" for k, v in HOSTILE.items() if v}
                await wait_until(
                    lambda: erroring <= failed_models(proc.log()), what="every failure logged"
                )
                assert proc.process.returncode is None
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            text = proc.log()
            assert "Traceback" not in text
            assert [m["type"] for m in hook.messages] == ["success"]
            assert not [line for line in log_lines(text) if line.get("unparsed")]
            failing = failed_models(text)
            errors = {k for k, v in HOSTILE.items() if v is not None}
            assert failing == {f"hostile-{k.replace('_', '-')}" for k in errors}


# --- The notification side --------------------------------------------------------------


async def reach_ready(sim: RunningSimulator, model_id: str) -> None:
    """Let a daemon see ``model_id`` training, then move the clock past its outcome."""
    await wait_until(lambda: polls_of(sim, model_id) >= 2, what=f"polls of {model_id}")
    sim.advance(20)


class TestDownTargets:
    async def test_failing_refused_and_hanging_targets_do_not_block_the_healthy_one(
        self, tmp_path: Path
    ) -> None:
        """With one target answering 500, one refusing connections and one hanging, the healthy
        target gets the message while the hanging one still hangs, polling goes on, and the message
        stays pending for the others."""
        async with (
            running_simulator(scenario()) as sim,
            webhook_receiver() as healthy,
            webhook_receiver() as failing,
            webhook_receiver() as hanging,
        ):
            failing.fail_with(500)
            hanging.hang()
            urls = [failing.url, refused_url(), hanging.url, healthy.url]
            config = base_config(sim.base_url, tmp_path, [FINISHING, TRAINING], urls)
            config["notify"]["timeout"] = 3
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path) as proc:
                await reach_ready(sim, FINISHING)
                await healthy.wait_for(1)
                await wait_until(lambda: hanging.hanging_requests == 1, what="the hung request")
                polls = polls_of(sim, TRAINING)
                await wait_until(
                    lambda: polls_of(sim, TRAINING) >= polls + 2, what="polls during the hang"
                )
                assert hanging.hanging_requests == 1  # all of the above while it still hangs
                assert len(healthy.messages) == 1
                await wait_until(
                    lambda: bool(logged(proc.log(), "notification retry scheduled")),
                    what="the retry",
                )
                async with state_readonly(tmp_path / "state" / "watcher.db") as store:
                    assert (await store.outbox_counts()).pending == 1
                    (item,) = await store.due_notifications(datetime(9999, 1, 1, tzinfo=UTC))
                    assert item.attempts == 1
                    # One reason per target that lacks it, named by its label only.
                    reasons = (item.last_error or "").split("; ")
                    assert len(reasons) == 3, reasons
                    assert f"{failing.url.removesuffix('/notify')}: HTTP 500" in reasons
                hanging.recover()
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            assert len(healthy.messages) == 1
            assert failing.messages == []

    @pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
    async def test_pending_delivery_survives_a_restart(self, tmp_path: Path, stop: int) -> None:
        """The daemon dies (kill -9) or is stopped while a target hangs; once it is back and
        restarted, that target gets the message exactly once and the healthy one never again."""
        async with (
            running_simulator(scenario()) as sim,
            webhook_receiver() as healthy,
            webhook_receiver() as down,
        ):
            down.hang()
            config = base_config(sim.base_url, tmp_path, [FINISHING], [healthy.url, down.url])
            config["notify"]["timeout"] = 10
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path) as proc:
                await reach_ready(sim, FINISHING)
                await healthy.wait_for(1)
                await wait_until(lambda: down.hanging_requests == 1, what="the hanging delivery")
                # Killed once the healthy delivery is on disk (a kill just before that
                # commit may repeat it: that is the kill -9 test's business).
                async with state_readonly(tmp_path / "state" / "watcher.db") as store:

                    async def committed() -> bool:
                        return len(await store.delivered_targets(1)) == 1

                    await eventually(committed, what="commit")
                proc.send(stop)
                code = await proc.wait_exit(10)
                assert code == (-signal.SIGKILL if stop == signal.SIGKILL else 0), proc.log()
            down.recover()  # the hung request is released with a 503: not delivered
            async with state_readonly(tmp_path / "state" / "watcher.db") as store:
                assert (await store.outbox_counts()).pending == 1
            async with daemon(path) as proc:
                await down.wait_for(1)
                await wait_until(
                    lambda: bool(logged(proc.log(), "notification delivered")), what="the log"
                )
                async with state_readonly(tmp_path / "state" / "watcher.db") as store:

                    async def done() -> bool:
                        return (await store.outbox_counts()).pending == 0

                    await eventually(done, what="done")
                polls = polls_of(sim, FINISHING)
                await wait_until(lambda: polls_of(sim, FINISHING) > polls, what="another poll")
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            assert len(down.messages) == 1
            assert len(healthy.messages) == 1
            assert down.messages[0]["title"] == healthy.messages[0]["title"]

    async def test_failed_target_retried_after_restart_and_only_it(self, tmp_path: Path) -> None:
        """A target answering 500 keeps its item pending with attempts counted; after a restart on
        the same state file, it is retried when due and delivered once, the healthy target not
        again."""
        wall = Wall()
        async with (
            running_simulator(scenario()) as sim,
            webhook_receiver() as healthy,
            webhook_receiver() as down,
        ):
            down.fail_with(500)
            settings = settings_for(tmp_path, sim.base_url, [FINISHING], [healthy.url, down.url])
            async with open_watcher(settings, now=wall) as rig:
                assert await rig.poll(FINISHING)
                sim.advance(20)
                assert await rig.poll(FINISHING)
                round_ = await rig.watcher.deliver_once()
                assert (round_.delivered, round_.failed) == (0, 1)
                (item,) = await rig.outbox()
                assert item.attempts == 1
                assert "HTTP 500" in (item.last_error or "")
            down.recover()
            wall.advance(3600)
            async with open_watcher(settings, now=wall) as rig:  # the restart
                round_ = await rig.watcher.deliver_once()
                assert (round_.delivered, round_.failed) == (1, 0)
                assert await rig.outbox() == []
            assert len(healthy.messages) == 1
            assert len(down.messages) == 1


class TestGiveUp:
    async def test_given_up_after_deadline_and_attempts_is_logged_counted_and_reported(
        self, tmp_path: Path
    ) -> None:
        """With give_up_after 2s, a notification is given up at its third failed attempt past the
        deadline: logged, counted, and one report goes to ops_urls only."""
        wall = Wall()
        async with (
            running_simulator(scenario()) as sim,
            webhook_receiver() as down,
            webhook_receiver() as ops,
        ):
            down.fail_with(500)
            settings = settings_for(
                tmp_path, sim.base_url, [FINISHING], [down.url],
                notify={"give_up_after": "2s", "ops_urls": [ops.url]},
            )  # fmt: skip
            async with open_watcher(settings, now=wall) as rig:
                assert await rig.poll(FINISHING)
                sim.advance(20)
                assert await rig.poll(FINISHING)
                with structlog.testing.capture_logs() as logs:
                    first = await rig.watcher.deliver_once()
                    wall.advance(2)  # the retry is capped at the deadline
                    second = await rig.watcher.deliver_once()
                    assert (await rig.outbox())[
                        0
                    ].attempts == 2  # past the deadline, too few attempts
                    wall.advance(60)
                    third = await rig.watcher.deliver_once()
                    report = await rig.watcher.deliver_once()
                assert [r.failed for r in (first, second, third)] == [1, 1, 0]
                assert (third.given_up, third.given_up_models) == (1, 1)
                assert report.delivered == 1
                (given_up,) = events_named(logs, "notification given up")
                assert given_up["attempts"] == MIN_ATTEMPTS
                assert "HTTP 500" in given_up["error"]
                counts = await rig.store.outbox_counts()
                assert (counts.pending, counts.done, counts.given_up) == (0, 1, 1)
                registry = rig.watcher.metrics.registry
                sample = registry.get_sample_value(
                    "finetune_watcher_notifications_total", {"result": "given_up"}
                )
                assert sample == 1.0
            assert titles(ops) == ["finetune-watcher gave up 1 notification(s)"]
            assert "give_up_after (2s)" in ops.messages[0]["message"]
            assert len(down.requests) == 3  # three attempts, and never the ops report
            assert down.messages == []


class TestOpsUrls:
    async def test_unreachable_api_reported_then_recovery(self, tmp_path: Path) -> None:
        """The API refusing connections for longer than notify.unreachable_after sends one ops
        message; when it answers again, one recovery message; the model targets get neither."""
        port = free_port()
        async with webhook_receiver() as hook, webhook_receiver() as ops:
            config = base_config(
                f"http://127.0.0.1:{port}", tmp_path, [TRAINING], [hook.url], backoff_cap="1s"
            )
            config["notify"].update(ops_urls=[ops.url], unreachable_after="1s")
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path) as proc:
                await ops.wait_for(1)
                assert titles(ops) == ["finetune-watcher cannot reach the Cohere API"]
                assert "cannot connect" in ops.messages[0]["message"]
                async with running_simulator(scenario(), port=port) as sim:
                    await ops.wait_for(2)
                    assert titles(ops)[1] == "finetune-watcher reaches the Cohere API again"
                    assert polls_of(sim, TRAINING) >= 1
                    proc.send(signal.SIGTERM)
                    assert await proc.wait_exit() == 0, proc.log()
            assert len(ops.messages) == 2
            assert hook.messages == []
            (error,) = logged(proc.log(), "the Cohere API has been unreachable")
            assert error["for_seconds"] >= 1


# --- The host side: the state file ---------------------------------------------------------


def state_run(config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "-c", str(config), timeout=30)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1, result.stderr
    return errors[0]


class TestStateFile:
    @pytest.fixture
    def config(self, tmp_path: Path) -> Path:
        # Nothing listens at the API address: these runs must fail before any poll.
        return write_config(
            tmp_path / "watcher.yaml",
            base_config("http://127.0.0.1:9", tmp_path, [TRAINING], []),
        )

    @pytest.fixture
    def state(self, tmp_path: Path) -> Path:
        return tmp_path / "state" / "watcher.db"

    def test_corrupt_file_exits_74_and_is_untouched(self, config: Path, state: Path) -> None:
        """A state file that is not a SQLite database: exit 74, one clear line, the file byte-for-
        byte unchanged."""
        state.parent.mkdir(mode=0o700)
        state.write_bytes(b"this is not a database\n" * 200)
        before = digest(state)
        result = state_run(config)
        assert result.returncode == EX_STATE
        line = one_line_error(result)
        assert str(state) in line
        assert "not a readable SQLite database" in line
        assert digest(state) == before

    def test_truncated_database_exits_74_and_is_untouched(self, config: Path, state: Path) -> None:
        """A real state file cut in half (a torn copy): exit 74, unchanged."""
        anyio.run(partial(create_state, state, failed_models=200))
        data = state.read_bytes()
        state.write_bytes(data[: len(data) // 2])
        before = digest(state)
        result = state_run(config)
        assert result.returncode == EX_STATE
        assert str(state) in one_line_error(result)
        assert digest(state) == before

    def test_newer_schema_exits_74_and_is_untouched(self, config: Path, state: Path) -> None:
        """A file from a newer schema version: exit 74, says so, never migrated down."""
        anyio.run(create_state, state)
        with sqlite3.connect(state) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
        before = digest(state)
        result = state_run(config)
        assert result.returncode == EX_STATE
        line = one_line_error(result)
        assert f"newer finetune-watcher (schema {SCHEMA_VERSION + 1}" in line
        assert digest(state) == before

    def test_read_only_file_exits_74_and_is_untouched(self, config: Path, state: Path) -> None:
        """An immutable state file (chattr +i: even root cannot write it): exit 74, unchanged."""
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not installed")
        anyio.run(create_state, state)
        before = digest(state)
        made = subprocess.run(["chattr", "+i", str(state)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"chattr +i not possible here: {made.stderr.decode().strip()}")
        try:
            result = state_run(config)
        finally:
            subprocess.run(["chattr", "-i", str(state)], check=True)
        assert result.returncode == EX_STATE
        line = one_line_error(result)
        assert str(state) in line
        assert "cannot be opened for writing" in line
        assert digest(state) == before

    def test_full_disk_at_start_exits_74_and_is_untouched(self, config: Path, state: Path) -> None:
        """No room to write (RLIMIT_FSIZE stands in for a full disk): exit 74 with one clear
        line."""
        anyio.run(create_state, state)
        before = digest(state)
        result = subprocess.run(
            [sys.executable, "-m", "watcher", "run", "-c", str(config)],
            capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=30, check=False,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)),
        )  # fmt: skip
        assert result.returncode == EX_STATE, result.stderr
        line = one_line_error(result)
        assert str(state) in line
        assert digest(state) == before

    async def test_disk_full_while_running_exits_74_and_loses_nothing(
        self, tmp_path: Path, state: Path
    ) -> None:
        """The disk fills up under a running daemon (RLIMIT_FSIZE): it exits 74 with one clear
        line; once there is room again, a restart announces every outcome exactly once."""
        models = [TRAINING, FINISHING, FAILING]
        async with running_simulator(scenario()) as sim, webhook_receiver() as hook:
            config = write_config(
                tmp_path / "watcher.yaml", base_config(sim.base_url, tmp_path, models, [hook.url])
            )
            await create_state(state)
            # Room for the -shm file (32 KiB) and a few WAL frames, not for a day's work.
            limit = 33_000
            launch = (
                "import os, resource, sys\n"
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
                "os.execv(sys.executable, [sys.executable, '-m', 'watcher', 'run', '-c', "
                f"{str(config)!r}, '--log-format', 'json'])\n"
            )
            stderr = bytearray()
            async with await anyio.open_process(
                [sys.executable, "-c", launch], env=cli_env(), cwd=ROOT, stdin=subprocess.DEVNULL
            ) as proc:

                async def drain() -> None:
                    assert proc.stderr is not None
                    async for chunk in proc.stderr:
                        stderr.extend(chunk)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain)
                    with anyio.fail_after(20):
                        while proc.returncode is None:
                            sim.advance(1)  # every status change is a write
                            with anyio.move_on_after(0.3):
                                await proc.wait()
            text = stderr.decode()
            assert proc.returncode == EX_STATE, text
            assert "Traceback" not in text
            (line,) = [raw for raw in text.splitlines() if not raw.startswith("{")]
            assert line.startswith(f"finetune-watcher: state file {state}: ")
            assert "an I/O error (disk failing, filesystem full or gone?)" in line

            # Room again: nothing the daemon decided before dying is lost or repeated.
            async with daemon(config) as proc2:
                sim.advance(20)  # past both outcomes, whenever the first daemon died
                await hook.wait_for(2)
                polls = polls_of(sim, TRAINING)
                await wait_until(lambda: polls_of(sim, TRAINING) > polls + 2, what="polls")
                proc2.send(signal.SIGTERM)
                assert await proc2.wait_exit() == 0, proc2.log()
            assert sorted(m["type"] for m in hook.messages) == ["failure", "success"]

    async def test_second_daemon_on_the_same_state_exits_75(
        self, tmp_path: Path, state: Path
    ) -> None:
        """Two real daemons on one state file: the second exits 75 naming the first one's pid; the
        first keeps running."""
        async with running_simulator(scenario()) as sim:
            config = write_config(
                tmp_path / "watcher.yaml", base_config(sim.base_url, tmp_path, [TRAINING], [])
            )
            async with daemon(config) as first:
                await wait_until(lambda: polls_of(sim, TRAINING) >= 1, what="the first daemon")
                result = await anyio.to_thread.run_sync(state_run, config)
                assert result.returncode == EX_LOCKED
                line = one_line_error(result)
                assert f"state file {state} is in use by another finetune-watcher" in line
                assert f"(pid {first.process.pid})" in line
                polls = polls_of(sim, TRAINING)
                await wait_until(lambda: polls_of(sim, TRAINING) > polls, what="first still polls")
                first.send(signal.SIGTERM)
                assert await first.wait_exit() == 0

    def test_exit_codes_are_documented(self) -> None:
        """`run --help` lists the exit codes the tests above check."""
        result = run_cli("run", "--help")
        assert result.returncode == 0
        for code in (EX_STATE, EX_LOCKED, EX_CONFIG):
            assert f"  {code}  " in result.stdout


# --- The host side: clock jumps --------------------------------------------------------------


class TestClockJumps:
    async def test_backwards_jump_pulls_retries_forward_and_polling_goes_on(
        self, tmp_path: Path
    ) -> None:
        """The wall clock jumps back a day while a retry is pending: the retry is pulled forward and
        delivered within seconds (no day-long stall), and polls (on the monotonic clock) keep their
        pace."""
        wall = Wall(start=None)  # real time, plus an offset the test moves
        async with running_simulator(scenario()) as sim, webhook_receiver() as hook:
            hook.fail_with(500)
            settings = settings_for(tmp_path, sim.base_url, [FINISHING, TRAINING], [hook.url])
            async with open_watcher(settings, now=wall, rand=lambda: 0.0) as rig:
                with structlog.testing.capture_logs() as logs:
                    async with running(rig.watcher):
                        await reach_ready(sim, FINISHING)
                        await wait_until(lambda: len(hook.requests) == 1, what="a failed attempt")

                        async def retried() -> bool:
                            return (await rig.outbox())[0].attempts == 1

                        await eventually(retried, what="the retry")
                        hook.recover()
                        wall.advance(-86_400)
                        polls = polls_of(sim, TRAINING)
                        await hook.wait_for(1, timeout=10)  # the first retry was 3 s away
                        await wait_until(
                            lambda: polls_of(sim, TRAINING) >= polls + 2, what="polls go on"
                        )
                        wall.advance(2 * 86_400)  # and forwards: no storm of polls
                        polls, started = polls_of(sim, TRAINING), time.monotonic()
                        await wait_until(
                            lambda: polls_of(sim, TRAINING) >= polls + 4, what="polls go on"
                        )
                        # 4 polls span at least 3 intervals of 0.2 s.
                        assert time.monotonic() - started >= 3 * 0.2 * 0.9
                (jump,) = events_named(
                    logs, "the system clock moved backwards; retrying pending notifications now"
                )
                assert jump["rescheduled"] == 1
                assert 86_000 < jump["seconds"] <= 86_400
                assert (await rig.store.outbox_counts()).pending == 0
            assert len(hook.messages) == 1

    async def test_forward_jump_does_not_give_up_at_once(self, tmp_path: Path) -> None:
        """A wall clock that leaps two days ahead makes a pending item overdue, yet it still gets
        its minimum number of attempts before it is given up."""
        wall = Wall()
        async with running_simulator(scenario()) as sim, webhook_receiver() as down:
            down.fail_with(500)
            settings = settings_for(
                tmp_path, sim.base_url, [FINISHING], [down.url], notify={"give_up_after": "1d"}
            )
            async with open_watcher(settings, now=wall) as rig:
                assert await rig.poll(FINISHING)
                sim.advance(20)
                assert await rig.poll(FINISHING)
                assert (await rig.watcher.deliver_once()).failed == 1
                wall.advance(2 * 86_400)
                assert (await rig.watcher.deliver_once()).failed == 1
                (item,) = await rig.outbox()
                assert item.attempts == 2 < MIN_ATTEMPTS
