"""sd_notify and the systemd watchdog: telling the service manager the truth about the daemon.

A notification is one datagram of ``KEY=VALUE`` lines to the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Sending never
raises: systemd being away must not take the daemon down, so the first failure is
logged and later ones stay quiet until a send works again.

The watchdog pings ``WATCHDOG=1`` only while the poll loop's heartbeat is fresh, so
a daemon whose event loop runs but whose poll loop hangs is restarted by systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import anyio
import structlog

__all__ = ["SystemdNotifier", "status_loop", "watchdog_interval", "watchdog_loop"]

log = structlog.get_logger("watcher.systemd")

#: A send blocks at most this long (systemd's queue is large; this only bounds a pathology).
SEND_TIMEOUT = 0.2


class SystemdNotifier:
    """Sends sd_notify datagrams to one socket address; build it with ``from_environ``."""

    def __init__(self, address: str) -> None:
        """``address`` is a filesystem path or ``"\\0name"`` (the abstract namespace)."""
        self.address = address
        self._socket: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier | None:
        """The notifier for ``$NOTIFY_SOCKET``, or None when it is unset (not under systemd).

        ``@name`` means the abstract socket ``\\0name``. Other forms (``vsock:...``)
        are not supported: a warning is logged and None returned.
        """
        environ = os.environ if environ is None else environ
        raw = environ.get("NOTIFY_SOCKET", "")
        if not raw:
            return None
        if raw.startswith("@"):
            return cls("\0" + raw[1:])
        if raw.startswith("/"):
            return cls(raw)
        log.warning("NOTIFY_SOCKET is not a unix socket path; not notifying systemd")
        return None

    def send(self, **fields: str) -> bool:
        """Send ``fields`` as one datagram (``READY="1"`` -> ``READY=1``). True when sent.

        Newlines in a value become spaces (a newline would start a new field).
        Errors are logged once per failing streak and swallowed.
        """
        message = "".join(f"{key}={value.replace(chr(10), ' ')}\n" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.settimeout(SEND_TIMEOUT)
            self._socket.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot notify systemd; carrying on without it",
                    socket=self._label(),
                    error=exc.strerror or type(exc).__name__,
                    fields=sorted(fields),
                )
            return False
        if self._failing:
            self._failing = False
            log.info("notifying systemd works again", socket=self._label())
        return True

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: ``READY=1``, with ``STATUS=`` if given."""
        if status is None:
            self.send(READY="1")
        else:
            self.send(READY="1", STATUS=status)

    def reloading(self) -> None:
        """A reload starts: ``RELOADING=1`` and ``MONOTONIC_USEC`` (orders the reload)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING="1", MONOTONIC_USEC=str(usec))

    def stopping(self) -> None:
        """Shutdown has begun: ``STOPPING=1``."""
        self.send(STOPPING="1")

    def status(self, text: str) -> None:
        """A one-line summary for ``systemctl status``: ``STATUS=...``."""
        self.send(STATUS=text)

    def watchdog(self) -> None:
        """Keep-alive: ``WATCHDOG=1``."""
        self.send(WATCHDOG="1")

    def close(self) -> None:
        """Close the socket. Safe to call twice; a later send opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _label(self) -> str:
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``$WATCHDOG_USEC``.

    None when the watchdog is off: ``$WATCHDOG_USEC`` unset, not a positive integer,
    or ``$WATCHDOG_PID`` set to another process (the variables were inherited).
    """
    environ = os.environ if environ is None else environ
    raw_usec = environ.get("WATCHDOG_USEC", "").strip()
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warning("ignoring an invalid WATCHDOG_USEC", value=raw_usec)
        return None
    raw_pid = environ.get("WATCHDOG_PID", "").strip()
    if raw_pid and raw_pid != str(os.getpid()):
        return None
    return usec / 2 / 1_000_000


async def watchdog_loop(
    notifier: SystemdNotifier,
    *,
    interval: float,
    heartbeat: Callable[[], float],
    stale_after: float,
    clock: Callable[[], float] = anyio.current_time,
) -> None:
    """Ping ``WATCHDOG=1`` every ``interval`` seconds while the poll loop makes progress.

    ``heartbeat()`` is the monotonic time the poll loop last went round
    (``watcher.progress.heartbeat_mono``). When ``clock() - heartbeat()`` exceeds
    ``stale_after`` no ping is sent, so systemd's ``WatchdogSec=`` expires and the
    service is restarted; a warning is logged once per stale period. Runs until cancelled.
    A heartbeat older than the loop itself (the poll loop has not gone round yet, its
    heartbeat still 0) counts from the loop's start: a fresh daemon gets ``stale_after``
    seconds to beat, and is not reported as stalled by ``uptime`` seconds at start-up.
    """
    stale = False
    started = clock()
    while True:
        age = clock() - max(heartbeat(), started)
        if age <= stale_after:
            notifier.watchdog()
            if stale:
                stale = False
                log.info("poll loop is making progress again; watchdog pings resumed")
        elif not stale:
            stale = True
            log.warning(
                "poll loop stalled; withholding watchdog pings so systemd restarts the service",
                heartbeat_age=round(age, 1),
                stale_after=stale_after,
            )
        await anyio.sleep(interval)


async def status_loop(
    notifier: SystemdNotifier, *, status_line: Callable[[], str], every: float = 15.0
) -> None:
    """Refresh ``STATUS=`` with ``status_line()`` every ``every`` seconds, when it changed."""
    last: str | None = None
    while True:
        line = status_line()
        if line != last:
            notifier.status(line)
            last = line
        await anyio.sleep(every)
