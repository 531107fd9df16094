"""Start-up cost: what each quick command imports, and apprise URLs checked plugin by plugin.

The commands people and containers run often (``healthcheck`` every few seconds,
``status``, ``check-config``) must not pay for modules they do not use; each test runs a
fresh interpreter and looks at ``sys.modules`` (issue 15, goal 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apprise
import pytest

from watcher import apprise_urls

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "apprise", "psycopg", "pydantic", "structlog", "prometheus_client", "yaml")

FOUR_TARGETS = [
    "json://127.0.0.1:9/notify",
    "mailto://user:password@example.com?to=ops@example.com",
    "slack://T1JJ3T3L2/A1BRTD4JD/TWNG1Y2L6WR1GNUUHJ2DPQ9N/#general",
    "ntfys://ntfy.example.com/finetunes",
]


def _modules_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    """``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
        env=env,
    )  # fmt: skip
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def _heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY})


def test_building_the_parser_imports_no_heavy_module() -> None:
    """``import watcher.cli`` and the whole parser: none of aiohttp, apprise, psycopg, ..."""
    loaded = _modules_after("import watcher.cli\nwatcher.cli.build_parser()")
    assert _heavy(loaded) == []
    assert "importlib.metadata" not in loaded  # the version is looked up for --version only


def _main_then_modules(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """``sys.modules`` after ``watcher.cli.main(argv)`` exited 0 in a fresh interpreter."""
    code = f"from watcher.cli import main\ncode = main({argv!r})\nassert code == 0, code\n"
    return _modules_after(code, env)


def _commands_loaded(modules: list[str]) -> set[str]:
    return {m.rpartition(".")[2] for m in modules if m.startswith("watcher.commands.")} - {
        "base",
        "console",
    }


def test_building_the_parser_imports_no_command_module() -> None:
    """The parser lists every command from the table: no command's module is imported."""
    loaded = _modules_after("import watcher.cli\nwatcher.cli.build_parser()")
    assert _commands_loaded(loaded) == set()


def test_check_config_imports_no_http_library(tmp_path: Path) -> None:
    """check-config with four targets of four kinds: no aiohttp, no web server, no store
    driver, no other command's module (issue 15: it needs no HTTP)."""
    config = tmp_path / "watcher.yaml"
    config.write_text(
        json.dumps(
            {
                "cohere": {"base_url": "http://127.0.0.1:9"},
                "state": {"path": str(tmp_path / "watcher.db")},
                "notify": {"urls": FOUR_TARGETS},
                # the status page's line is printed too: its access rule, without aiohttp
                "health": {"listen": "127.0.0.1:9464"},
                "models": ["m-1"],
            }
        )
    )
    env = {**os.environ, "CO_API_KEY": "k" * 40}
    loaded = _main_then_modules(["check-config", "-c", str(config)], env)
    tops = {m.split(".")[0] for m in loaded}
    assert not {"aiohttp", "anyio", "psycopg", "prometheus_client", "sqlite3"} & tops
    assert not [m for m in loaded if m.startswith("watcher.web.") and m != "watcher.web.access"]
    assert "watcher.web.access" in loaded  # the page's line was printed, from the pure rule
    assert _commands_loaded(loaded) == {"check_config"}


def test_healthcheck_imports_only_the_standard_library(tmp_path: Path) -> None:
    """The container's HEALTHCHECK: no logging library, no event loop, no settings."""
    code = (
        "import sys\n"
        "from watcher.cli import main\n"
        "try:\n"
        "    main(['healthcheck', '--url', 'http://127.0.0.1:9/healthz', '--timeout', '0.5'])\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    loaded = _modules_after(code)
    assert _heavy(loaded) == []
    assert not {"anyio", "asyncio", "pydantic_settings"} & {m.split(".")[0] for m in loaded}
    ours = {m for m in loaded if m.split(".")[0] == "watcher"}
    assert "watcher.health" not in ours
    assert "watcher.logs" not in ours
    assert "watcher.healthprobe" in ours
    assert _commands_loaded(loaded) == {"healthcheck"}


def test_version_is_still_printed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watcher", "--version"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    from watcher import __version__

    assert result.stdout.strip() == f"finetune-watcher {__version__}"


def test_checking_urls_imports_only_their_plugins() -> None:
    """Four targets of four kinds load four plugin modules, not apprise's ~190."""
    code = (
        "import apprise\n"
        "from watcher.apprise_urls import add\n"
        f"for url in {FOUR_TARGETS!r}:\n"
        "    assert add(apprise.Apprise(), url), url\n"
    )
    plugins = {
        m.split(".")[2]
        for m in _modules_after(code)
        if m.startswith("apprise.plugins.") and m.split(".")[2] != "base"
    }
    assert plugins == {"custom_json", "email", "slack", "ntfy"}


def test_the_scheme_table_is_the_installed_apprises() -> None:
    """PLUGIN_SCHEMES is apprise's own map (regenerate: ``python -m watcher.apprise_urls``).
    A scheme it misses would still work, through apprise's full load; this keeps it fast."""
    assert apprise_urls._scan() == apprise_urls.PLUGIN_SCHEMES


@pytest.mark.parametrize(
    "url",
    [
        *FOUR_TARGETS,
        "json://",
        "mailto://",
        "slack://",
        "slack://T1JJ3T3L2/A1BRTD4JD",  # too few tokens
        "ntfy://",
        "JSON://127.0.0.1:9/upper-case-scheme",
        "json://a.example json://b.example",  # two URLs in one string
        "json://a.example, nosuch://x",
        "nosuch://x",  # no such plugin: apprise's own path
        "https://discord.com/api/webhooks/123/abc",  # a native URL: apprise's own path
        "not a url",
        "tgram://123456789:AABBCCDDEEFFGGHHIIJJKKLLMMNNOOPPQQRR/-100123",
        "discord://webhook_id/webhook_token",
        "mailtos://user:pass@smtp.example.com?to=a@example.com",
        "pover://user@token",
    ],
)
def test_same_outcome_as_apprise(url: str) -> None:
    """``add`` accepts, refuses and builds exactly what ``Apprise.add`` does."""
    theirs, ours = apprise.Apprise(), apprise.Apprise()
    assert apprise_urls.add(ours, url) == theirs.add(url)
    assert [type(p) for p in ours] == [type(p) for p in theirs]
    assert [p.url() for p in ours] == [p.url() for p in theirs]


def _config(tmp_path: Path, urls: list[str]) -> Path:
    config = tmp_path / "watcher.yaml"
    config.write_text(
        json.dumps(
            {
                "cohere": {"base_url": "http://127.0.0.1:9"},
                "state": {"path": str(tmp_path / "watcher.db")},
                "notify": {"urls": urls},
                "models": ["m-1"],
            }
        )
    )
    return config


def test_status_and_migrate_import_neither_apprise_nor_http(tmp_path: Path) -> None:
    """They send nothing: the targets are not parsed by apprise (nor requests imported),
    and no web server or HTTP client is loaded."""
    config = _config(tmp_path, FOUR_TARGETS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "CO_API"))}
    for argv in (["migrate", "-c", str(config)], ["status", "-c", str(config)]):
        loaded = _main_then_modules(argv, env)
        tops = {m.split(".")[0] for m in loaded}
        assert not {"apprise", "requests", "aiohttp", "psycopg", "prometheus_client"} & tops
        assert _commands_loaded(loaded) == {argv[0].replace("-", "_")}


