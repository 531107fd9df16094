"""The ``finetune-watcher healthcheck`` client: GET a daemon's ``/healthz``.

Standard library only, and no other watcher module: the container's ``HEALTHCHECK`` runs
it every few seconds, so it must start fast (``watcher.health`` re-exports it). An
``http://`` URL (the daemon's own listener) is fetched with one HTTP/1.0 GET on a plain
socket: ``urllib.request`` and ``http.client`` (with ``email`` and ``ssl``) cost ~50 ms
to import, a quarter of the command's start; ``https://`` (a TLS proxy in front) still
goes through ``urllib.request``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from urllib.parse import SplitResult, urlsplit

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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        print(f"unhealthy: {url} is not an http:// or https:// URL", flush=True)
        return 1
    try:
        if parts.scheme == "http":
            status, body = _get_plain(parts, timeout)
        else:
            status, body = _get_tls(url, timeout)
    except (OSError, ValueError) as exc:  # refused, unresolvable, timed out, not HTTP
        print(f"unhealthy: cannot reach {url}: {_describe_error(exc)}", flush=True)
        return 1
    if status == 200:
        print(f"healthy: {url}: {_describe_body(body) or 'ok'}", flush=True)
        return 0
    print(f"unhealthy: {url} answered HTTP {status}: {_describe_body(body)}", flush=True)
    return 1


def _get_plain(parts: SplitResult, timeout: float) -> tuple[int, bytes]:
    """``(status, body)`` of one ``GET`` over a plain socket, all within ``timeout``.

    HTTP/1.0 and ``Connection: close``: the answer ends when the server closes (aiohttp
    neither keeps it open nor chunks it); a ``Content-Length`` or chunked body is still
    honoured. Raises ``OSError`` (refused, unresolvable, ``TimeoutError``) or
    ``ValueError`` (a bad port, or an answer that is not HTTP).
    """
    host, port = parts.hostname, parts.port or 80  # .port: ValueError when out of range
    if not host:
        raise ValueError("no host in the URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(ch.isspace() or not ch.isprintable() or not ch.isascii() for ch in target):
        raise ValueError("the URL's path holds spaces or control characters")
    request = (
        f"GET {target} HTTP/1.0\r\nHost: {parts.netloc.rpartition('@')[2]}\r\n"
        "User-Agent: finetune-watcher-healthcheck\r\nAccept: application/json\r\n"
        "Connection: close\r\n\r\n"
    )
    deadline = time.monotonic() + timeout
    answer = bytearray()
    limit = _MAX_BODY + _MAX_HEAD
    # An ASCII name as bytes: getaddrinfo would import the idna codec for a str (~5 ms).
    address = (host.encode("ascii") if host.isascii() else host, port)
    with socket.create_connection(address, timeout=timeout) as sock:  # type: ignore[arg-type]
        sock.sendall(request.encode("ascii"))
        while len(answer) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(left)
            data = sock.recv(limit - len(answer))
            if not data:
                break
            answer += data
            if _complete(answer):
                break
    return _parse_answer(bytes(answer))


#: The status line and headers of an answer (more: not a health endpoint's).
_MAX_HEAD = 16 * 1024


def _split_head(answer: bytes | bytearray) -> tuple[int, dict[str, str], bytes] | None:
    """``(status, headers, body so far)``, None until the headers are complete."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise ValueError("the answer is not HTTP")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(code), headers, bytes(body)


def _complete(answer: bytes | bytearray) -> bool:
    """True once a ``Content-Length`` answer is all in (else: read until the server closes)."""
    split = _split_head(answer)
    if split is None:
        return False
    _, headers, body = split
    length = headers.get("content-length", "")
    return length.isdigit() and len(body) >= int(length)


def _parse_answer(answer: bytes) -> tuple[int, bytes]:
    split = _split_head(answer)
    if split is None:
        raise ValueError("the answer is not HTTP" if answer else "no answer")
    status, headers, body = split
    length = headers.get("content-length", "")
    if length.isdigit():
        body = body[: int(length)]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return status, body[:_MAX_BODY]


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _get_tls(url: str, timeout: float) -> tuple[int, bytes]:
    """``(status, body)`` of a ``GET`` over TLS, with ``urllib.request`` (imported here)."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status), response.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), exc.read(_MAX_BODY)
        finally:
            exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, OSError):
            raise reason from None
        raise OSError(str(reason)) from None


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
