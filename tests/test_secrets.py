"""Secrets never leak: a full scenario with recognisable credentials, every output grepped.

The API key and every credential-bearing part of the apprise URLs (``user:password``,
tokens in the path and the query, ``+Header=`` values) are planted with recognisable
text; the daemon runs as a subprocess at ``--log-level debug`` (so apprise's and
aiohttp's own loggers speak too) through an authentication failure and its recovery,
a 404, a delivery, and a target that keeps failing. Then the log, the output of
``check-config`` and ``status``, the state database with its ``-wal``/``-shm`` and lock
files, and ``/metrics`` (when the daemon serves it) must not contain any of them.
"""

# ruff: noqa: S105 -- the "passwords" and "tokens" below are planted fakes the test greps for

from __future__ import annotations

import json
import signal
import stat
import urllib.request
from pathlib import Path

import anyio
import pytest

from tests.conftest import base_config, daemon, run_cli, wait_until, write_config
from tests.receivers import webhook_receiver
from watcher.providers.cohere import FINETUNING, QUEUED, READY
from watcher.redact import SecretRegistry
from watcher.simulator import RunningSimulator, Scenario, running_simulator

API_KEY = "sk-SECRET-KEY-1234567890"
PASSWORD = "hunter2-PASSWORD-xyz"
PATH_TOKEN = "notify-TOKEN-abc123def456"
HEADER_TOKEN = "HEADER-TOKEN-987654321"
QUERY_TOKEN = "QUERY-TOKEN-555444333"
FAILING_PATH_TOKEN = "fail-TOKEN-abcdef123456"
FAILING_HEADER_TOKEN = "BAD-TARGET-TOKEN-777888"
OPS_TOKEN = "ops-TOKEN-13579abcdef"
MODEL_TOKEN = "model-TOKEN-24680abcdef"
SECRETS = (
    API_KEY,
    PASSWORD,
    PATH_TOKEN,
    HEADER_TOKEN,
    QUERY_TOKEN,
    FAILING_PATH_TOKEN,
    FAILING_HEADER_TOKEN,
    OPS_TOKEN,
    MODEL_TOKEN,
)
# Fragments every planted credential shares: a partial or re-encoded leak shows too.
FRAGMENTS = ("SECRET-KEY", "hunter2", "TOKEN-")

READY_ID = "4f9d0c1e-ready"
MISSING_ID = "typo-model-id"


