"""The state store on real SQLite files: round-trips, outbox, atomicity, lock, bad files."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher import lifecycle
from watcher.errors import StateError, StateLockedError
from watcher.lifecycle import (
    FAILED,
    FINETUNING,
    KNOWN_STATUSES,
    QUEUED,
    READY,
    SEEN_LIMIT,
    Event,
    ModelState,
    Notice,
    observe,
)
from watcher.store import SCHEMA_VERSION, OutboxCounts, Store

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def finished_model(model_id: str = "m-1", status: str = READY) -> lifecycle.Observation:
    """A first observation of a model that went QUEUED -> FINETUNING -> ``status``."""
    events = [Event(QUEUED, minutes(0)), Event(FINETUNING, minutes(1)), Event(status, minutes(30))]
    return observe(None, model_id, events)


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
def store(state_path: Path) -> Iterator[Store]:
    with Store.open(state_path) as opened:
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

statuses = st.sampled_from([*KNOWN_STATUSES, "STATUS_SOMETHING_NEW"])
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
events = st.builds(Event, statuses, times)
histories = st.lists(events, max_size=SEEN_LIMIT + 16)


class TestStates:
    def test_observed_states_round_trip(self, state_path: Path) -> None:
        """Any state the core makes (two polls deep) reads back equal, with its notices."""
        with Store.open(state_path) as store:

            @settings(
                max_examples=60,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(first=histories, later=histories, model_id=st.text(min_size=1, max_size=20))
            def check(first: list[Event], later: list[Event], model_id: str) -> None:
                state: ModelState | None = None
                for batch in (first, first + later):
                    observation = observe(state, model_id, batch, frozenset(KNOWN_STATUSES))
                    state = observation.state
                    ids = store.record_observation(state, observation.notices, polled_at=T0)
                    assert store.load_states()[model_id] == state
                    stored = {item.id: item.notice for item in store.due_notifications(T0, 10**6)}
                    assert [stored[i] for i in ids] == list(observation.notices)
                    for outbox_id in ids:
                        store.mark_done(outbox_id, T0)

            check()

    def test_a_forgotten_history_keeps_its_floor(self, store: Store) -> None:
        """More events than SEEN_LIMIT: the floor is set and survives the round trip."""
        many = [Event(QUEUED if i % 2 else FINETUNING, minutes(i)) for i in range(SEEN_LIMIT + 6)]
        state = observe(None, "m-1", many).state
        assert state.floor is not None
        store.record_observation(state, [], polled_at=T0)
        assert store.load_states() == {"m-1": state}

    def test_a_model_without_events_is_a_state(self, store: Store) -> None:
        """An observed model with an empty history is stored as a state with no status."""
        observation = observe(None, "m-1", [])
        store.record_observation(observation.state, observation.notices, polled_at=T0)
        assert store.load_states() == {"m-1": ModelState("m-1")}

    def test_a_model_that_only_failed_has_no_state(self, store: Store) -> None:
        """A failure alone makes a record, not a state: the first success is a first observation."""
        store.record_poll_failure("m-1", polled_at=minutes(1), error="HTTP 503", failures=1)
        store.record_poll_failure("m-1", polled_at=minutes(2), error="timeout", failures=2)
        assert store.load_states() == {}
        (record,) = store.model_records()
        assert record.state == ModelState("m-1")
        assert (record.last_poll_at, record.last_success_at) == (minutes(2), None)
        assert (record.last_error, record.failures) == ("timeout", 2)

        observation = finished_model("m-1")
        store.record_observation(observation.state, observation.notices, polled_at=minutes(3))
        assert store.load_states() == {"m-1": observation.state}
        (record,) = store.model_records()
        assert (record.last_error, record.failures) == (None, 0)
        assert record.last_success_at == minutes(3)

    def test_a_failure_keeps_the_state_and_the_last_success(self, store: Store) -> None:
        """A failed poll of a known model records the error but forgets nothing."""
        observation = finished_model()
        store.record_observation(observation.state, [], polled_at=minutes(40))
        store.record_poll_failure("m-1", polled_at=minutes(41), error="HTTP 500", failures=1)
        (record,) = store.model_records()
        assert record.state == observation.state
        assert (record.last_poll_at, record.last_success_at) == (minutes(41), minutes(40))
        assert (record.last_error, record.failures) == ("HTTP 500", 1)

    def test_quiet_polls_are_recorded_in_a_batch(self, store: Store) -> None:
        """record_polls moves the poll times, clears failures and never invents models."""
        for model_id in ("a", "b"):
            store.record_observation(ModelState(model_id), [], polled_at=T0)
        store.record_poll_failure("b", polled_at=minutes(1), error="HTTP 500", failures=3)
        store.record_polls([("a", minutes(5)), ("b", minutes(6)), ("unknown", minutes(7))])
        records = {r.state.model_id: r for r in store.model_records()}
        assert set(records) == {"a", "b"}
        assert records["a"].last_success_at == minutes(5)
        assert (records["b"].last_poll_at, records["b"].last_success_at) == (minutes(6), minutes(6))
        assert (records["b"].failures, records["b"].last_error) == (0, None)
        store.record_polls([])

    def test_names_and_discovery(self, store: Store) -> None:
        """A name is kept when the next observation passes none; records sort by name, else id."""
        store.record_observation(ModelState("zz"), [], polled_at=T0, name="alpha")
        store.record_observation(ModelState("zz"), [], polled_at=T0)
        store.record_observation(ModelState("bb"), [], polled_at=T0, discovered=True)
        store.record_observation(ModelState("cc"), [], polled_at=T0, name="Beta")
        records = store.model_records()
        assert [(r.state.model_id, r.name, r.discovered) for r in records] == [
            ("zz", "alpha", False),
            ("bb", None, True),
            ("cc", "Beta", False),
        ]

    def test_naive_times_are_refused(self, store: Store) -> None:
        """A time without a timezone is a bug in the caller, refused before anything is written."""
        with pytest.raises(ValueError, match="timezone-aware"):
            store.record_observation(ModelState("m-1"), [], polled_at=datetime(2024, 1, 1))
        assert store.model_records() == []


class TestOutbox:
    def test_a_notice_from_enqueue_to_done(self, store: Store) -> None:
        """Enqueued with the state, due at once, delivered per target, retried, then done."""
        observation = finished_model()
        (outbox_id,) = store.record_observation(
            observation.state, observation.notices, polled_at=minutes(40), name="classifier"
        )
        assert store.due_notifications(minutes(39)) == []
        (item,) = store.due_notifications(minutes(40))
        assert (item.id, item.kind, item.model_id) == (outbox_id, "model", "m-1")
        assert item.notice == observation.notices[0]
        assert item.notice == Notice(
            model_id="m-1",
            status=READY,
            previous_status=FINETUNING,
            event_at=minutes(30),
            previous_since=minutes(1),
            started_at=minutes(0),
            first_observation=True,
        )
        assert (item.title, item.body, item.notify_type) == (None, None, None)
        assert (item.created_at, item.attempts, item.last_error) == (minutes(40), 0, None)
        assert store.next_due_at() == minutes(40)
        assert store.pending_by_model() == {"m-1": 1}
        assert store.model_records()[0].pending_notifications == 1

        assert store.delivered_targets(outbox_id) == set()
        store.mark_delivered(outbox_id, "slack-1", minutes(40))
        store.mark_delivered(outbox_id, "slack-1", minutes(41))  # idempotent
        store.schedule_retry(outbox_id, attempts=1, next_attempt_at=minutes(45), error="HTTP 500")
        assert store.due_notifications(minutes(44)) == []
        assert store.next_due_at() == minutes(45)

        (item,) = store.due_notifications(minutes(45))
        assert (item.attempts, item.last_error) == (1, "HTTP 500")
        assert store.delivered_targets(outbox_id) == {"slack-1"}
        store.mark_delivered(outbox_id, "mail-1", minutes(45))
        store.mark_done(outbox_id, minutes(45))

        assert store.due_notifications(minutes(100)) == []
        assert store.next_due_at() is None
        assert store.outbox_counts() == OutboxCounts(pending=0, done=1, given_up=0)
        assert store.pending_by_model() == {}
        assert store.model_records()[0].pending_notifications == 0
        assert store.delivered_targets(outbox_id) == {"slack-1", "mail-1"}

    def test_pull_forward_retries_after_a_backwards_clock_jump(self, store: Store) -> None:
        """Retries scheduled far ahead are made due at once; done items are untouched."""
        observation = finished_model()
        (outbox_id,) = store.record_observation(
            observation.state, observation.notices, polled_at=minutes(40)
        )
        store.schedule_retry(outbox_id, attempts=1, next_attempt_at=minutes(600), error="HTTP 500")
        assert store.due_notifications(minutes(41)) == []
        assert store.pull_forward_retries(minutes(41)) == 1
        (item,) = store.due_notifications(minutes(41))
        assert item.id == outbox_id
        assert store.pull_forward_retries(minutes(41)) == 0
        store.mark_done(outbox_id, minutes(41))
        assert store.pull_forward_retries(minutes(0)) == 0

    def test_stuck_warnings_are_counted_with_their_message_and_reset_on_change(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A stuck warning and its count are one write; a new status resets the count."""
        first = observe(None, "m-1", [Event(FINETUNING, minutes(1))])
        store.record_observation(first.state, first.notices, polled_at=minutes(2))
        outbox_id = store.record_stuck_warning(
            "m-1", warnings=1, title="stuck", body="b", notify_type="warning",
            created_at=minutes(3),
        )  # fmt: skip
        (item,) = store.due_notifications(minutes(3))
        assert (item.id, item.kind, item.model_id) == (outbox_id, "stuck", "m-1")
        assert store.stuck_warning_counts() == {"m-1": 1}
        # Same status again (a new event of the same status): the count stays.
        again = observe(
            first.state, "m-1", [Event(FINETUNING, minutes(1)), Event(FINETUNING, minutes(4))]
        )
        store.record_observation(again.state, again.notices, polled_at=minutes(5))
        assert store.stuck_warning_counts() == {"m-1": 1}
        later = observe(again.state, "m-1", [Event(READY, minutes(6))])
        store.record_observation(later.state, later.notices, polled_at=minutes(7))
        assert store.stuck_warning_counts() == {}

    def test_messages_are_pre_rendered(self, store: Store) -> None:
        """Ops and test messages carry their own title, body and type; they have no notice."""
        ops_id = store.enqueue_message(
            kind="ops",
            title="Cannot authenticate",
            body="401 from Cohere",
            notify_type="failure",
            created_at=minutes(1),
            model_id="m-1",
        )
        test_id = store.enqueue_message(
            kind="test", title="Hello", body="It works", notify_type="info", created_at=minutes(2)
        )
        ops, test = store.due_notifications(minutes(2))
        assert (ops.id, test.id) == (ops_id, test_id)
        assert (ops.kind, ops.model_id, ops.notice) == ("ops", "m-1", None)
        assert (ops.title, ops.body, ops.notify_type) == (
            "Cannot authenticate",
            "401 from Cohere",
            "failure",
        )
        assert (test.kind, test.model_id, test.title) == ("test", None, "Hello")
        assert store.pending_by_model() == {"m-1": 1}

    def test_model_notices_only_come_with_a_state(self, store: Store) -> None:
        """enqueue_message refuses kind "model": those rows only come from record_observation."""
        with pytest.raises(ValueError, match="'ops' or 'test'"):
            store.enqueue_message(
                kind="model", title="t", body="b", notify_type="info", created_at=T0
            )

    def test_giving_up(self, store: Store) -> None:
        """A given-up item leaves the pending set, is counted, and is not due any more."""
        kept = store.enqueue_message(
            kind="ops", title="a", body="a", notify_type="info", created_at=T0
        )
        dropped = store.enqueue_message(
            kind="ops", title="b", body="b", notify_type="info", created_at=T0
        )
        store.give_up(dropped, at=minutes(60 * 24), reason="undelivered for 24h")
        assert [item.id for item in store.due_notifications(minutes(60 * 24))] == [kept]
        assert store.outbox_counts() == OutboxCounts(pending=1, done=0, given_up=1)

    def test_due_items_come_oldest_first_and_limited(self, store: Store) -> None:
        """Due items are ordered by id (queue order), at most ``limit`` of them."""
        ids = [
            store.enqueue_message(
                kind="test", title=str(i), body="", notify_type="info", created_at=minutes(5 - i)
            )
            for i in range(5)
        ]
        assert [item.id for item in store.due_notifications(minutes(10), limit=3)] == ids[:3]
        assert store.next_due_at() == minutes(1)

    def test_several_notices_keep_their_order(self, store: Store) -> None:
        """READY then DELETED between two polls: two rows, ids in notice order."""
        first = finished_model()
        store.record_observation(first.state, first.notices, polled_at=minutes(40))
        later = observe(
            first.state,
            "m-1",
            [Event(READY, minutes(30)), Event(FAILED, minutes(50)), Event(READY, minutes(55))],
        )
        ids = store.record_observation(later.state, later.notices, polled_at=minutes(60))
        assert len(ids) == 2
        assert ids == sorted(ids)
        due = {item.id: item.notice for item in store.due_notifications(minutes(60))}
        assert [due[i] for i in ids] == list(later.notices)