def test_a_target_apprise_refuses_fails_check_config_not_status(tmp_path: Path) -> None:
    """``status`` still reads a configuration whose target apprise would refuse (it sends
    nothing); ``check-config`` and the daemon refuse it (78), as before."""
    config = _config(tmp_path, ["nosuch://x"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "CO_API"))}
    env["CO_API_KEY"] = "k" * 40

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "watcher", *argv, "-c", str(config)],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=False,
        )  # fmt: skip

    checked = cli("check-config")
    assert checked.returncode == 78, checked.stderr
    assert "not a URL apprise understands" in checked.stderr
    assert cli("migrate").returncode == 0
    status = cli("status")
    assert status.returncode == 0, status.stderr
    assert "m-1" in status.stdout
    assert "not polled yet" in status.stdout


def test_the_version_is_written_once() -> None:
    """pyproject.toml reads the version from ``watcher.__version__`` (a literal, so no
    start looks it up in the installed metadata)."""
    import tomllib

    from watcher import __version__

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert "version" not in pyproject["project"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "watcher.__version__"}
    assert __version__.count(".") == 2


def test_the_daemon_module_leaves_the_web_layer_to_health_listen() -> None:
    """``import watcher.daemon``: the status page's server side (aiohttp.web, the page,
    the API) is imported when health.listen mounts it, not by every start."""
    loaded = _modules_after("import watcher.daemon")
    assert "aiohttp.web" not in loaded
    assert not {"watcher.web.app", "watcher.web.page", "watcher.web.api"} & set(loaded)
    assert "psycopg" not in {m.split(".")[0] for m in loaded}
