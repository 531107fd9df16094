"""What only the PostgreSQL store has: URLs and secrets, its schema, faults, claims.

The Store protocol itself is tested on both backends in tests/test_store_contract.py;
the lease and fencing in tests/test_lease.py. A real PostgreSQL (tests/pg.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from watcher.errors import StateError
from watcher.lifecycle import ModelKey, ModelState
from watcher.store import migrations
from watcher.store.postgres import (
    SCHEMA_VERSION,
    PostgresStore,
    StateUnavailableError,
    open_from_settings,
    read_password_file,
    redact_url,
)

if TYPE_CHECKING:  # tests.pg is a plugin (pytest_plugins): imported by pytest, not here
    from tests.pg import Database

pytest_plugins = ["tests.pg"]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(pg_database: Database) -> AsyncIterator[PostgresStore]:
    async with await PostgresStore.open(
        pg_database.url, password_file=pg_database.password_file
    ) as opened:
        yield opened


def backend_pids(database: Database) -> list[int]:
    """The server processes serving the watcher's connections to ``database``."""
    with database.admin() as db:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND usename = 'watcher'"
        ).fetchall()
    return [int(str(row[0])) for row in rows]


def terminate(database: Database) -> int:
    """Kill every watcher connection to ``database`` from the server side."""
    pids = backend_pids(database)
    with database.admin() as db:
        for pid in pids:
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(pids)


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://watcher@db/watcher", "postgresql://watcher@db/watcher"),
            ("postgresql://watcher:s3cret@db:5433/w", "postgresql://watcher@db:5433/w"),
            ("postgres://:s3cret@db/w", "postgres://db/w"),
            (
                "postgresql://u:p%40ss@h1:5432,h2/db?sslmode=require&password=x&sslpassword=y",
                "postgresql://u@h1:5432,h2/db?sslmode=require",
            ),
            (
                "postgresql:///watcher?host=/run/postgresql",
                "postgresql:///watcher?host=/run/postgresql",
            ),
        ],
    )
    def test_the_location_never_shows_a_secret(self, url: str, shown: str) -> None:
        """The password (in the userinfo or as a parameter) is left out of the location."""
        assert redact_url(url) == shown

    def test_a_password_file(self, tmp_path: Path) -> None:
        """Its first line without the line ending; a missing or empty file is a StateError."""
        path = tmp_path / "pw"
        path.write_text("s3cret\n")
        assert read_password_file(path) == "s3cret"
        path.write_text("")
        with pytest.raises(StateError, match=r"password file .*/pw is empty"):
            read_password_file(path)
        with pytest.raises(StateError, match=r"cannot read the database password file .*/nope"):
            read_password_file(tmp_path / "nope")

    async def test_a_password_in_the_url_stays_out_of_location_and_errors(
        self, pg_database: Database
    ) -> None:
        """Connected with the password in the URL: location has none; nor has any error."""
        async with await PostgresStore.open(pg_database.url_with_password) as store:
            assert store.location == pg_database.url
            assert pg_database.password not in store.location

    async def test_a_wrong_password_is_one_clear_permanent_error(
        self, pg_database: Database, tmp_path: Path
    ) -> None:
        """Refused credentials: a StateError (not retried), one line, no password in it."""
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-password\n")
        with pytest.raises(StateError, match="password authentication failed") as refused:
            await PostgresStore.open(pg_database.url, password_file=wrong)
        assert not isinstance(refused.value, StateUnavailableError)
        assert refused.value.exit_code == 74
        assert "not-the-password" not in str(refused.value)
        assert "\n" not in str(refused.value)

    async def test_a_bad_url_is_a_state_error_without_its_password(self) -> None:
        """An unknown URL parameter: refused before connecting, the password scrubbed."""
        with pytest.raises(StateError, match="not a valid PostgreSQL URL") as refused:
            await PostgresStore.open("postgresql://w:s3cret@127.0.0.1/w?s3cret=1")
        assert "s3cret" not in str(refused.value)

    async def test_libpq_environment_variables_work(
        self, pg_database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """PGPASSWORD (and every PG* variable) applies, as for any libpq tool."""
        monkeypatch.setenv("PGPASSWORD", pg_database.password)
        async with await PostgresStore.open(pg_database.url) as store:
            assert await store.ping()

    async def test_open_from_settings(self, pg_database: Database) -> None:
        """The backend's opener reads state.url and state.password_file."""

        @dataclass
        class State:
            url: str | None
            password_file: Path | None

        settings = State(pg_database.url, pg_database.password_file)
        store = await open_from_settings(settings, readonly=False)
        await store.aclose()
        reader = await open_from_settings(settings, readonly=True)
        assert reader.location == pg_database.url
        await reader.aclose()
        with pytest.raises(StateError, match=r"state\.url is not set"):
            await open_from_settings(State(None, None), readonly=False)


class TestFixture:
    def test_without_postgresql_the_tests_fail_and_say_how_to_install_it(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No initdb anywhere: the fixture fails (never skips) and names .ci/postgres-install."""
        pg = request.config.pluginmanager.get_plugin("tests.pg")
        monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
        monkeypatch.setattr(pg.shutil, "which", lambda name: None)
        with pytest.raises(pytest.fail.Exception, match=r"run \.ci/postgres-install"):
            pg.find_bindir()


class TestSchema:
    async def test_the_schema_mirrors_sqlites_version(
        self, pg_database: Database, store: PostgresStore
    ) -> None:
        """Every table lives in schema finetune_watcher, at the SQLite schema's version."""
        assert SCHEMA_VERSION == migrations.SCHEMA_VERSION
        with pg_database.admin() as db:
            tables = {
                str(row[0])
                for row in db.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'finetune_watcher'"
                )
            }
            version = db.execute("SELECT version FROM finetune_watcher.schema_version").fetchone()
            public = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert public.fetchone() == (0,)
        assert tables == {"schema_version", "models", "outbox", "deliveries", "leader"}
        assert version == (SCHEMA_VERSION,)
        assert store.upgraded_from is None

    async def test_replicas_starting_together_do_not_race(self, pg_database: Database) -> None:
        """Eight stores opening an empty database at once: one schema, every open succeeds."""
        stores: list[PostgresStore] = []

        async def open_one() -> None:
            stores.append(
                await PostgresStore.open(pg_database.url, password_file=pg_database.password_file)
            )

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(open_one)
        try:
            assert len(stores) == 8
            await stores[0].record_observation(ModelState("m-1"), [], polled_at=T0)
            assert set(await stores[7].load_states()) == {ModelKey("cohere", "m-1")}
        finally:
            for opened in stores:
                await opened.aclose()
        with pg_database.admin() as db:
            assert db.execute(
                "SELECT count(*) FROM finetune_watcher.schema_version"
            ).fetchone() == (1,)

    async def test_a_foreign_schema_of_our_name_is_not_touched(self, pg_database: Database) -> None:
        """A finetune_watcher schema with tables and no version is not ours: refused."""
        with pg_database.admin() as db:
            db.execute("SET ROLE watcher")
            db.execute("CREATE SCHEMA finetune_watcher")
            db.execute("CREATE TABLE finetune_watcher.invoices (id integer)")
        with pytest.raises(StateError, match="is not a finetune-watcher one"):
            await PostgresStore.open(pg_database.url, password_file=pg_database.password_file)
        with pg_database.admin() as db:
            tables = db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'finetune_watcher'"
            ).fetchall()
        assert tables == [("invoices",)]

    async def test_an_empty_schema_made_by_a_dba_is_used(self, pg_database: Database) -> None:
        """A DBA may create the schema for us (and own the database): we fill it."""
        with pg_database.admin() as db:
            db.execute("CREATE SCHEMA finetune_watcher AUTHORIZATION watcher")
            db.execute("REVOKE CREATE ON DATABASE " + pg_database.name + " FROM PUBLIC, watcher")
        async with await PostgresStore.open(
            pg_database.url, password_file=pg_database.password_file
        ) as store:
            assert await store.load_states() == {}

    async def test_a_reader_needs_a_state(self, pg_database: Database) -> None:
        """open readonly on a database the watcher never used: a StateError, nothing created."""
        with pytest.raises(StateError, match=r"holds no finetune-watcher state \(has the watcher"):
            await PostgresStore.open(
                pg_database.url, password_file=pg_database.password_file, readonly=True
            )
        with pg_database.admin() as db:
            assert db.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'finetune_watcher'"
            ).fetchone() == (0,)

    async def test_a_reader_cannot_lead(self, pg_database: Database, store: PostgresStore) -> None:
        """Only a writable store makes a lease."""
        async with await PostgresStore.open(
            pg_database.url, password_file=pg_database.password_file, readonly=True
        ) as reader:
            with pytest.raises(StateError, match="read-only store cannot lead"):
                reader.leadership(ttl=2)