class TestAtomicity:
    def test_a_failed_outbox_insert_leaves_the_state_unchanged(self, store: Store) -> None:
        """If the outbox row cannot be written, the state change is rolled back with it."""
        queued = observe(None, "m-1", [Event(QUEUED, minutes(0))])
        store.record_observation(queued.state, queued.notices, polled_at=minutes(1))
        with raw(store.path) as db:
            db.execute(
                "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox "
                "BEGIN SELECT RAISE(ABORT, 'outbox insert refused by the test'); END"
            )
        ready = observe(queued.state, "m-1", [Event(QUEUED, minutes(0)), Event(READY, minutes(9))])
        assert ready.notices

        with pytest.raises(StateError, match="outbox insert refused by the test"):
            store.record_observation(ready.state, ready.notices, polled_at=minutes(10))

        assert store.load_states() == {"m-1": queued.state}
        assert store.model_records()[0].last_poll_at == minutes(1)
        assert store.outbox_counts() == OutboxCounts(pending=0, done=0, given_up=0)

        with raw(store.path) as db:
            db.execute("DROP TRIGGER fail_outbox")
        store.record_observation(ready.state, ready.notices, polled_at=minutes(11))
        assert store.load_states() == {"m-1": ready.state}
        assert store.outbox_counts().pending == 1

    def test_a_full_disk_is_a_state_error_and_writes_nothing(self, tmp_path: Path) -> None:
        """On a full filesystem a write fails as a StateError and leaves the file as it was."""
        with (
            tiny_filesystem(tmp_path / "small", "256k") as folder,
            Store.open(folder / "watcher.db") as store,
        ):
            first = finished_model("m-1")
            store.record_observation(first.state, first.notices, polled_at=minutes(40))
            big = finished_model("m-2")
            with pytest.raises(StateError, match=r"disk is full \(database or disk is full\)"):
                store.record_observation(
                    big.state, big.notices, polled_at=minutes(40), name="x" * 400_000
                )
            assert store.load_states() == {"m-1": first.state}
            assert store.outbox_counts().pending == 1
            store.mark_done(1, minutes(41))  # small writes work again
            assert store.outbox_counts().done == 1

    def test_an_io_error_is_a_state_error(self, state_path: Path) -> None:
        """A write the OS refuses (over RLIMIT_FSIZE) is a StateError; nothing is half-written."""
        result = run_python(
            """
            import resource, signal, sys
            from datetime import UTC, datetime
            from pathlib import Path
            from watcher.errors import StateError
            from watcher.lifecycle import ModelState
            from watcher.store import Store

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            at = datetime(2024, 1, 1, tzinfo=UTC)
            store = Store.open(Path(sys.argv[1]))
            store.record_observation(ModelState("small"), [], polled_at=at)
            resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
            try:
                store.record_observation(ModelState("big"), [], polled_at=at, name="x" * 10**6)
            except StateError as exc:
                print(exc)
            print(sorted(store.load_states()))
            """,
            str(state_path),
        )
        assert result.returncode == 0, result.stderr
        error, states = result.stdout.splitlines()
        assert error.startswith(f"state file {state_path}: recording the state of model big")
        assert "I/O error" in error or "disk is full" in error
        assert states == "['small']"


