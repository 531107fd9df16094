"""Tests for watcher.logs: line formats, stdlib routing and secret redaction.

Logs are written to real in-memory streams; a ``StringIO`` that says it is a TTY
stands in for a terminal.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from watcher.logs import (
    DEFAULT_LOGGER,
    configure_logging,
    get_logger,
    redact_secrets,
    reset_logging,
    resolve_log_options,
    writes_to_journal,
)
from watcher.redact import SECRETS

API_KEY = "sk-hunter2-api-key-0001"
APPRISE_URL = (
    "json://alice:hunter2-password@127.0.0.1:8011/hunter2-path-token"
    "?+X-Token=hunter2-header&token=hunter2-query"
)
URL_PARTS = ("hunter2-password", "hunter2-path-token", "hunter2-header", "hunter2-query")
MARKER = "hunter2"  # in every secret above


class FakeTerminal(io.StringIO):
    """A stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    levels = {name: logging.getLogger(name).level for name in ("apprise", "aiohttp.access")}
    yield
    SECRETS.clear()
    reset_logging()
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.fixture
def secrets() -> None:
    SECRETS.add(API_KEY)
    SECRETS.add_url(APPRISE_URL)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestFormats:
    def test_json_one_event_per_line(self) -> None:
        """Off a TTY each event is one parseable JSON object with level, time and logger."""
        stream = io.StringIO()
        configure_logging(stream=stream)
        log = get_logger("watcher.test")
        log.info("model.polled", model_id="m1", events=3)
        log.warning("model.slow", seconds=1.5)
        lines = json_lines(stream)
        assert [line["message"] for line in lines] == ["model.polled", "model.slow"]
        first = lines[0]
        assert first["level"] == "info"
        assert first["logger"] == "watcher.test"
        assert first["model_id"] == "m1"
        assert first["events"] == 3
        assert first["timestamp"].endswith("Z")
        assert "event" not in first  # renamed: "event" means a fine-tuning event here

    def test_console_on_a_tty(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a TTY the default is the coloured console format."""
        monkeypatch.delenv("NO_COLOR", raising=False)
        stream = FakeTerminal()
        configure_logging(stream=stream)
        get_logger().info("hello", model_id="m1")
        text = stream.getvalue()
        assert "hello" in text
        assert "model_id" in text
        assert "\x1b[" in text  # ANSI colour
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)

    def test_no_color(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """$NO_COLOR turns the colours off, even on a TTY."""
        monkeypatch.setenv("NO_COLOR", "1")
        stream = FakeTerminal()
        configure_logging(stream=stream)
        get_logger().info("hello")
        assert "hello" in stream.getvalue()
        assert "\x1b[" not in stream.getvalue()

    def test_console_forced_off_a_tty_has_no_colours(self) -> None:
        """--log-format console into a pipe or file is plain text."""
        stream = io.StringIO()
        configure_logging(fmt="console", stream=stream)
        get_logger().info("hello")
        assert "\x1b[" not in stream.getvalue()

    def test_json_forced_on_a_tty(self) -> None:
        """--log-format json wins over the TTY guess."""
        stream = FakeTerminal()
        configure_logging(fmt="json", stream=stream)
        get_logger().info("hello")
        assert json_lines(stream)[0]["message"] == "hello"

    def test_level_filters(self) -> None:
        """Events below the level are dropped; the level name is case-insensitive."""
        stream = io.StringIO()
        configure_logging(fmt="json", level="WARNING", stream=stream)
        log = get_logger()
        log.info("quiet")
        log.warning("loud")
        assert [line["message"] for line in json_lines(stream)] == ["loud"]

    def test_unknown_level(self) -> None:
        """An unknown level name is a ValueError (the CLI turns it into a usage error)."""
        with pytest.raises(ValueError, match="unknown log level"):
            configure_logging(level="chatty", stream=io.StringIO())

    def test_context_vars_are_merged(self) -> None:
        """Context bound with structlog.contextvars appears on every line."""
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        with structlog.contextvars.bound_contextvars(model_id="m1", name="support"):
            get_logger().info("model.ready")
        line = json_lines(stream)[0]
        assert (line["model_id"], line["name"]) == ("m1", "support")

    def test_loggers_made_before_configuration_follow_it(self) -> None:
        """A module-level logger created before configure_logging uses the configuration."""
        early = get_logger("watcher.early")
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        early.info("hello")
        assert json_lines(stream)[0]["logger"] == "watcher.early"

    def test_reconfiguring_replaces(self) -> None:
        """A second configure_logging replaces the first (no duplicate stdlib lines)."""
        first, second = io.StringIO(), io.StringIO()
        configure_logging(fmt="json", stream=first)
        configure_logging(fmt="json", stream=second)
        logging.getLogger("aiohttp.client").warning("once")
        get_logger().info("twice")
        assert first.getvalue() == ""
        assert [line["message"] for line in json_lines(second)] == ["once", "twice"]

    def test_capture_logs_still_works(self) -> None:
        """structlog.testing.capture_logs sees events after configure_logging (no cache)."""
        configure_logging(fmt="json", stream=io.StringIO())
        log = get_logger("watcher.test")
        with structlog.testing.capture_logs() as captured:
            log.info("captured", model_id="m1")
        assert captured == [{"event": "captured", "model_id": "m1", "log_level": "info"}]


class TestStdlibRouting:
    def test_stdlib_lines_share_the_json_format(self) -> None:
        """aiohttp's and other stdlib loggers write the same JSON lines, to the same stream."""
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        logging.getLogger("aiohttp.client").warning("connection reset by %s", "peer")
        line = json_lines(stream)[0]
        assert line["message"] == "connection reset by peer"
        assert line["level"] == "warning"
        assert line["logger"] == "aiohttp.client"
        assert "timestamp" in line

    def test_apprise_is_quiet_unless_debugging(self) -> None:
        """apprise's INFO chatter is hidden at info level and shown at debug."""
        stream = io.StringIO()
        configure_logging(fmt="json", level="info", stream=stream)
        logging.getLogger("apprise").info("sent")
        logging.getLogger("apprise").warning("target failed")
        assert [line["message"] for line in json_lines(stream)] == ["target failed"]

        stream = io.StringIO()
        configure_logging(fmt="json", level="debug", stream=stream)
        logging.getLogger("apprise").debug("details")
        assert [line["message"] for line in json_lines(stream)] == ["details"]

    def test_stdlib_console(self) -> None:
        """On the console format, stdlib lines look like ours."""
        stream = FakeTerminal()
        configure_logging(fmt="console", stream=stream)
        logging.getLogger("aiohttp.client").warning("slow")
        assert "slow" in stream.getvalue()
        assert "aiohttp.client" in stream.getvalue()


@pytest.mark.usefixtures("secrets")
class TestRedaction:
    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_values_and_nested_values(self, fmt: str) -> None:
        """Registered secrets are masked in values, nested dicts, lists and the message."""
        stream = io.StringIO()
        configure_logging(fmt=fmt, stream=stream)  # type: ignore[arg-type]
        get_logger().info(
            f"using {API_KEY}",
            key=API_KEY,
            url=APPRISE_URL,
            nested={"targets": [APPRISE_URL, {"deep": f"x {URL_PARTS[2]} y"}]},
            parts=tuple(URL_PARTS),
        )
        text = stream.getvalue()
        assert MARKER not in text
        assert "***" in text

    def test_each_part_of_an_apprise_url(self) -> None:
        """Password, path token, +Header value and query token are masked separately."""
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        log = get_logger()
        for part in URL_PARTS:
            log.info("part", value=f"before {part} after")
        lines = json_lines(stream)
        assert [line["value"] for line in lines] == ["before *** after"] * len(URL_PARTS)

    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_exception_tracebacks(self, fmt: str) -> None:
        """A secret in an exception message never reaches the rendered traceback."""
        stream = io.StringIO()
        configure_logging(fmt=fmt, stream=stream)  # type: ignore[arg-type]
        log = get_logger()
        secret_local = API_KEY  # locals must not be rendered either
        try:
            raise RuntimeError(f"auth failed for {secret_local} at {APPRISE_URL}")
        except RuntimeError:
            log.exception("poll.failed")
        text = stream.getvalue()
        assert "RuntimeError" in text
        assert MARKER not in text

    def test_json_traceback_stays_structured(self) -> None:
        """JSON lines carry the traceback as data, scrubbed, without frame locals."""
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        try:
            raise ValueError(API_KEY)
        except ValueError:
            get_logger().exception("boom")
        (exception,) = json_lines(stream)[0]["exception"]
        assert exception["exc_type"] == "ValueError"
        assert exception["exc_value"] == "***"
        assert all("locals" not in frame for frame in exception["frames"])

    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_stdlib_lines_are_redacted(self, fmt: str) -> None:
        """A secret logged by a library through stdlib logging is masked too, tracebacks too."""
        stream = io.StringIO()
        configure_logging(fmt=fmt, stream=stream)  # type: ignore[arg-type]
        logger = logging.getLogger("apprise")
        logger.warning("Could not load URL %s", APPRISE_URL)
        try:
            raise ConnectionError(f"refused {URL_PARTS[0]}")
        except ConnectionError:
            logging.getLogger("aiohttp.client").exception("request failed")
        text = stream.getvalue()
        assert "Could not load URL" in text
        assert "ConnectionError" in text
        assert MARKER not in text

    @pytest.mark.parametrize(
        "key",
        ["api_key", "apikey", "X-Api-Key", "token", "auth_token", "password", "client_secret",
         "Authorization", "SECRET"],
    )  # fmt: skip
    def test_secret_named_keys_are_masked_whole(self, key: str) -> None:
        """Keys named like credentials are masked even if the value was never registered."""
        event = redact_secrets(None, "info", {"event": "e", key: "unregistered-value"})
        assert event[key] == "***"

    def test_secret_named_keys_inside_mappings(self) -> None:
        """Headers and other nested mappings are masked by key as well."""
        event = redact_secrets(
            None, "info", {"event": "e", "headers": {"Authorization": "Bearer x", "Accept": "y"}}
        )
        assert event["headers"] == {"Authorization": "***", "Accept": "y"}

    @pytest.mark.parametrize("key", ["tokens_used", "model_id", "status", "secretary_count"])
    def test_ordinary_keys_are_kept(self, key: str) -> None:
        """Keys that merely contain a word like 'token' are not masked."""
        assert redact_secrets(None, "info", {key: "plain"})[key] == "plain"

    def test_none_and_numbers_are_kept(self) -> None:
        """A missing credential stays None; numbers and booleans keep their type."""
        event = redact_secrets(None, "info", {"api_key": None, "n": 3, "ok": True, "x": 0.5})
        assert event == {"api_key": None, "n": 3, "ok": True, "x": 0.5}

    def test_other_objects_are_rendered_then_scrubbed(self) -> None:
        """Objects (errors, paths, URLs) are turned into text so secrets in them are masked."""
        event = redact_secrets(None, "info", {"error": ConnectionError(f"to {APPRISE_URL}")})
        assert event["error"] == "to ***"


class TestOperatorFields:
    def test_every_json_line_has_the_four_fields(self) -> None:
        """timestamp, level, logger and message on every line: named, unnamed and stdlib."""
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        get_logger("watcher.daemon").info("named")
        get_logger().warning("unnamed")
        structlog.get_logger().error("plain structlog")
        logging.getLogger("aiohttp.client").warning("stdlib")
        lines = json_lines(stream)
        assert [line["message"] for line in lines] == [
            "named", "unnamed", "plain structlog", "stdlib"
        ]  # fmt: skip
        for line in lines:
            assert {"timestamp", "level", "logger", "message"} <= set(line)
            assert "event" not in line
            assert line["timestamp"].endswith("Z")
        assert [line["logger"] for line in lines] == [
            "watcher.daemon", DEFAULT_LOGGER, DEFAULT_LOGGER, "aiohttp.client"
        ]  # fmt: skip
        assert [line["level"] for line in lines] == ["info", "warning", "error", "warning"]

    def test_console_keeps_the_event_text(self) -> None:
        stream = io.StringIO()
        configure_logging(fmt="console", stream=stream)
        get_logger().info("hello there")
        assert "hello there" in stream.getvalue()


class TestJournal:
    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_syslog_prefix_per_level(self, fmt: str) -> None:
        """Writing to the journal, each line starts with <N>: what journalctl -p filters on."""
        stream = io.StringIO()
        configure_logging(fmt=fmt, level="debug", stream=stream, journal=True)  # type: ignore[arg-type]
        log = get_logger("watcher.test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        logging.getLogger("aiohttp.client").warning("stdlib w")
        prefixes = [line[:3] for line in stream.getvalue().splitlines()]
        assert prefixes == ["<7>", "<6>", "<4>", "<3>", "<2>", "<4>"]
        if fmt == "json":
            bodies = [json.loads(line[3:]) for line in stream.getvalue().splitlines()]
            assert bodies[2]["message"] == "w"

    def test_traceback_lines_keep_the_priority(self) -> None:
        stream = io.StringIO()
        configure_logging(fmt="console", stream=stream, journal=True)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            get_logger().exception("failed")
        lines = stream.getvalue().splitlines()
        assert len(lines) > 2
        assert all(line.startswith("<3>") for line in lines)

    def test_no_prefix_off_the_journal(self) -> None:
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        get_logger().warning("w")
        assert stream.getvalue().startswith("{")

    def test_detects_the_journal_stream_by_device_and_inode(self, tmp_path: Path) -> None:
        """$JOURNAL_STREAM must name this very stream; an inherited value for another is ignored."""
        with open(tmp_path / "out", "w") as stream, open(tmp_path / "other", "w") as other:
            st = os.fstat(stream.fileno())
            env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
            assert writes_to_journal(stream, env)
            assert not writes_to_journal(other, env)
            assert not writes_to_journal(stream, {})
            assert not writes_to_journal(stream, {"JOURNAL_STREAM": "garbage"})
            assert not writes_to_journal(io.StringIO(), env)

    def test_configure_detects_the_journal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with open(tmp_path / "out", "w") as stream:
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            configure_logging(fmt="json", stream=stream)
            get_logger().warning("w")
        assert (tmp_path / "out").read_text().startswith("<4>{")


class TestResolveLogOptions:
    def test_defaults(self) -> None:
        assert resolve_log_options(environ={}) == (None, "info")
        assert resolve_log_options(environ={}, default_level="warning") == (None, "warning")

    def test_environment(self) -> None:
        env = {"WATCHER_LOG_FORMAT": "JSON", "WATCHER_LOG_LEVEL": "Debug"}
        assert resolve_log_options(environ=env) == ("json", "debug")

    def test_blank_environment_counts_as_unset(self) -> None:
        env = {"WATCHER_LOG_FORMAT": " ", "WATCHER_LOG_LEVEL": ""}
        assert resolve_log_options(environ=env) == (None, "info")

    def test_arguments_win_over_the_environment(self) -> None:
        env = {"WATCHER_LOG_FORMAT": "json", "WATCHER_LOG_LEVEL": "debug"}
        assert resolve_log_options("console", "error", environ=env) == ("console", "error")

    @pytest.mark.parametrize(
        ("args", "env", "named"),
        [
            ((None, None), {"WATCHER_LOG_LEVEL": "chatty"}, "$WATCHER_LOG_LEVEL"),
            ((None, None), {"WATCHER_LOG_FORMAT": "xml"}, "$WATCHER_LOG_FORMAT"),
            (("xml", None), {}, "--log-format"),
            ((None, "chatty"), {}, "--log-level"),
        ],
    )
    def test_unknown_values_name_their_source(
        self, args: tuple[str | None, str | None], env: dict[str, str], named: str
    ) -> None:
        with pytest.raises(ValueError, match=re.escape(named)):
            resolve_log_options(*args, environ=env)

    def test_reads_os_environ_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WATCHER_LOG_LEVEL", "error")
        monkeypatch.delenv("WATCHER_LOG_FORMAT", raising=False)
        assert resolve_log_options() == (None, "error")
