"""Hardening of the poll path (issue 11): findings 5, 7, 10 (the daemon part) and 12 (time).

* 5: one model answering 403 is that model's problem, not the key's: no "cannot
  authenticate", ``/readyz`` stays ready, the model is reported once (``policy.judge_*``
  table-tested here, the poller in-process against the simulator).
* 7: models whose requests hang share a bounded slow lane of the poll workers, so a healthy
  model's READY is still seen within its interval.
* 10: a reload parses the file off the event loop; a model removed and re-added keeps its
  stuck-warning count.
* 12: a far-future event is quarantined by the poller (the core's rule is in
  tests/test_lifecycle.py::TestFarFutureQuarantine).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import structlog
import yaml

from tests.conftest import SIM_KEY, base_config, wait_until
from tests.receivers import webhook_receiver
from tests.test_reliability import (
    T0,
    TRAINING,
    Wall,
    open_watcher,
    polls_of,
    running,
    settings_for,
    timeline,
)
from watcher.daemon import _reload
from watcher.health import HealthServer
from watcher.policy import (
    AUTH_FAILING_AFTER,
    AUTH_FAILING_MODELS,
    AUTH_RECOVERED_AFTER,
    AuthVerdict,
    KeyEvidence,
    judge_rejection,
    judge_success,
)
from watcher.providers.cohere import FINETUNING, QUEUED, READY
from watcher.schedule import slow_lane_size
from watcher.settings import load_settings
from watcher.simulator import Scenario, running_simulator

FORBIDDEN = "f0rb1dden-job"  # answers 403 for ever
HEALTHY = "4ea1thy-job"


def sim_scenario(models: list[dict[str, Any]], faults: list[dict[str, Any]]) -> Scenario:
    return Scenario.model_validate(
        {"api_key": SIM_KEY, "clock": "manual", "start": T0.isoformat(),
         "models": models, "faults": faults}
    )  # fmt: skip


# --- Finding 5: auth is judged per key, from evidence, with hysteresis ----------------------


class TestJudgeAuthTable:
    """The pure rules: (evidence, what happened) -> (evidence, verdict)."""

    @pytest.mark.parametrize(
        ("evidence", "was_accepted", "accepted_elsewhere", "accepted_since", "expected"),
        [
            # A first rejection never decides anything (one glitch is no evidence).
            (KeyEvidence(), False, False, False, (KeyEvidence(False, 1, 0, 0), None)),
            # Rejected twice in a row, nothing accepted anywhere: the key is failing.
            (KeyEvidence(False, 1, 0, 0), False, False, False,
             (KeyEvidence(True, 2, 0, 0), AuthVerdict.KEY_FAILING)),
            # Twice in a row, but another model's last poll was accepted: undecided.
            (KeyEvidence(False, 1, 0, 0), False, True, False, (KeyEvidence(False, 2, 0, 0), None)),
            # Another model was accepted after this one's first rejection: its own problem.
            (KeyEvidence(), False, True, True,
             (KeyEvidence(False, 1, 0, 0), AuthVerdict.MODEL_REJECTED)),
            # Three models that had been accepted, rejected in a row: the key, whatever
            # older successes of other models say.
            (KeyEvidence(False, 2, 2, 0), True, True, False,
             (KeyEvidence(True, 3, 3, 0), AuthVerdict.KEY_FAILING)),
            # Already failing: a rejection adds evidence, no second report.
            (KeyEvidence(True, 5, 0, 1), False, False, False, (KeyEvidence(True, 6, 0, 0), None)),
        ],
    )  # fmt: skip
    def test_rejection(
        self,
        evidence: KeyEvidence,
        was_accepted: bool,
        accepted_elsewhere: bool,
        accepted_since: bool,
        expected: tuple[KeyEvidence, AuthVerdict | None],
    ) -> None:
        assert judge_rejection(
            evidence, was_accepted=was_accepted, accepted_elsewhere=accepted_elsewhere,
            accepted_since=accepted_since,
        ) == expected  # fmt: skip

    @pytest.mark.parametrize(
        ("evidence", "expected"),
        [
            (KeyEvidence(), (KeyEvidence(), None)),
            (KeyEvidence(False, 1, 1, 0), (KeyEvidence(), None)),  # a success resets the streak
            (KeyEvidence(True, 4, 0, 0), (KeyEvidence(True, 0, 0, 1), None)),  # one is not enough
            (KeyEvidence(True, 0, 0, 1), (KeyEvidence(False, 0, 0, 0), AuthVerdict.KEY_RECOVERED)),
        ],
    )
    def test_success(
        self, evidence: KeyEvidence, expected: tuple[KeyEvidence, AuthVerdict | None]
    ) -> None:
        assert judge_success(evidence) == expected

    def test_thresholds(self) -> None:
        assert (AUTH_FAILING_AFTER, AUTH_FAILING_MODELS, AUTH_RECOVERED_AFTER) == (2, 3, 2)

    def test_alternating_outcomes_never_flap(self) -> None:
        """Rejection, success, rejection, ... (one bad model among good ones): no key verdict."""
        evidence, verdicts = KeyEvidence(), []
        for _ in range(50):
            evidence, verdict = judge_rejection(
                evidence, was_accepted=False, accepted_elsewhere=True, accepted_since=True
            )
            verdicts.append(verdict)
            evidence, verdict = judge_success(evidence)
            verdicts.append(verdict)
        assert set(verdicts) == {AuthVerdict.MODEL_REJECTED, None}


class TestOneForbiddenModel:
    async def test_403_on_one_model_is_its_own_problem(self, tmp_path: Path) -> None:
        """One model answering 403 for ever beside a healthy one, retried every 0.5 s: no ops
        message, /readyz ready throughout, and one notice about that model."""
        spec = sim_scenario(
            [{"id": FORBIDDEN, "timeline": timeline()}, {"id": HEALTHY, "timeline": timeline()}],
            [{"kind": "http_403", "model": FORBIDDEN, "times": None, "endpoint": "any"}],
        )
        async with (
            running_simulator(spec) as sim,
            webhook_receiver() as hook,
            webhook_receiver() as ops,
        ):
            settings = settings_for(
                tmp_path, sim.base_url, [FORBIDDEN, HEALTHY], [hook.url],
                poll={"interval": 0.2, "backoff_cap": "0.5s"}, notify={"ops_urls": [ops.url]},
            )  # fmt: skip
            async with open_watcher(settings) as rig:
                health = HealthServer(rig.watcher, host="127.0.0.1", port=0)
                host, port = await health.start()
                codes: list[int] = []
                try:
                    async with running(rig.watcher), aiohttp.ClientSession() as http:
                        url = f"http://{host}:{port}/readyz"
                        with anyio.fail_after(15):
                            while True:  # ready once the first round is done
                                async with http.get(url) as answer:
                                    if answer.status == 200:
                                        break
                                await anyio.sleep(0.05)
                        deadline = time.monotonic() + 6
                        while time.monotonic() < deadline:
                            async with http.get(url) as answer:
                                codes.append(answer.status)
                            await anyio.sleep(0.05)
                        rejected = polls_of(sim, FORBIDDEN)
                        with anyio.move_on_after(10):
                            await hook.wait_for(1)
                finally:
                    await health.aclose()
        assert rejected >= 8  # the 403 was met again and again
        assert [m["title"] for m in ops.messages] == []
        assert set(codes) == {200}, codes
        assert len(hook.messages) == 1, hook.messages
        assert FORBIDDEN in hook.messages[0]["title"]
        assert "403" in hook.messages[0]["message"]

    async def test_a_rejected_key_is_still_reported_once_and_recovers_once(
        self, tmp_path: Path
    ) -> None:
        """Every model rejected (a wrong key): one "cannot authenticate", /readyz not ready; the
        key accepted again: one "can authenticate again"."""
        spec = sim_scenario(
            [{"id": FORBIDDEN, "timeline": timeline()}, {"id": HEALTHY, "timeline": timeline()}], []
        )
        spec = spec.model_copy(update={"api_key": "another-key-000000"})
        async with running_simulator(spec) as sim, webhook_receiver() as ops:
            settings = settings_for(
                tmp_path, sim.base_url, [FORBIDDEN, HEALTHY], [],
                poll={"interval": 0.2, "backoff_cap": "0.3s"}, notify={"ops_urls": [ops.url]},
            )  # fmt: skip
            async with open_watcher(settings) as rig, running(rig.watcher):
                await ops.wait_for(1)
                assert rig.watcher.progress.auth_failing
                sim.set_api_key(SIM_KEY)
                await ops.wait_for(2)
                assert not rig.watcher.progress.auth_failing
                await anyio.sleep(1)
        assert [m["title"] for m in ops.messages] == [
            "finetune-watcher cannot authenticate",
            "finetune-watcher can authenticate again",
        ]


# --- Finding 7: hanging requests do not starve healthy models --------------------------------


class TestSlowLane:
    def test_lane_size(self) -> None:
        assert [slow_lane_size(c) for c in (1, 2, 3, 4, 8, 16, 64)] == [1, 1, 1, 1, 2, 4, 16]

    async def test_hanging_models_do_not_delay_a_healthy_ready(self, tmp_path: Path) -> None:
        """8 models whose requests never answer, concurrency 8, timeout 5 s: once they have
        timed out, a healthy model's READY is delivered < 2 x interval + 1 s after it happens."""
        hanging = [f"hang-{i}" for i in range(8)]
        spec = sim_scenario(
            [*({"id": m, "timeline": timeline()} for m in hanging),
             {"id": HEALTHY, "timeline": timeline(READY, at=100)}],
            [{"kind": "slow", "model": m, "times": None, "delay": 3600, "endpoint": "any"}
             for m in hanging],
        )  # fmt: skip
        interval = 0.5
        async with running_simulator(spec) as sim, webhook_receiver() as hook:
            settings = settings_for(
                tmp_path, sim.base_url, [*hanging, HEALTHY], [hook.url],
                poll={"interval": interval, "concurrency": 8, "backoff_cap": "1s"},
                cohere={"timeout": 5},
            )  # fmt: skip
            async with open_watcher(settings) as rig, running(rig.watcher):
                sim.advance(2)
                # The first round: every hanging request times out once (5 s).
                await wait_until(
                    lambda: all(rig.model(m).failures >= 1 for m in hanging),
                    timeout=20, what="the hanging models' first timeouts",
                )  # fmt: skip
                in_lane = []
                for _ in range(30):  # steady state: they are due again and again
                    in_lane.append(rig.watcher.schedule.slow_in_flight)
                    await anyio.sleep(interval / 10)
                assert max(in_lane) == slow_lane_size(8) == 2, in_lane  # never all 8 workers
                sim.advance(200)  # the healthy model becomes READY now
                happened = time.monotonic()
                await hook.wait_for(1, timeout=20)
                latency = time.monotonic() - happened
        assert latency < 2 * interval + 1, latency
        assert READY in hook.messages[0]["message"] or "ready" in hook.messages[0]["title"].lower()


