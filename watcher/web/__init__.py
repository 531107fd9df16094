"""The web layer: the live status page, the JSON API, the event stream and webhooks in.

It reads the daemon only through :class:`~watcher.web.source.WebSource` and mounts
its routes on the daemon's existing HTTP server (``health.listen``) with
:func:`~watcher.web.app.mount_web`; ``/healthz``, ``/readyz`` and ``/metrics`` stay
the health server's and stay open.
"""

from watcher.web.app import CLIENT_MAX_SIZE, SERVER_LIMITS, WebMount, make_app, mount_web
from watcher.web.auth import Access
from watcher.web.options import WebOptions
from watcher.web.source import DaemonFacts, WebSource

__all__ = [
    "CLIENT_MAX_SIZE",
    "SERVER_LIMITS",
    "Access",
    "DaemonFacts",
    "WebMount",
    "WebOptions",
    "WebSource",
    "make_app",
    "mount_web",
]
