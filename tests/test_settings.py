"""Tests for watcher.settings: loading, validation, environment overrides and the API key.

Real files only: the corpus in tests/configs/{good,bad}/ plus files written to tmp_path.
Each bad file names, in its first line (``# expect: ...``), text its error must contain.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from watcher.errors import EX_CONFIG, ConfigError
from watcher.lifecycle import ModelKey, Phase
from watcher.providers.cohere import DELETED, FAILED, READY
from watcher.redact import SECRETS
from watcher.settings import (
    ALLOWED_PLACEHOLDERS,
    PROVIDER_NAMES,
    ApiKey,
    CohereSettings,
    HealthSettings,
    ModelSettings,
    ModelSpec,
    NotifySettings,
    ProviderSettings,
    Settings,
    format_duration,
    load_settings,
    parse_duration,
    register_secrets,
    resolve_api_key,
    resolve_api_keys,
    summary_lines,
)

CONFIGS = Path(__file__).parent / "configs"
BAD = sorted((CONFIGS / "bad").glob("*.yaml"))
GOOD = sorted((CONFIGS / "good").glob("*.yaml"))
MARKER = "hunter2"  # every secret planted in the bad corpus contains it
KEY_ENV = {"CO_API_KEY": "sk-from-env"}


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    SECRETS.clear()
    yield
    SECRETS.clear()


def write(tmp_path: Path, text: str, name: str = "watcher.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check_config(path: Path) -> None:
    """What ``check-config`` does: load, then find the key (no key in the environment)."""
    settings = load_settings(path, environ={})
    resolve_api_key(settings, environ={})


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={} if environ is None else environ)
    return info.value.problems


_UNPRIVILEGED_PROBLEMS = """\
import json, os, sys
from pathlib import Path
from watcher.errors import ConfigError
from watcher.settings import load_settings
path = Path(sys.argv[1])
try:
    load_settings(path, environ={})
except ConfigError as error:
    print(json.dumps(error.problems))
else:
    print("null")