class TestFiles:
    def test_a_new_file_is_owner_only(self, state_path: Path) -> None:
        """The folder is created 0700 and every file 0600, whatever the umask."""
        old_umask = os.umask(0)
        try:
            with Store.open(state_path) as store:
                store.record_observation(ModelState("m-1"), [], polled_at=T0)
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

    def test_a_new_file_has_the_schema_in_wal_mode(self, store: Store) -> None:
        """The schema version is recorded and the journal is WAL."""
        with raw(store.path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"models", "outbox", "deliveries"} <= tables

    def test_reopening_keeps_everything(self, state_path: Path) -> None:
        """States, names, failures, pending items, deliveries and counts survive a restart."""
        observation = finished_model()
        with Store.open(state_path) as store:
            (notice_id,) = store.record_observation(
                observation.state, observation.notices, polled_at=minutes(40), name="clf"
            )
            store.record_poll_failure("m-2", polled_at=minutes(41), error="HTTP 404", failures=1)
            store.mark_delivered(notice_id, "slack-1", minutes(41))
            store.schedule_retry(
                notice_id, attempts=1, next_attempt_at=minutes(42), error="HTTP 500"
            )
            done_id = store.enqueue_message(
                kind="test", title="t", body="b", notify_type="info", created_at=minutes(41)
            )
            store.mark_done(done_id, minutes(41))
            records, counts = store.model_records(), store.outbox_counts()
            due = store.due_notifications(minutes(42))

        with Store.open(state_path) as store:
            assert store.load_states() == {"m-1": observation.state}
            assert store.model_records() == records
            assert store.outbox_counts() == counts == OutboxCounts(pending=1, done=1, given_up=0)
            assert store.due_notifications(minutes(42)) == due
            assert store.delivered_targets(notice_id) == {"slack-1"}
            new_id = store.enqueue_message(
                kind="test", title="t", body="b", notify_type="info", created_at=minutes(43)
            )
            assert new_id > done_id  # ids are never reused

    def test_close_is_idempotent(self, state_path: Path) -> None:
        """Closing twice is harmless, and closing releases the lock."""
        store = Store.open(state_path)
        store.close()
        store.close()
        Store.open(state_path).close()


