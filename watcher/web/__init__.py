"""The web layer: the live status page, the JSON API, the event stream and webhooks in.

It reads the daemon only through :class:`~watcher.web.source.WebSource` and mounts
its routes on the daemon's existing HTTP server (``health.listen``) with
:func:`~watcher.web.app.mount_web`; ``/healthz``, ``/readyz`` and ``/metrics`` stay
the health server's and stay open.

Importing this package imports none of its modules: each name below is looked up in
its module on first use (``from watcher.web import mount_web`` imports aiohttp, ``from
watcher.web.access import access_rule`` does not), so ``check-config`` and the other
quick commands never pay for the HTTP server they do not start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watcher.web.access import Access
    from watcher.web.app import CLIENT_MAX_SIZE, SERVER_LIMITS, WebMount, make_app, mount_web
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

#: Where each exported name lives (imported on first use).
_HOMES = {
    "CLIENT_MAX_SIZE": "watcher.web.app",
    "SERVER_LIMITS": "watcher.web.app",
    "WebMount": "watcher.web.app",
    "make_app": "watcher.web.app",
    "mount_web": "watcher.web.app",
    "Access": "watcher.web.access",
    "WebOptions": "watcher.web.options",
    "DaemonFacts": "watcher.web.source",
    "WebSource": "watcher.web.source",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
