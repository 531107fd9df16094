"""Issue 11, finding 2: an API that echoes the request's credentials leaks them nowhere.

A loopback server answers every request with 502 and a JSON error whose message echoes
the ``Authorization`` header it received (as some gateways and proxies do), plus a
terminal escape and a forged line. The daemon runs as a real subprocess with the key in
``$CO_API_KEY`` (so only the process knows it, not the file) until it has stored the
error and told the ops target (a real ``json://`` receiver) that the API is unreachable.
Then the key must be in none of: the database file and its ``-wal``/``-shm``, the
notification the receiver got, the daemon's log, ``status`` and ``status --json`` (run as
subprocesses with the same environment). Unit tests pin the boundary: the transport's
``ApiError`` message, and ``register_secrets`` knowing every kind of secret.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from tests.conftest import base_config, daemon, run_cli, wait_until, write_config
from tests.receivers import LOOPBACK, webhook_receiver
from watcher import redact
from watcher.errors import ServerError
from watcher.providers.http import ApiTransport, open_session
from watcher.redact import SECRETS, SecretRegistry
from watcher.settings import load_settings, register_secrets

API_KEY = "sk-ECHOED-KEY-0123456789abcdef"
FRAGMENT = "ECHOED-KEY"
MODEL_ID = "echo-model-1"


class EchoingGateway:
    """Answers every request 502 with ``{"message": "... Authorization: <as received> ..."}``."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        echoed = request.headers.get("Authorization", "")
        message = (
            f"bad gateway: upstream refused request with Authorization: {echoed}"
            "\x1b[2J\x1b[31m\nFORGED LINE: model is READY"
        )
        return web.json_response({"message": message}, status=502)


@asynccontextmanager
async def echoing_gateway() -> AsyncIterator[EchoingGateway]:
    gateway = EchoingGateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    gateway.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield gateway
    finally:
        await runner.cleanup()


def leaks(text: str | bytes) -> bool:
    if isinstance(text, bytes):
        return API_KEY.encode() in text or FRAGMENT.encode() in text
    return API_KEY in text or FRAGMENT in text


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    SECRETS.clear()
    yield
    SECRETS.clear()


class TestEchoedKeyLeaksNowhere:
    async def test_echoed_authorization_is_in_no_file_message_log_or_output(
        self, tmp_path: Path
    ) -> None:
        async with echoing_gateway() as gateway, webhook_receiver() as ops:
            config = base_config(gateway.base_url, tmp_path, [MODEL_ID], [], backoff_cap="0.5s")
            config["notify"]["ops_urls"] = [ops.url]
            config["notify"]["unreachable_after"] = "1s"
            path = write_config(tmp_path / "watcher.yaml", config)
            env = {"CO_API_KEY": API_KEY}
            db = tmp_path / "state" / "watcher.db"

            async with daemon(path, env=env) as proc:
                await ops.wait_for(1, timeout=30)  # "cannot reach the Cohere API", with the error
                await wait_until(lambda: gateway.requests >= 3, what="failed polls")

                outputs: dict[str, str] = {}
                for args in (("status", "--json"), ("status",)):
                    command = partial(run_cli, *args, "-c", str(path), env=env)
                    result = await anyio.to_thread.run_sync(command)
                    assert result.returncode == 0, result.stderr
                    outputs[" ".join(args)] = result.stdout + result.stderr
                # The file while the daemon runs (the -wal holds the latest rows).
                files = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.is_file()}
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            files.update({p.name: p.read_bytes() for p in db.parent.iterdir() if p.is_file()})
            outputs["daemon log"] = proc.log()

            received = [request.body for request in ops.requests]
            assert received, "the ops target got nothing"
            # The error reached the notification and the database (else this proves nothing).
            body = ops.messages[0]["message"]
            assert "HTTP 502: bad gateway" in body, body
            document = json.loads(outputs["status --json"])
            [model] = document["models"]
            assert "HTTP 502: bad gateway" in (model["last_error"] or ""), model

            # The key: nowhere.
            found = {
                **{f"notification {i}": leaks(raw) for i, raw in enumerate(received)},
                **{name: leaks(text) for name, text in outputs.items()},
                **{f"state file {name}": leaks(data) for name, data in files.items()},
            }
            leaked_in = [where for where, leaked in found.items() if leaked]
            assert not leaked_in, leaked_in
            # No terminal escape, no forged line.
            assert "\n" not in body.split("Last error:", 1)[1], body
            assert "\x1b" not in body, body
            assert "\x1b" not in outputs["status --json"]
            assert "\x1b" not in outputs["status"]


