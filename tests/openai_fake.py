"""A tiny OpenAI / Azure OpenAI fine-tuning API on loopback, from the fixtures, for the
client tests that need an answer the simulator does not give (hostile pages, cursors
that repeat, ``has_more`` absent). The simulator (``watcher.simulator``) is the
reference fake; this one is deliberately small and scriptable.

Shapes are those of tests/fixtures/providers/openai*.json: jobs with unix-second
times, events newest first, ``{"object": "list", "data", "has_more"}`` pages with
``limit`` and ``after``.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

FIXTURES = Path(__file__).parent / "fixtures" / "providers"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass
class Fault:
    """One scripted misbehaviour; ``times`` None = forever. ``where``: "job", "events",
    "list" or "" (every request)."""

    kind: str
    times: int | None = 1
    where: str = ""
    retry_after: str | None = None
    retry_after_ms: str | None = None
    body: Any = None  # kind "body": this JSON, status 200


@dataclass
class FakeOpenAI:
    """The fake's data and script. ``auth``: "bearer" (OpenAI) or "api-key" (Azure)."""

    key: str = "sk-test"
    auth: str = "bearer"
    prefix: str = "/openai/v1"
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page_size_cap: int = 100
    has_more: str = "present"  # "present" | "absent"
    require_api_version: str | None = None
    faults: list[Fault] = field(default_factory=list)
    requests: list[web.Request] = field(default_factory=list)

    def add_job(self, job: dict[str, Any], events: list[dict[str, Any]] | None = None) -> None:
        self.jobs[job["id"]] = copy.deepcopy(job)
        self.events[job["id"]] = copy.deepcopy(events or [])

    def paths(self) -> list[str]:
        return [r.path_qs for r in self.requests]

    # --- serving ----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        p = self.prefix
        app.router.add_get(p + "/fine_tuning/jobs", self._list)
        app.router.add_get(p + "/fine_tuning/jobs/{id}", self._job)
        app.router.add_get(p + "/fine_tuning/jobs/{id}/events", self._events)
        return app

    async def _job(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._gate(request, "job")) is not None:
            return early
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return _error(404, fixture("openai-error-404.json"))
        return web.json_response(job)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._gate(request, "events")) is not None:
            return early
        job_id = request.match_info["id"]
        if job_id not in self.jobs:
            return _error(404, fixture("openai-error-404.json"))
        return self._page(request, self.events[job_id])

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._gate(request, "list")) is not None:
            return early
        return self._page(request, list(self.jobs.values()))

    def _page(self, request: web.Request, rows: list[dict[str, Any]]) -> web.Response:
        limit = min(int(request.query.get("limit", "20")), self.page_size_cap)
        after = request.query.get("after")
        start = 0
        if after is not None:
            ids = [row.get("id") for row in rows]
            start = ids.index(after) + 1 if after in ids else len(rows)
        page = rows[start : start + limit]
        body: dict[str, Any] = {"object": "list", "data": page}
        if self.has_more == "present":
            body["has_more"] = start + limit < len(rows)
        return web.json_response(body)

    async def _gate(self, request: web.Request, where: str) -> web.StreamResponse | None:
        """Auth, api-version, then the first matching fault; None: answer normally."""
        self.requests.append(request)
        if self.auth == "bearer":
            ok = request.headers.get("Authorization") == f"Bearer {self.key}"
        else:
            ok = request.headers.get("api-key") == self.key
        if not ok:
            return _error(401, fixture("openai-error-401.json"))
        if self.require_api_version and (
            request.query.get("api-version") != self.require_api_version
        ):
            return _error(404, {"error": {"code": "404", "message": "Resource not found"}})
        for fault in self.faults:
            if fault.where and fault.where != where:
                continue
            if fault.times is not None:
                if fault.times <= 0:
                    continue
                fault.times -= 1
            return await self._misbehave(request, fault, where)
        return None

    async def _misbehave(
        self, request: web.Request, fault: Fault, where: str
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind.startswith("http_"):
            status = int(kind[5:])
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = fault.retry_after_ms
            name = {401: "401", 404: "404", 429: "429"}.get(status, "500")
            return _error(status, fixture(f"openai-error-{name}.json"), headers)
        if kind == "body":
            return web.json_response(fault.body)
        if kind == "malformed_json":
            return web.Response(
                body=b'{"object": "list", "data": [', content_type="application/json"
            )
        if kind == "html":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html")  # fmt: skip
        if kind == "wrong_shape":
            return web.json_response(["not", "an", "object"])
        if kind == "data_not_a_list":
            return web.json_response({"object": "list", "data": {"id": "x"}, "has_more": False})
        if kind == "huge_body":
            return web.json_response({"data": [], "pad": "x" * (2 * 1024 * 1024)})
        if kind == "slow":
            await asyncio.sleep(30)
            return web.json_response({})
        if kind == "reset_connection":
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response()
        if kind == "repeat_cursor":  # every page the same, has_more forever
            rows = [{"id": "ftevent-same", "created_at": 1796025600, "level": "info",
                     "message": "again", "object": "fine_tuning.job.event"}]  # fmt: skip
            return web.json_response({"object": "list", "data": rows, "has_more": True})
        if kind == "endless_pages":  # new ids forever
            n = len(self.requests)
            rows = [{"id": f"ftevent-{n}", "created_at": 1796025600 + n, "level": "info",
                     "message": "more", "object": "fine_tuning.job.event"}]  # fmt: skip
            return web.json_response({"object": "list", "data": rows, "has_more": True})
        raise AssertionError(f"unknown fault {kind} at {where}")


def _error(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


@asynccontextmanager
async def serving(fake: FakeOpenAI) -> AsyncIterator[str]:
    """Serve ``fake`` on loopback; yields its base URL (``http://127.0.0.1:PORT/openai/v1``)."""
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(fake.prefix))
    finally:
        await server.close()