class TestLock:
    def test_a_second_store_on_the_same_file_is_refused(self, store: Store) -> None:
        """Two watchers on one state file: the second fails with our pid in the message."""
        with pytest.raises(
            StateLockedError, match=rf"in use by another finetune-watcher \(pid {os.getpid()}\)"
        ):
            Store.open(store.path)
        assert issubclass(StateLockedError, StateError)

    def test_another_process_holding_the_lock_blocks_us(self, state_path: Path) -> None:
        """Another process's lock refuses us; a reader still sees its writes as they land."""
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    """
                    import sys
                    from datetime import UTC, datetime
                    from pathlib import Path
                    from watcher.lifecycle import ModelState
                    from watcher.store import Store

                    at = datetime(2024, 1, 1, tzinfo=UTC)
                    with Store.open(Path(sys.argv[1])) as store:
                        store.record_observation(ModelState("first"), [], polled_at=at)
                        print("locked", flush=True)
                        sys.stdin.readline()
                        store.record_observation(ModelState("second"), [], polled_at=at)
                        print("written", flush=True)
                        sys.stdin.read()
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
                Store.open(state_path)

            with Store.open_readonly(state_path) as reader:
                assert set(reader.load_states()) == {"first"}
                holder.stdin.write("go on\n")
                holder.stdin.flush()
                assert holder.stdout.readline() == "written\n"
                assert set(reader.load_states()) == {"first", "second"}

            holder.stdin.close()
            assert holder.wait(timeout=10) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
            holder.stdout.close()
            assert holder.stderr is not None
            holder.stderr.close()

        with Store.open(state_path) as store:
            assert set(store.load_states()) == {"first", "second"}

    def test_a_reader_cannot_write(self, store: Store) -> None:
        """open_readonly gives a store whose writes fail as a StateError saying it is read-only."""
        store.record_observation(ModelState("m-1"), [], polled_at=T0)
        with (
            Store.open_readonly(store.path) as reader,
            pytest.raises(StateError, match="read-only"),
        ):
            reader.record_polls([("m-1", minutes(1))])
        assert store.model_records()[0].last_poll_at == T0


class TestBadFiles:
    def test_a_file_that_is_not_a_database(self, state_path: Path) -> None:
        """Garbage is refused with advice, and not a byte of it changes."""
        state_path.parent.mkdir()
        garbage = b"this is not a database\n" * 200
        state_path.write_bytes(garbage)
        for opener in (Store.open, Store.open_readonly):
            with pytest.raises(
                StateError,
                match=r"not a readable SQLite database \(file is not a database\); move it aside",
            ):
                opener(state_path)
        assert state_path.read_bytes() == garbage
        assert not Path(f"{state_path}-wal").exists()

    def test_a_corrupt_database(self, state_path: Path) -> None:
        """A SQLite file with damaged pages is refused and left as it is."""
        with Store.open(state_path) as store:
            for i in range(50):
                store.record_observation(ModelState(f"m-{i}"), [], polled_at=T0, name="n" * 200)
        data = bytearray(state_path.read_bytes())
        page_size = int.from_bytes(data[16:18], "big")
        data[page_size : 3 * page_size] = b"\xa5" * (2 * page_size)
        state_path.write_bytes(bytes(data))
        with pytest.raises(StateError, match="is not a readable SQLite database"):
            Store.open(state_path)
        assert state_path.read_bytes() == data

    def test_a_newer_schema_is_not_touched(self, state_path: Path) -> None:
        """A file from a newer watcher is refused by both openers and left unchanged."""
        state_path.parent.mkdir()
        with raw(state_path) as db:
            db.execute("CREATE TABLE models (model_id TEXT, future_column BLOB)")
            db.execute("PRAGMA user_version = 99")
        db.close()
        before = state_path.read_bytes()
        for opener in (Store.open, Store.open_readonly):
            with pytest.raises(
                StateError,
                match=r"written by a newer finetune-watcher \(schema 99, this one understands 1\); "
                "refusing to touch it",
            ):
                opener(state_path)
        assert state_path.read_bytes() == before

    def test_someone_elses_database_is_not_touched(self, state_path: Path) -> None:
        """A SQLite file with tables but no schema version is not ours: refused, unchanged."""
        state_path.parent.mkdir()
        with raw(state_path) as db:
            db.execute("CREATE TABLE invoices (id INTEGER)")
        db.close()
        before = state_path.read_bytes()
        with pytest.raises(StateError, match="not a finetune-watcher one"):
            Store.open(state_path)
        assert state_path.read_bytes() == before

    def test_an_empty_file_becomes_a_state_file(self, state_path: Path) -> None:
        """A zero-byte file (``touch``) is an empty database: the schema is created in it."""
        state_path.parent.mkdir()
        state_path.touch()
        with pytest.raises(StateError, match="is empty"):
            Store.open_readonly(state_path)
        with Store.open(state_path) as store:
            assert store.load_states() == {}

    def test_a_read_only_file(self, state_path: Path) -> None:
        """An unwritable state file is refused by open() and still readable by open_readonly()."""
        with Store.open(state_path) as store:
            store.record_observation(ModelState("m-1"), [], polled_at=T0)
        before = state_path.read_bytes()
        with read_only(state_path):
            with pytest.raises(StateError, match="cannot be opened for writing"):
                Store.open(state_path)
            with Store.open_readonly(state_path) as reader:
                assert set(reader.load_states()) == {"m-1"}
        assert state_path.read_bytes() == before

    def test_a_read_only_folder(self, state_path: Path) -> None:
        """A folder where SQLite cannot create its -wal file is a clear StateError."""
        Store.open(state_path).close()
        with read_only(state_path.parent), pytest.raises(StateError, match="-wal/-shm"):
            Store.open(state_path)

    def test_a_folder_that_cannot_be_created(self, tmp_path: Path) -> None:
        """A state path under a regular file is a StateError naming the folder."""
        (tmp_path / "file").write_text("")
        with pytest.raises(StateError, match="cannot create the folder"):
            Store.open(tmp_path / "file" / "watcher.db")

    def test_a_directory_where_the_file_should_be(self, state_path: Path) -> None:
        """The state path being a directory is a StateError, not a crash."""
        state_path.mkdir(parents=True)
        with pytest.raises(StateError, match="is a directory"):
            Store.open(state_path)

    def test_reading_a_missing_file(self, state_path: Path) -> None:
        """open_readonly never creates anything: a missing file is a StateError."""
        with pytest.raises(StateError, match=r"no state file at .* \(has the watcher run yet\?\)"):
            Store.open_readonly(state_path)
        assert not state_path.parent.exists()