def leaks(text: str | bytes) -> list[str]:
    """The planted secrets (or fragments of them) found in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [s for s in (*SECRETS, *FRAGMENTS) if s in text]


def secret_scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "api_key": "a-different-key-at-first",
            "clock": "manual",
            "models": [
                {"id": READY_ID, "timeline": [[0, QUEUED], [1, FINETUNING], [10, READY]]},
            ],
        }
    )


def polls(sim: RunningSimulator, model_id: str) -> int:
    return int(sim.stats()["by_model"].get(model_id, 0))


class TestSecretsNeverLeak:
    async def test_full_scenario_leaks_no_secret_anywhere(self, tmp_path: Path) -> None:
        """Key, passwords, path/query/header tokens appear in no log line, command output or state
        file byte; the state folder is 0700 and its files 0600."""
        async with (
            running_simulator(secret_scenario()) as sim,
            webhook_receiver() as good,
            webhook_receiver() as bad,
            webhook_receiver() as ops,
        ):
            bad.fail_with(500)
            good_url = (
                f"json://alice:{PASSWORD}@127.0.0.1:{good.port}/{PATH_TOKEN}"
                f"?+X-Token={HEADER_TOKEN}&token={QUERY_TOKEN}"
            )
            # A header value with a space ("Bearer x") still leaks at debug level:
            # see test_header_value_with_a_space_is_scrubbed_as_apprise_logs_it.
            bad_url = (
                f"json://127.0.0.1:{bad.port}/{FAILING_PATH_TOKEN}"
                f"?+X-Api-Key={FAILING_HEADER_TOKEN}"
            )
            config = base_config(
                sim.base_url,
                tmp_path,
                [
                    {"id": READY_ID, "urls": [f"json://127.0.0.1:{good.port}/{MODEL_TOKEN}"]},
                    MISSING_ID,
                ],
                [good_url, bad_url],
                backoff_cap="1s",
            )
            config["notify"]["ops_urls"] = [f"json://127.0.0.1:{ops.port}/{OPS_TOKEN}"]
            path = write_config(tmp_path / "watcher.yaml", config)
            env = {"CO_API_KEY": API_KEY}
            outputs: dict[str, str] = {}

            async with daemon(path, "--log-level", "debug", env=env) as proc:
                await ops.wait_for(1)  # the key is rejected: one ops message
                sim.set_api_key(API_KEY)
                await ops.wait_for(2)  # ... and it works again
                await wait_until(lambda: polls(sim, READY_ID) >= 2, what="polls")
                sim.advance(20)
                # READY to the good URL and the model's own URL; the 404 notice too.
                await wait_until(lambda: len(good.messages) >= 3, what="deliveries")
                await wait_until(lambda: len(bad.requests) >= 2, what="failed attempts")
                await wait_until(
                    lambda: "notification retry scheduled" in proc.log(), what="a retry"
                )
                for args in (("status",), ("status", "--json")):
                    result = await anyio.to_thread.run_sync(
                        lambda a=args: run_cli(*a, "-c", str(path), env=env)
                    )
                    assert result.returncode == 0, result.stderr
                    outputs[" ".join(args)] = result.stdout + result.stderr
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0, proc.log()
            outputs["daemon log"] = proc.log()
            checked = run_cli("check-config", "-c", str(path), env=env)
            assert checked.returncode == 0, checked.stderr
            outputs["check-config"] = checked.stdout + checked.stderr

        # The scenario really went through the paths that carry credentials.
        log = outputs["daemon log"]
        assert "the Cohere API rejects the key; retrying slowly" in log
        assert "notification target failed" in log
        assert "model not found; checking again slowly" in log
        assert len(bad.requests) >= 2
        assert bad.requests[0].headers["X-Api-Key"] == FAILING_HEADER_TOKEN
        assert good.requests[0].headers.get("X-Token") == HEADER_TOKEN
        status = json.loads(outputs["status --json"])
        assert any(m["last_error"] for m in status["models"])  # the 404 is stored

        for name, text in outputs.items():
            assert leaks(text) == [], f"{name} leaks {leaks(text)}"
        state = tmp_path / "state"
        files = sorted(state.iterdir())
        assert {f.name for f in files} >= {"watcher.db", "watcher.db.lock"}
        for file in files:
            assert leaks(file.read_bytes()) == [], f"{file.name} leaks {leaks(file.read_bytes())}"

        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name

    async def test_metrics_leak_no_secret(self, tmp_path: Path) -> None:
        """/metrics of a daemon with health.listen 127.0.0.1:0 carries no secret (skipped while the
        daemon does not start its health server)."""
        scenario = secret_scenario().model_copy(update={"api_key": API_KEY})
        async with running_simulator(scenario) as sim, webhook_receiver() as good:
            url = f"json://alice:{PASSWORD}@127.0.0.1:{good.port}/{PATH_TOKEN}?+X-Token={HEADER_TOKEN}"
            config = base_config(sim.base_url, tmp_path, [READY_ID], [url])
            config["health"] = {"listen": "127.0.0.1:0"}
            path = write_config(tmp_path / "watcher.yaml", config)
            async with daemon(path, env={"CO_API_KEY": API_KEY}) as proc:
                await wait_until(lambda: polls(sim, READY_ID) >= 2, what="polls")
                listening = [
                    json.loads(line)
                    for line in proc.log().splitlines()
                    if '"health server listening"' in line
                ]
                if not listening:
                    pytest.skip("the daemon does not log a health server port (not started)")
                port = listening[0]["port"]
                body = await anyio.to_thread.run_sync(
                    lambda: urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/metrics", timeout=5
                    ).read()
                )
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit() == 0
            assert b"finetune_watcher_polls_total" in body
            assert leaks(body) == []
            assert leaks(proc.log()) == []


class TestScrubbing:
    def test_header_value_with_a_space_is_scrubbed_as_apprise_logs_it(self) -> None:
        """`+Authorization=Bearer%20TOKEN`: the token is masked in apprise's own rendering of the
        URL (its debug line "Loaded JSON URL: ...")."""
        import apprise

        url = f"json://127.0.0.1:8011/notify?+Authorization=Bearer%20{FAILING_HEADER_TOKEN}"
        registry = SecretRegistry()
        registry.add_url(url)
        rendered = apprise.Apprise.instantiate(url).url(privacy=True)
        assert FAILING_HEADER_TOKEN in rendered  # apprise does not mask header values
        assert FAILING_HEADER_TOKEN not in registry.scrub(rendered)
