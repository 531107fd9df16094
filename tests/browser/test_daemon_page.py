"""The status page of a real daemon (a Watcher polling the simulator) in a real browser."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.test_web_daemon import running_daemon
from watcher.lifecycle import ModelKey
from watcher.providers.cohere import FINETUNING, READY

pytestmark = pytest.mark.asyncio(loop_scope="module")

OpenPage = Callable[..., Awaitable[Any]]


async def test_page_lists_the_daemons_models_and_follows_it(
    open_page: OpenPage, tmp_path: Path
) -> None:
    """Every watched model is on the page; READY shows without a reload soon after the
    daemon records it."""
    async with running_daemon(tmp_path) as (watcher, base, _, sim):
        sim.advance(10)
        await wait_until(lambda: all(m.status == FINETUNING for m in watcher.models.values()),
                         what="both models FINETUNING")  # fmt: skip
        page = await open_page(base)
        await page.wait_for_selector("#live.on", timeout=5000)
        keys = await page.eval_on_selector_all(
            "#models tbody tr", "rows => rows.map(r => r.dataset.key)"
        )
        assert sorted(keys) == ["cohere/m-ready", "cohere/m-slow"]
        cell = 'tr[data-key="cohere/m-ready"] td[data-label="Status"] .word'
        assert await page.locator(cell).inner_text() == "running"
        await page.evaluate("window.sameDocument = true")
        sim.advance(60)
        started = time.monotonic()
        await wait_until(lambda: watcher.models[ModelKey("cohere", "m-ready")].status == READY,
                         what="READY recorded")  # fmt: skip
        recorded = time.monotonic()
        await page.wait_for_function(
            "cell => document.querySelector(cell).textContent === 'ready'", arg=cell, timeout=1000
        )
        assert time.monotonic() - recorded < 1.0
        assert time.monotonic() - started < 2.0
        assert await page.evaluate("window.sameDocument") is True
        assert page.script_errors == []


async def test_token_required_off_loopback(open_page: OpenPage, tmp_path: Path) -> None:
    """The daemon listening beyond loopback with web.token_file: the login form first,
    then the live page, whose model page shows the timeline the poller kept."""
    token = "0123456789abcdef0123456789abcdef"  # noqa: S105 -- a test's token
    token_file = tmp_path / "web-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    listen = {"listen": "0.0.0.0:0"}
    daemon = running_daemon(tmp_path, health=listen, web={"token_file": str(token_file)})
    async with daemon as (watcher, base, _, sim):
        sim.advance(10)
        await wait_until(lambda: all(m.status == FINETUNING for m in watcher.models.values()),
                         what="both models FINETUNING")  # fmt: skip
        page = await open_page(base)
        assert await page.get_by_role("heading", level=1).inner_text() == "Log in"
        assert await page.locator("#models").count() == 0
        await page.get_by_label("Access token").fill(token)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_selector("#live.on", timeout=5000)
        cell = 'tr[data-key="cohere/m-ready"] td[data-label="Status"] .word'
        sim.advance(60)
        await page.wait_for_function(
            "cell => document.querySelector(cell).textContent === 'ready'", arg=cell, timeout=3000
        )
        await page.goto(base + "/models/cohere/m-ready")
        timeline = await page.locator("main").inner_text()
        for word in ("STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_READY"):
            assert word in timeline
        # The login page itself is a 401 (the browser logs it); nothing else went wrong.
        assert [e for e in page.script_errors if "401 (Unauthorized)" not in e] == []