"""


def problems_unprivileged(path: Path) -> list[str]:
    """``problems_of(path)`` where file permissions apply: in this process when it is not
    root; as root (which reads any file), in a child process that ``setpriv`` starts
    without the two capabilities that let root pass them (``CAP_DAC_OVERRIDE``,
    ``CAP_DAC_READ_SEARCH``): a mode-0 file is then unreadable for it too."""
    if os.geteuid() != 0:
        return problems_of(path)
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to drop root's file access"
    result = subprocess.run(
        [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
         sys.executable, "-c", _UNPRIVILEGED_PROBLEMS, str(path)],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    problems = json.loads(result.stdout)
    assert isinstance(problems, list), "no ConfigError at all"
    return [str(problem) for problem in problems]


class TestParseDuration:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            (30, 30.0),
            (0.2, 0.2),
            ("0.2", 0.2),
            ("30", 30.0),
            (" 45 ", 45.0),
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h", 3600.0),
            ("1h30m", 5400.0),
            ("1m30s", 90.0),
            ("500ms", 0.5),
            ("2d", 172800.0),
            ("1.5h", 5400.0),
            ("1D2H", 93600.0),
            ("1s500ms", 1.5),
            (".5", 0.5),
            ("2.", 2.0),
        ],
    )
    def test_accepts(self, value: object, seconds: float) -> None:
        """Numbers and unit strings become seconds."""
        assert parse_duration(value) == pytest.approx(seconds)

    @pytest.mark.parametrize(
        "value",
        [0, -5, 0.0, "0", "0s", "-5", "fast", "", "  ", "5 minutes", "m", "30x", "5m1h", "1h1h",
         True, False, None, [30], float("inf"), float("nan"), "inf", "nan", "1e309"],
    )  # fmt: skip
    def test_rejects(self, value: object) -> None:
        """Zero, negatives, booleans, non-finite values and garbage are errors."""
        with pytest.raises(ValueError, match="must be a positive duration"):
            parse_duration(value)

    @given(st.floats(min_value=1e-3, max_value=1e9, allow_nan=False, allow_infinity=False))
    def test_numbers_round_trip(self, seconds: float) -> None:
        """A positive number, given as a number or as its text, is itself."""
        assert parse_duration(seconds) == seconds
        assert parse_duration(repr(seconds)) == seconds

    @given(
        st.integers(0, 9), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
        st.integers(0, 999),
    )  # fmt: skip
    def test_units_add_up(self, d: int, h: int, m: int, s: int, ms: int) -> None:
        """``1d2h3m4s5ms`` is the sum of its parts; omitted parts count as zero."""
        parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s"), (ms, "ms")]
        text = "".join(f"{n}{unit}" for n, unit in parts if n)
        expected = d * 86400 + h * 3600 + m * 60 + s + ms / 1000
        if expected == 0:
            return
        assert math.isclose(parse_duration(text), expected)

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(0.5, "0.5s"), (45, "45s"), (60, "1m"), (1800, "30m"), (5400, "1h30m"), (86400, "1d")],
    )
    def test_format_duration(self, seconds: float, text: str) -> None:
        """Durations are shown in their shortest unit form."""
        assert format_duration(seconds) == text


class TestGoodConfigs:
    @pytest.mark.parametrize("path", GOOD, ids=[p.name for p in GOOD])
    def test_every_good_file_loads(self, path: Path) -> None:
        """Every file of the good corpus loads and remembers where it came from."""
        settings = load_settings(path, environ={})
        assert settings.config_path == path
        assert settings.models or settings.discover.enabled

    def test_minimal_uses_defaults(self) -> None:
        """Keys left out take the documented defaults."""
        settings = load_settings(CONFIGS / "good" / "minimal.yaml", environ={})
        assert [m.id for m in settings.models] == ["7a317d97-4d05-427d-9396-f31b9fb92c55"]
        assert settings.cohere.base_url == "https://api.cohere.com"
        assert settings.cohere.api_key is None
        assert settings.poll.interval == 60.0
        assert settings.poll.settled_interval == 1800.0
        assert settings.poll.concurrency == 4
        assert settings.poll.max_requests_per_minute == 300
        # No state.path, no $STATE_DIRECTORY / $XDG_STATE_HOME / $HOME: next to the file.
        assert settings.state.path == CONFIGS / "good" / "watcher.db"
        assert settings.notify.on == ["ready", "failed"]
        assert settings.notify.urls == []
        assert settings.notify.format == "text"
        assert settings.health.listen is None
        assert not settings.health.enabled
        assert settings.health.host is None
        assert not settings.discover.enabled

    def test_plain_and_mapping_models(self) -> None:
        """Plain ids become models; mapping ids are stripped; null url lists are empty."""
        settings = load_settings(CONFIGS / "good" / "mapping-models.yaml", environ={})
        by_id = settings.model_by_id()
        assert list(by_id) == ["plain-model", "mapped-model", "third-model"]
        assert by_id["plain-model"].name is None
        assert by_id["plain-model"].label == "plain-model"
        assert by_id["mapped-model"].label == "support-classifier"
        assert [u.get_secret_value() for u in by_id["mapped-model"].urls] == [
            "json://127.0.0.1:8012/per-model"
        ]
        assert by_id["third-model"].urls == ()

    def test_durations_in_every_form(self) -> None:
        """Durations given as numbers, numeric strings and unit strings are seconds."""
        s = load_settings(CONFIGS / "good" / "durations.yaml", environ={})
        assert s.cohere.timeout == 0.2
        assert s.poll.interval == 0.2
        assert s.poll.settled_interval == 5400.0
        assert s.poll.backoff_cap == 0.5
        assert s.notify.give_up_after == 172800.0
        assert s.notify.timeout == 30.0
        assert s.notify.stuck_after == 43200.0
        assert s.discover.interval == 300.0

    def test_full_config(self) -> None:
        """Every key is read; statuses are normalised and deduplicated; the slash is stripped.

        ``ready`` is the common word; ``FAILED`` and ``READY`` are Cohere's shorthands."""
        s = load_settings(CONFIGS / "good" / "full.yaml", environ={})
        assert s.cohere.base_url == "http://127.0.0.1:8010"
        assert s.cohere.page_size == 100
        assert s.poll.jitter == 0.25
        # ``FAILED`` names Cohere's STATUS_FAILED and every other provider's FAILED too.
        assert s.notify.on[:2] == ["ready", FAILED]
        assert {"FAILED", DELETED, READY} <= set(s.notify.on)
        assert len(set(s.notify.on)) == len(s.notify.on)
        assert s.notify.format == "markdown"
        assert s.health.host == "::1"
        assert s.health.port == 9464
        assert s.discover.exclude == ["scratch-*"]

    def test_discover_without_models(self) -> None:
        """With discovery on, ``models`` may be left out; ``yes`` is a boolean."""
        s = load_settings(CONFIGS / "good" / "discover-only.yaml", environ={})
        assert s.models == ()
        assert s.discover.enabled is True
        assert s.discover.include == ["support-*", "intent-*"]

    def test_null_sections_mean_defaults(self) -> None:
        """A section with every key commented out is the default section."""
        s = load_settings(CONFIGS / "good" / "null-sections.yaml", environ={})
        assert s.cohere.base_url == "https://api.cohere.com"
        assert s.poll.interval == 60.0
        assert s.notify.urls == []

    def test_shipped_configs_load(self) -> None:
        """The example and demo configurations in config/ are valid."""
        root = Path(__file__).parent.parent / "config"
        example = load_settings(root / "watcher.example.yaml", environ={})
        assert len(example.models) == 2
        demo = load_settings(root / "demo.yaml", environ={})
        assert demo.cohere.base_url == "http://127.0.0.1:8010"
        assert demo.poll.interval == 0.5
        assert [m.label for m in demo.models] == [
            "support-classifier",
            "intent-router",
            "summariser-xl",
        ]

    def test_on_key_is_not_a_boolean(self, tmp_path: Path) -> None:
        """YAML 1.1 reads ``on:`` as true; our loader keeps it the key ``on``."""
        path = write(tmp_path, "notify:\n  on: [FAILED]\nmodels: [a]\n")
        assert load_settings(path, environ={}).notify.on[0] == FAILED

    def test_settings_are_frozen(self) -> None:
        """Loaded settings cannot be changed in place."""
        s = load_settings(CONFIGS / "good" / "minimal.yaml", environ={})
        with pytest.raises(ValidationError):
            s.poll.interval = 1.0  # type: ignore[misc]
        with pytest.raises(ValidationError):
            s.models = []  # type: ignore[misc]


