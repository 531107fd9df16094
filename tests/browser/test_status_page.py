"""The status page in a real browser: every model, live within a second, without JavaScript,
behind a token, hostile names, a phone, accessibility (axe-core) and the screenshots."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Serve
from tests.web_fakes import sample_source

OpenPage = Callable[..., Awaitable[Any]]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
TOKEN = "browser-test-token-0123456789abcdef"  # noqa: S105 -- a test token
ANYWHERE = "0.0.0.0"  # noqa: S104 -- the configured host only; the server binds 127.0.0.1
pytestmark = pytest.mark.asyncio(loop_scope="module")

WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


async def rows(page: Any) -> list[str]:
    return [str(key) for key in await page.eval_on_selector_all(
        "#models tbody tr", "rows => rows.map(r => r.dataset.key)"
    )]  # fmt: skip


class TestLive:
    async def test_lists_every_model_and_goes_live(self, open_page: OpenPage, serve: Serve) -> None:
        """Every model is a row with its name, and the page says it is live."""
        source = sample_source()
        page = await open_page(await serve(source))
        await page.wait_for_selector("#live.on", timeout=5000)
        assert sorted(await rows(page)) == sorted(f"{p}/{i}" for p, i in source.models)
        for model in source.models.values():
            link = page.locator(f'tr[data-key="{model["provider"]}/{model["id"]}"] th a')
            assert await link.inner_text() == (model["name"] or model["id"])
        assert await page.locator("#live").inner_text() == "Live"
        assert page.script_errors == []

    async def test_a_change_shows_within_a_second_without_reload(
        self, open_page: OpenPage, serve: Serve
    ) -> None:
        """A status the daemon records shows on the open page in under 1 s; no reload."""
        source = sample_source()
        page = await open_page(await serve(source))
        await page.wait_for_selector("#live.on", timeout=5000)
        await page.evaluate("window.sameDocument = true")
        cell = 'tr[data-key="openai/ftjob-abc123"] td[data-label="Status"] .word'
        assert await page.locator(cell).inner_text() == "running"
        started = time.monotonic()
        source.set_status("openai", "ftjob-abc123", "succeeded", "ready")
        await page.wait_for_function(
            "cell => document.querySelector(cell).textContent === 'ready'", arg=cell, timeout=1000
        )
        elapsed = time.monotonic() - started
        assert elapsed < 1.0
        source.add("ftjob-new", name="brand-new", provider="openai", status="queued",
                   phase="queued")  # fmt: skip
        source.bump()
        await page.wait_for_selector('tr[data-key="openai/ftjob-new"]', timeout=1000)
        assert await page.evaluate("window.sameDocument") is True
        assert await page.locator("#model-count").inner_text() == f"({len(source.models)})"
        assert page.script_errors == []

    async def test_model_page_timeline_updates(self, open_page: OpenPage, serve: Serve) -> None:
        """A model's page lists its timeline and grows it live."""
        source = sample_source()
        base = await serve(source)
        page = await open_page(base + "/models/openai/ftjob-abc123")
        await page.wait_for_selector("#live.on", timeout=5000)
        assert await page.locator("#timeline li").count() == 1
        source.set_status("openai", "ftjob-abc123", "succeeded", "ready")
        await page.wait_for_function(
            "() => document.querySelectorAll('#timeline li').length === 2", timeout=1000
        )
        assert await page.locator("#model-status .word").inner_text() == "ready"
        assert page.script_errors == []

    async def test_hostile_names_stay_text(self, open_page: OpenPage, serve: Serve) -> None:
        """Markup in a model name or error is shown as text, before and after a live update."""
        source = sample_source()
        hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
        source.add("x\"'<>", name=hostile, provider="openai", status="failed",
                   phase="failed", last_error="<b onmouseover=alert(3)>boom</b>")  # fmt: skip
        page = await open_page(await serve(source))
        await page.wait_for_selector("#live.on", timeout=5000)
        for _ in range(2):
            link = page.locator("#models a", has_text="<img")
            assert await link.inner_text() == hostile
            assert await page.locator("#models img, #models script, #models b").count() == 0
            source.bump()
            source.models[("openai", "x\"'<>")]["failures"] = 3
        assert page.script_errors == []


