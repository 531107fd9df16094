"""Crash consistency per provider: restart and ``kill -9`` lose nothing, duplicate nothing.

The provider-parametrised variant of ``tests/test_crash.py`` (Cohere, 30 models, 5
kills; 10 for its figures): for each of the six providers, a daemon subprocess
watches ``CRASH_PROVIDER_MODELS`` jobs (default 6) at that provider, in its own status
vocabulary, against the simulator (manual clock) and a ``json://`` receiver. The jobs finish
two per clock step (every third one fails, with a reason where the provider gives one);
the daemon is SIGKILLed ``CRASH_PROVIDER_KILLS`` times (default 3) at seeded-random moments
(after a random number of API requests, or right after a delivery) and restarted on the
same state file, and at the end stopped by SIGTERM (exit 0). Every outcome must be delivered
(lost = 0); a duplicate may only be the delivery accepted right before a kill (at most one
per kill). The figures per provider are printed (``pytest tests/test_crash_providers.py -s``).
A clean restart announcing nothing new is proved for all six providers at once by
``tests/test_e2e_providers.py`` (a daemon start costs ~2 s of imports, so it is not repeated
here per provider).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import SIM_KEY, daemon, wait_until, write_config
from tests.receivers import WebhookReceiver, webhook_receiver
from tests.test_e2e_providers import (
    LIFECYCLES,
    WITH_REASON,
    fleet_config,
    key_environ,
    reason,
)
from watcher.simulator import PROVIDERS, RunningSimulator, Scenario, running_simulator
from watcher.store.sqlite import SqliteStore

MODELS = int(os.environ.get("CRASH_PROVIDER_MODELS", "6"))
KILLS = int(os.environ.get("CRASH_PROVIDER_KILLS", "3"))
SEED = int(os.environ.get("CRASH_SEED", "20261126"))
PER_STEP = 2  # jobs finishing at each step of the simulator clock
pytestmark = pytest.mark.realtime  # SIGKILLed daemons, restarted


def model_id(provider: str, index: int) -> str:
    return f"crash-{provider}-{index:02d}"


def outcome_at(index: int) -> int:
    """Sim second of job ``index``'s outcome: 2, 2, 3, 3, ... (PER_STEP per step)."""
    return 2 + index // PER_STEP


def fails(index: int) -> bool:
    return index % 3 == 0


def final_status(provider: str, index: int) -> str:
    _, ready, failed = LIFECYCLES[provider]
    return failed if fails(index) else ready


def crash_scenario(provider: str) -> Scenario:
    before, _, _ = LIFECYCLES[provider]
    models: list[dict[str, Any]] = []
    for i in range(MODELS):
        spec: dict[str, Any] = {
            "id": model_id(provider, i),
            "provider": provider,
            "timeline": [
                [0, before[0]],
                [1, before[-1]],
                [outcome_at(i), final_status(provider, i)],
            ],
        }
        if fails(i) and provider in WITH_REASON:
            spec["error"] = {"message": reason(provider)}
        models.append(spec)
    return Scenario.model_validate(
        {"api_key": SIM_KEY, "clock": "manual", "fireworks_account": "sim-account",
         "models": models}
    )  # fmt: skip


def delivered_per_model(
    hook: WebhookReceiver, pattern: re.Pattern[str], *, since: int = 0
) -> Counter[str]:
    """How often each job's outcome was accepted (from message ``since`` on)."""
    found: Counter[str] = Counter()
    for message in hook.messages[max(0, since) :]:
        match = pattern.search(f"{message['title']} {message['message']}")
        assert match is not None, message
        found[match.group(0)] += 1
    return found