# --- Finding 10: reload off the loop; a re-added model keeps its stuck count ----------------


def big_config(path: Path, base: dict[str, Any], *, megabytes: float) -> Path:
    """``base`` as YAML followed by ``megabytes`` of empty comment lines: cheap to write, slow
    to parse (about 2 s for 0.9 MB with the pure-Python loader)."""
    text = yaml.safe_dump(base, sort_keys=False)
    line = "#\n"
    path.write_text(text + line * int(megabytes * 1024 * 1024 / len(line)))
    return path


class TestReloadOffTheLoop:
    async def test_the_loop_keeps_running_while_a_large_file_is_parsed(
        self, tmp_path: Path
    ) -> None:
        """A SIGHUP reload of a 0.9 MB file (under the size limit) takes over a second to parse;
        meanwhile the event loop lags < 0.5 s and the poll loop's heartbeat stays fresh."""
        async with running_simulator(
            sim_scenario([{"id": HEALTHY, "timeline": timeline()}], [])
        ) as sim:
            settings = settings_for(tmp_path, sim.base_url, [HEALTHY], [])
            config = base_config(sim.base_url, tmp_path, [HEALTHY, TRAINING], [])
            path = big_config(tmp_path / "big.yaml", config, megabytes=0.9)
            async with open_watcher(settings) as rig, running(rig.watcher):
                await wait_until(lambda: polls_of(sim, HEALTHY) >= 1, what="the first poll")
                lags: list[float] = []
                ages: list[float] = []
                done = anyio.Event()

                async def ticker() -> None:
                    while not done.is_set():
                        before = time.monotonic()
                        await anyio.sleep(0.02)
                        lags.append(time.monotonic() - before - 0.02)
                        ages.append(anyio.current_time() - rig.watcher.progress.heartbeat_mono)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(ticker)
                    await anyio.sleep(0.1)  # the ticker is sleeping when the reload starts
                    started = time.monotonic()
                    await _reload(rig.watcher, lambda: load_settings(path, environ={}), None)
                    took = time.monotonic() - started
                    await anyio.sleep(0.1)  # and wakes (late, if the loop was blocked)
                    done.set()
                assert len(rig.watcher.models) == 2  # the reload did apply
        assert took > 0.5, took  # the parse is slow enough to matter (1-3 s measured)
        assert max(lags) < min(0.5, took / 3), (max(lags), took)  # measured: < 0.05 s
        assert max(ages) < 2.0, max(ages)


