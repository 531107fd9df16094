"""The SQLite store on real SQLite files: round-trips, outbox, atomicity, lock, bad files.

What every backend must do is tests/test_store_contract.py's, which runs on SQLite too;
here is what is SQLite's own (and the cases this file checks differently)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.stores import (
    FINETUNING,
    OTHER_SCHEME,
    QUEUED,
    READY,
    SCHEME,
    T0,
    finished_model,
    key,
    minutes,
    observe,
)
from watcher.errors import StateError, StateLockedError
from watcher.lifecycle import (
    SEEN_LIMIT,
    Event,
    ModelState,
    Notice,
    StatusScheme,
)
from watcher.settings import StateSettings
from watcher.store import OutboxCounts, open_store, open_store_readonly
from watcher.store.sqlite import SCHEMA_VERSION, SqliteStore

ROOT = Path(__file__).resolve().parent.parent


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
        check=False,
    )


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """A state file in a folder that does not exist yet."""
    return tmp_path / "state" / "watcher.db"


@pytest.fixture
async def store(state_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(state_path) as opened:
        yield opened


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for this process, for real.

    Permission bits do not stop root, so as root the immutable attribute
    (``chattr +i``) is used instead; without it the test is skipped.
    """
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root, which ignores permission bits, and chattr is missing")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"running as root, which ignores permission bits, and {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def tiny_filesystem(mount_point: Path, size: str) -> Iterator[Path]:
    """A real, small tmpfs to fill up; skipped where mounting is not allowed."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to the same file, to poke it from outside the store."""
    return sqlite3.connect(path, isolation_level=None)


# --- strategies: any state the core can produce ---

offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = st.builds(
    lambda seconds, micros, tz: (T0 + timedelta(seconds=seconds, microseconds=micros)).astimezone(
        tz
    ),
    st.integers(min_value=0, max_value=10 * 24 * 3600),
    st.integers(min_value=0, max_value=999_999),
    offsets,
)


def histories(scheme: StatusScheme) -> st.SearchStrategy[list[Event]]:
    statuses = st.sampled_from([*scheme.known, "SOMETHING_NEW"])
    return st.lists(st.builds(Event, statuses, times), max_size=SEEN_LIMIT + 16)


def scenarios() -> st.SearchStrategy[tuple[StatusScheme, list[Event], list[Event]]]:
    return st.sampled_from([SCHEME, OTHER_SCHEME]).flatmap(
        lambda scheme: st.tuples(st.just(scheme), histories(scheme), histories(scheme))
    )


class TestStates:
    def test_observed_states_round_trip(self, state_path: Path) -> None:
        """Any state the core makes (two polls deep) reads back equal, with its notices."""
        with asyncio.Runner() as runner:  # hypothesis drives examples; each one awaits
            store = runner.run(SqliteStore.open(state_path))

            async def check_example(
                scheme: StatusScheme, first: list[Event], later: list[Event], model_id: str
            ) -> None:
                state: ModelState | None = None
                for batch in (first, first + later):
                    observation = observe(
                        state, model_id, batch, frozenset(scheme.known), scheme=scheme
                    )
                    state = observation.state
                    ids = await store.record_observation(state, observation.notices, polled_at=T0)
                    assert (await store.load_states())[state.key] == state
                    due = await store.due_notifications(T0, 10**6)
                    stored = {item.id: item.notice for item in due}
                    assert [stored[i] for i in ids] == list(observation.notices)
                    for outbox_id in ids:
                        await store.mark_done(outbox_id, T0)

            @settings(
                max_examples=60,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(scenario=scenarios(), model_id=st.text(min_size=1, max_size=20))
            def check(
                scenario: tuple[StatusScheme, list[Event], list[Event]], model_id: str
            ) -> None:
                runner.run(check_example(*scenario, model_id))

            try:
                check()
            finally:
                runner.run(store.aclose())

    async def test_seen_reads_back_as_a_sorted_tuple(
        self, store: SqliteStore, state_path: Path
    ) -> None:
        """``seen`` written in any order (or twice) reads back in the core's canonical form:
        a sorted tuple without repeats, one datetime per distinct time of the row."""
        events = [Event(QUEUED, minutes(0)), Event(FINETUNING, minutes(1))]
        state = observe(None, "m-1", events).state
        await store.record_observation(state, [], polled_at=T0)
        pairs = [[minutes(1), FINETUNING], [minutes(0), QUEUED], [minutes(1), FINETUNING]]
        text = json.dumps([[at.isoformat(timespec="microseconds"), s] for at, s in pairs])
        with closing(raw(state_path)) as db:
            db.execute("UPDATE models SET seen = ?", (text,))

        loaded = (await store.load_states())[key("m-1")]

        assert type(loaded.seen) is tuple
        assert loaded == state
        assert loaded.status_since is loaded.seen[1].created_at

    async def test_the_quiet_poll_batch_skips_the_fsync_and_nothing_else_does(
        self, store: SqliteStore
    ) -> None:
        """record_polls commits with synchronous=NORMAL (bookkeeping, P18); every other
        write, the outbox's above all, still waits for the disk (FULL, 2)."""
        await store.record_observation(ModelState("a"), [], polled_at=T0)
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        try:
            await store.record_polls([(key("a"), minutes(5))])
            await store.record_poll_failure(key("a"), polled_at=minutes(6), error="x", failures=1)
        finally:
            store._db.set_trace_callback(None)
        pragmas = [s for s in statements if s.startswith(("PRAGMA", "BEGIN", "COMMIT"))]
        assert pragmas == [
            "PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE", "COMMIT",
            "PRAGMA synchronous = FULL", "BEGIN IMMEDIATE", "COMMIT",
        ]  # fmt: skip
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        (record,) = await store.model_records()
        assert (record.last_success_at, record.last_poll_at) == (minutes(5), minutes(6))
        elsewhere = timezone(timedelta(hours=2))  # not the daemon's UTC: converted
        await store.record_polls([(key("a"), minutes(7).astimezone(elsewhere))])
        (record,) = await store.model_records()
        assert record.last_success_at == minutes(7)
        assert store._db.execute("SELECT last_poll_at FROM models").fetchone()[0].endswith("+00:00")


class TestKeys:
    async def test_two_providers_may_use_the_same_id(self, store: SqliteStore) -> None:
        """A model is (provider, id): states, records, failures and notices never mix."""
        cohere = finished_model("job-1")
        other = observe(
            None,
            "job-1",
            [Event("queued", minutes(0)), Event("succeeded", minutes(20))],
            scheme=OTHER_SCHEME,
        )
        (cohere_id,) = await store.record_observation(
            cohere.state, cohere.notices, polled_at=minutes(40), name="same"
        )
        (other_id,) = await store.record_observation(
            other.state, other.notices, polled_at=minutes(40), name="same"
        )
        await store.record_poll_failure(
            key("job-1", "other"), polled_at=minutes(41), error="HTTP 500", failures=1
        )

        assert await store.load_states() == {
            key("job-1"): cohere.state,
            key("job-1", "other"): other.state,
        }
        records = await store.model_records()
        assert [(r.key, r.failures, r.pending_notifications) for r in records] == [
            (key("job-1"), 0, 1),
            (key("job-1", "other"), 1, 1),
        ]
        due = {item.id: item for item in await store.due_notifications(minutes(40))}
        assert due[cohere_id].model == key("job-1")
        assert due[other_id].model == key("job-1", "other")
        notice = due[other_id].notice
        assert notice == other.notices[0]
        assert notice is not None
        assert notice.key == key("job-1", "other")

        await store.record_stuck_warning(
            key("job-1", "other"), warnings=2, title="t", body="b", notify_type="warning",
            created_at=minutes(42),
        )  # fmt: skip
        assert await store.stuck_warning_counts() == {key("job-1", "other"): 2}


class TestOutbox:
    async def test_a_notice_from_enqueue_to_done(self, store: SqliteStore) -> None:
        """Enqueued with the state, due at once, delivered per target, retried, then done."""
        observation = finished_model()
        (outbox_id,) = await store.record_observation(
            observation.state, observation.notices, polled_at=minutes(40), name="classifier"
        )
        assert await store.due_notifications(minutes(39)) == []
        (item,) = await store.due_notifications(minutes(40))
        assert (item.id, item.kind, item.model) == (outbox_id, "model", key("m-1"))
        assert item.notice == observation.notices[0]
        assert item.notice == Notice(
            model_id="m-1",
            status=READY,
            previous_status=FINETUNING,
            event_at=minutes(30),
            previous_since=minutes(1),
            started_at=minutes(0),
            first_observation=True,
            provider="cohere",
        )
        assert (item.title, item.body, item.notify_type) == (None, None, None)
        assert (item.created_at, item.attempts, item.last_error) == (minutes(40), 0, None)
        assert await store.next_due_at() == minutes(40)
        assert (await store.model_records())[0].pending_notifications == 1

        assert await store.delivered_targets(outbox_id) == set()
        await store.mark_delivered(outbox_id, "slack-1", minutes(40))
        await store.mark_delivered(outbox_id, "slack-1", minutes(41))  # idempotent
        await store.schedule_retry(
            outbox_id, attempts=1, next_attempt_at=minutes(45), error="HTTP 500"
        )
        assert await store.due_notifications(minutes(44)) == []
        assert await store.next_due_at() == minutes(45)

        (item,) = await store.due_notifications(minutes(45))
        assert (item.attempts, item.last_error) == (1, "HTTP 500")
        assert await store.delivered_targets(outbox_id) == {"slack-1"}
        await store.mark_delivered(outbox_id, "mail-1", minutes(45))
        await store.mark_done(outbox_id, minutes(45))

        assert await store.due_notifications(minutes(100)) == []
        assert await store.next_due_at() is None
        assert await store.outbox_counts() == OutboxCounts(pending=0, done=1, given_up=0)
        assert (await store.model_records())[0].pending_notifications == 0
        assert await store.delivered_targets(outbox_id) == {"slack-1", "mail-1"}

    async def test_stuck_warnings_are_counted_with_their_message_and_reset_on_change(
        self, store: SqliteStore
    ) -> None:
        """A stuck warning and its count are one write; a new status resets the count."""
        first = observe(None, "m-1", [Event(FINETUNING, minutes(1))])
        await store.record_observation(first.state, first.notices, polled_at=minutes(2))
        outbox_id = await store.record_stuck_warning(
            key(), warnings=1, title="stuck", body="b", notify_type="warning",
            created_at=minutes(3),
        )  # fmt: skip
        (item,) = await store.due_notifications(minutes(3))
        assert (item.id, item.kind, item.model) == (outbox_id, "stuck", key())
        assert (item.title, item.body, item.notify_type, item.notice) == (
            "stuck",
            "b",
            "warning",
            None,
        )
        assert await store.stuck_warning_counts() == {key(): 1}
        # Same status again (a new event of the same status): the count stays.
        again = observe(
            first.state, "m-1", [Event(FINETUNING, minutes(1)), Event(FINETUNING, minutes(4))]
        )
        await store.record_observation(again.state, again.notices, polled_at=minutes(5))
        assert await store.stuck_warning_counts() == {key(): 1}
        later = observe(again.state, "m-1", [Event(READY, minutes(6))])
        await store.record_observation(later.state, later.notices, polled_at=minutes(7))
        assert await store.stuck_warning_counts() == {}


class TestAtomicity:
    async def test_a_failed_outbox_insert_leaves_the_state_unchanged(
        self, store: SqliteStore
    ) -> None:
        """If the outbox row cannot be written, the state change is rolled back with it."""
        queued = observe(None, "m-1", [Event(QUEUED, minutes(0))])
        await store.record_observation(queued.state, queued.notices, polled_at=minutes(1))
        with raw(store.path) as db:
            db.execute(
                "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox "
                "BEGIN SELECT RAISE(ABORT, 'outbox insert refused by the test'); END"
            )
        ready = observe(queued.state, "m-1", [Event(QUEUED, minutes(0)), Event(READY, minutes(9))])
        assert ready.notices

        with pytest.raises(StateError, match="outbox insert refused by the test"):
            await store.record_observation(ready.state, ready.notices, polled_at=minutes(10))

        assert await store.load_states() == {key(): queued.state}
        assert (await store.model_records())[0].last_poll_at == minutes(1)
        assert await store.outbox_counts() == OutboxCounts(pending=0, done=0, given_up=0)

        with raw(store.path) as db:
            db.execute("DROP TRIGGER fail_outbox")
        await store.record_observation(ready.state, ready.notices, polled_at=minutes(11))
        assert await store.load_states() == {key(): ready.state}
        assert (await store.outbox_counts()).pending == 1

    async def test_a_full_disk_is_a_state_error_and_writes_nothing(self, tmp_path: Path) -> None:
        """On a full filesystem a write fails as a StateError and leaves the file as it was."""
        with tiny_filesystem(tmp_path / "small", "256k") as folder:
            async with await SqliteStore.open(folder / "watcher.db") as store:
                first = finished_model("m-1")
                await store.record_observation(first.state, first.notices, polled_at=minutes(40))
                big = finished_model("m-2")
                with pytest.raises(StateError, match=r"disk is full \(database or disk is full\)"):
                    await store.record_observation(
                        big.state, big.notices, polled_at=minutes(40), name="x" * 400_000
                    )
                assert await store.load_states() == {key("m-1"): first.state}
                assert (await store.outbox_counts()).pending == 1
                await store.mark_done(1, minutes(41))  # small writes work again
                assert (await store.outbox_counts()).done == 1

    def test_an_io_error_is_a_state_error(self, state_path: Path) -> None:
        """A write the OS refuses (over RLIMIT_FSIZE) is a StateError; nothing is half-written."""
        result = run_python(
            """
            import asyncio, resource, signal, sys
            from datetime import UTC, datetime
            from pathlib import Path
            from watcher.errors import StateError
            from watcher.lifecycle import ModelState
            from watcher.store.sqlite import SqliteStore

            async def main():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                at = datetime(2024, 1, 1, tzinfo=UTC)
                store = await SqliteStore.open(Path(sys.argv[1]))
                await store.record_observation(ModelState("small"), [], polled_at=at)
                resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
                try:
                    await store.record_observation(
                        ModelState("big"), [], polled_at=at, name="x" * 10**6
                    )
                except StateError as exc:
                    print(exc)
                print(sorted(key.id for key in await store.load_states()))

            asyncio.run(main())
            """,
            str(state_path),
        )
        assert result.returncode == 0, result.stderr
        error, states = result.stdout.splitlines()
        assert error.startswith(f"state file {state_path}: recording the state of model cohere/big")
        assert "I/O error" in error or "disk is full" in error
        assert states == "['small']"


class TestFiles:
    async def test_a_new_file_is_owner_only(self, state_path: Path) -> None:
        """The folder is created 0700 and every file 0600, whatever the umask."""
        old_umask = os.umask(0)
        try:
            async with await SqliteStore.open(state_path) as store:
                await store.record_observation(ModelState("m-1"), [], polled_at=T0)
                modes = {p.name: p.stat().st_mode & 0o777 for p in state_path.parent.iterdir()}
        finally:
            os.umask(old_umask)
        assert state_path.parent.stat().st_mode & 0o777 == 0o700
        assert modes == {
            "watcher.db": 0o600,
            "watcher.db-wal": 0o600,
            "watcher.db-shm": 0o600,
            "watcher.db.lock": 0o600,
        }

    async def test_a_new_file_has_the_schema_in_wal_mode(self, store: SqliteStore) -> None:
        """The schema version is recorded and the journal is WAL."""
        with raw(store.path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"models", "outbox", "deliveries"} <= tables
        assert store.upgraded_from is None

    async def test_reopening_keeps_everything(self, state_path: Path) -> None:
        """States, names, failures, pending items, deliveries and counts survive a restart."""
        observation = finished_model()
        async with await SqliteStore.open(state_path) as store:
            (notice_id,) = await store.record_observation(
                observation.state, observation.notices, polled_at=minutes(40), name="clf"
            )
            await store.record_poll_failure(
                key("m-2"), polled_at=minutes(41), error="HTTP 404", failures=1
            )
            await store.mark_delivered(notice_id, "slack-1", minutes(41))
            await store.schedule_retry(
                notice_id, attempts=1, next_attempt_at=minutes(42), error="HTTP 500"
            )
            done_id = await store.enqueue_message(
                kind="ops", title="t", body="b", notify_type="info", created_at=minutes(41)
            )
            await store.mark_done(done_id, minutes(41))
            records, counts = await store.model_records(), await store.outbox_counts()
            due = await store.due_notifications(minutes(42))

        async with await SqliteStore.open(state_path) as store:
            assert await store.load_states() == {key(): observation.state}
            assert await store.model_records() == records
            assert (
                await store.outbox_counts() == counts == OutboxCounts(pending=1, done=1, given_up=0)
            )
            assert await store.due_notifications(minutes(42)) == due
            assert await store.delivered_targets(notice_id) == {"slack-1"}
            new_id = await store.enqueue_message(
                kind="ops", title="t", body="b", notify_type="info", created_at=minutes(43)
            )
            assert new_id > done_id  # ids are never reused

    async def test_close_is_idempotent(self, state_path: Path) -> None:
        """Closing twice is harmless, and closing releases the lock."""
        store = await SqliteStore.open(state_path)
        await store.aclose()
        await store.aclose()
        await (await SqliteStore.open(state_path)).aclose()

    async def test_ping_and_location(self, state_path: Path) -> None:
        """ping() answers while the store is open and not after; location is the path."""
        store = await SqliteStore.open(state_path)
        assert store.location == str(state_path)
        assert await store.ping() is True
        await store.aclose()
        assert await store.ping() is False


class TestOpeners:
    async def test_open_store_opens_the_configured_file_and_closes_it(
        self, state_path: Path
    ) -> None:
        """open_store: the SQLite file at state.path, locked while open, released on exit."""
        state = StateSettings(path=state_path)
        async with open_store(state) as store:
            assert store.location == str(state_path)
            await store.record_observation(ModelState("m-1"), [], polled_at=T0)
            with pytest.raises(StateLockedError):
                await SqliteStore.open(state_path)
            async with open_store_readonly(state) as reader:
                assert set(await reader.load_states()) == {key()}
        async with open_store(state) as store:
            assert await store.ping()

    async def test_a_cancelled_caller_still_releases_the_lock(self, state_path: Path) -> None:
        """Cancellation inside open_store closes the store: the next open succeeds."""
        state = StateSettings(path=state_path)
        entered = asyncio.Event()

        async def hold() -> None:
            async with open_store(state):
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(hold())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await (await SqliteStore.open(state_path)).aclose()

    async def test_open_store_readonly_needs_a_state(self, state_path: Path) -> None:
        """The reader never creates anything: no file is a StateError."""
        with pytest.raises(StateError, match="has the watcher run yet"):
            async with open_store_readonly(StateSettings(path=state_path)):
                pass
        assert not state_path.parent.exists()


class TestLock:
    async def test_a_second_store_on_the_same_file_is_refused(self, store: SqliteStore) -> None:
        """Two watchers on one state file: the second fails with our pid in the message."""
        with pytest.raises(
            StateLockedError, match=rf"in use by another finetune-watcher \(pid {os.getpid()}\)"
        ):
            await SqliteStore.open(store.path)
        assert issubclass(StateLockedError, StateError)

    async def test_another_process_holding_the_lock_blocks_us(self, state_path: Path) -> None:
        """Another process's lock refuses us; a reader still sees its writes as they land."""
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    """
                    import asyncio, sys
                    from datetime import UTC, datetime
                    from pathlib import Path
                    from watcher.lifecycle import ModelState
                    from watcher.store.sqlite import SqliteStore

                    async def main():
                        at = datetime(2024, 1, 1, tzinfo=UTC)
                        async with await SqliteStore.open(Path(sys.argv[1])) as store:
                            await store.record_observation(ModelState("first"), [], polled_at=at)
                            print("locked", flush=True)
                            sys.stdin.readline()
                            await store.record_observation(ModelState("second"), [], polled_at=at)
                            print("written", flush=True)
                            sys.stdin.read()

                    asyncio.run(main())
                    """
                ),
                str(state_path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert holder.stdin is not None
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline() == "locked\n", holder.stderr
            with pytest.raises(StateLockedError, match=rf"\(pid {holder.pid}\)"):
                await SqliteStore.open(state_path)

            async with await SqliteStore.open_readonly(state_path) as reader:
                assert set(await reader.load_states()) == {key("first")}
                holder.stdin.write("go on\n")
                holder.stdin.flush()
                assert holder.stdout.readline() == "written\n"
                assert set(await reader.load_states()) == {key("first"), key("second")}

            holder.stdin.close()
            assert holder.wait(timeout=10) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
            holder.stdout.close()
            assert holder.stderr is not None
            holder.stderr.close()

        async with await SqliteStore.open(state_path) as store:
            assert set(await store.load_states()) == {key("first"), key("second")}

    async def test_a_reader_cannot_write(self, store: SqliteStore) -> None:
        """open_readonly gives a store whose writes fail as a StateError saying it is read-only."""
        await store.record_observation(ModelState("m-1"), [], polled_at=T0)
        async with await SqliteStore.open_readonly(store.path) as reader:
            with pytest.raises(StateError, match="read-only"):
                await reader.record_polls([(key(), minutes(1))])
            assert await reader.ping()
        assert (await store.model_records())[0].last_poll_at == T0


class TestBadFiles:
    async def test_a_file_that_is_not_a_database(self, state_path: Path) -> None:
        """Garbage is refused with advice, and not a byte of it changes."""
        state_path.parent.mkdir()
        garbage = b"this is not a database\n" * 200
        state_path.write_bytes(garbage)
        for opener in (SqliteStore.open, SqliteStore.open_readonly):
            with pytest.raises(
                StateError,
                match=r"not a readable SQLite database \(file is not a database\); move it aside",
            ):
                await opener(state_path)
        assert state_path.read_bytes() == garbage
        assert not Path(f"{state_path}-wal").exists()

    async def test_a_corrupt_database(self, state_path: Path) -> None:
        """A SQLite file with damaged pages is refused and left as it is."""
        async with await SqliteStore.open(state_path) as store:
            for i in range(50):
                await store.record_observation(
                    ModelState(f"m-{i}"), [], polled_at=T0, name="n" * 200
                )
        data = bytearray(state_path.read_bytes())
        page_size = int.from_bytes(data[16:18], "big")
        data[page_size : 3 * page_size] = b"\xa5" * (2 * page_size)
        state_path.write_bytes(bytes(data))
        with pytest.raises(StateError, match="is not a readable SQLite database"):
            await SqliteStore.open(state_path)
        assert state_path.read_bytes() == data

    async def test_a_newer_schema_is_not_touched(self, state_path: Path) -> None:
        """A file from a newer watcher is refused by both openers and left unchanged."""
        state_path.parent.mkdir()
        with raw(state_path) as db:
            db.execute("CREATE TABLE models (model_id TEXT, future_column BLOB)")
            db.execute("PRAGMA user_version = 99")
        db.close()
        before = state_path.read_bytes()
        for opener in (SqliteStore.open, SqliteStore.open_readonly):
            with pytest.raises(
                StateError,
                match=rf"written by a newer finetune-watcher \(schema 99, this one understands "
                rf"{SCHEMA_VERSION}\); refusing to touch it",
            ):
                await opener(state_path)
        assert state_path.read_bytes() == before

    async def test_someone_elses_database_is_not_touched(self, state_path: Path) -> None:
        """A SQLite file with tables but no schema version is not ours: refused, unchanged."""
        state_path.parent.mkdir()
        with raw(state_path) as db:
            db.execute("CREATE TABLE invoices (id INTEGER)")
        db.close()
        before = state_path.read_bytes()
        for opener in (SqliteStore.open, SqliteStore.open_readonly):
            with pytest.raises(StateError, match="not a finetune-watcher one"):
                await opener(state_path)
        assert state_path.read_bytes() == before

    async def test_an_empty_file_becomes_a_state_file(self, state_path: Path) -> None:
        """A zero-byte file (``touch``) is an empty database: the schema is created in it."""
        state_path.parent.mkdir()
        state_path.touch()
        with pytest.raises(StateError, match="is empty"):
            await SqliteStore.open_readonly(state_path)
        async with await SqliteStore.open(state_path) as store:
            assert await store.load_states() == {}

    async def test_a_read_only_file(self, state_path: Path) -> None:
        """An unwritable state file is refused by open() and still readable by open_readonly()."""
        async with await SqliteStore.open(state_path) as store:
            await store.record_observation(ModelState("m-1"), [], polled_at=T0)
        before = state_path.read_bytes()
        with read_only(state_path):
            with pytest.raises(StateError, match="cannot be opened for writing"):
                await SqliteStore.open(state_path)
            async with await SqliteStore.open_readonly(state_path) as reader:
                assert set(await reader.load_states()) == {key()}
        assert state_path.read_bytes() == before

    async def test_a_read_only_folder(self, state_path: Path) -> None:
        """A folder where SQLite cannot create its -wal file is a clear StateError."""
        await (await SqliteStore.open(state_path)).aclose()
        with read_only(state_path.parent), pytest.raises(StateError, match="-wal/-shm"):
            await SqliteStore.open(state_path)

    async def test_a_folder_that_cannot_be_created(self, tmp_path: Path) -> None:
        """A state path under a regular file is a StateError naming the folder."""
        (tmp_path / "file").write_text("")
        with pytest.raises(StateError, match="cannot create the folder"):
            await SqliteStore.open(tmp_path / "file" / "watcher.db")

    async def test_a_directory_where_the_file_should_be(self, state_path: Path) -> None:
        """The state path being a directory is a StateError, not a crash."""
        state_path.mkdir(parents=True)
        with pytest.raises(StateError, match="is a directory"):
            await SqliteStore.open(state_path)

    async def test_reading_a_missing_file(self, state_path: Path) -> None:
        """open_readonly never creates anything: a missing file is a StateError."""
        with pytest.raises(StateError, match=r"no state file at .* \(has the watcher run yet\?\)"):
            await SqliteStore.open_readonly(state_path)
        assert not state_path.parent.exists()
