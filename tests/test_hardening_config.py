"""Issue 11, findings 10 (the settings part) and 11: configuration edges.

A configuration larger than ``MAX_CONFIG_BYTES`` is refused before it is read (an 8 MB
file froze the daemon); a FIFO or ``/dev/stdin`` is refused instead of silently
ignored; a format width like ``{name:>300000000}`` is refused; ids that a URL would
normalise into another path are refused in settings and by every provider's URL
building; a secret file every user may read draws a warning. The commands run as real
subprocesses where the exit code and the one line matter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.conftest import ROOT, base_config, cli_env, daemon, run_cli, wait_until, write_config
from tests.receivers import LOOPBACK, refused_url
from watcher.errors import ConfigError, NotFoundError
from watcher.providers import PROVIDERS, http, open_provider
from watcher.settings import Settings, load_settings, section_name
from watcher.templates import template_problems

EX_CONFIG = 78
#: The documented limit (docs/reliability.md, ``settings.MAX_CONFIG_BYTES``).
MAX_CONFIG_BYTES = 1024 * 1024


def minimal_config(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {
        "state": {"path": str(tmp_path / "watcher.db")},
        "models": ["m1"],
        **extra,
    }


class TestConfigSize:
    def test_a_config_over_the_limit_is_refused_at_once_with_one_line(self, tmp_path: Path) -> None:
        path = write_config(tmp_path / "big.yaml", minimal_config(tmp_path))
        with path.open("a") as file:  # a valid file, padded with a comment past the limit
            file.write("# " + "x" * (MAX_CONFIG_BYTES + 10) + "\n")
        started = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            load_settings(path, {})
        assert time.monotonic() - started < 0.5  # refused before parsing
        [line] = caught.value.problems
        assert line.startswith(f"is {path.stat().st_size:,} bytes; ")
        assert "1,048,576" in line

    def test_check_config_exits_78_with_one_line(self, tmp_path: Path) -> None:
        path = write_config(tmp_path / "big.yaml", minimal_config(tmp_path))
        with path.open("a") as file:
            file.write("# " + "x" * (2 * MAX_CONFIG_BYTES) + "\n")
        result = run_cli("check-config", "-c", str(path))
        assert result.returncode == EX_CONFIG, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1
        assert "at most 1,048,576 bytes" in result.stderr

    async def test_a_reload_sized_parse_leaves_the_event_loop_free(self, tmp_path: Path) -> None:
        """``load_settings`` in a worker thread (as the daemon's reload calls it): the loop
        keeps ticking while a file just under the limit is parsed."""
        models = [f"model-{n:06d}" for n in range(10_000)]
        path = write_config(tmp_path / "many.yaml", minimal_config(tmp_path) | {"models": models})
        assert path.stat().st_size < MAX_CONFIG_BYTES
        gaps: list[float] = []

        async def tick() -> None:
            last = time.monotonic()
            while True:
                await anyio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            settings = await anyio.to_thread.run_sync(load_settings, path, {})
            tg.cancel_scope.cancel()
        assert len(settings.models) == 10_000
        assert max(gaps) < 0.5, max(gaps)


class TestNotARegularFile:
    def test_fifo_is_refused_without_hanging(self, tmp_path: Path) -> None:
        fifo = tmp_path / "watcher.yaml"
        os.mkfifo(fifo)
        # Discovery from the environment: before, the FIFO was skipped and this was "OK".
        result = run_cli("check-config", "-c", str(fifo), env={"WATCHER_DISCOVER__ENABLED": "1"})
        assert result.returncode == EX_CONFIG, result.stdout + result.stderr
        assert result.stderr == (
            f"{fifo}: is not a regular file (a FIFO, device or socket); "
            "give the path of a YAML file\n"
        )

    def test_dev_stdin_is_refused(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "watcher", "check-config", "-c", "/dev/stdin"],
            input="models: [m1]\n",
            capture_output=True,
            text=True,
            env=cli_env({"WATCHER_STATE__PATH": str(tmp_path / "w.db")}),
            cwd=ROOT,
            timeout=30,
            check=False,
        )
        assert result.returncode == EX_CONFIG, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1
        assert "is not a regular file" in result.stderr


class TestFormatWidth:
    @pytest.mark.parametrize(
        "template", ["{name:>300000000}", "{status:.99999}", "{name:x^201}", "{name:0>999}"]
    )
    def test_large_width_or_precision_is_refused(self, template: str) -> None:
        [problem] = template_problems(template)
        assert "may be at most 200" in problem

    @pytest.mark.parametrize("template", ["{name:<40}", "{name:.10}", "{status:_^200}", "{name}"])
    def test_small_ones_are_fine(self, template: str) -> None:
        assert template_problems(template) == []

    def test_check_config_exits_78(self, tmp_path: Path) -> None:
        config = minimal_config(tmp_path, notify={"title": "{name:>300000000}"})
        path = write_config(tmp_path / "watcher.yaml", config)
        result = run_cli("check-config", "-c", str(path))
        assert result.returncode == EX_CONFIG, result.stdout + result.stderr
        assert "notify.title:" in result.stderr
        assert "at most 200" in result.stderr


class TestModelIds:
    @pytest.mark.parametrize("model_id", [".", "..", "a/b", "../other", "a\x00b", "a\x1b[2Jb"])
    def test_ids_that_are_not_one_path_segment_are_refused(
        self, tmp_path: Path, model_id: str
    ) -> None:
        path = write_config(tmp_path / "watcher.yaml", minimal_config(tmp_path, models=[model_id]))
        with pytest.raises(ConfigError) as caught:
            load_settings(path, {})
        [line] = caught.value.problems
        assert line.startswith("models.0.id: must "), line

    def test_path_segment(self) -> None:
        assert http.path_segment("ft-a/b?c#d e") == "ft-a%2Fb%3Fc%23d%20e"
        for bad in (".", "..", "", "a\x00b", "a\nb"):
            with pytest.raises(NotFoundError):
                http.path_segment(bad, provider="x")

    @pytest.mark.parametrize("provider", list(PROVIDERS))
    async def test_every_provider_refuses_dot_dot_without_a_request(self, provider: str) -> None:
        """A job id ``..`` (a discovered one: settings refuse it in the file) is that model's
        typed error; no request goes to the parent path."""
        seen: list[str] = []

        async def record(request: web.Request) -> web.Response:
            seen.append(request.path)
            return web.json_response({}, status=404)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            section_type = type(Settings.model_fields[section_name(provider)].default)
            data: dict[str, object] = {"base_url": f"http://{LOOPBACK}:{port}/v1"}
            if "account_id" in section_type.model_fields:
                data["account_id"] = "acct"
            section = section_type.model_validate(data)
            async with aiohttp.ClientSession() as session:
                client = open_provider(provider, section, session=session, pacer=None)
                for job_id in ("..", "."):
                    with pytest.raises(NotFoundError):
                        await client.fetch_history(job_id)
        finally:
            await runner.cleanup()
        assert seen == []


class TestWorldReadableKeyFile:
    def test_check_config_warns_and_stays_ok(self, tmp_path: Path) -> None:
        key_file = tmp_path / "cohere-key"
        key_file.write_text("sk-KEYFILE-123456\n")
        key_file.chmod(0o644)
        config = minimal_config(tmp_path, cohere={"api_key_file": str(key_file)})
        path = write_config(tmp_path / "watcher.yaml", config)
        result = run_cli("check-config", "-c", str(path))
        assert result.returncode == 0, result.stderr
        assert result.stderr == (
            f"{path}: warning: cohere.api_key_file ({key_file}) is readable by every user "
            f"(mode 0644); make it private: chmod 600 {key_file}\n"
        )
        key_file.chmod(0o600)
        result = run_cli("check-config", "-c", str(path))
        assert (result.returncode, result.stderr) == (0, "")

    async def test_the_daemon_logs_a_warning_at_start(self, tmp_path: Path) -> None:
        key_file = tmp_path / "openai-key"
        key_file.write_text("sk-KEYFILE-654321\n")
        key_file.chmod(0o604)
        config = base_config(refused_url().replace("json://", "http://"), tmp_path, ["m1"], [])
        config["openai"] = {"api_key_file": str(key_file)}
        path = write_config(tmp_path / "watcher.yaml", config)
        async with daemon(path) as proc:
            await wait_until(
                lambda: "secret file readable by every user" in proc.log(), what="the warning"
            )
            assert "openai.api_key_file" in proc.log()
            assert "sk-KEYFILE" not in proc.log()
