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
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

MASK = "***"

#: Longest name or status kept from outside text (a model name, a provider's status).
NAME_LIMIT = 200
#: Longest error message kept from outside text (an API's error body, a failure reason).
ERROR_LIMIT = 1000
ELLIPSIS = "…"

# C0 and C1 controls, DEL, and the invisible format characters that reorder or hide
# text (bidi overrides and isolates, zero-width marks, line/paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
# Controls that separate words: they become one space, not nothing.
_SPACING = re.compile("[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]+")
_SPACES = re.compile(" {2,}")

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


def clean_text(text: str) -> str:
    """``text`` on one line without control characters.

    Line breaks, tabs and other separating controls become a space (a newline cannot
    forge a line of a message or a table); other controls (``ESC`` of a terminal
    escape, ``NUL``, bidi overrides) are removed; runs of spaces fold into one.
    """
    if text.isprintable():  # the common case: nothing to do
        return text
    text = _CONTROL.sub("", _SPACING.sub(" ", text))
    return _SPACES.sub(" ", text)


def cap(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the last one ``…`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


class SecretRegistry:
    """Known secret strings, scrubbed from text by ``scrub``. Thread-safe: a reload
    registers secrets from a worker thread while the event loop scrubs log lines."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """Register a plain secret (an API key)."""
        if secret and len(secret) >= 4:
            with self._lock:
                if secret not in self._secrets:
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
        with self._lock:
            self._secrets.clear()
            self._pattern = None

    def scrub(self, text: str, extra: Iterable[str] = ()) -> str:
        """``text`` with every registered secret (and each of ``extra``) replaced by ``***``."""
        more = [s for s in extra if s and len(s) >= 4]
        if more:
            with self._lock:
                known = self._secrets | set(more)
            return _pattern_of(known).sub(MASK, text)
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                if not self._secrets:
                    return text
                pattern = self._pattern = _pattern_of(self._secrets)
        return pattern.sub(MASK, text)


def _pattern_of(secrets: Iterable[str]) -> re.Pattern[str]:
    # Longest first, so a whole URL is masked before its parts are.
    ordered = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in ordered))


#: The process-wide registry the log processor reads.
SECRETS = SecretRegistry()


def safe_text(text: str, limit: int, *, extra: Iterable[str] = ()) -> str:
    """Outside text as it may be stored, sent or printed: every known secret (and each
    of ``extra``) masked, on one line without control characters, at most ``limit``
    characters (see :func:`clean_text`, :func:`cap`)."""
    extra = tuple(extra)
    cleaned = clean_text(SECRETS.scrub(text, extra))
    return cap(SECRETS.scrub(cleaned, extra), limit)
