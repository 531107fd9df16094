"""Who may read the page and ``/api/*``: one rule, decided once at start, and its gate.

The rule itself is pure and lives in :mod:`watcher.web.access` (re-exported here), so that
``check-config`` can print it without importing aiohttp; this module adds the gate.

The rule (:func:`access_rule`) looks only at the *configured* listen address, never at
a peer's address (a reverse proxy on the same host makes every peer look local):

=================  ===============  ==============  ==============================
listen host        ``web.public``   token set       page and ``/api/*``
=================  ===============  ==============  ==============================
any                true             any             open (``PUBLIC``)
any                false            yes             ``Authorization: Bearer`` or
                                                    the login cookie (``TOKEN``)
loopback           false            no              open (``LOOPBACK``) to requests
                                                    whose ``Host`` names loopback
anything else      false            no              refused, 403 (``LOCKED``)
=================  ===============  ==============  ==============================

The ``Host`` check of ``LOOPBACK`` defeats DNS rebinding (a page elsewhere whose name
resolves to 127.0.0.1); a reverse proxy that passes its own name needs a token or
``web.public``. ``/healthz``, ``/readyz``, ``/metrics``, the static files and ``/webhooks/*`` (which
carry their own signatures) are never behind it. Tokens are compared with
``hmac.compare_digest``; the cookie holds an HMAC of the token, not the token, and is
``HttpOnly; SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from aiohttp import web

from watcher.web.access import (
    Access,
    access_rule,
    describe_access,
    listens_on_loopback,
    names_loopback,
    safe_next,
)

__all__ = [
    "SESSION_COOKIE",
    "Access",
    "Gate",
    "access_rule",
    "describe_access",
    "listens_on_loopback",
    "names_loopback",
    "safe_next",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_COOKIE = "watcher_session"
#: The login cookie lives this long (seconds); changing the token ends every session.
SESSION_MAX_AGE = 7 * 24 * 3600
#: A login form is tiny; anything bigger is refused before it is parsed.
MAX_LOGIN_BODY = 4096


class Gate:
    """Checks a request's credentials against the token (constant time)."""

    def __init__(self, access: Access, token: str | None) -> None:
        if access is Access.TOKEN and not token:
            raise ValueError("Access.TOKEN needs a token")
        self.access = access
        self._token = (token or "").encode()
        # The cookie value: proof of the token without being the token.
        self._session = hmac.new(
            self._token, b"finetune-watcher web session v1", hashlib.sha256
        ).hexdigest()

    def token_matches(self, given: str) -> bool:
        return bool(self._token) and hmac.compare_digest(given.encode(), self._token)

    def allows(self, request: web.Request) -> bool:
        """True when the request may read the page and the API."""
        if self.access is Access.PUBLIC:
            return True
        if self.access is Access.LOOPBACK:
            # DNS rebinding: a web page elsewhere may resolve its own name to 127.0.0.1;
            # its requests then carry that name as Host. Only loopback names get in.
            return names_loopback(request.host)
        if self.access is Access.LOCKED:
            return False
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(credentials.strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self._session.encode())

    def set_session(self, response: web.StreamResponse, *, secure: bool) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self._session,
            max_age=SESSION_MAX_AGE,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=secure,
        )

    @staticmethod
    def clear_session(response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path="/")


async def read_form(request: web.Request) -> dict[str, str] | None:
    """A small urlencoded form (first value of each field); None when too big or not one."""
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    if request.content_length is not None and request.content_length > MAX_LOGIN_BODY:
        return None
    body = await request.content.read(MAX_LOGIN_BODY + 1)
    if len(body) > MAX_LOGIN_BODY:
        return None
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}
