"""SIGTERM while the daemon is still starting: a clean exit 0, whatever it was doing.

Real ``finetune-watcher run`` subprocesses and real signals. Before the fix these tests
describe, a SIGTERM that landed inside the event loop before the daemon's own handler was
installed raised ``SystemExit`` in whatever frame ran; asyncio then cancelled the tasks,
and a task that finished opening its resources anyway (a replica taking the lease) kept the
process alive. Now the loop owns SIGTERM/SIGINT from the first moment ``serve`` runs: a
signal while starting abandons the start and closes what was opened (docs/reliability.md,
"Exit codes").
"""

from __future__ import annotations

import signal
import socket
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.conftest import daemon, write_config

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest
    from tests.pg import Database

pytest_plugins = ["tests.pg"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(tmp_path: Path, state: dict[str, Any], health_port: int) -> Path:
    return write_config(tmp_path / "watcher.yaml", {
        "cohere": {"base_url": "http://127.0.0.1:9"},  # nothing answers: polls fail, harmless
        "poll": {"interval": 30},
        "state": state,
        "health": {"listen": f"127.0.0.1:{health_port}"},
        "models": ["ft-start-1", "ft-start-2"],
    })  # fmt: skip


def _healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            status: int = answer.status
            return status
    except OSError:
        return None


async def _sigterm_after_first_line(config: Path, delay: float) -> tuple[int, str]:
    """Start a daemon, send SIGTERM ``delay`` s after its first log line: (exit, log)."""
    async with daemon(config) as proc:
        with anyio.fail_after(30):
            while not proc.log_path.stat().st_size:
                await anyio.sleep(0.005)
        await anyio.sleep(delay)
        proc.send(signal.SIGTERM)
        return await proc.wait_exit(15), proc.log()


async def test_sigterm_while_the_database_is_unreachable_exits_0(tmp_path: Path) -> None:
    """The health port answers, the state database does not (the daemon retries opening
    it): SIGTERM ends the start at once with exit 0 and one log line, no traceback."""
    health = _free_port()
    nobody = _free_port()  # nothing listens here
    config = _config(tmp_path, {"url": f"postgresql://watcher@127.0.0.1:{nobody}/watcher"}, health)
    async with daemon(config, env={"PGPASSWORD": "not-used"}) as proc:
        with anyio.fail_after(20):
            while "cannot reach the state database" not in proc.log():
                assert proc.process.returncode is None, proc.log()
                await anyio.sleep(0.05)
        assert await anyio.to_thread.run_sync(_healthz, health) == 200
        proc.send(signal.SIGTERM)
        assert await proc.wait_exit(10) == 0, proc.log()
        text = proc.log()
    assert "stopping before the start completed" in text
    assert "watcher starting" not in text
    assert "Traceback" not in text


@pytest.mark.realtime
async def test_sigterm_at_any_moment_of_the_start_exits_0(tmp_path: Path) -> None:
    """Seven daemons, each sent SIGTERM at a different moment after its first log line
    (the health port opening; then the state, the watcher, the first polls): every one
    exits 0 within seconds, none leaves a traceback. (Before the first log line the
    interpreter may still be importing: the early handler's window, tested elsewhere.)"""
    delays = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]
    codes: dict[float, int] = {}
    logs: dict[float, str] = {}

    async def one(delay: float) -> None:
        where = tmp_path / f"d{delay}"
        where.mkdir()
        config = _config(where, {"path": str(where / "watcher.db")}, _free_port())
        codes[delay], logs[delay] = await _sigterm_after_first_line(config, delay)

    async with anyio.create_task_group() as tg:
        for delay in delays:
            tg.start_soon(one, delay)
    for delay in delays:
        assert codes[delay] == 0, f"SIGTERM after {delay} s: exit {codes[delay]}\n{logs[delay]}"
        assert "Traceback" not in logs[delay], logs[delay]


@pytest.mark.realtime
async def test_sigterm_at_any_moment_of_a_replicas_start_exits_0(
    tmp_path: Path, pg_database: Database
) -> None:
    """The same on PostgreSQL, where a replica's start also connects, migrates and takes
    the lease: SIGTERM at each moment after its first log line exits 0."""
    delays = [0.0, 0.02, 0.05, 0.1, 0.3]
    codes: dict[float, int] = {}
    logs: dict[float, str] = {}

    async def one(delay: float) -> None:
        where = tmp_path / f"d{delay}"
        state = {"url": pg_database.url, "password_file": str(pg_database.password_file),
                 "lease_ttl": 2}  # fmt: skip
        config = _config(where, state, _free_port())
        codes[delay], logs[delay] = await _sigterm_after_first_line(config, delay)

    for delay in delays:  # one at a time: each start may take the lease
        await one(delay)
    for delay in delays:
        assert codes[delay] == 0, f"SIGTERM after {delay} s: exit {codes[delay]}\n{logs[delay]}"
        assert "Traceback" not in logs[delay], logs[delay]
