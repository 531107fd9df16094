"""Debian's Chromium driven by Playwright for Python (never a downloaded browser).

``.ci/browser-install`` installs the ``chromium`` package; without ``/usr/bin/chromium``
these tests skip on a developer's machine and fail under CI (``$CI`` set), so a
browser-less CI can never pass them silently.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from tests.web_fakes import FakeSource
from watcher.web import SERVER_LIMITS, WebOptions, make_app

CHROMIUM = Path(os.environ.get("WATCHER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]

pytest.importorskip("playwright", reason="pip install -e .[test] brings playwright")

if not CHROMIUM.exists() and os.environ.get("CI"):
    raise RuntimeError(f"{CHROMIUM} is missing: run .ci/browser-install first")

Serve = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """A headless Debian Chromium shared by a module's tests (each gets its own context).

    Test modules using it run on the module's event loop:
    ``pytestmark = pytest.mark.asyncio(loop_scope="module")``."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def serve() -> AsyncIterator[Serve]:
    """Serve the web layer for a fake daemon on 127.0.0.1:0; returns the base URL."""
    servers: list[TestServer] = []

    async def start(source: FakeSource, **options: Any) -> str:
        options.setdefault("listen_host", "127.0.0.1")
        server = TestServer(
            make_app(source, WebOptions(**options)), host="127.0.0.1", port=0, **SERVER_LIMITS
        )
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser: Any) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Open a URL in a fresh browser context; the page fails the test on any script error
    (``page.script_errors`` collects them). Contexts close after the test."""
    contexts: list[Any] = []

    async def open_(url: str, **context: Any) -> Any:
        ctx = await browser.new_context(**context)
        contexts.append(ctx)
        page = await ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
        page.script_errors = errors
        await page.goto(url)
        return page

    yield open_
    for ctx in contexts:
        await ctx.close()
