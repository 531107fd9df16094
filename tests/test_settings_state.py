"""``state``: a SQLite path or a PostgreSQL URL (exactly one), the password file, the lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.errors import ConfigError
from watcher.redact import SECRETS
from watcher.settings import (
    RESTART_ONLY_KEYS,
    load_settings,
    register_secrets,
    summary_lines,
)
from watcher.store import _scheme

URL = "postgresql://watcher:s3cret-pw@db.internal:5432/watcher?sslmode=require"


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    SECRETS.clear()
    yield
    SECRETS.clear()


def load(tmp_path: Path, state: str, environ: dict[str, str] | None = None) -> object:
    path = tmp_path / "watcher.yaml"
    path.write_text(f"models: [m-1]\nstate:\n{state}\n")
    return load_settings(path, environ or {})


def problems(tmp_path: Path, state: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, state, environ)
    return "\n".join(caught.value.problems)


class TestStateSettings:
    def test_a_url_chooses_postgresql_with_its_defaults(self, tmp_path: Path) -> None:
        settings = load(tmp_path, f"  url: {URL}")
        state = settings.state  # type: ignore[attr-defined]
        assert state.url == URL
        assert state.lease_ttl == 15.0
        assert state.backend == "postgresql"
        assert _scheme(state) == "postgresql"

    def test_without_a_url_it_is_sqlite(self, tmp_path: Path) -> None:
        state = load(tmp_path, "  path: x.db").state  # type: ignore[attr-defined]
        assert state.backend == "sqlite"
        assert _scheme(state) == "sqlite"

    @pytest.mark.parametrize(("text", "seconds"), [("2", 2.0), ("0.5", 0.5), ("1m", 60.0)])
    def test_lease_ttl_takes_durations_and_fractions(
        self, tmp_path: Path, text: str, seconds: float
    ) -> None:
        state = load(tmp_path, f"  url: {URL}\n  lease_ttl: {text}").state  # type: ignore[attr-defined]
        assert state.lease_ttl == seconds

    @pytest.mark.parametrize("text", ["0.1", "0", "-1", "2h"])
    def test_lease_ttl_out_of_range(self, tmp_path: Path, text: str) -> None:
        assert "state.lease_ttl" in problems(tmp_path, f"  url: {URL}\n  lease_ttl: {text}")

    @pytest.mark.parametrize(
        "url", ["mysql://db/x", "sqlite:///x.db", "db.internal/watcher", "postgresql:/x"]
    )
    def test_only_postgresql_urls(self, tmp_path: Path, url: str) -> None:
        found = problems(tmp_path, f"  url: '{url}'")
        assert "postgresql:// or postgres://" in found

    def test_url_and_path_together_are_refused(self, tmp_path: Path) -> None:
        found = problems(tmp_path, f"  url: {URL}\n  path: x.db")
        assert "not both" in found
        assert "s3cret-pw" not in found

    def test_an_empty_path_switches_the_default_off(self, tmp_path: Path) -> None:
        state = load(tmp_path, f"  url: {URL}\n  path: ''").state  # type: ignore[attr-defined]
        assert state.url == URL
        state = load(tmp_path, f"  url: {URL}\n  path: null").state  # type: ignore[attr-defined]
        assert state.url == URL

    def test_an_image_default_path_conflicts_unless_blanked(self, tmp_path: Path) -> None:
        environ = {"WATCHER_STATE__PATH": "/var/lib/finetune-watcher/watcher.db"}
        assert "not both" in problems(tmp_path, f"  url: {URL}", environ)
        blank = {"WATCHER_STATE__PATH": ""}
        assert load(tmp_path, f"  url: {URL}", blank).state.url == URL  # type: ignore[attr-defined]

    def test_a_password_file_needs_a_url(self, tmp_path: Path) -> None:
        assert "needs state.url" in problems(tmp_path, "  password_file: /run/secrets/pw")

    def test_restart_only(self) -> None:
        assert {"state.url", "state.password_file", "state.lease_ttl"} <= set(RESTART_ONLY_KEYS)

    def test_secrets_are_registered_and_the_summary_is_redacted(self, tmp_path: Path) -> None:
        password_file = tmp_path / "db-password"
        password_file.write_text("file-secret-9\n")
        settings = load(tmp_path, f"  url: {URL}\n  password_file: {password_file}")
        register_secrets(settings, None, {})  # type: ignore[arg-type]
        assert SECRETS.scrub("x s3cret-pw file-secret-9 watcher") == "x *** *** watcher"
        lines = "\n".join(summary_lines(settings, None))  # type: ignore[arg-type]
        assert "state: PostgreSQL postgresql://watcher@db.internal:5432/watcher" in lines
        assert "s3cret-pw" not in lines
        assert "lease_ttl 15s" in lines

    def test_the_summary_says_sqlite(self, tmp_path: Path) -> None:
        settings = load(tmp_path, "  path: x.db")
        lines = "\n".join(summary_lines(settings, None))  # type: ignore[arg-type]
        assert "state: SQLite" in lines

    @pytest.mark.parametrize("model_id", ["a\\0b", "a\\x00b"])
    def test_a_model_id_with_nul_is_refused(self, tmp_path: Path, model_id: str) -> None:
        path = tmp_path / "watcher.yaml"
        path.write_text(f'models: ["{model_id}"]\n')
        with pytest.raises(ConfigError) as caught:
            load_settings(path, {})
        assert "control characters" in "\n".join(caught.value.problems)
