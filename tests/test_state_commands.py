"""``finetune-watcher migrate`` and ``finetune-watcher state copy``, end to end (subprocesses)
against SQLite files and a real PostgreSQL (``tests.pg``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import run_cli, write_config
from tests.stores import SCHEME, finished_model, minutes, observe
from watcher.errors import EX_STATE
from watcher.lifecycle import Event, ModelKey
from watcher.store.migrations import SCHEMA_VERSION
from watcher.store.postgres import PostgresStore
from watcher.store.sqlite import SqliteStore

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest, not here
    from tests.pg import Database

pytest_plugins = ["tests.pg"]

NOW = datetime(2024, 5, 2, 9, 0, tzinfo=UTC)


def sqlite_config(tmp_path: Path) -> Path:
    state = {"path": str(tmp_path / "state" / "watcher.db")}
    return write_config(tmp_path / "sqlite.yaml", {"models": ["m-1"], "state": state})


def pg_config(tmp_path: Path, db: Database) -> Path:
    state = {"url": db.url, "password_file": str(db.password_file), "lease_ttl": 2}
    return write_config(tmp_path / "pg.yaml", {"models": ["m-1"], "state": state})


class TestMigrate:
    def test_sqlite_created_then_already_current(self, tmp_path: Path) -> None:
        config = sqlite_config(tmp_path)
        first = run_cli("migrate", "-c", str(config))
        assert first.returncode == 0, first.stderr
        assert f"schema created at version {SCHEMA_VERSION}" in first.stdout
        assert (tmp_path / "state" / "watcher.db").exists()
        again = run_cli("migrate", "-c", str(config))
        assert again.returncode == 0, again.stderr
        assert f"already at version {SCHEMA_VERSION}" in again.stdout

    def test_postgresql_created_then_already_current(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        config = pg_config(tmp_path, pg_database)
        first = run_cli("migrate", "-c", str(config))
        assert first.returncode == 0, first.stderr
        assert f"PostgreSQL {pg_database.url}: schema created at version" in first.stdout
        again = run_cli("migrate", "-c", str(config))
        assert f"already at version {SCHEMA_VERSION}" in again.stdout
        status = run_cli("status", "-c", str(config), "--json")
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert document["leader"] is None
        assert [m["status"] for m in document["models"]] == [None]  # configured, not polled
        assert pg_database.password not in first.stdout + again.stdout + status.stdout

    def test_postgresql_down_is_exit_75(self, tmp_path: Path, pg_database: Database) -> None:
        config = write_config(
            tmp_path / "down.yaml",
            {"models": ["m-1"], "state": {"url": "postgresql://watcher@127.0.0.1:1/nothing"}},
        )
        answer = run_cli("migrate", "-c", str(config))
        assert answer.returncode == 75, answer.stderr
        assert "cannot connect to PostgreSQL" in answer.stderr


async def fill_sqlite(path: Path) -> dict[str, object]:
    """A state with something of every kind: states with seen sets and a floor, a pending,
    a done, a given-up and a half-delivered notification, a stuck warning, a failure."""
    store = await SqliteStore.open(path)
    try:
        ready = finished_model("m-ready")
        ids = await store.record_observation(
            ready.state, ready.notices, polled_at=NOW, name="Ready one"
        )
        running = observe(None, "m-run", [Event("STATUS_QUEUED", minutes(0))], scheme=SCHEME)
        ids += await store.record_observation(running.state, running.notices, polled_at=NOW)
        failed = finished_model("m-failed", "STATUS_FAILED")
        ids += await store.record_observation(failed.state, failed.notices, polled_at=NOW)
        await store.record_poll_failure(
            ModelKey("cohere", "m-broken"), polled_at=NOW, error="HTTP 500", failures=3
        )
        stuck = await store.record_stuck_warning(
            ModelKey("cohere", "m-run"), warnings=2, title="stuck", body="still queued",
            notify_type="warning", created_at=NOW,
        )  # fmt: skip
        await store.mark_delivered(ids[0], "target-a", NOW)
        await store.mark_done(ids[0], NOW)
        await store.mark_delivered(ids[-1], "target-a", NOW)  # half delivered, pending
        await store.schedule_retry(
            ids[-1], attempts=2, next_attempt_at=NOW + timedelta(minutes=5), error="down"
        )
        await store.give_up(stuck, at=NOW, reason="gave up")
        return {
            "states": await store.load_states(),
            "records": await store.model_records(),
            "counts": await store.outbox_counts(),
            "stuck": await store.stuck_warning_counts(),
            "due": await store.due_notifications(NOW + timedelta(hours=1)),
            "delivered": {i: await store.delivered_targets(i) for i in ids},
            "max_id": max([*ids, stuck]),
        }
    finally:
        await store.aclose()


class TestStateCopy:
    async def test_sqlite_into_postgresql_keeps_everything(
        self, tmp_path: Path, pg_database: Database
    ) -> None:
        source = tmp_path / "state" / "watcher.db"
        before = await fill_sqlite(source)
        args = ["state", "copy", "--from", str(source), "--to", pg_database.url,
                "--password-file", str(pg_database.password_file)]  # fmt: skip
        answer = run_cli(*args)
        assert answer.returncode == 0, answer.stderr
        assert "copied 4 models" in answer.stdout, answer.stdout
        assert pg_database.password not in answer.stdout + answer.stderr

        store = await PostgresStore.open(pg_database.url_with_password)
        try:
            assert await store.load_states() == before["states"]
            assert await store.model_records() == before["records"]
            assert await store.outbox_counts() == before["counts"]
            assert await store.stuck_warning_counts() == before["stuck"]
            assert await store.due_notifications(NOW + timedelta(hours=1)) == before["due"]
            delivered = before["delivered"]
            assert isinstance(delivered, dict)
            for outbox_id, targets in delivered.items():
                assert await store.delivered_targets(outbox_id) == targets
            new_id = await store.enqueue_message(
                kind="ops", title="t", body="b", notify_type="info", created_at=NOW
            )
            assert isinstance(before["max_id"], int)
            assert new_id > before["max_id"]
        finally:
            await store.aclose()

        # A target that holds a state is refused, nothing changed; --force replaces it.
        refused = run_cli(*args)
        assert refused.returncode == EX_STATE, refused.stderr
        assert "already holds a state" in refused.stderr
        forced = run_cli(*args, "--force")
        assert forced.returncode == 0, forced.stderr
        store = await PostgresStore.open(pg_database.url_with_password)
        try:
            assert await store.outbox_counts() == before["counts"]
        finally:
            await store.aclose()

    def test_other_directions_are_refused(self, tmp_path: Path) -> None:
        answer = run_cli("state", "copy", "--from", "postgresql://a@b/c", "--to", "x.db")
        assert answer.returncode == EX_STATE
        assert "SQLite state into PostgreSQL" in answer.stderr