async def kill_at_a_random_moment(
    rng: random.Random, sim: RunningSimulator, hook: WebhookReceiver
) -> str:
    """Wait for a random point of the daemon's work (at most 1 s); return what it was."""
    if rng.random() < 0.5:
        target = sim.stats()["requests"] + rng.randint(0, 30)
        with anyio.move_on_after(1):
            await wait_until(lambda: sim.stats()["requests"] >= target, timeout=1)
        return "requests"
    accepted = len(hook.messages)
    with anyio.move_on_after(1):
        await wait_until(lambda: len(hook.messages) > accepted, timeout=1)
    return "delivery"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_kill_nine_and_restart_lose_nothing(provider: str, tmp_path: Path) -> None:
    """Six jobs at one provider finish across three clock steps while the daemon is
    SIGKILLed three times at random moments and restarted: every outcome is delivered once
    (lost = 0, duplicates <= kills and only where a kill followed a delivery), the store holds
    one done outbox row per outcome, and each job's final status is the provider's own."""
    rng = random.Random(f"{SEED}-{provider}")
    steps = outcome_at(MODELS - 1)
    kill_steps = Counter(rng.choices(range(1, steps + 1), k=KILLS))
    ids = [model_id(provider, i) for i in range(MODELS)]
    pattern = re.compile(rf"crash-{re.escape(provider)}-\d{{2}}")
    started = time.monotonic()
    kills = 0
    moments: Counter[str] = Counter()
    suspects: set[str] = set()
    env = key_environ()
    async with running_simulator(crash_scenario(provider)) as sim, webhook_receiver() as hook:
        config = fleet_config(
            sim, tmp_path, [{"id": i, "name": i, "provider": provider} for i in ids], [hook.url],
            interval=0.1, settled_interval=1,
        )  # fmt: skip
        path = write_config(tmp_path / "watcher.yaml", config)
        state = tmp_path / "state" / "watcher.db"

        async with AsyncExitStack() as daemons:
            proc = await daemons.enter_async_context(daemon(path, env=env))
            await wait_until(lambda: set(sim.stats()["by_model"]) >= set(ids), what="first polls")
            for step in range(1, steps + 1):
                sim.advance(1)
                for _ in range(kill_steps[step]):
                    moments[await kill_at_a_random_moment(rng, sim, hook)] += 1
                    accepted = len(hook.messages)
                    proc.send(signal.SIGKILL)
                    await proc.wait_exit()
                    kills += 1
                    # A duplicate can only be the message accepted last before the kill,
                    # or one the receiver finished reading after it.
                    suspects.update(delivered_per_model(hook, pattern, since=accepted - 1))
                    proc = await daemons.enter_async_context(daemon(path, env=env))
                finishing = {model_id(provider, i) for i in range(MODELS) if outcome_at(i) == step}

                def caught_up(due: set[str] = finishing) -> bool:
                    return due <= set(delivered_per_model(hook, pattern))

                with anyio.move_on_after(10):
                    await wait_until(caught_up, timeout=10)
            with anyio.move_on_after(15):
                await wait_until(
                    lambda: len(delivered_per_model(hook, pattern)) == MODELS, timeout=15
                )
            # A SIGTERM before the daemon installed its handler would kill it outright.
            served = sim.stats()["requests"]
            await wait_until(lambda: sim.stats()["requests"] > served, what="a poll")
            proc.send(signal.SIGTERM)
            assert await proc.wait_exit() == 0, proc.log()

        delivered = delivered_per_model(hook, pattern)
        lost = sorted(i for i in ids if i not in delivered)
        duplicates = sum(count - 1 for count in delivered.values())
        print(
            f"\nkill -9 figures [{provider}] (seed {SEED}): models={MODELS} kills={kills} "
            f"(after requests: {moments['requests']}, after a delivery: {moments['delivery']}) "
            f"delivered={len(delivered)} lost={len(lost)} duplicates={duplicates} "
            f"messages={len(hook.messages)} seconds={time.monotonic() - started:.1f}"
        )
        assert kills == KILLS
        assert lost == [], lost
        assert duplicates <= kills
        duplicated = {m for m, count in delivered.items() if count > 1}
        assert duplicated <= suspects, (duplicated, suspects)
        for message in hook.messages:
            match = pattern.search(message["title"])
            assert match is not None, message["title"]
            word = "failed" if fails(int(match.group(0)[-2:])) else "ready"
            assert word in message["title"], message["title"]
        store = await SqliteStore.open_readonly(state)
        try:
            counts = await store.outbox_counts()
            assert (counts.pending, counts.given_up) == (0, 0)
            assert counts.done == MODELS  # one outbox row per outcome, never two
            records = await store.model_records()
        finally:
            await store.aclose()
        statuses = {r.state.model_id: r.state.status for r in records}
        assert statuses == {model_id(provider, i): final_status(provider, i) for i in range(MODELS)}