class TestReaddedModelStuckWarning:
    async def test_removed_and_re_added_model_is_not_warned_again(self, tmp_path: Path) -> None:
        """Stuck in FINETUNING for 1.5 h with stuck_after 1 h: one warning; removed by a reload
        and added back by the next: still one warning."""
        spec = sim_scenario(
            [{"id": TRAINING, "timeline": timeline()}, {"id": HEALTHY, "timeline": timeline()}], []
        )
        async with running_simulator(spec) as sim:
            sim.advance(2)

            def settings(models: list[str]) -> Any:
                return settings_for(
                    tmp_path, sim.base_url, models, [], notify={"stuck_after": "1h"}
                )

            wall = Wall(T0 + timedelta(hours=1, minutes=30))
            async with open_watcher(settings([TRAINING, HEALTHY]), now=wall) as rig:

                async def stuck_warnings() -> int:
                    return sum("has been" in (item.title or "") for item in await rig.outbox())

                assert await rig.poll(TRAINING)
                assert rig.model(TRAINING).status == FINETUNING
                assert await stuck_warnings() == 1
                _, removed = await rig.watcher.reload(settings([HEALTHY]))
                assert [k.id for k in removed] == [TRAINING]
                added, _ = await rig.watcher.reload(settings([TRAINING, HEALTHY]))
                assert [k.id for k in added] == [TRAINING]
                wall.advance(60)
                assert await rig.poll(TRAINING)
                assert await stuck_warnings() == 1
                wall.advance(3600)  # a further span: the second warning is due, once
                assert await rig.poll(TRAINING)
                assert await stuck_warnings() == 2


