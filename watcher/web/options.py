"""What the web layer is told at start: where it listens, who may read it, its limits.

The daemon builds one :class:`WebOptions` from the settings (``health.listen``,
``web.*``, ``openai.webhook_secret_file`` / ``$OPENAI_WEBHOOK_SECRET``); the web layer
reads no configuration itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WebOptions"]


@dataclass(frozen=True, slots=True)
class WebOptions:
    """The web layer's configuration, resolved (secrets already read from their files).

    ``listen_host`` is the *configured* listen host (``health.host``): the access rule
    depends on it, never on a peer's address. ``token`` guards the page and ``/api/*``
    (``web.token_file``); ``public`` opens them without one. ``webhook_secret``
    (``whsec_...``) enables ``POST /webhooks/openai``; None leaves the path unserved.
    """

    listen_host: str
    public: bool = False
    token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    #: Concurrent ``/api/stream`` clients; one more gets 503.
    max_streams: int = 256
    #: A stream write that cannot finish in this many seconds drops that client.
    stream_write_timeout: float = 5.0
    #: Streams re-read the daemon's facts at least this often (seconds).
    refresh: float = 5.0
    #: A comment line keeps idle streams (and proxies) alive this often (seconds).
    keepalive: float = 15.0
