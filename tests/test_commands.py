"""The everyday commands as subprocesses: ``status``, ``events``, ``test-notify``, ``healthcheck``.

Each test runs ``python -m watcher ...`` against the Cohere simulator (in this process,
manual clock) and real state databases made by the daemon itself. TTY output is
checked through a pseudo-terminal; waits are on conditions, never fixed sleeps.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest

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
from tests.receivers import free_port, webhook_receiver
from watcher.cli import build_parser, main
from watcher.commands import COMMANDS
from watcher.errors import StateError
from watcher.settings import StateSettings
from watcher.simulator import RunningSimulator, Scenario, running_simulator
from watcher.store import ModelRecord, open_store_readonly

READY_ID = "4f9d0c1e-ready"
FAILED_ID = "8a2b7e55-failed"
TRAINING_ID = "c0ffee00-training"
LATE_READY_ID = "5eed0001-late-ready"
LATE_FAILED_ID = "5eed0002-late-failed"
MISSING_ID = "deadbeef-missing"  # configured, but the API does not know it
UNPOLLED_ID = "0a0a0a0a-unpolled"  # configured after the daemon ran

# Credentials inside apprise URLs: they must never reach any output.
URL_PASSWORD = "hunter2-secret-pw"  # noqa: S105 -- a fake, planted to prove redaction
URL_TOKEN = "abcd1234efgh5678token"  # noqa: S105 -- likewise
SECRETS = (SIM_KEY, URL_PASSWORD, URL_TOKEN)

ISO_Z = "%Y-%m-%dT%H:%M:%SZ"


def scenario() -> Scenario:
    """Five models whose times are three hours in the past once the clock passes 10 s."""
    q, f = "STATUS_QUEUED", "STATUS_FINETUNING"
    return Scenario.model_validate(
        {
            "api_key": SIM_KEY,
            "clock": "manual",
            "start": datetime.now(UTC) - timedelta(hours=3),
            "page_size_cap": 2,
            "models": [
                {
                    "id": READY_ID,
                    "name": "support-classifier",
                    "timeline": [[0, q], [1, f], [10, "STATUS_READY"]],
                },
                {
                    "id": FAILED_ID,
                    "name": "intent-router",
                    "timeline": [[0, q], [1, f], [10, "STATUS_FAILED"]],
                },
                {"id": TRAINING_ID, "name": "summariser-xl", "timeline": [[0, q], [1, f]]},
                {"id": LATE_READY_ID, "timeline": [[0, q], [1, f], [100, "STATUS_READY"]]},
                {"id": LATE_FAILED_ID, "timeline": [[0, q], [1, f], [100, "STATUS_FAILED"]]},
            ],
        }
    )


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked: {text!r}"


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``run_cli`` in a worker thread, so the simulator in this event loop keeps answering."""
    return await anyio.to_thread.run_sync(lambda: run_cli(*args, env=env, timeout=30))


def secret_hook_url(port: int) -> str:
    """An apprise URL for a webhook receiver on ``port``, carrying a password."""
    return f"json://alerts-bot:{URL_PASSWORD}@127.0.0.1:{port}/notify"


def refused_token_url() -> str:
    """A target nobody listens on, with a token in its path."""
    return f"json://127.0.0.1:{free_port()}/hooks/{URL_TOKEN}"


def watcher_config(
    sim: RunningSimulator, tmp_path: Path, models: list[Any], urls: list[str], **extra: Any
) -> Path:
    config = base_config(sim.base_url, tmp_path, models, urls)
    config.update(extra)
    return write_config(tmp_path / "watcher.yaml", config)


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 15.0, what: str
) -> None:
    """``wait_until`` for a predicate that must await (reading the store)."""
    with anyio.move_on_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def stored_records(state_path: Path) -> dict[str, ModelRecord]:
    """The state database's records by model id, read as ``status`` reads them."""
    async with open_store_readonly(StateSettings(path=state_path)) as store:
        return {r.key.id: r for r in await store.model_records()}


