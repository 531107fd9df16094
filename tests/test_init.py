"""``init``, ``completion``, ``manpage``, the files the wheel ships, and where the state
is when the configuration does not say (issue 14: defaults that do not depend on the
working directory)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import cli_env, write_config
from watcher import paths
from watcher.cli import build_parser
from watcher.commands.completion import completion_script
from watcher.commands.init import EXAMPLE_CONFIG, UNIT_FILE, init_config_path, shipped_text
from watcher.commands.manpage import render_manpage
from watcher.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(sys.executable).parent


def watcher(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``finetune-watcher ARGS`` as a user runs it (this venv's scripts first on PATH)."""
    extra = {"PYTHONPATH": str(ROOT), "PATH": f"{SCRIPTS}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        env=cli_env({**extra, **(env or {})}),
        cwd=cwd,
        timeout=60,
        check=False,
    )


class TestShippedFiles:
    def test_one_copy_of_each(self) -> None:
        """The package's copies are the checkout's config/ and systemd/ files (those are
        links to them): nothing to keep in step, and docs and CI keep their paths."""
        assert shipped_text(EXAMPLE_CONFIG) == (ROOT / "config" / EXAMPLE_CONFIG).read_text()
        assert shipped_text(UNIT_FILE) == (ROOT / "systemd" / UNIT_FILE).read_text()
        for link in (ROOT / "config" / EXAMPLE_CONFIG, ROOT / "systemd" / UNIT_FILE):
            assert link.resolve().parent == ROOT / "watcher" / "data"

    def test_the_wheel_takes_them(self) -> None:
        """package-data names watcher/data, so a wheel (and pipx) carries both files."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert "data/*" in project["tool"]["setuptools"]["package-data"]["watcher"]

    def test_the_example_leaves_the_state_to_the_defaults(self) -> None:
        """The example sets no state.path: installed as /etc/finetune-watcher/watcher.yaml
        its state is the unit's StateDirectory, not a folder under /etc."""
        settings = load_settings(ROOT / "config" / EXAMPLE_CONFIG, environ={})
        assert settings.state.path == ROOT / "config" / "watcher.db"