class TestWithoutJavaScript:
    async def test_server_rendered_table(self, open_page: OpenPage, serve: Serve) -> None:
        """With JavaScript off the table is complete and links to each model's page."""
        source = sample_source()
        base = await serve(source)
        page = await open_page(base, java_script_enabled=False)
        assert sorted(await rows(page)) == sorted(f"{p}/{i}" for p, i in source.models)
        assert await page.locator("#live").inner_text() == "Not live: reload to refresh"
        assert "ago" in await page.locator('td[data-label="Last poll"]').first.inner_text()
        await page.get_by_role("link", name="tone-rewriter").click()
        await page.wait_for_url("**/models/openai/ftjob-zz9")
        assert await page.locator("h1").inner_text() == "tone-rewriter"
        assert await page.locator("#timeline li").count() == 1


class TestAccess:
    async def test_token_required_off_loopback(self, open_page: OpenPage, serve: Serve) -> None:
        """Listening beyond loopback with a token: the login form first, then the live page."""
        source = sample_source()
        base = await serve(source, listen_host=ANYWHERE, token=TOKEN)
        page = await open_page(base)
        assert await page.get_by_role("heading", level=1).inner_text() == "Log in"
        assert await page.locator("#models").count() == 0
        await page.get_by_label("Access token").fill("not the token")
        await page.get_by_role("button", name="Log in").click()
        assert await page.locator("#login-error").inner_text() == "That token is not right."
        await page.get_by_label("Access token").fill(TOKEN)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_selector("#live.on", timeout=5000)
        assert len(await rows(page)) == len(source.models)
        cookies = await page.context.cookies()
        session = next(c for c in cookies if c["name"] == "watcher_session")
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Strict"
        source.set_status("openai", "ftjob-abc123", "succeeded", "ready")  # the stream works too
        await page.wait_for_function(
            "() => document.querySelector('tr[data-key=\"openai/ftjob-abc123\"] .word')"
            ".textContent === 'ready'",
            timeout=1000,
        )
        await page.get_by_role("button", name="Log out").click()
        assert await page.get_by_role("heading", level=1).inner_text() == "Log in"

    async def test_locked_without_token(self, open_page: OpenPage, serve: Serve) -> None:
        page = await open_page(await serve(sample_source(), listen_host=ANYWHERE))
        assert await page.locator("h1").inner_text() == "Status page disabled"


class TestLooks:
    async def test_readable_on_a_phone(self, open_page: OpenPage, serve: Serve) -> None:
        """At 390 px wide each model is a card and nothing scrolls sideways."""
        page = await open_page(await serve(sample_source()), viewport={"width": 390, "height": 844})
        await page.wait_for_selector("#live.on", timeout=5000)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        label = await page.evaluate(
            "getComputedStyle(document.querySelector('#models td'), '::before').content"
        )
        assert label == '"Provider"'

    @pytest.mark.parametrize("scheme", ["light", "dark"])
    @pytest.mark.parametrize("path", ["/", "/models/openai/ftjob-zz9", "login"])
    async def test_axe_finds_no_violations(
        self, open_page: OpenPage, serve: Serve, scheme: str, path: str
    ) -> None:
        """axe-core (vendored) finds no WCAG 2.x A/AA or best-practice violation."""
        source = sample_source()
        if path == "login":
            base = await serve(source, listen_host=ANYWHERE, token=TOKEN)
            path = "/"
        else:
            base = await serve(source)
        page = await open_page(base + path, color_scheme=scheme, bypass_csp=True)
        if await page.locator("#live").count():
            await page.wait_for_selector("#live.on", timeout=5000)
        await page.add_script_tag(path=str(AXE))
        result = await page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG
        )
        violations = [
            f"{v['id']}: {v['help']} ({len(v['nodes'])}: {v['nodes'][0]['target']})"
            for v in result["violations"]
        ]
        assert violations == []
        assert len(result["passes"]) > 10

    @pytest.mark.parametrize("scheme", ["light", "dark"])
    async def test_screenshots(
        self, open_page: OpenPage, serve: Serve, scheme: str, tmp_path: Path
    ) -> None:
        """Screenshots for the docs: ``WATCHER_SCREENSHOTS=docs/img`` writes them there."""
        folder = Path(os.environ.get("WATCHER_SCREENSHOTS", tmp_path))
        folder.mkdir(parents=True, exist_ok=True)
        page = await open_page(
            await serve(sample_source()),
            color_scheme=scheme,
            viewport={"width": 1200, "height": 720},
            device_scale_factor=1,
        )
        await page.wait_for_selector("#live.on", timeout=5000)
        target = folder / f"status-page-{scheme}.png"
        await page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000