async def poll_once(config: Path) -> None:
    """Fill the state database the way the daemon does: ``finetune-watcher once``."""
    result = await cli("once", "-c", str(config))
    assert result.returncode == 0, result.stderr


# --- running a command while it runs ---------------------------------------------------


class Running:
    """A CLI subprocess whose stdout/stderr are collected as they arrive."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.out = ""
        self.err = ""

    async def wait_for_output(self, text: str, *, stream: str = "out") -> None:
        await wait_until(
            lambda: text in getattr(self, stream),
            what=f"{text!r} on std{stream}; have out={self.out!r} err={self.err!r}",
        )

    async def wait_exit(self, timeout: float = 15.0) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


async def _pump(stream: anyio.abc.ByteReceiveStream | None, running: Running, name: str) -> None:
    if stream is None:
        return
    async for chunk in stream:
        setattr(running, name, getattr(running, name) + chunk.decode(errors="replace"))


async def _pump_pty(master: int, running: Running) -> None:
    while True:
        await anyio.wait_readable(master)
        try:
            chunk = os.read(master, 65536)
        except OSError as exc:  # EIO: the child closed the terminal
            if exc.errno == errno.EIO:
                return
            raise
        if not chunk:
            return
        running.out += chunk.decode(errors="replace")


@asynccontextmanager
async def started(*args: str, tty: bool = False) -> AsyncIterator[Running]:
    """``python -m watcher ARGS`` in the background; stdout a pipe or a pseudo-terminal."""
    master = slave = -1
    if tty:
        master, slave = pty.openpty()
    try:
        process = await anyio.open_process(
            [sys.executable, "-m", "watcher", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave if tty else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
            cwd=ROOT,
        )
    finally:
        if tty:
            os.close(slave)
    running = Running(process)
    try:
        async with anyio.create_task_group() as tg:
            if tty:
                tg.start_soon(_pump_pty, master, running)
            else:
                tg.start_soon(_pump, process.stdout, running, "out")
            tg.start_soon(_pump, process.stderr, running, "err")
            try:
                yield running
                await running.wait_exit()
            finally:
                if process.returncode is None:
                    process.kill()
                    with anyio.CancelScope(shield=True):
                        await process.wait()
    finally:
        await process.aclose()
        if tty:
            os.close(master)


# --- status -----------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    return parsed


def validate_status_document(document: dict[str, Any]) -> None:
    """The shape documented in the README's "Everyday use" and in ``status --help``."""
    assert set(document) == {"generated_at", "state_path", "models", "outbox", "leader"}
    assert document["leader"] is None  # SQLite: no lease, the one daemon leads
    parse_time(document["generated_at"])
    assert isinstance(document["state_path"], str)
    assert set(document["outbox"]) == {"pending", "done", "given_up"}
    assert all(isinstance(v, int) for v in document["outbox"].values())
    model_keys = {
        "id", "provider", "name", "status", "status_since", "last_poll_at", "last_success_at",
        "last_error", "failures", "pending_notifications", "discovered", "configured",
    }  # fmt: skip
    for model in document["models"]:
        assert set(model) == model_keys
        assert isinstance(model["id"], str)
        assert model["provider"] == "cohere"
        for key in ("name", "status", "last_error"):
            assert model[key] is None or isinstance(model[key], str)
        for key in ("status_since", "last_poll_at", "last_success_at"):
            parse_time(model[key])
        for key in ("failures", "pending_notifications"):
            assert isinstance(model[key], int)
        for key in ("discovered", "configured"):
            assert isinstance(model[key], bool)


