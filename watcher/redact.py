"""The one place that knows what a secret looks like.

Apprise URLs carry credentials anywhere: ``user:password@``, tokens as the "host"
(``slack://T0/B0/xyz``), in the path, the query, or ``+Header=value`` parts. So a
URL is shown to people only as a *label* (scheme and, when it is clearly a host
name, the host), and every secret the process knows is registered here so the
log processor can scrub it from any line that still carries it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

MASK = "***"

# Schemes whose "host" part is a network host, not a token.
_HOST_SCHEMES = frozenset(
    {
        "json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos",
        "ntfy", "ntfys", "gotify", "gotifys", "apprise", "apprises", "matrix",
        "matrixs", "mmost", "mmosts", "rocket", "rockets", "http", "https",
        "ws", "wss", "mqtt", "mqtts", "console",
    }
)  # fmt: skip

_HOSTNAME = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
# Parts shorter than this are not worth scrubbing (they would mangle ordinary words).
_MIN_SECRET_LEN = 6


def redact_url(url: str) -> str:
    """A label for ``url`` that carries no credential: ``scheme://host[:port]`` or ``scheme://…``."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "invalid-url"
    if not scheme:
        return "invalid-url"
    if scheme in _HOST_SCHEMES and host and _looks_like_host(host):
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}" + (f":{port}" if port else "")
    return f"{scheme}://…"


def _looks_like_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "." in host and bool(_HOSTNAME.match(host))
    return True


def _looks_like_token(segment: str) -> bool:
    """Long, or a mix of letters and digits: what webhook tokens look like."""
    has_digit = any(c.isdigit() for c in segment)
    has_alpha = any(c.isalpha() for c in segment)
    return len(segment) >= 16 or (len(segment) >= 8 and has_digit and has_alpha)


def url_secrets(url: str) -> set[str]:
    """Every part of ``url`` that could be a credential (to scrub from text)."""
    found: set[str] = set()
    # The whole URL, unless it is no more than its own label (``console://``).
    if not redact_url(url).startswith(url.strip()):
        found.add(url.strip())
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return found
    candidates: list[str] = []
    if parts.password:
        candidates.append(parts.password)
    if parts.username:
        candidates.append(parts.username)
    host = parts.hostname or ""
    host_style = bool(host) and _looks_like_host(host)
    if host and not host_style:
        # The raw spelling: ``hostname`` is lower-cased, tokens are case-sensitive.
        raw_host = parts.netloc.rsplit("@", 1)[-1]
        candidates.append(raw_host.split(":", 1)[0] if not raw_host.startswith("[") else raw_host)
    segments = [seg for seg in parts.path.split("/") if seg]
    # Behind a real host, a path is mostly words ("/notify"); only token-like
    # segments are secrets there. Behind a token "host" (slack://T/B/x) all are.
    candidates.extend(seg for seg in segments if not host_style or _looks_like_token(seg))
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        candidates.append(value)
        if key.startswith(("+", "-", ":")):
            candidates.append(key)
    for c in candidates:
        plain = unquote(c)
        # Every spelling a log line may carry: as written, decoded, and re-encoded
        # (apprise prints "Bearer%20TOKEN"), plus the token-like words of a value.
        forms = {c, plain, quote(plain, safe=""), quote_plus(plain)}
        forms.update(word for word in plain.split() if _looks_like_token(word))
        found.update(form for form in forms if len(form) >= _MIN_SECRET_LEN)
    return found


class SecretRegistry:
    """Known secret strings, scrubbed from text by ``scrub``."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str | None) -> None:
        """Register a plain secret (an API key)."""
        if secret and len(secret) >= 4:
            self._secrets.add(secret)
            self._pattern = None

    def add_url(self, url: str) -> None:
        """Register an apprise URL and every credential-looking part of it."""
        for part in url_secrets(url):
            self.add(part)

    def add_all(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            self.add(s)

    def clear(self) -> None:
        self._secrets.clear()
        self._pattern = None

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        if not self._secrets:
            return text
        if self._pattern is None:
            # Longest first, so a whole URL is masked before its parts are.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
        return self._pattern.sub(MASK, text)


#: The process-wide registry the log processor reads.
SECRETS = SecretRegistry()
