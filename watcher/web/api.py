"""``GET /api/status`` and ``GET /api/models/{provider}/{id}``: the daemon's documents as JSON.

``/api/status`` is exactly the ``status --json`` document (one pure view feeds both);
a model's document adds its status timeline (shape in :class:`~watcher.web.source.WebSource`).
Secrets the process knows are scrubbed, as the CLI does.
"""

from __future__ import annotations

from aiohttp import web

from watcher.web.source import SourceUnavailable, WebSource
from watcher.web.stream import encode_document

__all__ = ["StatusApi", "json_answer"]


def json_answer(document: object, *, status: int = 200) -> web.Response:
    response = web.Response(
        text=encode_document(document),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
    response.enable_compression()  # when the client accepts it
    return response


class StatusApi:
    """The JSON endpoints over one :class:`WebSource`."""

    def __init__(self, source: WebSource) -> None:
        self._source = source

    async def status(self, request: web.Request) -> web.Response:
        try:
            return json_answer(await self._source.status_document())
        except SourceUnavailable as exc:
            return _unavailable(str(exc))

    async def model(self, request: web.Request) -> web.Response:
        provider, model_id = request.match_info["provider"], request.match_info["id"]
        try:
            document = await self._source.model_document(provider, model_id)
        except SourceUnavailable as exc:
            return _unavailable(str(exc))
        if document is None:
            return json_answer({"error": "no such model"}, status=404)
        return json_answer(document)


def _unavailable(why: str) -> web.Response:
    response = json_answer({"error": why}, status=503)
    response.headers["Retry-After"] = "5"
    return response