class TestStatus:
    async def test_status_while_the_daemon_runs(self, tmp_path: Path) -> None:
        """While the daemon holds the lock: a plain table, --json, colours on a TTY, healthcheck."""
        health_port = free_port()
        async with running_simulator(scenario()) as sim:
            sim.advance(20)  # READY and FAILED are settled, TRAINING still fine-tuning
            models = [
                {"id": READY_ID, "name": "support-classifier"},
                FAILED_ID,
                TRAINING_ID,
                MISSING_ID,
            ]
            config = watcher_config(
                sim,
                tmp_path,
                models,
                [refused_token_url()],  # nothing can be delivered: notifications stay pending
                health={"listen": f"127.0.0.1:{health_port}"},
            )
            state_path = tmp_path / "state" / "watcher.db"

            async def daemon_has_polled() -> bool:
                try:
                    records = await stored_records(state_path)
                except StateError:  # not created yet, or its schema not yet written
                    return False
                ready, failed = records.get(READY_ID), records.get(FAILED_ID)
                missing = records.get(MISSING_ID)
                return (
                    ready is not None
                    and ready.state.status == "STATUS_READY"
                    and ready.pending_notifications == 1
                    and failed is not None
                    and failed.pending_notifications == 1
                    and TRAINING_ID in records
                    and missing is not None
                    and missing.last_error is not None
                )

            async with daemon(config) as proc:
                await wait_until_async(daemon_has_polled, what="the daemon's first polls")
                # A model added to the configuration since: not polled yet.
                write_config(
                    tmp_path / "status.yaml",
                    {
                        **base_config(sim.base_url, tmp_path, [*models, UNPOLLED_ID], []),
                        "notify": {"urls": [refused_token_url()]},
                    },
                )
                status_config = str(tmp_path / "status.yaml")
                table = await cli("status", "-c", status_config)
                as_json = await cli("status", "-c", status_config, "--json")
                health = await cli("healthcheck", "-c", str(config))
                async with started("status", "-c", status_config, tty=True) as on_tty:
                    assert await on_tty.wait_exit() == 0, on_tty.err
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit(10) == 0, proc.log()

        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == [
            "NAME", "PROVIDER", "ID", "STATUS", "SINCE", "LAST", "POLL", "LAST", "ERROR", "UNSENT",
        ]  # fmt: skip
        ready_row = next(line for line in lines if READY_ID in line)
        assert ready_row.split()[:3] == ["support-classifier", "cohere", READY_ID]
        assert "READY" in ready_row
        assert re.search(r"  (2h 59m|3h) ago  ", ready_row)  # READY since t=10s, 3h ago
        assert ready_row.rstrip().endswith("1")  # one undelivered notification
        assert "FAILED" in next(line for line in lines if FAILED_ID in line)
        assert "FINETUNING" in next(line for line in lines if TRAINING_ID in line)
        missing_row = next(line for line in lines if MISSING_ID in line)
        assert "unknown" in missing_row
        assert "404" in missing_row
        assert "not polled yet" in next(line for line in lines if UNPOLLED_ID in line)
        unsent = sum(int(line.split()[-1]) for line in lines[1:] if line and line[0] != "o")
        assert unsent >= 2  # READY's and FAILED's, at least
        assert lines[-1] == f"outbox: {unsent} pending · 0 delivered · 0 given up"
        assert "\x1b[" not in table.stdout  # no colours through a pipe

        assert as_json.returncode == 0, as_json.stderr
        document = json.loads(as_json.stdout)
        validate_status_document(document)
        by_id = {m["id"]: m for m in document["models"]}
        assert set(by_id) == {READY_ID, FAILED_ID, TRAINING_ID, MISSING_ID, UNPOLLED_ID}
        assert by_id[READY_ID]["status"] == "STATUS_READY"
        assert by_id[READY_ID]["name"] == "support-classifier"
        assert by_id[READY_ID]["pending_notifications"] == 1
        since = parse_time(by_id[READY_ID]["status_since"])
        assert since is not None
        assert datetime.now(UTC) - since > timedelta(hours=2, minutes=59)
        assert by_id[FAILED_ID]["status"] == "STATUS_FAILED"
        assert by_id[TRAINING_ID]["status"] == "STATUS_FINETUNING"
        assert by_id[MISSING_ID]["status"] is None
        assert by_id[MISSING_ID]["failures"] >= 1
        assert "404" in by_id[MISSING_ID]["last_error"]
        unpolled = by_id[UNPOLLED_ID]
        assert unpolled["status"] is None
        assert unpolled["last_poll_at"] is None
        assert all(m["configured"] and not m["discovered"] for m in by_id.values())
        assert document["outbox"] == {"pending": unsent, "done": 0, "given_up": 0}
        assert sum(m["pending_notifications"] for m in by_id.values()) == unsent

        assert "\x1b[32m" in on_tty.out  # READY in green on a terminal
        assert "support-classifier" in on_tty.out

        assert health.returncode == 0, health.stdout + health.stderr
        assert health.stdout.startswith(f"healthy: http://127.0.0.1:{health_port}/healthz")
        assert_no_secrets(table.stdout, table.stderr, as_json.stdout, on_tty.out, proc.log())

    async def test_missing_state_file_and_bad_config(self, tmp_path: Path) -> None:
        """No state database: exit 74 with one line; a broken configuration: exit 78."""
        config = write_config(
            tmp_path / "watcher.yaml", base_config("http://127.0.0.1:9", tmp_path, ["abc"], [])
        )
        missing = await cli("status", "-c", str(config))
        assert missing.returncode == 74
        assert missing.stdout == ""
        assert missing.stderr.count("\n") == 1
        assert "no state file at" in missing.stderr

        broken = write_config(tmp_path / "bad.yaml", {"poll": {"interval": -1}, "models": ["a"]})
        result = await cli("status", "-c", str(broken), "--json")
        assert result.returncode == 78
        assert "poll.interval" in result.stderr
        assert "Traceback" not in result.stderr


