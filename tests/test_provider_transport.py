"""The shared transport's hot-path shortcuts keep every behaviour they shortcut.

Issue 15, goal 4: a poll's fixed cost was cut in :mod:`watcher.providers.http` and
:mod:`watcher.providers.base` (an id of unreserved characters is not run through
``quote``; a body's digest is the interpreter's keyed hash; a poll's URL is built from
parts split once instead of parsed; a plain ``application/json`` is not parsed). Each
test here pins that the shortcut gives what the long way gave, over real loopback
servers where a request is involved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.receivers import LOOPBACK
from watcher.errors import BadResponseError, NotFoundError
from watcher.pacing import RequestPacer
from watcher.providers import PROVIDERS, open_provider
from watcher.providers.base import path_segment
from watcher.providers.http import ApiTransport, UrlBase, body_digest
from watcher.settings import Settings, section_name


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()


class TestPathSegment:
    @pytest.mark.parametrize(
        "job_id",
        [
            "ft-abc123",
            "bench-00001",
            "a.b_c~d-e",
            "...",
            "a..b",
            "ft a/b",
            "ft%20",
            "é",
            "a+b",
            "x:y",
        ],
    )
    def test_is_what_quote_gives(self, job_id: str) -> None:
        assert path_segment(job_id) == quote(job_id, safe="")

    @pytest.mark.parametrize("job_id", ["", ".", "..", "a\x00b", "a\nb", "\x7f"])
    def test_ids_naming_no_job_are_refused(self, job_id: str) -> None:
        with pytest.raises(NotFoundError):
            path_segment(job_id, provider="x")


class TestBodyDigest:
    def test_equal_bodies_have_equal_digests_whatever_the_object(self) -> None:
        body = b'{"status": "running", "id": "ft-1"}'
        again = bytes(bytearray(body))  # another object, the same bytes
        assert again is not body
        assert body_digest(body) == body_digest(again)
        assert len(body_digest(body)) == 16

    def test_a_changed_byte_or_length_changes_it(self) -> None:
        body = b'{"status": "running", "id": "ft-1"}'
        assert body_digest(body) != body_digest(body.replace(b"running", b"runnint"))
        assert body_digest(body) != body_digest(body + b" ")
        assert body_digest(b"") != body_digest(b"\x00")


class TestUrlBase:
    @pytest.mark.parametrize(
        "base",
        [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/openai/v1/",
            "https://api.openai.com/v1",
            "http://[::1]:9000/a b/c",
            "http://h/a/../b",
            "https://EXAMPLE.com:443/v1",
        ],
    )
    @pytest.mark.parametrize(
        ("tail", "query"),
        [("/ft-1", ""), ("/ft%20a%2Fb", "api-version=2024-10-21"), ("/x/events", "limit=1")],
    )
    def test_is_the_url_the_string_parses_to(self, base: str, tail: str, query: str) -> None:
        built = UrlBase(base).url(tail, query)
        text = base.rstrip("/") + tail + ("?" + query if query else "")
        assert isinstance(built, URL)
        assert built == URL(text)
        assert str(built) == str(URL(text))

    def test_a_base_with_a_query_is_joined_as_a_string(self) -> None:
        assert UrlBase("http://h/v1?x=1").url("/ft-1", "a=b") == "http://h/v1?x=1/ft-1?a=b"


class TestContentType:
    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/json;charset=UTF-8",
            "application/problem+json",
        ],
    )
    async def test_json_in_any_spelling_is_accepted(self, content_type: str) -> None:
        async def answer(request: web.Request) -> web.Response:
            return web.Response(body=b'{"ok": true}', headers={"Content-Type": content_type})

        app = web.Application()
        app.router.add_get("/x", answer)
        async with serving(app) as base, aiohttp.ClientSession() as session:
            transport = ApiTransport(session, provider="t", timeout=5)
            assert await transport.get_json(base + "/x", what="x") == {"ok": True}

    @pytest.mark.parametrize("content_type", ["text/html", "application/jsonp", None])
    async def test_anything_else_is_refused(self, content_type: str | None) -> None:
        async def answer(request: web.Request) -> web.Response:
            response = web.Response(body=b'{"ok": true}')
            if content_type is None:
                response.headers.popall("Content-Type", None)
                response.content_type = "application/octet-stream"
            else:
                response.headers["Content-Type"] = content_type
            return response

        app = web.Application()
        app.router.add_get("/x", answer)
        async with serving(app) as base, aiohttp.ClientSession() as session:
            transport = ApiTransport(session, provider="t", timeout=5)
            with pytest.raises(BadResponseError, match="expected JSON"):
                await transport.get_raw(base + "/x", None, what="x")


class TestPacer:
    async def test_every_request_takes_a_slot(self) -> None:
        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/x", answer)
        pacer = RequestPacer(1_000_000)
        async with serving(app) as base, aiohttp.ClientSession() as session:
            transport = ApiTransport(session, provider="t", pacer=pacer, timeout=5)
            for _ in range(3):
                await transport.get_raw(base + "/x", None, what="x")
        assert pacer.requests == 3


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_every_provider_polls_the_id_as_one_encoded_segment(provider: str) -> None:
    """A poll's URL is built from parts (no parsing): the server still sees the base's
    path, the id quoted as one segment (``/`` and space encoded), and the query."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({"message": "no such job"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with serving(app) as base:
        section_type = type(Settings.model_fields[section_name(provider)].default)
        data: dict[str, Any] = {"base_url": base + "/pre/v1"}
        if "account_id" in section_type.model_fields:
            data["account_id"] = "acct"
        section = section_type.model_validate(data)
        async with aiohttp.ClientSession() as session:
            client = open_provider(provider, section, session=session, pacer=None)
            with pytest.raises(NotFoundError):
                await client.fetch_history("ft a/b~c")
    [path] = seen
    assert path.startswith("/pre/v1/"), path
    assert "/ft%20a%2Fb~c" in path, path
    if provider == "cohere":
        assert path.endswith("/ft%20a%2Fb~c/events?order_by=created_at&page_size=50"), path
    else:
        assert path.endswith("/ft%20a%2Fb~c"), path
