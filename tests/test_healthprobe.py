"""``healthcheck`` over a plain socket: the answers a /healthz may give, byte for byte.

``tests/test_health.py`` runs it against the real health server; these serve canned
answers from a loopback socket to cover what aiohttp never sends (chunked bodies, a
connection kept open after the body, an answer that is not HTTP).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from watcher.healthprobe import healthcheck


@contextmanager
def answering(answer: bytes, *, close: bool = True) -> Iterator[tuple[str, list[bytes]]]:
    """A one-shot server on loopback: reads the request, sends ``answer``; keeps the
    connection open after it unless ``close``. Yields the URL and the requests seen."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            seen.append(data)
            conn.sendall(answer)
            if not close:
                done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/healthz", seen
    finally:
        done.set()
        thread.join(10)
        server.close()


def test_content_length_answer_on_a_connection_kept_open(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The body is complete at Content-Length: no waiting for the server to close."""
    body = b'{"status": "ok"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with answering(answer, close=False) as (url, seen):
        assert healthcheck(url, timeout=5) == 0
    assert capsys.readouterr().out == f"healthy: {url}: ok\n"
    request = seen[0].decode()
    assert request.startswith("GET /healthz HTTP/1.0\r\n")
    assert f"Host: {url.split('/')[2]}\r\n" in request


def test_chunked_answer(capsys: pytest.CaptureFixture[str]) -> None:
    answer = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'7\r\n{"reaso\r\n13\r\nn": "stalled loop"}\r\n0\r\n\r\n'
    )
    with answering(answer) as (url, _):
        assert healthcheck(url, timeout=5) == 1
    assert capsys.readouterr().out == f"unhealthy: {url} answered HTTP 503: stalled loop\n"


def test_answer_until_close_without_length(capsys: pytest.CaptureFixture[str]) -> None:
    with answering(b"HTTP/1.0 200 OK\r\n\r\nall good") as (url, _):
        assert healthcheck(url, timeout=5) == 0
    assert capsys.readouterr().out == f"healthy: {url}: all good\n"


@pytest.mark.parametrize("answer", [b"SSH-2.0-OpenSSH_9.6\r\n", b""])
def test_not_http_is_unhealthy(answer: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """Something else on the port (or a close without a word): exit 1, one line."""
    with answering(answer) as (url, _):
        assert healthcheck(url, timeout=5) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"unhealthy: cannot reach {url}: ")
    assert out.count("\n") == 1


def test_a_path_with_spaces_is_refused_before_sending(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck("http://127.0.0.1:9/health z", timeout=1) == 1
    assert "spaces or control characters" in capsys.readouterr().out