# --- events -----------------------------------------------------------------------------


def validate_event_line(line: dict[str, Any]) -> None:
    assert set(line) == {"provider", "status", "created_at", "duration_seconds"}
    assert line["provider"] == "cohere"
    assert str(line["status"]).startswith("STATUS_")
    parse_time(line["created_at"])
    assert line["duration_seconds"] is None or isinstance(line["duration_seconds"], float)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class TestEvents:
    async def test_timeline_as_text_and_json(self, tmp_path: Path) -> None:
        """The whole timeline with durations: from the environment, and from a configuration."""
        async with running_simulator(scenario()) as sim:
            sim.advance(20)
            env = {"CO_API_URL": sim.base_url, "WATCHER_CONFIG": str(tmp_path / "absent.yaml")}
            text = await cli("events", READY_ID, env=env)
            as_json = await cli("events", READY_ID, "--json", env=env)
            config = watcher_config(sim, tmp_path, [READY_ID], [])
            from_config = await cli("events", FAILED_ID, "-c", str(config), "--json")

        assert text.returncode == 0, text.stderr
        rows = text.stdout.splitlines()
        assert rows[0] == f"{READY_ID}: timeline (UTC)"
        assert [row.split()[1] for row in rows[1:]] == ["QUEUED", "FINETUNING", "READY"]
        assert rows[1].split()[2:] == ["1s"]
        assert rows[2].split()[2:] == ["9s"]
        assert "so far (current)" in rows[3]
        assert "\x1b[" not in text.stdout

        assert as_json.returncode == 0, as_json.stderr
        events = json_lines(as_json.stdout)
        for event in events:
            validate_event_line(event)
        assert [e["status"] for e in events] == [
            "STATUS_QUEUED",
            "STATUS_FINETUNING",
            "STATUS_READY",
        ]
        assert [e["duration_seconds"] for e in events] == [1.0, 9.0, None]
        first, second = (parse_time(e["created_at"]) for e in events[:2])
        assert first is not None
        assert second is not None
        assert (second - first).total_seconds() == 1.0

        assert from_config.returncode == 0, from_config.stderr
        assert json_lines(from_config.stdout)[-1]["status"] == "STATUS_FAILED"
        assert_no_secrets(text.stdout, text.stderr, as_json.stdout, from_config.stdout)

    async def test_follow_exits_0_when_ready(self, tmp_path: Path) -> None:
        """--follow --json prints each new status as it arrives and exits 0 on READY."""
        async with running_simulator(scenario()) as sim:
            sim.advance(5)
            config = watcher_config(sim, tmp_path, [LATE_READY_ID], [])
            args = ("events", LATE_READY_ID, "-c", str(config), "--follow", "--json")
            async with started(*args, "--interval", "0.1") as follow:
                await follow.wait_for_output('"STATUS_FINETUNING"')
                polls = sim.stats()["by_model"][LATE_READY_ID]
                await wait_until(
                    lambda: sim.stats()["by_model"][LATE_READY_ID] >= polls + 2,
                    what="more polls while fine-tuning",
                )
                assert follow.process.returncode is None  # still following
                sim.advance(100)
                code = await follow.wait_exit()

        assert code == 0, follow.err
        lines = json_lines(follow.out)
        for event in lines[:-1]:
            validate_event_line(event)
        assert [line.get("status") for line in lines[:-1]] == [
            "STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_READY",
        ]  # fmt: skip
        assert lines[-1] == {"provider": "cohere", "final_status": "STATUS_READY", "exit_code": 0}
        assert follow.err == ""

    async def test_follow_exits_1_when_failed_and_retries_server_errors(
        self, tmp_path: Path
    ) -> None:
        """Plain --follow: a 503 is a warning and a retry; FAILED ends it with exit 1."""
        async with running_simulator(scenario()) as sim:
            sim.advance(5)
            config = watcher_config(sim, tmp_path, [LATE_FAILED_ID], [])
            args = ("events", LATE_FAILED_ID, "-c", str(config), "--follow", "--interval", "0.1")
            async with started(*args) as follow:
                await follow.wait_for_output("FINETUNING")
                sim.add_fault({"kind": "http_503", "model": LATE_FAILED_ID, "times": 2})
                await follow.wait_for_output("retrying", stream="err")
                sim.advance(100)
                code = await follow.wait_exit()

        assert code == 1, follow.err
        rows = follow.out.splitlines()
        assert rows[0] == f"{LATE_FAILED_ID}: timeline (UTC)"
        assert "FAILED" in rows[-2]
        assert "new, after 1m 39s in FINETUNING" in rows[-2]
        assert rows[-1] == f"{LATE_FAILED_ID} ended FAILED (exit 1)."
        warnings = follow.err.splitlines()
        assert warnings
        assert all(w.startswith("finetune-watcher: warning: ") for w in warnings)
        assert "HTTP 503" in warnings[0]
        assert "\r" not in follow.out  # no live line in a pipe
        assert "\x1b[" not in follow.out

    async def test_follow_on_a_tty_shows_a_live_line_and_ctrl_c_exits_130(
        self, tmp_path: Path
    ) -> None:
        """On a terminal a live status line is redrawn in place; SIGINT ends it with 130."""
        async with running_simulator(scenario()) as sim:
            sim.advance(5)
            config = watcher_config(sim, tmp_path, [TRAINING_ID], [])
            args = ("events", TRAINING_ID, "-c", str(config), "--follow", "--interval", "0.1")
            async with started(*args, tty=True) as follow:
                await follow.wait_for_output("\r\x1b[KFINETUNING for ")
                await follow.wait_for_output(" · polled ")
                follow.process.send_signal(signal.SIGINT)
                code = await follow.wait_exit()

        assert code == 130
        assert "\r\x1b[K" in follow.out  # redrawn in place
        assert "Traceback" not in follow.out + follow.err
        assert follow.out.endswith("\r\x1b[K")  # the live line is wiped on the way out

    async def test_provider_comes_from_the_configuration(self, tmp_path: Path) -> None:
        """A model configured at OpenAI is asked at OpenAI: every JSON line names the provider,
        and its failure ends --follow with exit 1; --provider names it without a configuration
        entry."""
        job = "ftjob-cli0failed01"
        openai_scenario = Scenario.model_validate(
            {
                "api_key": SIM_KEY,
                "clock": "manual",
                "start": datetime.now(UTC) - timedelta(hours=1),
                "models": [
                    {
                        "id": job,
                        "provider": "openai",
                        "timeline": [[0, "validating_files"], [1, "running"], [10, "failed"]],
                        "error": {"message": "invalid training file"},
                    }
                ],
            }
        )
        async with running_simulator(openai_scenario) as sim:
            sim.advance(20)
            openai_section = {"base_url": sim.provider_url("openai"), "timeout": 5}
            configured = watcher_config(
                sim, tmp_path, [{"id": job, "provider": "openai"}], [], openai=openai_section
            )
            env = {"OPENAI_API_KEY": SIM_KEY}
            followed = await cli(
                "events", job, "-c", str(configured), "--follow", "--json", env=env
            )
            unlisted = watcher_config(
                sim, tmp_path, ["some-cohere-model"], [], openai=openai_section
            )
            named = await cli("events", job, "-c", str(unlisted), "--provider", "openai", env=env)

        assert followed.returncode == 1, followed.stderr
        lines = json_lines(followed.stdout)
        assert {line["provider"] for line in lines} == {"openai"}
        assert lines[-2]["status"] == "failed"
        assert lines[-1] == {"provider": "openai", "final_status": "failed", "exit_code": 1}
        assert named.returncode == 0, named.stderr
        assert named.stdout.splitlines()[0] == f"{job}: timeline (UTC)"
        assert "failed" in named.stdout.splitlines()[-1]
        assert_no_secrets(followed.stdout, followed.stderr, named.stdout, named.stderr)

    async def test_api_errors_are_one_line_with_their_exit_code(self, tmp_path: Path) -> None:
        """Unknown model and rejected key exit 1 with one line; no key at all is exit 78."""
        async with running_simulator(scenario()) as sim:
            env = {"CO_API_URL": sim.base_url, "WATCHER_CONFIG": str(tmp_path / "absent.yaml")}
            unknown = await cli("events", "no-such-model", "--follow", env=env)
            rejected = await cli("events", READY_ID, env={**env, "CO_API_KEY": "wrong-key-42"})
            no_key = await cli("events", READY_ID, env={**env, "CO_API_KEY": ""})

        assert unknown.returncode == 1
        assert unknown.stderr.count("\n") == 1
        assert "HTTP 404" in unknown.stderr
        assert rejected.returncode == 1
        assert rejected.stderr.count("\n") == 1
        assert "HTTP 401" in rejected.stderr
        assert "wrong-key-42" not in rejected.stdout + rejected.stderr
        assert no_key.returncode == 78
        assert "no API key" in no_key.stderr
        for result in (unknown, rejected, no_key):
            assert "Traceback" not in result.stderr
            assert_no_secrets(result.stdout, result.stderr)


