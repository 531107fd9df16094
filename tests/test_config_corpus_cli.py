"""Every broken configuration of ``tests/configs/bad/`` through the real command line.

Each file's first line is ``# expect: <text>``: the text its error must contain (it
names the field). ``check-config``, ``run`` and ``once`` must each exit 78, name the
file and the field, print no traceback, and echo no secret planted in the file (every
planted secret contains ``hunter2``). Most files run in-process through
``watcher.cli.main``; a handful run as real subprocesses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SIM_KEY, run_cli
from watcher.cli import main
from watcher.errors import EX_CONFIG
from watcher.logs import reset_logging

BAD = Path(__file__).resolve().parent / "configs" / "bad"
FILES = sorted(BAD.glob("*.yaml"))
MARKER = "hunter2"
COMMANDS = ("check-config", "run", "once")
# A few files, one per kind of problem, also run as real processes.
AS_SUBPROCESS = (
    "invalid-yaml.yaml",
    "unknown-key-notify.yaml",
    "notify-url-unknown-scheme.yaml",
    "api-key-missing.yaml",
    "api-key-with-other-error.yaml",
)


def expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first.removeprefix("# expect: ")


def needs_no_key(path: Path) -> bool:
    """The files about a missing key must run without one in the environment."""
    return "no API key" in expectation(path)


def check_output(path: Path, code: int, output: str) -> None:
    assert code == EX_CONFIG, output
    assert str(path) in output
    assert expectation(path) in output, output
    assert "Traceback" not in output
    assert MARKER not in output


def test_the_corpus_is_big_enough() -> None:
    """At least 20 broken files, each with its expectation line."""
    assert len(FILES) >= 20
    for path in FILES:
        expectation(path)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("WATCHER_", "CO_API", "COHERE_", "CREDENTIALS_DIRECTORY")):
            monkeypatch.delenv(name)
    levels = {name: logging.getLogger(name).level for name in ("", "apprise", "aiohttp.access")}
    yield
    reset_logging()  # main() configured logging onto capsys's stream
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
@pytest.mark.parametrize("command", COMMANDS)
def test_in_process(
    path: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`finetune-watcher COMMAND -c FILE` exits 78 naming file and field, without traceback or
    secret."""
    if not needs_no_key(path):
        monkeypatch.setenv("CO_API_KEY", SIM_KEY)
    if command != "check-config":
        # A file that became valid would start a daemon in this process: refuse first.
        assert main(["check-config", "-c", str(path)]) == EX_CONFIG
        capsys.readouterr()
    code = main([command, "-c", str(path)])
    captured = capsys.readouterr()
    check_output(path, code, captured.out + captured.err)


@pytest.mark.parametrize("name", AS_SUBPROCESS)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_as_subprocess(name: str, command: str) -> None:
    """The same through a real process: exit status, stderr, nothing on stdout for `run`."""
    path = BAD / name
    env = {"CO_API_KEY": ""} if needs_no_key(path) else None
    result = run_cli(command, "-c", str(path), env=env, timeout=30)
    check_output(path, result.returncode, result.stdout + result.stderr)
    if command == "run":
        assert result.stdout == ""