class TestFaults:
    async def test_an_idle_connection_killed_is_reopened_transparently(
        self, pg_database: Database, store: PostgresStore
    ) -> None:
        """The server dropped our idle connection: the next read and write just work."""
        await store.record_observation(ModelState("m-1"), [], polled_at=T0)
        assert terminate(pg_database) == 1
        assert set(await store.load_states()) == {ModelKey("cohere", "m-1")}
        assert terminate(pg_database) == 1
        await store.record_observation(ModelState("m-2"), [], polled_at=T0)
        assert len(await store.load_states()) == 2

    async def test_a_connection_dropped_mid_transaction(
        self, pg_database: Database, store: PostgresStore
    ) -> None:
        """Killed inside a transaction: a StateUnavailableError, nothing written, then recovery."""

        async def interrupted_write() -> None:
            async with store._write("recording the state of model cohere/m-1") as (db, _):
                await db.execute(
                    "INSERT INTO finetune_watcher.models (provider, model_id) VALUES ('p', 'm')"
                )
                terminate(pg_database)
                await db.execute("SELECT 1")

        with pytest.raises(
            StateUnavailableError, match="recording the state of model cohere/m-1 failed"
        ) as broken:
            await interrupted_write()
        assert broken.value.exit_code == 75
        assert await store.model_records() == []
        await store.record_observation(ModelState("m-1"), [], polled_at=T0)
        assert set(await store.load_states()) == {ModelKey("cohere", "m-1")}

    async def test_a_cancelled_transaction_writes_nothing_and_the_store_goes_on(
        self, store: PostgresStore
    ) -> None:
        """Cancelled mid-transaction (the lease lost): rolled back; the store still works."""
        with anyio.move_on_after(0.2):
            async with store._write("a slow write") as (db, _):
                await db.execute(
                    "INSERT INTO finetune_watcher.models (provider, model_id) VALUES ('p', 'm')"
                )
                await db.execute("SELECT pg_sleep(5)")
        assert await store.model_records() == []
        await store.record_observation(ModelState("m-1"), [], polled_at=T0)
        assert len(await store.model_records()) == 1

    async def test_text_with_nul_is_refused_cleanly(self, store: PostgresStore) -> None:
        """PostgreSQL text cannot hold NUL: a StateError, nothing written, the store goes on."""
        with pytest.raises(StateError, match="cannot contain NUL"):
            await store.record_observation(ModelState("m\x00"), [], polled_at=T0)
        assert await store.model_records() == []
        await store.record_observation(ModelState("m-1"), [], polled_at=T0)

    async def test_a_closed_store_says_so(self, store: PostgresStore) -> None:
        """After aclose(), reads are a StateError and ping is False."""
        await store.aclose()
        assert await store.ping() is False
        with pytest.raises(StateError, match="the store is closed"):
            await store.load_states()