class TestTransportBoundary:
    async def test_error_message_has_no_request_credential_control_character_or_excess(
        self,
    ) -> None:
        """The key is scrubbed from the ``ApiError`` even when nobody registered it."""
        async with echoing_gateway() as gateway:
            session = open_session(
                headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5, concurrency=1
            )
            async with session:
                transport = ApiTransport(session, provider="cohere", timeout=5)
                with pytest.raises(ServerError) as caught:
                    await transport.get_raw(f"{gateway.base_url}/v1/x", None, what="events of m")
        message = str(caught.value)
        assert message.startswith("events of m: HTTP 502: bad gateway"), message
        assert not leaks(message), message
        assert "\x1b" not in message, message
        assert "\n" not in message, message

    def test_safe_text_scrubs_before_and_after_cleaning_and_caps(self) -> None:
        SECRETS.add(API_KEY)
        split = API_KEY[:10] + "\x1b" + API_KEY[10:]  # cleaning must not rejoin a secret
        text = redact.safe_text(f"a {API_KEY} b {split}\n" + "x" * 5000, 1000)
        assert not leaks(text)
        assert "\n" not in text
        assert "\x1b" not in text
        assert len(text) == 1000
        assert text.endswith("…")


class TestEveryConfiguredSecretIsRegistered:
    def test_keys_from_environment_and_files_and_the_webhook_secret(self, tmp_path: Path) -> None:
        """``register_secrets`` without resolved keys (``status``, ``test-notify``) still
        knows every provider's key it can find and the webhook secret."""
        webhook = tmp_path / "webhook-secret"
        webhook.write_text("whsec_WEBHOOKSECRET123456\n")
        mistral_key = tmp_path / "mistral-key"
        mistral_key.write_text("mistral-FILEKEY-98765\n")
        path = write_config(
            tmp_path / "watcher.yaml",
            {
                "openai": {"webhook_secret_file": str(webhook)},
                "mistral": {"api_key_file": str(mistral_key)},
                "state": {"path": str(tmp_path / "watcher.db")},
                "models": ["m1"],
            },
        )
        environ = {"CO_API_KEY": API_KEY, "OPENAI_API_KEY": "sk-OPENAI-ENVKEY-1234"}
        settings = load_settings(path, environ)
        registry_before = SECRETS.scrub("x")
        assert registry_before == "x"
        register_secrets(settings, None, environ)
        text = f"{API_KEY} sk-OPENAI-ENVKEY-1234 whsec_WEBHOOKSECRET123456 mistral-FILEKEY-98765"
        assert SECRETS.scrub(text) == " ".join(["***"] * 4)

    def test_registry_is_safe_to_fill_from_another_thread(self) -> None:
        """A reload registers secrets in a worker thread while the loop scrubs log lines."""
        registry = SecretRegistry()
        for n in range(200):
            registry.add(f"secret-{n:08d}")

        def add() -> None:
            for n in range(200, 3000):
                registry.add(f"secret-{n:08d}")

        thread = threading.Thread(target=add)
        thread.start()
        try:
            while thread.is_alive():
                assert registry.scrub("secret-00000001 and more") == "*** and more"
        finally:
            thread.join()

    def test_the_state_database_password_is_registered(self, tmp_path: Path) -> None:
        """``state.url``'s password (and ``state.password_file``'s) is scrubbed too."""
        password_file = tmp_path / "pg-password"
        password_file.write_text("PG-FILE-PASSWORD-777\n")
        path = write_config(
            tmp_path / "watcher.yaml",
            {
                "state": {
                    "url": "postgresql://alice:PG-URL-PASSWORD-42@db.example/watcher",
                    "password_file": str(password_file),
                },
                "models": ["m1"],
            },
        )
        register_secrets(load_settings(path, {}), None, {})
        text = "PG-URL-PASSWORD-42 PG-FILE-PASSWORD-777"
        assert SECRETS.scrub(text) == "*** ***"