# --- Finding 12: the poller passes ``now``; a far-future event is quarantined ---------------


class TestFarFutureEvent:
    async def test_far_future_event_neither_pins_the_status_nor_hides_ready(
        self, tmp_path: Path
    ) -> None:
        """The simulator's ``future_timestamp`` (the newest event, FINETUNING, dated ten years
        ahead) on a model that then becomes READY: the bogus event is quarantined and logged,
        READY is announced and the model is settled."""
        spec = sim_scenario(
            [{"id": HEALTHY, "timeline": timeline(READY, at=10)}],
            [{"kind": "future_timestamp", "model": HEALTHY, "times": 1}],
        )
        async with running_simulator(spec) as sim, webhook_receiver() as hook:
            settings = settings_for(tmp_path, sim.base_url, [HEALTHY], [hook.url])
            wall = Wall(T0 + timedelta(seconds=2))
            async with open_watcher(settings, now=wall) as rig:
                sim.advance(2)
                with structlog.testing.capture_logs() as logs:
                    assert await rig.poll(HEALTHY)
                # The newest event (FINETUNING) is dated ten years ahead: quarantined.
                assert rig.model(HEALTHY).status == QUEUED
                quarantined = [
                    e for e in logs if e["event"] == "ignored events dated in the future"
                ]
                assert len(quarantined) == 1
                assert quarantined[0]["events"] == 1
                sim.advance(10)
                wall.advance(10)
                assert await rig.poll(HEALTHY)
                assert rig.model(HEALTHY).status == READY
                scheme = rig.watcher.clients["cohere"].provider.scheme
                assert scheme.is_settled(rig.model(HEALTHY).status)
                await rig.watcher.deliver_once()
        assert [m["type"] for m in hook.messages] == ["success"]