# --- test-notify ------------------------------------------------------------------------


class TestTestNotify:
    async def test_every_target_reported_and_a_failure_exits_1(self, tmp_path: Path) -> None:
        """A healthy webhook gets the test message; a refused target is named with its reason."""
        async with webhook_receiver() as hook, webhook_receiver() as own:
            refused = refused_token_url()
            models = [
                {"id": READY_ID, "name": "support-classifier", "urls": [own.url]},
                {"id": FAILED_ID, "urls": [refused]},
            ]
            config = write_config(
                tmp_path / "watcher.yaml",
                base_config("http://127.0.0.1:9", tmp_path, models, [secret_hook_url(hook.port)]),
            )
            result = await cli("test-notify", "-c", str(config))
            await hook.wait_for(1)
            await own.wait_for(1)

            healthy = write_config(
                tmp_path / "healthy.yaml",
                base_config("http://127.0.0.1:9", tmp_path, [READY_ID], [hook.url]),
            )
            all_ok = await cli("test-notify", "-c", str(healthy))
            await hook.wait_for(2)

        assert result.returncode == 1, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "sending: finetune-watcher test notification"
        ok_lines = [line for line in lines if line.startswith("ok")]
        failed_lines = [line for line in lines if line.startswith("FAILED")]
        assert len(ok_lines) == 2, lines
        assert len(failed_lines) == 1, lines
        assert any(f"json://127.0.0.1:{hook.port}" in line and "(notify.urls)" in line
                   for line in ok_lines)  # fmt: skip
        assert any("(models[support-classifier].urls)" in line for line in ok_lines)
        assert f"(models[{FAILED_ID}].urls): connection failed" in failed_lines[0]
        assert lines[-1] == "1 of 3 targets failed"
        assert hook.messages[0]["title"] == "finetune-watcher test notification"
        assert hook.messages[0]["type"] == "info"
        assert_no_secrets(result.stdout, result.stderr)
        assert "hooks/" not in result.stdout  # not even the path of the URL

        assert all_ok.returncode == 0, all_ok.stdout + all_ok.stderr
        assert all_ok.stdout.splitlines()[-1] == "all 1 target ok"

    async def test_model_message_from_its_stored_status(self, tmp_path: Path) -> None:
        """--model renders the model's real last status; only global + its own targets."""
        async with (
            running_simulator(scenario()) as sim,
            webhook_receiver() as hook,
            webhook_receiver() as own,
            webhook_receiver() as other,
        ):
            sim.advance(20)
            models = [
                {"id": READY_ID, "name": "support-classifier", "urls": [own.url]},
                {"id": FAILED_ID, "urls": [other.url]},
                UNPOLLED_ID,
            ]
            # READY and FAILED stored, their notifications undeliverable.
            await poll_once(
                watcher_config(sim, tmp_path, [READY_ID, FAILED_ID], [refused_token_url()])
            )
            config = watcher_config(sim, tmp_path, models, [secret_hook_url(hook.port)])
            stored = await cli("test-notify", "-c", str(config), "--model", READY_ID)
            await hook.wait_for(1)
            await own.wait_for(1)
            sample = await cli("test-notify", "-c", str(config), "--model", UNPOLLED_ID)
            await hook.wait_for(2)
            unknown = await cli("test-notify", "-c", str(config), "--model", "nope")
            assert other.requests == []  # another model's target is left alone

        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert f"{READY_ID}: rendering its stored status STATUS_READY" in stored.stdout
        assert "sending: [test] ✅ support-classifier is ready" in stored.stdout
        message = hook.messages[0]
        assert message["title"] == "[test] ✅ support-classifier is ready"
        assert message["type"] == "success"
        assert "previously fine-tuning" in message["message"]
        assert f"Model: support-classifier ({READY_ID})" in message["message"]
        assert own.messages[0]["title"] == message["title"]

        assert sample.returncode == 0, sample.stdout + sample.stderr
        assert "has no stored status yet: sending a sample READY message" in sample.stdout
        assert hook.messages[1]["title"] == f"[test] ✅ {UNPOLLED_ID} is ready"

        assert unknown.returncode == 1
        assert "neither in the configuration nor in the state database" in unknown.stderr
        assert_no_secrets(stored.stdout, stored.stderr, sample.stdout, sample.stderr)