class TestBadConfigs:
    @pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
    def test_every_bad_file_is_one_clear_error(self, path: Path) -> None:
        """Each broken file raises ConfigError naming the file and field, with no secret."""
        expected = path.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ")
        with pytest.raises(ConfigError) as info:
            check_config(path)
        error = info.value
        assert error.exit_code == EX_CONFIG
        assert error.source == str(path)
        assert any(expected in problem for problem in error.problems), error.problems
        text = str(error)
        assert MARKER not in text
        assert all(line.startswith(f"{path}: ") for line in text.splitlines())

    def test_corpus_is_large_enough(self) -> None:
        """The corpus covers at least the 22 cases the issue lists."""
        assert len(BAD) >= 22

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file says so (pydantic-settings alone would skip it silently)."""
        assert problems_of(tmp_path / "nope.yaml") == ["file not found"]

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is not a configuration file."""
        assert problems_of(tmp_path) == ["is a directory, not a configuration file"]

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A file without read permission is reported, not a traceback (as root: checked
        without root's power to read any file)."""
        path = write(tmp_path, "models: [a]\n")
        path.chmod(0)
        assert problems_unprivileged(path) == ["cannot read: Permission denied"]

    def test_not_utf8(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are a clear error."""
        path = tmp_path / "latin1.yaml"
        path.write_bytes("models: [caf\xe9]\n".encode("latin-1"))
        assert problems_of(path) == ["cannot read: not UTF-8 text"]

    def test_all_problems_at_once(self, tmp_path: Path) -> None:
        """Every problem of a file is reported, one line each, in file order."""
        path = write(tmp_path, "poll:\n  interval: 0\n  jitter: 2\nmodels: [{name: x}]\n")
        assert problems_of(path) == [
            'poll.interval: must be a positive duration like 30, 0.5, "30s", "5m" or "1h"',
            "poll.jitter: must be less than or equal to 0.5",
            "models.0.id: field required",
        ]

    def test_unreadable_api_key_file(self, tmp_path: Path) -> None:
        """An api_key_file that exists but cannot be read names the path and the reason (as
        root: checked without root's power to read any file)."""
        key = tmp_path / "key"
        key.write_text("sk-secret\n")
        key.chmod(0)
        path = write(tmp_path, f"cohere:\n  api_key_file: {key}\nmodels: [a]\n")
        expected = [f"cohere.api_key_file: cannot read {key}: Permission denied"]
        assert problems_unprivileged(path) == expected

    def test_apprise_says_nothing_while_checking(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Apprise logs rejected tokens in clear; while validating, none of it is emitted."""
        path = write(tmp_path, 'notify:\n  urls: ["slack://T0/B0/hunter2-SECRET"]\nmodels: [a]\n')
        with caplog.at_level(logging.DEBUG):
            problems_of(path)
        assert MARKER not in caplog.text
        assert not [r for r in caplog.records if r.name.startswith("apprise")]


class TestTemplatesAndAddresses:
    def test_every_placeholder_is_allowed(self) -> None:
        """A template may use every documented placeholder, format specs and {{ }}."""
        template = " ".join(f"{{{name}}}" for name in sorted(ALLOWED_PLACEHOLDERS))
        notify = NotifySettings(title="{{literal}} {status:>12}", body=template)
        assert notify.body == template

    @pytest.mark.parametrize(
        ("template", "message"),
        [
            ("{modelid}", "unknown placeholder {modelid}"),
            ("{model_id.__class__}", "unknown placeholder {model_id.__class__}"),
            ("{metrics[0]}", "unknown placeholder {metrics[0]}"),
            ("{}", "positional placeholders"),
            ("{0}", "positional placeholders"),
            ("{status", "invalid template"),
            ("status}", "invalid template"),
            ("{duration:.1f}", "invalid template"),
            ("{duration:{status}}", "inside a format spec"),
        ],
    )
    def test_bad_templates(self, template: str, message: str) -> None:
        """Unknown, positional, attribute/index and malformed placeholders are config errors."""
        with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("{", r"\{")):
            NotifySettings(body=template)

    @pytest.mark.parametrize(
        ("listen", "host", "port"),
        [
            ("127.0.0.1:9464", "127.0.0.1", 9464),
            ("[::1]:9464", "::1", 9464),
            ("[::]:80", "::", 80),
            (":9464", "127.0.0.1", 9464),
            ("0.0.0.0:9464", "0.0.0.0", 9464),  # noqa: S104 -- parsing, not binding
            ("localhost:0", "localhost", 0),
            (" metrics.internal:9100 ", "metrics.internal", 9100),
        ],
    )
    def test_listen_addresses(self, listen: str, host: str, port: int) -> None:
        """``host:port``, ``[v6]:port`` and ``:port`` (loopback) are understood."""
        health = HealthSettings(listen=listen)
        assert (health.host, health.port) == (host, port)
        assert health.enabled

    @pytest.mark.parametrize(
        ("listen", "loopback"),
        [(None, True), (":1", True), ("[::1]:1", True), ("localhost:1", True),
         ("0.0.0.0:1", False), ("[::]:1", False), ("10.0.0.5:1", False), ("example.com:1", False)],
    )  # fmt: skip
    def test_loopback(self, listen: str | None, loopback: bool) -> None:
        """is_loopback tells the health server when to warn about exposure."""
        assert HealthSettings(listen=listen).is_loopback is loopback

    @pytest.mark.parametrize(
        "listen",
        ["nonsense", "9464", "host:", ":http", "1.2.3.4:99999", "[::1]9464", "[nope]:1", "a b:1",
         "-bad-:1"],
    )  # fmt: skip
    def test_bad_listen_addresses(self, listen: str) -> None:
        """Anything else is a config error."""
        with pytest.raises(ValidationError, match="must be HOST:PORT"):
            HealthSettings(listen=listen)

    def test_dashboard_url_needs_model_id(self) -> None:
        """The dashboard link must hold {model_id}; other braces are left as written."""
        url = "https://x/{model_id}?q={literal}"
        assert NotifySettings(dashboard_url=url).dashboard_url == url
        with pytest.raises(ValidationError, match=r"must contain \{model_id\}"):
            NotifySettings(dashboard_url="https://x/{id}")


class TestEnvironment:
    BASE = "poll:\n  interval: 60\n  concurrency: 2\nmodels: [a]\n"

    def test_env_overrides_one_key(self, tmp_path: Path) -> None:
        """WATCHER_POLL__INTERVAL beats the file; the rest of the section stays."""
        path = write(tmp_path, self.BASE)
        s = load_settings(path, environ={"WATCHER_POLL__INTERVAL": "30s"})
        assert s.poll.interval == 30.0
        assert s.poll.concurrency == 2

    def test_env_overrides_base_url(self, tmp_path: Path) -> None:
        """WATCHER_COHERE__BASE_URL points the watcher elsewhere (e.g. the simulator)."""
        path = write(tmp_path, "cohere:\n  base_url: https://api.cohere.com\nmodels: [a]\n")
        s = load_settings(path, environ={"WATCHER_COHERE__BASE_URL": "http://127.0.0.1:8010/"})
        assert s.cohere.base_url == "http://127.0.0.1:8010"

    def test_env_names_are_case_insensitive(self, tmp_path: Path) -> None:
        """watcher_poll__interval works like WATCHER_POLL__INTERVAL."""
        path = write(tmp_path, self.BASE)
        assert load_settings(path, environ={"watcher_poll__interval": "5"}).poll.interval == 5.0

    def test_env_lists_are_json(self, tmp_path: Path) -> None:
        """Lists come as JSON: models and notify.urls."""
        path = write(tmp_path, self.BASE)
        s = load_settings(
            path,
            environ={
                "WATCHER_MODELS": '["x", {"id": "y", "name": "Y"}]',
                "WATCHER_NOTIFY__URLS": '["json://127.0.0.1:8011/notify"]',
            },
        )
        assert [m.label for m in s.models] == ["x", "Y"]
        assert len(s.notify.urls) == 1

    def test_empty_and_null_values(self, tmp_path: Path) -> None:
        """An empty variable is ignored; ``null`` sets a key to null."""
        path = write(tmp_path, 'health:\n  listen: "127.0.0.1:9464"\n' + self.BASE)
        s = load_settings(
            path, environ={"WATCHER_POLL__INTERVAL": "", "WATCHER_HEALTH__LISTEN": "null"}
        )
        assert s.poll.interval == 60.0
        assert s.health.listen is None

    def test_env_problem_names_the_variable(self, tmp_path: Path) -> None:
        """An invalid value from the environment is reported with the variable's name."""
        path = write(tmp_path, self.BASE)
        problems = problems_of(path, {"WATCHER_POLL__INTERVAL": "0"})
        assert problems == [
            'poll.interval: must be a positive duration like 30, 0.5, "30s", "5m" or "1h"'
            " (from $WATCHER_POLL__INTERVAL)"
        ]

    def test_unknown_key_in_known_section(self, tmp_path: Path) -> None:
        """A misspelt key inside a section is an unknown key, traced to its variable."""
        path = write(tmp_path, self.BASE)
        problems = problems_of(path, {"WATCHER_POLL__INTERVALL": "30"})
        assert problems == ["poll.intervall: unknown key (from $WATCHER_POLL__INTERVALL)"]

    def test_unknown_section(self, tmp_path: Path) -> None:
        """A WATCHER_X__Y variable whose section does not exist is an error, not ignored."""
        path = write(tmp_path, self.BASE)
        problems = problems_of(path, {"WATCHER_POLLING__INTERVAL": "30"})
        assert len(problems) == 1
        assert problems[0].startswith("$WATCHER_POLLING__INTERVAL: no such setting")

    def test_cli_variables_are_not_ours(self, tmp_path: Path) -> None:
        """WATCHER_CONFIG (the CLI's) and other variables without ``__`` are ignored."""
        path = write(tmp_path, self.BASE)
        s = load_settings(path, environ={"WATCHER_CONFIG": str(path), "WATCHER_LOG_LEVEL": "x"})
        assert s.poll.interval == 60.0

    def test_bad_json_names_the_variable_not_the_value(self, tmp_path: Path) -> None:
        """A list that is not JSON names the variable and never echoes its value."""
        path = write(tmp_path, self.BASE)
        problems = problems_of(path, {"WATCHER_NOTIFY__URLS": "slack://T0/B0/hunter2-SECRET"})
        assert len(problems) == 1
        assert problems[0].startswith("$WATCHER_NOTIFY__URLS: lists and mappings must be JSON")
        assert MARKER not in problems[0]

    def test_secret_from_env_is_never_echoed(self, tmp_path: Path) -> None:
        """An invalid apprise URL from the environment shows only its label."""
        path = write(tmp_path, self.BASE)
        problems = problems_of(path, {"WATCHER_NOTIFY__OPS_URLS": '["discord://hunter2-SECRET"]'})
        assert problems == [
            "notify.ops_urls.0: not a URL apprise understands (discord://…)"
            " (from $WATCHER_NOTIFY__OPS_URLS)"
        ]

    def test_os_environ_is_the_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without an ``environ`` argument the process environment is read."""
        path = write(tmp_path, self.BASE)
        monkeypatch.setenv("WATCHER_POLL__CONCURRENCY", "7")
        assert load_settings(path).poll.concurrency == 7


class TestApiKey:
    @pytest.fixture
    def config(self, tmp_path: Path) -> Path:
        return write(tmp_path, "models: [a]\n")

    def test_order_of_sources(self, tmp_path: Path) -> None:
        """file > systemd credential > cohere.api_key > $CO_API_KEY > $COHERE_API_KEY."""
        key_file = tmp_path / "key"
        key_file.write_text("  sk-from-file\n")
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "cohere-api-key").write_text("sk-from-credential\n")
        with_file = write(tmp_path, f"cohere:\n  api_key_file: {key_file}\nmodels: [a]\n", "1.yaml")
        with_key = write(tmp_path, "cohere:\n  api_key: sk-from-yaml\nmodels: [a]\n", "2.yaml")
        plain = write(tmp_path, "models: [a]\n", "3.yaml")
        environ = {
            "CREDENTIALS_DIRECTORY": str(credentials),
            "CO_API_KEY": "sk-co",
            "COHERE_API_KEY": "sk-cohere",
        }

        def resolve(path: Path, env: dict[str, str]) -> tuple[str, str]:
            key = resolve_api_key(load_settings(path, environ=env), environ=env)
            return key.value.get_secret_value(), key.source

        assert resolve(with_file, environ) == ("sk-from-file", f"cohere.api_key_file ({key_file})")
        assert resolve(with_key, environ) == (
            "sk-from-credential",
            "$CREDENTIALS_DIRECTORY/cohere-api-key",
        )
        del environ["CREDENTIALS_DIRECTORY"]
        assert resolve(with_key, environ) == ("sk-from-yaml", "cohere.api_key")
        assert resolve(plain, environ) == ("sk-co", "$CO_API_KEY")
        del environ["CO_API_KEY"]
        assert resolve(plain, environ) == ("sk-cohere", "$COHERE_API_KEY")

    def test_watcher_env_key_is_labelled(self, config: Path) -> None:
        """A key from $WATCHER_COHERE__API_KEY is labelled with that variable."""
        env = {"WATCHER_COHERE__API_KEY": " sk-watcher \n", "CO_API_KEY": "sk-co"}
        key = resolve_api_key(load_settings(config, environ=env), environ=env)
        assert key == ApiKey(SecretStr("sk-watcher"), "$WATCHER_COHERE__API_KEY")

    def test_credentials_directory_without_the_file(self, config: Path, tmp_path: Path) -> None:
        """A credentials folder without cohere-api-key falls through to the next source."""
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "empty"), **KEY_ENV}
        assert resolve_api_key(load_settings(config, environ=env), env).source == "$CO_API_KEY"

    def test_unreadable_credentials_directory(
        self, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A credentials folder we may not look into (systemd 252's ExecReload=) is one
        config line, not an internal error, even with another key available."""
        denied = tmp_path / "credentials"

        def exists(self: Path, *args: object, **kwargs: object) -> bool:
            if self.parent == denied:
                raise PermissionError(13, "Permission denied", str(self))
            return True

        monkeypatch.setattr(Path, "exists", exists)
        env = {"CREDENTIALS_DIRECTORY": str(denied), **KEY_ENV}
        settings = load_settings(config, environ=env)
        with pytest.raises(ConfigError) as info:
            resolve_api_key(settings, environ=env)
        assert info.value.problems == [
            f"$CREDENTIALS_DIRECTORY/cohere-api-key: cannot read {denied / 'cohere-api-key'}: "
            "Permission denied"
        ]

    def test_blank_variables_count_as_unset(self, config: Path) -> None:
        """CO_API_KEY set to blanks does not hide COHERE_API_KEY."""
        env = {"CO_API_KEY": "  ", "COHERE_API_KEY": "sk-cohere"}
        assert resolve_api_key(load_settings(config, environ=env), env).source == "$COHERE_API_KEY"

    def test_empty_key_file(self, tmp_path: Path) -> None:
        """A key file holding only whitespace is an error, not an empty key."""
        key_file = tmp_path / "key"
        key_file.write_text("\n")
        path = write(tmp_path, f"cohere:\n  api_key_file: {key_file}\nmodels: [a]\n")
        with pytest.raises(ConfigError) as info:
            resolve_api_key(load_settings(path, environ={}), environ=KEY_ENV)
        assert info.value.problems == [f"cohere.api_key_file: {key_file} is empty"]

    def test_empty_credential(self, config: Path, tmp_path: Path) -> None:
        """An empty systemd credential is an error too."""
        (tmp_path / "cohere-api-key").write_text("")
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path), **KEY_ENV}
        with pytest.raises(ConfigError, match="cohere-api-key is empty"):
            resolve_api_key(load_settings(config, environ=env), environ=env)

    def test_no_key(self, config: Path) -> None:
        """No key anywhere: one line saying where a key can come from."""
        with pytest.raises(ConfigError) as info:
            resolve_api_key(load_settings(config, environ={}), environ={})
        assert info.value.source == str(config)
        assert info.value.problems == [
            "cohere: no API key: set CO_API_KEY (or COHERE_API_KEY), cohere.api_key_file, "
            "or a systemd credential named cohere-api-key"
        ]

    def test_key_never_in_repr(self, tmp_path: Path) -> None:
        """repr, str and JSON dumps of settings and key show no key and no URL credential."""
        path = write(
            tmp_path,
            "cohere:\n  api_key: sk-hunter2-yaml\n"
            "notify:\n  urls: ['json://user:hunter2-pw@127.0.0.1:8011/notify']\nmodels: [a]\n",
        )
        settings = load_settings(path, environ={})
        key = resolve_api_key(settings, environ={})
        for text in (repr(settings), str(settings), settings.model_dump_json(), repr(key)):
            assert MARKER not in text
        assert key.value.get_secret_value() == "sk-hunter2-yaml"


class TestReporting:
    def test_summary_has_labels_and_no_secret(self, tmp_path: Path) -> None:
        """check-config's summary shows counts, labels and the key's source, never a secret."""
        path = write(
            tmp_path,
            "cohere:\n  api_key: sk-hunter2-key\n"
            "notify:\n  urls: ['json://user:hunter2-pw@127.0.0.1:8011/hunter2-path']\n"
            "  ops_urls: ['slack://T0AAAAAAA/B0BBBBBBB/hunter2hunter2hunter2ab']\n"
            "health:\n  listen: ':9464'\n"
            "models:\n  - a\n  - id: b\n    name: Bee\n"
            "    urls: ['discord://1234567890/hunter2-discord-token']\n",
        )
        settings = load_settings(path, environ={})
        lines = summary_lines(settings, resolve_api_key(settings, environ={}))
        text = "\n".join(lines)
        assert MARKER not in text
        assert "models: 2: a, b (Bee)" in text
        assert "notify on ready, failed: 1 target: json://127.0.0.1:8011" in text
        assert "ops notify: 1 target: slack://…" in text
        assert "notify Bee also: 1 target: discord://…" in text
        assert "key from cohere.api_key" in text
        assert "every 1m, settled models every 30m" in text
        assert "budget 300 requests/min" in text
        assert "health: :9464" in text
        assert f"state: SQLite {tmp_path / 'watcher.db'}" in text

    def test_summary_without_key(self) -> None:
        """The summary also works before a key is resolved."""
        settings = load_settings(CONFIGS / "good" / "discover-only.yaml", environ={})
        text = "\n".join(summary_lines(settings, None))
        assert "key from not resolved" in text
        assert "discover: include ['support-*', 'intent-*']" in text

    def test_register_secrets(self, tmp_path: Path) -> None:
        """The key and every apprise URL's credentials are scrubbed once registered."""
        path = write(
            tmp_path,
            "notify:\n  urls: ['json://user:hunter2-pw@127.0.0.1:8011/notify?+X-Token=hdr-tok-1']\n"
            "  ops_urls: ['json://127.0.0.1:8011/ops-hunter2']\n"
            "models:\n  - id: a\n    urls: ['discord://1234567890/hunter2-discord-token']\n",
        )
        settings = load_settings(path, environ={})
        register_secrets(settings, ApiKey(SecretStr("sk-hunter2-key"), "$CO_API_KEY"))
        line = (
            "sk-hunter2-key hunter2-pw hdr-tok-1 ops-hunter2 hunter2-discord-token "
            "json://user:hunter2-pw@127.0.0.1:8011/notify?+X-Token=hdr-tok-1"
        )
        scrubbed = SECRETS.scrub(line)
        assert MARKER not in scrubbed
        assert "hdr-tok-1" not in scrubbed

    def test_settings_built_directly(self) -> None:
        """Settings can be built in code (tests, tools); config_path is then '.'."""
        settings = Settings(models=["x"])  # type: ignore[list-item]
        assert settings.model_by_id()["x"].id == "x"
        assert settings.config_path == Path(".")


class TestPerStatusTemplates:
    def test_override_wins_for_its_status_only(self, tmp_path: Path) -> None:
        """A per-status template replaces the general one for that status and no other."""
        path = tmp_path / "t.yaml"
        path.write_text(
            "models: [a]\n"
            "notify:\n"
            "  title: 'general {name}'\n"
            "  templates:\n"
            "    FAILED: {title: 'failed {name} after {duration}'}\n"
        )
        notify = load_settings(path, environ={}).notify
        assert notify.templates_for("STATUS_FAILED") == ("failed {name} after {duration}", None)
        assert notify.templates_for("STATUS_READY") == ("general {name}", None)

    def test_unknown_placeholder_in_an_override_is_a_config_error(self, tmp_path: Path) -> None:
        """An override is checked like the general templates: the field path is named."""
        path = tmp_path / "t.yaml"
        path.write_text("models: [a]\nnotify:\n  templates:\n    STATUS_READY: {body: '{nope}'}\n")
        with pytest.raises(ConfigError) as info:
            load_settings(path, environ={})
        assert any("notify.templates.STATUS_READY.body" in p for p in info.value.problems)


class TestProviders:
    def test_models_default_to_cohere(self, tmp_path: Path) -> None:
        """A model without ``provider:`` is Cohere's; its key names the provider."""
        path = write(tmp_path, "models:\n  - a\n  - {id: b, provider: ' Cohere '}\n")
        settings = load_settings(path, environ={})
        assert [m.provider for m in settings.models] == ["cohere", "cohere"]
        assert list(settings.model_by_key()) == [ModelKey("cohere", "a"), ModelKey("cohere", "b")]
        assert settings.providers_in_use() == ("cohere",)
        assert PROVIDER_NAMES[0] == "cohere"

    def test_unknown_provider_lists_the_valid_ones(self, tmp_path: Path) -> None:
        """A provider the watcher does not know is one line naming the valid ones."""
        path = write(tmp_path, "models:\n  - {id: a, provider: openia}\n")
        assert problems_of(path) == [
            "models.0.provider: unknown provider; valid: "
            "cohere, openai, azure-openai, mistral, together, fireworks"
        ]

    def test_ids_are_unique_per_provider(self, tmp_path: Path) -> None:
        """The same id twice for one provider (spelt out or by default) is an error."""
        path = write(tmp_path, "models:\n  - a\n  - {id: a, provider: cohere}\n")
        assert problems_of(path) == ["models: models.0 and models.1 have the same id"]

    def test_discovery_uses_the_default_provider(self, tmp_path: Path) -> None:
        """Discovery without models still needs Cohere (it lists Cohere's models)."""
        settings = load_settings(CONFIGS / "good" / "discover-only.yaml", environ={})
        assert settings.providers_in_use() == ("cohere",)

    def test_budget_falls_back_to_the_global_one(self, tmp_path: Path) -> None:
        """cohere.max_requests_per_minute wins; unset, poll.max_requests_per_minute applies."""
        plain = load_settings(write(tmp_path, "poll: {max_requests_per_minute: 120}\nmodels: [a]\n",
                                    "1.yaml"), environ={})  # fmt: skip
        own = load_settings(
            write(tmp_path, "cohere: {max_requests_per_minute: 50}\nmodels: [a]\n", "2.yaml"),
            environ={"WATCHER_POLL__MAX_REQUESTS_PER_MINUTE": "120"},
        )
        assert plain.cohere.max_requests_per_minute is None
        assert plain.requests_per_minute("cohere") == 120
        assert own.requests_per_minute("cohere") == 50
        assert isinstance(own.provider_section("cohere"), ProviderSettings)
        assert "budget 50 requests/min" in "\n".join(summary_lines(own, None))

    def test_budget_must_be_positive(self, tmp_path: Path) -> None:
        """A provider budget of 0 is an error like the global one."""
        path = write(tmp_path, "cohere: {max_requests_per_minute: 0}\nmodels: [a]\n")
        assert problems_of(path) == [
            "cohere.max_requests_per_minute: must be greater than or equal to 1"
        ]

    def test_cohere_section_is_a_provider_section(self) -> None:
        """CohereSettings extends the common provider section and names its SDK's variables."""
        section = CohereSettings()
        assert isinstance(section, ProviderSettings)
        assert section.base_url == "https://api.cohere.com"
        assert CohereSettings.key_variables == ("CO_API_KEY", "COHERE_API_KEY")
        assert ModelSettings(id="x").key == ModelKey("cohere", "x")


class TestNotifyWords:
    @pytest.mark.parametrize(
        ("words", "expected"),
        [
            (["ready", "failed"], ["ready", "failed"]),
            (["cancelled", "queued", "running"], ["cancelled", "queued", "running"]),
            (["READY", "STATUS_FAILED", "STATUS_DELETED"], [READY, FAILED, DELETED]),
            (["Ready", " ready "], [READY, "ready"]),
            (["failed", "failed", "STATUS_FAILED"], ["failed", FAILED]),
        ],
        ids=["common-words", "every-common-word", "cohere-statuses", "case-decides", "dedup"],
    )
    def test_common_words_and_statuses(self, words: list[str], expected: list[str]) -> None:
        """Lower-case common words stay words (a phase); anything else is a provider's status."""
        assert NotifySettings(on=words).on == expected

    def test_a_word_names_every_provider_status_it_spells(self) -> None:
        """``paused`` keeps meaning Cohere's STATUS_PAUSED and also names OpenAI's ``paused``."""
        on = NotifySettings(on=["paused", "FAILED"]).on
        assert {"STATUS_PAUSED", "paused", FAILED, "FAILED"} <= set(on)
        assert on[0] == "STATUS_PAUSED"

    def test_a_template_key_applies_to_every_status_it_names(self) -> None:
        """A template under ``FAILED`` is used for Cohere's and Mistral's failure alike."""
        notify = NotifySettings(templates={"FAILED": {"title": "x {name}"}})
        assert notify.templates_for(FAILED)[0] == "x {name}"
        assert notify.templates_for("FAILED")[0] == "x {name}"

    def test_unknown_word(self) -> None:
        """An unknown word lists Cohere's statuses and the common words."""
        with pytest.raises(ValidationError) as info:
            NotifySettings(on=["FINISHED"])
        message = info.value.errors()[0]["msg"]
        assert message == (
            "Value error, unknown status; valid: STATUS_UNSPECIFIED, STATUS_QUEUED, "
            "STATUS_FINETUNING, STATUS_DEPLOYING_API, STATUS_READY, STATUS_FAILED, STATUS_DELETED, "
            "STATUS_TEMPORARILY_OFFLINE, STATUS_PAUSED (Cohere), "
            "another provider's own status (README: Providers), "
            "or any of queued, running, ready, failed, cancelled"
        )

    def test_templates_by_status_then_phase(self) -> None:
        """A status's own template wins, then its phase's, then the general one."""
        notify = NotifySettings(
            title="general",
            templates={"failed": {"title": "phase"}, "STATUS_READY": {"title": "status"}},
        )
        assert set(notify.templates) == {"failed", READY}
        assert notify.templates_for(FAILED, Phase.FAILED) == ("phase", None)
        assert notify.templates_for(READY, Phase.READY) == ("status", None)
        assert notify.templates_for(DELETED, Phase.OTHER) == ("general", None)
        assert notify.templates_for(FAILED) == ("general", None)


class TestApiKeys:
    def test_one_key_per_provider_in_use(self, tmp_path: Path) -> None:
        """resolve_api_keys finds the key of every provider a model uses."""
        settings = load_settings(write(tmp_path, "models: [a]\n"), environ={})
        keys = resolve_api_keys(settings, KEY_ENV)
        assert keys == {"cohere": ApiKey(SecretStr("sk-from-env"), "$CO_API_KEY")}

    def test_missing_key_is_one_line_per_provider(self, tmp_path: Path) -> None:
        """Without a key, the same one line as resolve_api_key, naming the file."""
        path = write(tmp_path, "models: [a]\n")
        with pytest.raises(ConfigError) as info:
            resolve_api_keys(load_settings(path, environ={}), environ={})
        assert info.value.source == str(path)
        assert info.value.problems == [
            "cohere: no API key: set CO_API_KEY (or COHERE_API_KEY), cohere.api_key_file, "
            "or a systemd credential named cohere-api-key"
        ]

    def test_summary_and_secrets_take_the_mapping(self, tmp_path: Path) -> None:
        """summary_lines and register_secrets accept the keys by provider."""
        settings = load_settings(write(tmp_path, "models: [a]\n"), environ={})
        keys = {"cohere": ApiKey(SecretStr("sk-hunter2-mapped"), "$CO_API_KEY")}
        assert "cohere: https://api.cohere.com, key from $CO_API_KEY" in summary_lines(
            settings, keys
        )
        register_secrets(settings, keys)
        assert MARKER not in SECRETS.scrub("key sk-hunter2-mapped")


class TestModelSpecs:
    """``Settings.models`` holds slotted ``ModelSpec``s, not pydantic instances (issue 15)."""

    CONFIG = (
        "models:\n"
        "  - a\n"
        "  - {id: b, name: ' B ', provider: ' Cohere ', urls: ['json://127.0.0.1:9/x']}\n"
        "  - {id: c, urls: ['json://127.0.0.1:9/x'], webhooks: ['https://h.example.com/in']}\n"
        "  - {id: d, routes: [{on: [ready], urls: ['json://127.0.0.1:9/r']}]}\n"
    )

    def test_validated_as_written_kept_slotted(self, tmp_path: Path) -> None:
        settings = load_settings(write(tmp_path, self.CONFIG), environ={})
        a, b, c, d = settings.models

        assert isinstance(settings.models, tuple)
        assert all(type(m) is ModelSpec for m in settings.models)
        assert not hasattr(a, "__dict__")
        assert (a.id, a.name, a.urls, a.webhooks, a.routes) == ("a", None, (), (), ())
        assert (b.label, b.key) == ("B", ModelKey("cohere", "b"))
        assert [u.get_secret_value() for u in c.webhooks] == ["https://h.example.com/in"]
        assert d.routes[0].on == ["ready"]

    def test_shared_strings_and_target_lists(self, tmp_path: Path) -> None:
        """Equal ``urls`` are one tuple; a provider is the registry's own string."""
        settings = load_settings(write(tmp_path, self.CONFIG), environ={})
        _, b, c, _ = settings.models

        assert b.urls is c.urls
        assert b.provider is next(n for n in PROVIDER_NAMES if n == "cohere")

    def test_given_back_and_dumped(self, tmp_path: Path) -> None:
        """``Settings(models=settings.models)`` validates again; a dump lists the entries."""
        settings = load_settings(write(tmp_path, self.CONFIG), environ={})

        again = Settings(models=settings.models)

        assert again.models == settings.models
        dumped = settings.model_dump()["models"]
        assert [m["id"] for m in dumped] == ["a", "b", "c", "d"]
        assert dumped[1]["name"] == "B"

    def test_errors_name_the_entry(self, tmp_path: Path) -> None:
        """Validation is ``ModelSettings``'s: the same rules, the same field paths."""
        path = write(tmp_path, "models:\n  - a\n  - {id: 'b c', colour: red}\n")
        with pytest.raises(ConfigError) as info:
            load_settings(path, environ={})
        problems = " ".join(info.value.problems)
        assert "models.1.id" in problems
        assert "models.1.colour" in problems

    def test_models_from_the_environment(self, tmp_path: Path) -> None:
        path = write(tmp_path, "models: [a]\n")
        environ = {"WATCHER_MODELS": '[{"id": "e", "provider": "mistral"}]'}
        settings = load_settings(path, environ=environ)
        assert [m.key for m in settings.models] == [ModelKey("mistral", "e")]
        assert ModelSettings(id="x").key == ModelSpec("x").key