class TestClaims:
    async def test_one_replica_without_a_lease_claims_nothing(
        self, pg_database: Database, store: PostgresStore
    ) -> None:
        """No leadership attached: due items are read, not claimed (a single replica)."""
        outbox_id = await store.enqueue_message(
            kind="ops", title="t", body="b", notify_type="info", created_at=T0
        )
        assert [item.id for item in await store.due_notifications(T0)] == [outbox_id]
        with pg_database.admin() as db:
            claimed = db.execute("SELECT claim_epoch, claimed_by FROM finetune_watcher.outbox")
            assert claimed.fetchall() == [(None, None)]

    async def test_a_claim_is_taken_released_and_inherited_by_the_next_term(
        self, pg_database: Database, store: PostgresStore
    ) -> None:
        """Claimed for the epoch; released by a retry; a new term takes over an unfinished claim."""
        first, second = [
            await store.enqueue_message(
                kind="ops", title=str(i), body="b", notify_type="info", created_at=T0
            )
            for i in range(2)
        ]
        leadership = store.leadership(ttl=30, holder="replica-a")
        term = await leadership.acquire()
        assert [item.id for item in await store.due_notifications(T0)] == [first, second]
        await store.schedule_retry(first, attempts=1, next_attempt_at=T0, error="HTTP 500")
        with pg_database.admin() as db:
            rows = db.execute(
                "SELECT id, claim_epoch, claimed_by IS NOT NULL FROM finetune_watcher.outbox "
                "ORDER BY id"
            ).fetchall()
        assert rows == [(first, None, False), (second, term.epoch, True)]
        # This replica dies with `second` claimed (a send in flight); the next term (here,
        # the same process restarted) delivers it: the one duplicate a failover allows.
        with pg_database.admin() as db:
            db.execute("UPDATE finetune_watcher.leader SET expires_at = now()")
        async with await PostgresStore.open(
            pg_database.url, password_file=pg_database.password_file
        ) as successor:
            new_term = await successor.leadership(ttl=30, holder="replica-b").acquire()
            assert new_term.epoch == term.epoch + 1
            assert [item.id for item in await successor.due_notifications(T0)] == [first, second]
            await successor.mark_delivered(second, "slack", T0)
            await successor.mark_done(second, T0)
            with pg_database.admin() as db:
                delivered = db.execute(
                    "SELECT outbox_id, target_key, epoch FROM finetune_watcher.deliveries"
                ).fetchall()
            assert delivered == [(second, "slack", new_term.epoch)]
