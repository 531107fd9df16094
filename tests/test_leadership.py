"""The daemon's side of leadership, without a database: readiness by role, the send window,
the send timeout under a lease, which errors mean "stand by", and the leader views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from watcher.errors import StateError, StateUnavailableError
from watcher.health import readiness
from watcher.leadership import send_timeout, send_window, state_error_in
from watcher.progress import Progress
from watcher.store.lease import LeaderInfo, Leadership, LeaseLostError, SoleLeadership, Term
from watcher.views import leader_document, leader_line

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


class TestReadinessByRole:
    def test_a_standby_is_ready_once_the_database_answers(self) -> None:
        verdict = readiness(Progress(), deadline=60, database_ok=True, now=0, role="standby")
        assert verdict.healthy
        assert verdict.body == {"status": "ready", "role": "standby"}

    def test_a_standby_without_its_database_is_not_ready(self) -> None:
        verdict = readiness(Progress(), deadline=60, database_ok=False, now=0, role="standby")
        assert not verdict.healthy
        assert verdict.body["reasons"] == ["state database unusable"]
        assert verdict.body["role"] == "standby"

    def test_a_leader_needs_a_round(self) -> None:
        verdict = readiness(Progress(), deadline=60, database_ok=True, now=0, role="leader")
        assert not verdict.healthy
        assert verdict.body["role"] == "leader"


class _Backend:
    """Never used: the lease's term is set by hand."""


def lease_with(term: Term | None, ttl: float = 2.0) -> Leadership:
    lease = Leadership(_Backend(), ttl=ttl, holder="me")  # type: ignore[arg-type]
    lease._term = term
    return lease


class TestSendWindow:
    def test_the_send_timeout_is_capped_at_half_the_ttl(self) -> None:
        assert send_timeout(30.0, SoleLeadership()) == 30.0
        assert send_timeout(30.0, lease_with(None, ttl=15)) == 7.5
        assert send_timeout(1.0, lease_with(None, ttl=15)) == 1.0

    async def test_open_when_enough_is_left(self) -> None:
        term = Term("me", 1, None, valid_until=anyio.current_time() + 1.5)
        with anyio.fail_after(0.5):
            await send_window(lease_with(term), lambda: 1.0)()

    async def test_waits_for_the_next_renewal(self) -> None:
        term = Term("me", 1, None, valid_until=anyio.current_time() + 0.5)
        window = send_window(lease_with(term), lambda: 1.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(window)
            await anyio.sleep(0.1)
            term.valid_until = anyio.current_time() + 1.8  # renewed
        assert term.remaining(anyio.current_time()) > 1.0

    async def test_a_lost_term_refuses(self) -> None:
        term = Term("me", 1, None, valid_until=anyio.current_time() + 0.5)
        window = send_window(lease_with(term), lambda: 1.0)

        async def lose_soon() -> None:
            await anyio.sleep(0.1)
            term.end("another replica holds the lease")

        async with anyio.create_task_group() as tg:
            tg.start_soon(lose_soon)
            with pytest.raises(LeaseLostError):
                await window()

    async def test_sole_leadership_always_sends(self) -> None:
        with anyio.fail_after(0.1):
            await send_window(SoleLeadership(), lambda: 3600.0)()


class TestStateErrorIn:
    def test_a_lost_lease_anywhere_wins(self) -> None:
        lost = LeaseLostError("gone")
        group = ExceptionGroup("x", [StateUnavailableError("down"), ExceptionGroup("y", [lost])])
        assert state_error_in(group) is lost

    def test_unavailable_only_when_every_error_is(self) -> None:
        down = StateUnavailableError("down")
        assert state_error_in(ExceptionGroup("x", [down])) is down
        assert state_error_in(ExceptionGroup("x", [down, StateError("corrupt")])) is None
        assert state_error_in(ValueError("bug")) is None


class TestLeaderViews:
    INFO = LeaderInfo(
        holder="host-a:12:abcdef",
        epoch=3,
        acquired_at=NOW - timedelta(minutes=5),
        renewed_at=NOW,
        expires_at=NOW + timedelta(seconds=15),
        live=True,
    )

    def test_document(self) -> None:
        assert leader_document(self.INFO) == {
            "holder": "host-a:12:abcdef",
            "epoch": 3,
            "since": "2026-11-30T09:55:00Z",
            "expires_at": "2026-11-30T10:00:15Z",
            "live": True,
        }
        assert leader_document(None) is None

    def test_line(self) -> None:
        assert leader_line(self.INFO, NOW) == "leader: host-a:12:abcdef (epoch 3) since 5m ago"
        assert leader_line(None, NOW) is None
        expired = LeaderInfo(
            holder="host-a:12:abcdef", epoch=3, acquired_at=NOW, renewed_at=NOW,
            expires_at=NOW - timedelta(seconds=30), live=False,
        )  # fmt: skip
        line = leader_line(expired, NOW)
        assert line is not None
        assert line.startswith("leader: none (the lease of host-a:12:abcdef, epoch 3, expired")
