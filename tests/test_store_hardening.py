"""The SQLite store against a hostile file system (issue 11, findings 6 and 12), on real files.

Finding 6: the single-daemon lock follows the database file, not the path it was
reached by, and the store never writes through a symbolic link it did not create.
Finding 12: a file corrupted, truncated or deleted under a running store is noticed
by :meth:`~watcher.store.sqlite.SqliteStore.ping` (``/readyz``) and refused by the
next statement with one line naming the corruption.

The damage is done by another process, as it would be in real life: writing into the
database file from this process and closing that descriptor would drop SQLite's own
POSIX locks on it (they belong to the process, not to a descriptor).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from watcher.errors import EX_LOCKED, EX_STATE, StateError, StateLockedError
from watcher.lifecycle import ModelState
from watcher.store.sqlite import SqliteStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
VICTIM_TEXT = b"someone else's precious file\n"


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """A state file in a folder that does not exist yet."""
    return tmp_path / "state" / "watcher.db"


async def make_database(path: Path, models: int = 1) -> None:
    """A state file with ``models`` models in it, closed (its WAL checkpointed)."""
    async with await SqliteStore.open(path) as store:
        for i in range(models):
            await store.record_observation(ModelState(f"m-{i}"), [], polled_at=T0, name="n" * 200)


def victim(tmp_path: Path) -> Path:
    """A file outside the state folder that must survive whatever the store is told."""
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(VICTIM_TEXT)
    return path


def damage(path: Path, *, offset: int, data: bytes | None = None, truncate: bool = False) -> None:
    """Overwrite ``data`` at ``offset`` of ``path`` (or truncate it there) from another process."""
    script = """
        import sys
        path, offset, data, truncate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        with open(path, "r+b") as f:
            if truncate == "1":
                f.truncate(offset)
            else:
                f.seek(offset)
                f.write(bytes.fromhex(data))
    """
    subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(script),
            str(path),
            str(offset),
            (data or b"").hex(),
            "1" if truncate else "0",
        ],
        check=True,
        timeout=30,
    )


def checkpoint(path: Path) -> None:
    """Move every page from the WAL into the database file, as SQLite does on its own."""
    with sqlite3.connect(path, isolation_level=None) as db:
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    db.close()


def page_size_and_count(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    return page_size, len(data) // page_size


def one_line(error: pytest.ExceptionInfo[StateError]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


class TestLockFollowsTheFile:
    """Finding 6: one lock per database file, whichever path names it."""

    @pytest.mark.parametrize("first", ["link", "real"])
    async def test_a_symlink_and_the_real_path_share_one_lock(
        self, tmp_path: Path, first: str
    ) -> None:
        """Opened through a symlink and through the real path, the second open is refused (75)."""
        real = tmp_path / "real" / "watcher.db"
        await make_database(real)
        link = tmp_path / "configured" / "watcher.db"
        link.parent.mkdir()
        link.symlink_to(real)
        one, other = (link, real) if first == "link" else (real, link)
        async with await SqliteStore.open(one):
            with pytest.raises(StateLockedError) as refused:
                await SqliteStore.open(other)
        assert refused.value.exit_code == EX_LOCKED
        assert f"in use by another finetune-watcher (pid {os.getpid()})" in one_line(refused)

    async def test_a_symlink_to_a_database_is_followed(self, tmp_path: Path) -> None:
        """A state path linked to an existing state file works; its companions sit by the file."""
        real = tmp_path / "real" / "watcher.db"
        await make_database(real)
        link = tmp_path / "configured" / "watcher.db"
        link.parent.mkdir()
        link.symlink_to(real)
        async with await SqliteStore.open(link) as store:
            await store.record_observation(ModelState("via-link"), [], polled_at=T0)
            assert (tmp_path / "real" / "watcher.db.lock").is_file()
            assert (tmp_path / "real" / "watcher.db-wal").is_file()
        assert sorted(p.name for p in link.parent.iterdir()) == ["watcher.db"]
        async with await SqliteStore.open(real) as store:
            assert {k.id for k in await store.load_states()} == {"m-0", "via-link"}

    async def test_a_hard_link_is_refused(self, tmp_path: Path) -> None:
        """A state file with a second name is refused by both names: the lock could not tell."""
        real = tmp_path / "real" / "watcher.db"
        await make_database(real)
        other = tmp_path / "other" / "watcher.db"
        other.parent.mkdir()
        os.link(real, other)
        for path in (real, other):
            with pytest.raises(StateError) as refused:
                await SqliteStore.open(path)
            assert refused.value.exit_code == EX_STATE
            assert f"state file {path} has 2 hard links" in one_line(refused)

    async def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(
        self, tmp_path: Path, state_path: Path
    ) -> None:
        """A planted ``watcher.db.lock -> precious`` is refused (74); the target is intact."""
        precious = victim(tmp_path)
        state_path.parent.mkdir()
        lock = Path(f"{state_path}.lock")
        lock.symlink_to(precious)
        with pytest.raises(StateError) as refused:
            await SqliteStore.open(state_path)
        assert type(refused.value) is StateError
        assert refused.value.exit_code == EX_STATE
        assert f"lock file {lock} is a symbolic link; refusing to follow it" in one_line(refused)
        assert precious.read_bytes() == VICTIM_TEXT
        assert lock.is_symlink()
        assert not state_path.exists()

    async def test_a_state_path_linked_to_an_empty_file_is_refused_and_untouched(
        self, tmp_path: Path, state_path: Path
    ) -> None:
        """A link to an empty file never makes it a database: refused (74), nothing created."""
        empty = tmp_path / "elsewhere" / "empty"
        empty.parent.mkdir()
        empty.touch()
        state_path.parent.mkdir()
        state_path.symlink_to(empty)
        with pytest.raises(StateError) as refused:
            await SqliteStore.open(state_path)
        assert refused.value.exit_code == EX_STATE
        assert f"state file {state_path} is a symbolic link to an empty file ({empty})" in one_line(
            refused
        )
        assert empty.read_bytes() == b""
        assert sorted(p.name for p in empty.parent.iterdir()) == ["empty"]

    async def test_a_dangling_state_link_is_refused_and_nothing_is_created(
        self, tmp_path: Path, state_path: Path
    ) -> None:
        """A link to nowhere is refused (74) rather than followed to create a file there."""
        target = tmp_path / "elsewhere" / "watcher.db"
        target.parent.mkdir()
        state_path.parent.mkdir()
        state_path.symlink_to(target)
        with pytest.raises(StateError) as refused:
            await SqliteStore.open(state_path)
        assert (
            f"state file {state_path} is a symbolic link to {target}, which does not exist"
            in one_line(refused)
        )
        assert list(target.parent.iterdir()) == []

    @pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
    async def test_a_linked_companion_file_is_refused_and_its_target_untouched(
        self, tmp_path: Path, state_path: Path, suffix: str
    ) -> None:
        """SQLite would follow a planted ``watcher.db-wal`` link and write there: refused (74)."""
        await make_database(state_path)
        precious = victim(tmp_path)
        companion = Path(f"{state_path}{suffix}")
        companion.symlink_to(precious)
        with pytest.raises(StateError) as refused:
            async with await SqliteStore.open(state_path) as store:
                await store.record_observation(ModelState("m-9"), [], polled_at=T0)
        assert f"{companion} is a symbolic link; refusing to follow it" in one_line(refused)
        assert precious.read_bytes() == VICTIM_TEXT

    async def test_a_fifo_as_state_file_is_refused(self, state_path: Path) -> None:
        """A state path that is not a regular file is refused with one line (74), never opened."""
        state_path.parent.mkdir()
        os.mkfifo(state_path)
        with pytest.raises(StateError) as refused:
            await SqliteStore.open(state_path)
        assert f"state file {state_path} is not a regular file" in one_line(refused)


class TestCorruptionWhileRunning:
    """Finding 12: damage under a running store turns ``ping()`` false and refuses statements."""

    async def test_pages_overwritten_under_a_running_store(self, state_path: Path) -> None:
        """Garbage over middle pages: ping() is False, the next write names the corruption."""
        await make_database(state_path, models=300)
        async with await SqliteStore.open(state_path) as store:
            store.integrity_check_interval = 0.0  # check the whole file at every ping
            await store.record_observation(ModelState("before"), [], polled_at=T0)
            assert await store.ping() is True
            checkpoint(state_path)
            page_size, pages = page_size_and_count(state_path)
            assert pages > 20
            damage(state_path, offset=page_size * (pages // 3), data=b"\xa5" * page_size * 5)

            assert await store.ping() is False
            with pytest.raises(StateError) as refused:
                await store.record_observation(ModelState("after"), [], polled_at=T0)
            assert refused.value.exit_code == EX_STATE
            message = one_line(refused)
            assert message.startswith(f"state file {state_path} is corrupt")
            assert "move it aside" in message
            assert await store.ping() is False  # and it stays so
            with pytest.raises(StateError, match="is corrupt"):
                await store.outbox_counts()

    async def test_a_statement_meeting_corruption_turns_ping_false(self, state_path: Path) -> None:
        """A read that meets a damaged page is a StateError naming it; ping() follows at once."""
        await make_database(state_path, models=300)
        async with await SqliteStore.open(state_path) as store:
            store.integrity_check_interval = 3600.0  # only the statement can find it
            checkpoint(state_path)
            page_size, pages = page_size_and_count(state_path)
            damage(state_path, offset=page_size * (pages // 3), data=b"\xa5" * page_size * 5)
            with pytest.raises(StateError) as refused:
                await store.model_records()
            assert one_line(refused).startswith(f"state file {state_path} is corrupt")
            assert "database disk image is malformed" in str(refused.value)
            assert await store.ping() is False

    async def test_a_file_truncated_under_a_running_store(self, state_path: Path) -> None:
        """A state file emptied while running is seen by the cheap part of ping() at once."""
        await make_database(state_path, models=10)
        async with await SqliteStore.open(state_path) as store:
            store.integrity_check_interval = 3600.0
            assert await store.ping() is True
            damage(state_path, offset=0, truncate=True)
            assert await store.ping() is False
            with pytest.raises(StateError) as refused:
                await store.record_polls([(ModelState("m-1").key, T0)])
            assert one_line(refused).startswith(f"state file {state_path} is corrupt")

    async def test_a_file_deleted_under_a_running_store(self, state_path: Path) -> None:
        """A state file removed (or replaced) while running would lose every later write."""
        await make_database(state_path, models=10)
        async with await SqliteStore.open(state_path) as store:
            store.integrity_check_interval = 3600.0
            state_path.unlink()
            assert await store.ping() is False
            with pytest.raises(StateError) as refused:
                await store.record_observation(ModelState("lost"), [], polled_at=T0)
            assert f"state file {state_path} was deleted or replaced" in one_line(refused)

    async def test_a_healthy_file_stays_ready(self, state_path: Path) -> None:
        """No false alarm while the store writes and checkpoints during whole-file checks."""
        await make_database(state_path, models=300)
        async with await SqliteStore.open(state_path) as store:
            store.integrity_check_interval = 0.0
            writing = True

            async def write() -> None:
                i = 0
                while writing:
                    await store.record_observation(
                        ModelState(f"w-{i}"), [], polled_at=T0, name="w" * 300
                    )
                    if i % 25 == 0:
                        checkpoint(state_path)
                    i += 1
                    await asyncio.sleep(0)

            writer = asyncio.create_task(write())
            try:
                for _ in range(30):
                    assert await store.ping() is True
            finally:
                writing = False
                await writer
            assert await store.ping() is True
        async with await SqliteStore.open_readonly(state_path) as reader:
            reader.integrity_check_interval = 0.0
            assert await reader.ping() is True
