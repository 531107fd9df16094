"""Mounting the web layer on the daemon's HTTP server (the one of ``/healthz``).

``mount_web(app, source, options)`` adds the status page, the JSON API, the stream,
the login form, the static files and (with a secret) ``POST /webhooks/openai`` to an
``aiohttp`` application it does not own, and an ``on_shutdown`` hook that ends the
open streams. Routes it does not add (``/healthz``, ``/readyz``, ``/metrics``) are
left alone: no middleware, each route of ours carries its own guard.

Routes::

    GET  /                              status page          (guarded)
    GET  /models/{provider}/{id}        a model's page       (guarded)
    GET  /api/status                    status --json        (guarded)
    GET  /api/models/{provider}/{id}    model + timeline     (guarded)
    GET  /api/stream                    server-sent events   (guarded)
    GET  /login, POST /login, POST /logout                   (with a token only)
    GET  /static/{name}                 page.css, page.js    (open)
    POST /webhooks/openai               signed webhooks      (own signatures)
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TypedDict

from aiohttp import web

from watcher.web.api import StatusApi, json_answer
from watcher.web.auth import Access, Gate, access_rule, describe_access, read_form, safe_next
from watcher.web.options import WebOptions
from watcher.web.page import (
    Assets,
    render_locked_page,
    render_login_page,
    render_model_page,
    render_not_found_page,
    render_starting_page,
    render_status_page,
)
from watcher.web.source import SourceUnavailable, WebSource
from watcher.web.stream import StatusFeed, StreamServer
from watcher.web.webhooks import OpenAIWebhooks, RateLimitedLog

__all__ = [
    "CLIENT_MAX_SIZE",
    "SERVER_LIMITS",
    "WEB_MOUNT",
    "ServerLimits",
    "WebMount",
    "make_app",
    "mount_web",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: For ``web.Application(client_max_size=...)``: no request of ours needs more.
CLIENT_MAX_SIZE = 64 * 1024


class ServerLimits(TypedDict):
    max_line_size: int
    max_field_size: int
    max_headers: int


#: For ``web.AppRunner(app, **SERVER_LIMITS)``: request line and header limits.
SERVER_LIMITS: ServerLimits = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 64}

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HTML_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_NOT_LOOPBACK = (
    "this listener is loopback-only and answers only to loopback host names; "
    "behind a reverse proxy set web.token_file (or web.public: true)"
)
#: Seconds a client should wait while the daemon starts (503 ``Retry-After``).
RETRY_AFTER_STARTING = 5
_STATIC_TYPES = {
    "page.css": "text/css",
    "page.js": "text/javascript",
    "icon.svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class _Static:
    body: bytes
    content_type: str
    version: str


def _load_static() -> dict[str, _Static]:
    folder = resources.files("watcher.web") / "static"
    files = {}
    for name, content_type in _STATIC_TYPES.items():
        body = (folder / name).read_bytes()
        files[name] = _Static(body, content_type, hashlib.sha256(body).hexdigest()[:12])
    return files


@dataclass(frozen=True, slots=True)
class WebMount:
    """What ``mount_web`` set up: the access rule and the parts tests and metrics read."""

    access: Access
    feed: StatusFeed
    streams: StreamServer
    webhooks: OpenAIWebhooks | None

    def describe(self) -> str:
        """The daemon's start line: ``status page <this>``."""
        hooks = "; POST /webhooks/openai verifies signatures" if self.webhooks else ""
        return describe_access(self.access) + hooks


WEB_MOUNT = web.AppKey("watcher.web", WebMount)


