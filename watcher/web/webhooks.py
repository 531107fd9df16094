"""``POST /webhooks/openai``: OpenAI's fine-tuning webhooks as a hint to poll now.

OpenAI signs webhooks the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``; HMAC-SHA256 with the ``whsec_`` secret); the ``standardwebhooks``
library verifies them, including the ±5 minute timestamp tolerance. On top of it a
``webhook-id`` seen before is refused (:class:`SeenIds`: a bounded memory, kept
longer than the tolerance so that a replay is either remembered or stale).

The payload is a hint, the API is the truth: a valid ``fine_tuning.job.*`` event asks
the daemon to poll ``data.id`` at once and nothing in it is believed.

Answers (OpenAI retries anything but 2xx):

- 200 ``{"poll": "scheduled"}``: the daemon watches (or discovers) that job and polls it now.
- 202 ``{"poll": "not watched"}``: a valid event for a job the daemon does not watch, or
  ``{"ignored": "<type>"}`` for another event type; accepted so that OpenAI stops retrying.
- 400: bad or missing signature, timestamp outside ±5 min, replayed ``webhook-id``,
  a body that is not a JSON object; nothing else happens. Logged once a minute per
  reason at most, with the peer's address; never the secret, never the body.
- 413: a body over 64 KiB (OpenAI's are a few hundred bytes).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable

import anyio
import structlog
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from watcher.web.source import WebSource

__all__ = ["MAX_WEBHOOK_BODY", "OpenAIWebhooks", "RateLimitedLog", "SeenIds"]

log = structlog.get_logger("watcher.web")

MAX_WEBHOOK_BODY = 64 * 1024
#: Standard Webhooks' tolerance is ±5 min; remembering ids for twice that covers clock skew.
SEEN_FOR = 600.0
SEEN_MAX = 10_000
_JOB_EVENT_PREFIX = "fine_tuning.job."
_MAX_JOB_ID = 256


class SeenIds:
    """``webhook-id`` values accepted recently: at most ``limit``, each for ``keep`` seconds."""

    def __init__(
        self,
        *,
        keep: float = SEEN_FOR,
        limit: int = SEEN_MAX,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self._keep = keep
        self._limit = limit
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, webhook_id: str) -> bool:
        """Remember ``webhook_id``; False when it was already remembered (a replay)."""
        now = self._clock()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self._keep and len(self._seen) < self._limit:
                break
            del self._seen[oldest]
        if webhook_id in self._seen:
            return False
        self._seen[webhook_id] = now
        return True


class RateLimitedLog:
    """Logs a warning per reason at most once per ``every`` seconds, counting the rest."""

    def __init__(
        self,
        what: str = "webhook refused",
        *,
        every: float = 60.0,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self._what = what
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, reason: str, **fields: object) -> None:
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._every:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        log.warning(f"{self._what}: {reason}", suppressed_since_last=suppressed, **fields)


class OpenAIWebhooks:
    """Verifies OpenAI's webhooks and turns job events into ``source.request_poll`` calls.

    Raises ``ValueError`` at construction when the secret is not a valid ``whsec_``
    (base64) secret, so a bad secret fails the start, not the first webhook.
    """

    def __init__(
        self,
        source: WebSource,
        secret: str,
        *,
        seen: SeenIds | None = None,
        refusals: RateLimitedLog | None = None,
    ) -> None:
        try:
            self._webhook = Webhook(secret.strip())
        except Exception as exc:  # binascii.Error, EmptyWebhookSecretError, RuntimeError
            raise ValueError(
                f"the OpenAI webhook secret is not a whsec_ secret ({type(exc).__name__})"
            ) from None
        self._source = source
        self._seen = seen or SeenIds()
        self._refusals = refusals or RateLimitedLog()
        self.accepted = 0
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
            return self._refuse(request, "body too large", status=413)
        body = await request.content.read(MAX_WEBHOOK_BODY + 1)
        if len(body) > MAX_WEBHOOK_BODY:
            return self._refuse(request, "body too large", status=413)
        headers = {
            name: request.headers.get(name, "")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        try:
            # json_parse=False: the body is parsed below, with our own limits.
            self._webhook.verify(body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            return self._refuse(request, _reason(str(exc)))
        except (ValueError, UnicodeDecodeError):  # malformed signature list, base64, UTF-8
            return self._refuse(request, "malformed signature headers")
        if not self._seen.first_time(headers["webhook-id"]):
            return self._refuse(request, "replayed webhook-id")
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):
            return self._refuse(request, "body is not JSON")
        if not isinstance(event, dict):
            return self._refuse(request, "body is not a JSON object")
        self.accepted += 1
        kind = event.get("type")
        data = event.get("data")
        job_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(kind, str) or not kind.startswith(_JOB_EVENT_PREFIX):
            return _answer(202, {"ignored": str(kind)[:100]})
        if not isinstance(job_id, str) or not job_id or len(job_id) > _MAX_JOB_ID:
            return self._refuse(request, "job event without data.id")
        if await self._source.request_poll("openai", job_id):
            log.info("webhook: polling now", provider="openai", model_id=job_id, webhook_type=kind)
            return _answer(200, {"poll": "scheduled"})
        log.info(
            "webhook for a job not watched", provider="openai", model_id=job_id, webhook_type=kind
        )
        return _answer(202, {"poll": "not watched"})

    def _refuse(self, request: web.Request, reason: str, *, status: int = 400) -> web.Response:
        self.refused += 1
        self._refusals.warning(reason, peer=request.remote)
        return _answer(status, {"error": reason})


def _reason(message: str) -> str:
    """The library's message as a fixed reason (never anything from the request)."""
    known = {
        "Missing required headers": "missing signature headers",
        "Message timestamp too old": "stale timestamp",
        "Message timestamp too new": "timestamp in the future",
        "Invalid Signature Headers": "malformed signature headers",
        "No matching signature found": "bad signature",
    }
    return known.get(message, "signature not verified")


def _answer(status: int, body: dict[str, str]) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
