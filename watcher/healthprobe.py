"""The ``finetune-watcher healthcheck`` client: GET a daemon's ``/healthz``.

Standard library only, and no other watcher module: the container's ``HEALTHCHECK`` runs
it every few seconds, so it must start fast (``watcher.health`` re-exports it).
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

__all__ = ["DEFAULT_HEALTHCHECK_URL", "healthcheck", "healthcheck_url"]

DEFAULT_HEALTHCHECK_URL = "http://127.0.0.1:9464/healthz"
_MAX_BODY = 64 * 1024


def healthcheck_url(listen: str | None) -> str:
    """The ``/healthz`` URL for a ``health.listen`` value (e.g. ``$WATCHER_HEALTH__LISTEN``).

    Unset means the default ``http://127.0.0.1:9464/healthz``; a wildcard host
    (``0.0.0.0``, ``::``, none) is reached on loopback. Raises ``ValueError`` when
    ``listen`` has no valid port.
    """
    if listen is None or not listen.strip():
        return DEFAULT_HEALTHCHECK_URL
    parts = urlsplit("//" + listen.strip())
    port = parts.port  # ValueError when out of range or not a number
    if port is None:
        raise ValueError(f"health listen address {listen!r} has no port")
    host = parts.hostname or "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass  # a host name: use it as it is
    else:
        if address.is_unspecified:
            host = "::1" if address.version == 6 else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def healthcheck(url: str = DEFAULT_HEALTHCHECK_URL, *, timeout: float = 5.0) -> int:
    """GET ``url``: 0 when it answers 200, else 1. Prints one line saying why.

    Standard library only (fast to start); proxies from the environment are ignored,
    since the target is the daemon's own listener.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        print(f"unhealthy: {url} is not an http:// or https:// URL", flush=True)
        return 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status, body = response.status, response.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        try:
            status, body = exc.code, exc.read(_MAX_BODY)
        finally:
            exc.close()
    except (urllib.error.URLError, OSError) as exc:  # refused, unresolvable, timed out
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"unhealthy: cannot reach {url}: {_describe_error(reason)}", flush=True)
        return 1
    if status == 200:
        print(f"healthy: {url}: {_describe_body(body) or 'ok'}", flush=True)
        return 0
    print(f"unhealthy: {url} answered HTTP {status}: {_describe_body(body)}", flush=True)
    return 1


def _describe_error(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _describe_body(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("status") or "")
    return ""