# --- healthcheck and help ---------------------------------------------------------------


class TestHealthcheck:
    async def test_unreachable_and_bad_listen(self) -> None:
        """Nobody listening: exit 1 and one line; a listen address without a port: exit 78."""
        port = free_port()
        refused = await cli("healthcheck", "--url", f"http://127.0.0.1:{port}/healthz")
        assert refused.returncode == 1
        assert refused.stdout.startswith(f"unhealthy: cannot reach http://127.0.0.1:{port}/")
        from_env = await cli("healthcheck", env={"WATCHER_HEALTH__LISTEN": f"0.0.0.0:{port}"})
        assert from_env.returncode == 1
        assert f"http://127.0.0.1:{port}/healthz" in from_env.stdout
        bad = await cli("healthcheck", env={"WATCHER_HEALTH__LISTEN": "127.0.0.1"})
        assert bad.returncode == 78
        assert "$WATCHER_HEALTH__LISTEN" in bad.stderr
        assert "Traceback" not in bad.stderr


class TestHelp:
    @pytest.mark.parametrize(
        ("command", "options"),
        [
            ("status", ["--json", "--config"]),
            ("events", ["MODEL_ID", "--provider", "--follow", "--json", "--interval", "--config"]),
            ("test-notify", ["--model", "--config"]),
            ("healthcheck", ["--url", "--timeout", "--config"]),
        ],
    )
    def test_help_is_complete(
        self, command: str, options: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each command's --help has a description, every option, an example and exit codes."""
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        for option in options:
            assert option in text
        assert f"example:\n  finetune-watcher {command}" in text
        assert "exit codes:" in text

    def test_every_command_module_registers_a_parser_with_help(self) -> None:
        """Each module of ``COMMANDS`` adds one subparser: listed, described, with exit codes."""
        parser = argparse.ArgumentParser(prog="finetune-watcher")
        subparsers = parser.add_subparsers()
        names: list[str] = []
        for module in COMMANDS:
            before = set(subparsers.choices)
            sub = module.add_parser(subparsers)
            (name,) = set(subparsers.choices) - before
            names.append(name)
            assert subparsers.choices[name] is sub
            assert sub.description, name
            assert sub.epilog is not None
            assert "exit codes:" in sub.epilog, name
            assert callable(sub.get_default("handler")), name
        listed = {action.dest: action.help for action in subparsers._choices_actions}
        hidden = {"manpage"}  # a packaging aid: left out of --help
        assert list(listed) == [n for n in names if n not in hidden]
        assert all(listed.values()), listed
        cli = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        assert list(cli.choices) == names  # the CLI offers exactly the registered commands

    @pytest.mark.parametrize(
        "argv",
        [
            ["--log-level", "debug", "--log-format", "json", "-c", "a.yaml", "status"],
            ["status", "--log-level", "debug", "--log-format", "json", "-c", "a.yaml"],
            [
                "--log-level",
                "error",
                "-c",
                "b.yaml",
                "--log-format",
                "json",
                "status",
                "--log-level",
                "debug",
                "-c",
                "a.yaml",
            ],
        ],
    )
    def test_global_options_before_and_after_the_command(self, argv: list[str]) -> None:
        """--log-level, --log-format and -c work on either side; after the command wins."""
        args = build_parser().parse_args(argv)
        assert (args.command, args.log_level, args.log_format) == ("status", "debug", "json")
        assert args.config == Path("a.yaml")

    def test_defaults_without_global_options(self) -> None:
        """No option given: no config (the default file is found later), levels decided later."""
        args = build_parser().parse_args(["demo"])
        assert (args.config, args.log_level, args.log_format) == (None, None, None)
        assert args.default_log_level == "warning"  # demo's output is the show
        assert build_parser().parse_args(["status"]).default_log_level == "info"

    def test_config_where_a_command_reads_none_is_a_usage_error(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`-c` before `demo` (which reads no configuration) exits 2 with one usage error."""
        with pytest.raises(SystemExit) as exited:
            main(["-c", "a.yaml", "demo"])
        assert exited.value.code == 2
        assert "demo reads no configuration" in capsys.readouterr().err
