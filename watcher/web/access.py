"""Who may read the page and ``/api/*``: the rule, decided once at start (no HTTP here).

The pure half of :mod:`watcher.web.auth` (which holds the gate over aiohttp requests):
``check-config`` prints the rule without importing aiohttp, so it lives here. The table
of the rule is in :mod:`watcher.web.auth`'s docstring.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum

__all__ = [
    "Access",
    "access_rule",
    "describe_access",
    "listens_on_loopback",
    "names_loopback",
    "safe_next",
]


class Access(StrEnum):
    """Who may read the page and the API (see the table above)."""

    LOOPBACK = "loopback"
    PUBLIC = "public"
    TOKEN = "token"  # noqa: S105 -- an access mode, not a password
    LOCKED = "locked"


def listens_on_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses; False for wildcards, none and host
    names. The one copy of the rule (``watcher.settings.is_loopback`` asks it; the web
    layer may not import settings)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def names_loopback(host_header: str) -> bool:
    """True when a ``Host`` header names this machine (``localhost``, ``127.0.0.1:9464``,
    ``[::1]:9464``); False for any other name, however it resolves."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return listens_on_loopback(host.rstrip("."))


def access_rule(listen_host: str | None, *, public: bool, has_token: bool) -> Access:
    """Which :class:`Access` applies (the table in the module docstring)."""
    if public:
        return Access.PUBLIC
    if has_token:
        return Access.TOKEN
    if listens_on_loopback(listen_host):
        return Access.LOOPBACK
    return Access.LOCKED


def describe_access(access: Access) -> str:
    """One phrase for the daemon's start line (``status page: <this>``)."""
    return {
        Access.LOOPBACK: "open (listening on loopback only)",
        Access.PUBLIC: "open to anyone who can reach it (web.public: true)",
        Access.TOKEN: "requires the token of web.token_file",
        Access.LOCKED: (
            "disabled: health.listen is beyond loopback and neither web.token_file "
            "nor web.public is set (/healthz, /readyz, /metrics stay open)"
        ),
    }[access]


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a local path only (no ``//host``, no scheme)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ch in target for ch in "\r\n\t\\") or len(target) > 2000:
        return "/"
    return target
