"""Signals, in one place: what SIGHUP, SIGTERM and SIGINT mean to the process.

* Before the daemon runs (``exit_early_on_sigterm``): SIGTERM is a clean exit 0 -- nothing
  has been half-written yet (``docker stop``, ``systemctl stop`` right after start).
* From the first moment the daemon's event loop runs (``handle_daemon_signals``, started
  before anything is opened): SIGHUP reloads the configuration; the first SIGTERM/SIGINT
  stops gracefully (while still starting: the start is abandoned and what was opened is
  closed), a second one stops at once.
* One-off commands (``first_signal``): wait for the first of some signals.

Handlers only set flags or call the callbacks they are given; shutdown itself is the
daemon's (``watcher.daemon``).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import NoReturn

import anyio
import anyio.abc
import structlog

from watcher.errors import EX_OK

__all__ = ["exit_early_on_sigterm", "first_signal", "handle_daemon_signals"]

log = structlog.get_logger("watcher.signals")


def _exit_ok(signum: int, frame: object) -> NoReturn:
    raise SystemExit(EX_OK)


def exit_early_on_sigterm() -> None:
    """Until the daemon's own handler takes over, SIGTERM exits 0 (main thread only)."""
    signal.signal(signal.SIGTERM, _exit_ok)


async def first_signal(*signums: signal.Signals) -> signal.Signals:
    """Wait for the first of ``signums`` (default SIGTERM, SIGINT) and return it."""
    wanted = signums or (signal.SIGTERM, signal.SIGINT)
    with anyio.open_signal_receiver(*wanted) as signals:
        async for signum in signals:
            return signal.Signals(signum)
    raise RuntimeError("signal receiver closed")  # pragma: no cover -- it never ends


async def handle_daemon_signals(
    *,
    reload: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
    stop_now: Callable[[], None],
    stopping: Callable[[], bool],
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """SIGHUP awaits ``reload()``; the first SIGTERM/SIGINT calls ``stop()``, a second one
    (``stopping()`` is true) ``stop_now()``. Runs until cancelled or stopped at once.

    Started with ``TaskGroup.start`` it reports started once the loop receives the
    signals: from then on no signal reaches the early handler (whose ``SystemExit``,
    raised in whatever frame runs inside the event loop, could be lost there)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                await reload()
                continue
            if stopping():
                log.warning("second signal; stopping now", signal=name)
                stop_now()
                return
            log.info("stopping", signal=name)
            stop()
