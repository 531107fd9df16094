"""Tests for watcher.paths: default configuration and state locations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from watcher.paths import (
    LEGACY_CONFIG,
    SYSTEM_CONFIG,
    SYSTEM_STATE,
    config_candidates,
    default_config_path,
    default_state_path,
)

HOME = {"HOME": "/home/ada"}
USER_CONFIG = Path("/home/ada/.config/finetune-watcher/watcher.yaml")


def existing(*paths: Path) -> Callable[[Path], bool]:
    """An ``is_file`` that says yes for ``paths`` only."""
    present = set(paths)
    return lambda path: path in present


class TestDefaultConfigPath:
    def test_watcher_config_wins_even_if_missing(self) -> None:
        env = {**HOME, "WATCHER_CONFIG": "/srv/w.yaml"}
        is_file = existing(SYSTEM_CONFIG, USER_CONFIG)
        assert default_config_path(env, is_file=is_file) == Path("/srv/w.yaml")

    def test_blank_watcher_config_counts_as_unset(self) -> None:
        env = {**HOME, "WATCHER_CONFIG": "  "}
        assert default_config_path(env, is_file=existing(SYSTEM_CONFIG)) == SYSTEM_CONFIG

    def test_system_config_before_the_user_one(self) -> None:
        is_file = existing(SYSTEM_CONFIG, USER_CONFIG)
        assert default_config_path(HOME, is_file=is_file) == SYSTEM_CONFIG

    def test_user_config_under_home(self) -> None:
        assert default_config_path(HOME, is_file=existing(USER_CONFIG)) == USER_CONFIG

    def test_user_config_under_xdg_config_home(self) -> None:
        env = {**HOME, "XDG_CONFIG_HOME": "/cfg"}
        wanted = Path("/cfg/finetune-watcher/watcher.yaml")
        assert default_config_path(env, is_file=existing(wanted, USER_CONFIG)) == wanted

    def test_relative_xdg_config_home_is_ignored(self) -> None:
        """The XDG spec: a relative path in an XDG variable is invalid and ignored."""
        env = {**HOME, "XDG_CONFIG_HOME": "rel"}
        assert default_config_path(env, is_file=existing(USER_CONFIG)) == USER_CONFIG

    def test_legacy_when_nothing_exists(self) -> None:
        assert default_config_path(HOME, is_file=existing()) == LEGACY_CONFIG
        assert Path("config/watcher.yaml") == LEGACY_CONFIG

    def test_candidates_in_order(self) -> None:
        assert config_candidates(HOME) == [SYSTEM_CONFIG, USER_CONFIG, LEGACY_CONFIG]
        assert config_candidates({}) == [SYSTEM_CONFIG, LEGACY_CONFIG]

    def test_real_file_system(self, tmp_path: Path) -> None:
        """The default existence test on real files (and /etc is not looked at by name only)."""
        env = {"XDG_CONFIG_HOME": str(tmp_path)}
        user = tmp_path / "finetune-watcher" / "watcher.yaml"
        expected_fallback = SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else LEGACY_CONFIG
        assert default_config_path(env) == expected_fallback
        user.parent.mkdir()
        user.write_text("models: [a]\n")
        assert default_config_path(env) == (SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else user)
        user.unlink()
        user.mkdir()  # a directory is not a configuration file
        assert default_config_path(env) == expected_fallback

    def test_reads_os_environ_by_default(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("WATCHER_CONFIG", str(tmp_path / "x.yaml"))
        assert default_config_path() == tmp_path / "x.yaml"


class TestDefaultStatePath:
    config = Path("/srv/finetune-watcher/watcher.yaml")

    def test_system_config_means_the_units_state_directory(self) -> None:
        """status from a root shell (no $STATE_DIRECTORY) finds the service's state."""
        env = {**HOME, "XDG_STATE_HOME": "/xs"}
        assert default_state_path(env, SYSTEM_CONFIG) == SYSTEM_STATE
        assert Path("/var/lib/finetune-watcher/watcher.db") == SYSTEM_STATE
        # ... and the service itself, with $STATE_DIRECTORY, gets the same file.
        unit_env = {"STATE_DIRECTORY": "/var/lib/finetune-watcher"}
        assert default_state_path(unit_env, SYSTEM_CONFIG) == SYSTEM_STATE

    def test_systemd_state_directory(self) -> None:
        env = {**HOME, "XDG_STATE_HOME": "/xs", "STATE_DIRECTORY": "/var/lib/finetune-watcher"}
        assert default_state_path(env, self.config) == Path("/var/lib/finetune-watcher/watcher.db")

    def test_first_of_several_state_directories(self) -> None:
        env = {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}
        assert default_state_path(env, self.config) == Path("/var/lib/a/watcher.db")

    def test_blank_state_directory_counts_as_unset(self) -> None:
        env = {**HOME, "STATE_DIRECTORY": " : "}
        assert default_state_path(env, self.config) == Path(
            "/home/ada/.local/state/finetune-watcher/watcher.db"
        )

    def test_xdg_state_home(self) -> None:
        env = {**HOME, "XDG_STATE_HOME": "/xs"}
        assert default_state_path(env, self.config) == Path("/xs/finetune-watcher/watcher.db")

    def test_relative_xdg_state_home_is_ignored(self) -> None:
        env = {**HOME, "XDG_STATE_HOME": "state"}
        assert default_state_path(env, self.config) == Path(
            "/home/ada/.local/state/finetune-watcher/watcher.db"
        )

    @pytest.mark.parametrize("env", [{}, {"HOME": "/"}, {"HOME": "relative"}, {"HOME": ""}])
    def test_next_to_the_config_without_a_home(self, env: dict[str, str]) -> None:
        assert default_state_path(env, self.config) == Path("/srv/finetune-watcher/watcher.db")
        assert default_state_path(env, Path("conf/w.yaml")) == Path("conf/watcher.db")

    def test_reads_os_environ_when_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("STATE_DIRECTORY", "/run/x")
        assert default_state_path(None, self.config) == Path("/run/x/watcher.db")
