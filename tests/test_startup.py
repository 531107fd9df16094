"""Start-up cost: what each quick command imports, and apprise URLs checked plugin by plugin.

The commands people and containers run often (``healthcheck`` every few seconds,
``status``, ``check-config``) must not pay for modules they do not use; each test runs a
fresh interpreter and looks at ``sys.modules`` (issue 15, goal 2).
"""

from __future__ import annotations

import json
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


def _modules_after(code: str) -> list[str]:
    """``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def _heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY})


def test_building_the_parser_imports_no_heavy_module() -> None:
    """``import watcher.cli`` and the whole parser: none of aiohttp, apprise, psycopg, ..."""
    loaded = _modules_after("import watcher.cli\nwatcher.cli.build_parser()")
    assert _heavy(loaded) == []
    assert "importlib.metadata" not in loaded  # the version is looked up for --version only


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
    assert not {"anyio", "asyncio"} & {m.split(".")[0] for m in loaded}
    ours = {m for m in loaded if m.split(".")[0] == "watcher"}
    assert "watcher.health" not in ours
    assert "watcher.healthprobe" in ours


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
