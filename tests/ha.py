"""Helpers for the high-availability tests: replicas of ``finetune-watcher run`` on one
PostgreSQL (``tests.pg``), each with its own health port, told apart in the messages
they send by their dashboard link (``https://replica-NAME.example/...``)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio

from tests.conftest import base_config, write_config
from tests.receivers import free_port

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest
    from tests.pg import Database

#: The lease ttl every HA test uses (seconds): takeovers within TTL + 1 s.
TTL = 2.0
REPLICA = re.compile(r"replica-([a-z0-9]+)\.example")


def replica_config(
    tmp_path: Path,
    name: str,
    *,
    base_url: str,
    db: Database,
    models: list[Any],
    urls: list[str],
    ttl: float = TTL,
    **poll: Any,
) -> tuple[Path, int]:
    """A configuration file for replica ``name`` and its health port."""
    port = free_port()
    config = base_config(base_url, tmp_path, models, urls, **poll)
    config["state"] = {"url": db.url, "password_file": str(db.password_file), "lease_ttl": ttl}
    config["health"] = {"listen": f"127.0.0.1:{port}"}
    config["notify"]["dashboard_url"] = f"https://replica-{name}.example/{{model_id}}"
    return write_config(tmp_path / name / "watcher.yaml", config), port


def sender(message: dict[str, Any]) -> str | None:
    """Which replica rendered ``message`` (from its dashboard link)."""
    match = REPLICA.search(f"{message.get('title', '')} {message.get('message', '')}")
    return match.group(1) if match else None


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """``/readyz`` of the replica on ``port``: (HTTP status, JSON); (0, {}) when unreachable."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as answer,
        ):
            return answer.status, json.loads(await answer.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, {}


async def leader_gauge(port: int) -> float | None:
    """``finetune_watcher_leader`` on the replica on ``port`` (None when unreachable)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as answer,
        ):
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    match = re.search(r"^finetune_watcher_leader (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def wait_for_role(port: int, role: str, *, timeout: float = 15.0) -> float:
    """Wait until the replica on ``port`` reports ``role`` on /readyz; returns when (monotonic)."""
    with anyio.move_on_after(timeout):
        while True:
            _, body = await readyz(port)
            if body.get("role") == role:
                return time.monotonic()
            await anyio.sleep(0.05)
    raise AssertionError(f"replica on port {port} did not become {role} within {timeout}s")
