"""End to end: ``finetune-watcher run`` as a subprocess against the simulator and a webhook."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio

from tests.conftest import SIM_KEY, base_config, daemon, run_cli, wait_until, write_config
from tests.receivers import webhook_receiver
from watcher.simulator import Scenario, running_simulator

READY_ID = "4f9d0c1e-ready"
FAILED_ID = "8a2b7e55-failed"
TRAINING_ID = "c0ffee00-training"


def lifecycle_scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "api_key": SIM_KEY,
            "clock": "manual",
            "page_size_cap": 1,
            "models": [
                {
                    "id": READY_ID,
                    "name": "support-classifier",
                    "timeline": [
                        [0, "STATUS_QUEUED"],
                        [1, "STATUS_FINETUNING"],
                        [10, "STATUS_READY"],
                    ],
                },
                {
                    "id": FAILED_ID,
                    "name": "intent-router",
                    "timeline": [
                        [0, "STATUS_QUEUED"],
                        [1, "STATUS_FINETUNING"],
                        [10, "STATUS_FAILED"],
                    ],
                },
                {
                    "id": TRAINING_ID,
                    "name": "summariser-xl",
                    "timeline": [[0, "STATUS_QUEUED"], [1, "STATUS_FINETUNING"]],
                },
            ],
        }
    )


def polls_of(stats: dict, model_id: str) -> int:
    return int(stats.get("by_model", {}).get(model_id, 0))


class TestRunEndToEnd:
    async def test_ready_and_failed_each_notified_once_across_restart(self, tmp_path: Path) -> None:
        """One READY and one FAILED arrive, none for training, none again after a restart."""
        async with running_simulator(lifecycle_scenario()) as sim, webhook_receiver() as hook:
            config = write_config(
                tmp_path / "watcher.yaml",
                base_config(
                    sim.base_url,
                    tmp_path,
                    [{"id": READY_ID, "name": "support-classifier"}, FAILED_ID, TRAINING_ID],
                    [hook.url],
                ),
            )
            models = (READY_ID, FAILED_ID, TRAINING_ID)
            async with daemon(config) as proc:
                # Everyone seen training first, so the outcomes are real transitions.
                await wait_until(
                    lambda: all(polls_of(sim.stats(), m) >= 2 for m in models),
                    what="first polls",
                )
                sim.advance(20)
                await hook.wait_for(2, timeout=15)
                before = {m: polls_of(sim.stats(), m) for m in models}
                await wait_until(
                    lambda: polls_of(sim.stats(), TRAINING_ID) >= before[TRAINING_ID] + 6,
                    what="more polls",
                )
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit(5) == 0, proc.log()

            assert len(hook.messages) == 2, hook.messages
            by_type = {m["type"]: m for m in hook.messages}
            assert set(by_type) == {"success", "failure"}
            assert "support-classifier" in by_type["success"]["title"]
            assert "intent-router" in by_type["failure"]["title"] or FAILED_ID in (
                by_type["failure"]["title"] + by_type["failure"]["message"]
            )
            assert all(TRAINING_ID not in m["title"] + m["message"] for m in hook.messages)

            # Restart on the same state file: nothing new is announced.
            async with daemon(config) as proc:
                start = {m: polls_of(sim.stats(), m) for m in models}
                await wait_until(
                    lambda: all(polls_of(sim.stats(), m) >= start[m] + 2 for m in models),
                    what="polls after restart",
                )
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit(5) == 0, proc.log()
            assert len(hook.messages) == 2, hook.messages
            assert SIM_KEY not in proc.log()


class TestCheckConfig:
    def test_valid_config_prints_summary(self, tmp_path: Path) -> None:
        """check-config on a valid file exits 0 and names the models, never the key."""
        config = write_config(
            tmp_path / "ok.yaml",
            base_config("http://127.0.0.1:9", tmp_path, ["abc"], ["json://127.0.0.1:9/x"]),
        )
        result = run_cli("check-config", "-c", str(config))
        assert result.returncode == 0, result.stderr
        assert "abc" in result.stdout
        assert SIM_KEY not in result.stdout + result.stderr

    def test_broken_config_exits_78_naming_the_field(self, tmp_path: Path) -> None:
        """A bad interval exits 78 with the file and the field named, no traceback."""
        config = write_config(
            tmp_path / "bad.yaml",
            {"poll": {"interval": -1}, "models": ["abc"]},
        )
        for command in ("check-config", "run", "once"):
            result = run_cli(command, "-c", str(config))
            assert result.returncode == 78, (command, result.stderr)
            assert str(config) in result.stderr
            assert "poll.interval" in result.stderr
            assert "Traceback" not in result.stderr

    def test_missing_config_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A config path that does not exist exits 78 and says so."""
        result = run_cli("check-config", "-c", str(tmp_path / "nope.yaml"))
        assert result.returncode == 78
        assert "not found" in result.stderr.lower()


class TestDemo:
    def test_demo_announces_ready_and_failed_and_exits_0(self) -> None:
        """The README's demo command runs the daemon against the simulator and exits 0."""
        result = run_cli("demo", env={"CO_API_KEY": ""}, timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("🔔") == 2, result.stdout
        assert "Traceback" not in result.stderr


class TestOnce:
    async def test_once_polls_delivers_and_exits_0(self, tmp_path: Path) -> None:
        """`once` polls every model, delivers the READY found on first sight, and exits 0."""
        async with running_simulator(lifecycle_scenario()) as sim, webhook_receiver() as hook:
            sim.advance(20)
            config = write_config(
                tmp_path / "watcher.yaml",
                base_config(sim.base_url, tmp_path, [READY_ID, TRAINING_ID], [hook.url]),
            )
            result = await anyio.to_thread.run_sync(
                lambda: run_cli("once", "-c", str(config), "--log-format", "json")
            )
            assert result.returncode == 0, result.stderr
            assert [m["type"] for m in hook.messages] == ["success"]
            # A second run finds nothing new.
            result = await anyio.to_thread.run_sync(lambda: run_cli("once", "-c", str(config)))
            assert result.returncode == 0, result.stderr
            assert len(hook.messages) == 1

    async def test_once_exits_1_when_every_poll_fails(self, tmp_path: Path) -> None:
        """With a rejected key every poll fails, so `once` exits 1 with a clear log line."""
        async with running_simulator(lifecycle_scenario()) as sim:
            config = write_config(
                tmp_path / "watcher.yaml",
                base_config(sim.base_url, tmp_path, [READY_ID, TRAINING_ID], []),
            )
            result = await anyio.to_thread.run_sync(
                lambda: run_cli("once", "-c", str(config), env={"CO_API_KEY": "wrong-key-42"})
            )
        assert result.returncode == 1
        assert "rejects the key" in result.stderr
        assert "wrong-key-42" not in result.stderr
        assert "Traceback" not in result.stderr