class _Pages:
    def __init__(self, source: WebSource, gate: Gate, assets: Assets) -> None:
        self._source = source
        self._gate = gate
        self._assets = assets
        self._refusals = RateLimitedLog("status page login refused")

    def _logout(self, request: web.Request) -> bool:
        return self._gate.access is Access.TOKEN

    async def status(self, request: web.Request) -> web.Response:
        try:
            document = await self._source.status_document()
        except SourceUnavailable as exc:
            return self._starting(str(exc))
        facts = await self._source.daemon_facts()
        text = render_status_page(
            document,
            facts,
            phases=self._source.status_phases(),
            assets=self._assets,
            logout=self._logout(request),
        )
        return _html(text)

    async def model(self, request: web.Request) -> web.Response:
        provider, model_id = request.match_info["provider"], request.match_info["id"]
        try:
            document = await self._source.model_document(provider, model_id)
        except SourceUnavailable as exc:
            return self._starting(str(exc))
        if document is None:
            return _html(render_not_found_page(assets=self._assets), status=404)
        text = render_model_page(
            document,
            phases=self._source.status_phases(),
            assets=self._assets,
            logout=self._logout(request),
        )
        return _html(text)

    def _starting(self, why: str) -> web.Response:
        response = _html(render_starting_page(why, assets=self._assets), status=503)
        response.headers["Retry-After"] = str(RETRY_AFTER_STARTING)
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        if self._gate.allows(request):
            raise web.HTTPSeeOther(safe_next(request.query.get("next")))
        page = render_login_page(
            assets=self._assets, next_path=safe_next(request.query.get("next")), failed=False
        )
        return _html(page)

    async def login(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        if form is None:
            return _html(render_login_page(assets=self._assets, next_path="/", failed=True), 400)
        next_path = safe_next(form.get("next"))
        if not self._gate.token_matches(form.get("token", "")):
            self._refusals.warning("wrong token", peer=request.remote)
            page = render_login_page(assets=self._assets, next_path=next_path, failed=True)
            return _html(page, status=401)
        response = web.HTTPSeeOther(next_path)
        self._gate.set_session(response, secure=request.secure)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/login")
        self._gate.clear_session(response)
        raise response

    def guard(self, handler: Handler, *, api: bool) -> Handler:
        """``handler`` behind the access rule: 401 (login or Bearer) or 403 (locked)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if self._gate.allows(request):
                return await handler(request)
            if self._gate.access is Access.LOCKED:
                if api:
                    return json_answer({"error": describe_access(Access.LOCKED)}, status=403)
                return _html(render_locked_page(assets=self._assets), status=403)
            if self._gate.access is Access.LOOPBACK:  # a Host that is not a loopback name
                if api:
                    return json_answer({"error": _NOT_LOOPBACK}, status=403)
                return _html(render_locked_page(assets=self._assets, proxied=True), status=403)
            if api:
                response = json_answer({"error": "a token is required"}, status=401)
                response.headers["WWW-Authenticate"] = 'Bearer realm="finetune-watcher"'
                return response
            page = render_login_page(
                assets=self._assets, next_path=safe_next(request.path_qs), failed=False
            )
            return _html(page, status=401)

        return guarded


def _html(text: str, status: int = 200) -> web.Response:
    response = web.Response(
        text=text, status=status, content_type="text/html", headers=_HTML_HEADERS
    )
    response.enable_compression()  # when the client accepts it: ~10x on a big fleet
    return response


def _static_handler(files: Mapping[str, _Static]) -> Handler:
    async def static(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        etag = f'"{found.version}"'
        cache = "public, max-age=31536000, immutable"
        if request.query.get("v") != found.version:
            cache = "no-cache"
        headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        response = web.Response(
            body=found.body, content_type=found.content_type, charset="utf-8", headers=headers
        )
        response.enable_compression()
        return response

    return static


def mount_web(app: web.Application, source: WebSource, options: WebOptions) -> WebMount:
    """Add the web layer's routes to ``app`` (before it starts); returns what it set up.

    Raises ``ValueError`` when ``options.webhook_secret`` is not a ``whsec_`` secret.
    """
    access = access_rule(options.listen_host, public=options.public, has_token=bool(options.token))
    gate = Gate(access, options.token)
    files = _load_static()
    assets = Assets(
        css=f"/static/page.css?v={files['page.css'].version}",
        js=f"/static/page.js?v={files['page.js'].version}",
        icon=f"/static/icon.svg?v={files['icon.svg'].version}",
    )
    pages = _Pages(source, gate, assets)
    api = StatusApi(source)
    feed = StatusFeed(source, refresh=options.refresh)
    streams = StreamServer(
        feed,
        max_streams=options.max_streams,
        write_timeout=options.stream_write_timeout,
        refresh=options.refresh,
        keepalive=options.keepalive,
    )
    webhooks = OpenAIWebhooks(source, options.webhook_secret) if options.webhook_secret else None
    router = app.router
    router.add_get("/", pages.guard(pages.status, api=False))
    router.add_get("/models/{provider}/{id:.+}", pages.guard(pages.model, api=False))
    router.add_get("/api/status", pages.guard(api.status, api=True))
    router.add_get("/api/models/{provider}/{id:.+}", pages.guard(api.model, api=True))
    router.add_get("/api/stream", pages.guard(streams.handle, api=True), allow_head=False)
    router.add_get("/static/{name}", _static_handler(files))
    if access is Access.TOKEN:
        router.add_get("/login", pages.login_form)
        router.add_post("/login", pages.login)
        router.add_post("/logout", pages.logout)
    if webhooks is not None:
        router.add_post("/webhooks/openai", webhooks.handle)
    app.on_shutdown.append(streams.close_all)
    mount = WebMount(access=access, feed=feed, streams=streams, webhooks=webhooks)
    app[WEB_MOUNT] = mount
    return mount


def make_app(source: WebSource, options: WebOptions) -> web.Application:
    """A stand-alone application with only the web layer (tests, the demo)."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    mount_web(app, source, options)
    return app
