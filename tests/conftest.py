"""Shared test helpers: condition waits, config files, and the daemon as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SIM_KEY = "sim-key-0123456789"

#: Workers for the whole suite (the README's bare ``.venv/bin/pytest``); issue 15, goal 5.
SUITE_WORKERS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The whole suite runs on ``SUITE_WORKERS`` pytest-xdist workers, one test file per
    worker at a time (``--dist loadfile``: a module's fixtures and its daemons stay on one
    worker). Only when no test was named and no ``-n`` / ``-s`` / ``--pdb`` was given:
    ``pytest tests/test_x.py`` stays in one process. ``-n 0`` runs the suite serially."""
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    option = config.option
    if (
        config.args_source is not pytest.Config.ArgsSource.TESTPATHS
        or option.numprocesses is not None
        or option.dist != "no"
        or option.capture == "no"
        or option.usepdb
        or option.collectonly
    ):
        return
    option.numprocesses = SUITE_WORKERS
    option.dist = "loadfile"


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 15.0, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` is true, checking often; fail after ``timeout``."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def base_config(
    base_url: str, tmp_path: Path, models: list[Any], urls: list[str], **poll: Any
) -> dict[str, Any]:
    return {
        "cohere": {"base_url": base_url, "timeout": 5},
        "poll": {"interval": 0.2, "settled_interval": 0.5, "jitter": 0.0, "concurrency": 4, **poll},
        "state": {"path": str(tmp_path / "state" / "watcher.db")},
        "notify": {"urls": urls, "timeout": 5},
        "models": models,
    }


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHER_", "CO_API", "COHERE_", "CREDENTIALS_DIRECTORY"))
    }
    env["CO_API_KEY"] = SIM_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m watcher ARGS`` to completion (for commands that exit by themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@dataclass
class DaemonProcess:
    process: anyio.abc.Process
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = 10.0) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def daemon(
    config: Path, *args: str, command: str = "run", env: Mapping[str, str] | None = None
) -> AsyncIterator[DaemonProcess]:
    """``finetune-watcher run -c CONFIG`` as a real subprocess; killed if the test leaves it."""
    log_path = config.parent / f"daemon-{os.getpid()}-{id(config)}.log"
    with log_path.open("ab") as log_file:
        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "watcher",
                command,
                "-c",
                str(config),
                "--log-format",
                "json",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=cli_env(env),
            cwd=ROOT,
        )
    proc = DaemonProcess(process, log_path)
    try:
        yield proc
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Every test starts and ends with structlog's defaults.

    ``configure_logging`` binds the stream it is given (for an in-process command, the
    test's captured stdout); a later test logging through that configuration would
    write to a closed file. Resetting after each test keeps tests independent of order.
    """
    from watcher.logs import reset_logging

    reset_logging()
    yield
    reset_logging()