class TestInit:
    def test_init_then_check_config(self, tmp_path: Path) -> None:
        """`init --config tmp/x.yaml` writes the commented example; check-config (with a
        key) accepts it; a second init refuses to overwrite; --force does."""
        target = tmp_path / "tmp" / "x.yaml"
        result = watcher("init", "--config", str(target), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert target.read_text() == shipped_text(EXAMPLE_CONFIG)
        assert "check-config" in result.stdout
        checked = watcher("check-config", "-c", str(target), cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert f"{target}: OK" in checked.stdout
        target.write_text("# mine\n")
        again = watcher("init", "--config", str(target), cwd=tmp_path)
        assert again.returncode == 1
        assert "--force" in again.stderr
        assert target.read_text() == "# mine\n"
        forced = watcher("init", "--config", str(target), "--force", cwd=tmp_path)
        assert forced.returncode == 0, forced.stderr
        assert target.read_text() == shipped_text(EXAMPLE_CONFIG)

    def test_systemd_files(self, tmp_path: Path) -> None:
        """`init --systemd --dest DIR` writes the unit (running this install's script) and
        a private environment file, and prints the remaining commands; systemd-analyze
        verify accepts the unit where it is available."""
        dest = tmp_path / "out"
        result = watcher(
            "init", "--systemd", "--dest", str(dest), "-c", str(dest / "watcher.yaml"),
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        unit = (dest / UNIT_FILE).read_text()
        script = shutil.which("finetune-watcher", path=str(SCRIPTS))
        assert script is not None
        assert f"ExecStart={os.path.abspath(script)} run" in unit
        env_file = dest / "watcher.env"
        assert env_file.stat().st_mode & 0o777 == 0o600
        assert "CO_API_KEY" in env_file.read_text()
        assert "systemctl enable --now finetune-watcher.service" in result.stdout
        verify = shutil.which("systemd-analyze")
        if verify is None:
            pytest.skip("systemd-analyze is not installed")
        checked = subprocess.run(
            [verify, "verify", str(dest / UNIT_FILE)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stderr

    def test_dest_needs_systemd(self, tmp_path: Path) -> None:
        result = watcher("init", "--dest", str(tmp_path), "-c", str(tmp_path / "w.yaml"),
                         cwd=tmp_path)  # fmt: skip
        assert result.returncode == 1
        assert not (tmp_path / "w.yaml").exists()

    def test_default_location(self, tmp_path: Path) -> None:
        """$WATCHER_CONFIG, else the system file as root, else the per-user file: the
        places watcher.paths then finds first."""
        assert init_config_path({"WATCHER_CONFIG": "/x/w.yaml"}) == Path("/x/w.yaml")
        assert init_config_path({"HOME": "/home/u"}, is_root=True) == paths.SYSTEM_CONFIG
        user = init_config_path({"HOME": "/home/u"}, is_root=False)
        assert user == Path("/home/u/.config/finetune-watcher/watcher.yaml")
        assert paths.default_config_path({"HOME": "/home/u"}, is_file=lambda p: p == user) == user


class TestStateLocation:
    def test_same_state_from_any_directory(self, tmp_path: Path) -> None:
        """The same configuration named from two directories: one state file (what makes
        `once` from two directories deliver once). A relative state.path in the file is
        relative to the file's folder."""
        config = write_config(
            tmp_path / "conf" / "w.yaml", {"models": ["m"], "state": {"path": "s/w.db"}}
        )
        (tmp_path / "elsewhere").mkdir()
        seen = set()
        for cwd, name in ((tmp_path, "conf/w.yaml"), (tmp_path / "elsewhere", str(config))):
            result = watcher("check-config", "-c", name, cwd=cwd)
            assert result.returncode == 0, result.stderr
            (line,) = [ln for ln in result.stdout.splitlines() if "state:" in ln]
            seen.add(line.rsplit("(", 1)[1])
        assert seen == {f"{tmp_path / 'conf' / 's' / 'w.db'})"}

    def test_defaults(self, tmp_path: Path) -> None:
        """No state.path: $STATE_DIRECTORY under systemd, else $XDG_STATE_HOME, else next
        to the file; a relative $WATCHER_STATE__PATH stays relative to the shell's cwd."""
        config = write_config(tmp_path / "w.yaml", {"models": ["m"]})
        state = lambda env: load_settings(config, environ=env).state.path  # noqa: E731
        assert state({"STATE_DIRECTORY": "/var/lib/fw"}) == Path("/var/lib/fw/watcher.db")
        assert state({"XDG_STATE_HOME": "/s"}) == Path("/s/finetune-watcher/watcher.db")
        assert state({}) == tmp_path / "watcher.db"
        assert state({"WATCHER_STATE__PATH": "rel.db"}) == Path("rel.db")

    def test_system_config_named_relatively(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`-c watcher.yaml` in /etc/finetune-watcher is the system configuration: its
        state is the unit's, not the caller's home."""
        monkeypatch.chdir("/")
        relative = Path("etc/finetune-watcher/watcher.yaml")
        assert paths.default_state_path({"HOME": "/root"}, relative) == paths.SYSTEM_STATE


class TestCompletionAndManpage:
    @pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
    def test_completion_knows_every_command(self, shell: str) -> None:
        """The script is built from the parser: every listed command is in it."""
        script = completion_script(build_parser(), shell)
        for command in ("run", "status", "check-config", "init", "completion"):
            assert command in script

    def test_completion_command(self, tmp_path: Path) -> None:
        """`finetune-watcher completion bash` prints a script bash can load."""
        result = watcher("completion", "bash", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        bash = shutil.which("bash")
        assert bash is not None
        loaded = subprocess.run(
            [bash, "-c", 'source /dev/stdin; complete -p finetune-watcher'],
            input=result.stdout, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr

    def test_manpage(self, tmp_path: Path) -> None:
        """The man page lists every command and option, and man(1) renders it cleanly;
        the hidden command is not in --help."""
        page = render_manpage(build_parser(), "0.1.0")
        assert page.startswith(".TH FINETUNE-WATCHER 1")
        for command in ("run", "status", "init", "completion"):
            assert f".SS {command}" in page
        assert ".SS manpage" not in page
        assert "\\-\\-systemd" in page
        assert "manpage" not in watcher("--help", cwd=tmp_path).stdout
        man = shutil.which("man")
        if man is None:
            pytest.skip("man is not installed")
        (tmp_path / "f.1").write_text(page)
        shown = subprocess.run(
            [man, "--warnings", "-l", str(tmp_path / "f.1")],
            capture_output=True, text=True, check=False, env={**os.environ, "MANWIDTH": "80"},
        )  # fmt: skip
        assert shown.returncode == 0
        assert "finetune-watcher init" in shown.stdout or "init" in shown.stdout
        assert shown.stderr == ""
