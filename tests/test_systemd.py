"""sd_notify against real unix datagram sockets; the watchdog stops when the loop is stuck."""

from __future__ import annotations

import inspect
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

import watcher.daemon
from tests.conftest import SIM_KEY, base_config, daemon, write_config
from watcher.simulator import Scenario, running_simulator
from watcher.systemd import SystemdNotifier, status_loop, watchdog_interval, watchdog_loop


class Listener:
    """The service manager's end: a bound datagram socket that collects what arrives."""

    def __init__(self, sock: socket.socket, environ_value: str) -> None:
        self.sock = sock
        self.environ_value = environ_value  # what $NOTIFY_SOCKET would hold
        self.notifiers: list[SystemdNotifier] = []

    def notifier(self) -> SystemdNotifier:
        """A notifier built from $NOTIFY_SOCKET as systemd would set it; closed at teardown."""
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": self.environ_value})
        assert notifier is not None
        self.notifiers.append(notifier)
        return notifier

    def close(self) -> None:
        for notifier in self.notifiers:
            notifier.close()

    def receive(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def drain(self) -> list[bytes]:
        """Every datagram waiting now, without blocking."""
        self.sock.setblocking(False)
        received = []
        while True:
            try:
                received.append(self.sock.recv(65536))
            except BlockingIOError:
                return received


@pytest.fixture
def path_listener() -> Iterator[Listener]:
    # A short directory: a unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sd-") as directory:
        path = str(Path(directory) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            listener = Listener(sock, path)
            yield listener
            listener.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"finetune-watcher-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        listener = Listener(sock, "@" + name)
        yield listener
        listener.close()


class TestFromEnviron:
    def test_unset_or_empty_means_not_under_systemd(self) -> None:
        """Without $NOTIFY_SOCKET there is no notifier."""
        assert SystemdNotifier.from_environ({}) is None
        assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": ""}) is None

    def test_path(self) -> None:
        """A path is used as it is."""
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify"})
        assert notifier is not None
        assert notifier.address == "/run/systemd/notify"

    def test_abstract_name(self) -> None:
        """``@name`` is the abstract socket ``\\0name``."""
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@sd-notify-42"})
        assert notifier is not None
        assert notifier.address == "\0sd-notify-42"

    def test_unsupported_form_is_skipped_with_a_warning(self) -> None:
        """A vsock address (VM guests) is not supported: warn and carry on without systemd."""
        with capture_logs() as logs:
            assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
        assert [entry["log_level"] for entry in logs] == ["warning"]


class TestDatagrams:
    def test_ready(self, path_listener: Listener) -> None:
        """``ready()`` sends exactly READY=1."""
        path_listener.notifier().ready()
        assert path_listener.receive() == b"READY=1\n"

    def test_ready_with_status(self, path_listener: Listener) -> None:
        """``ready(status)`` sends READY=1 and STATUS= in one datagram."""
        path_listener.notifier().ready("watching 12 models, 3 in progress")
        assert path_listener.receive() == b"READY=1\nSTATUS=watching 12 models, 3 in progress\n"

    def test_status(self, path_listener: Listener) -> None:
        """``status(text)`` sends STATUS=text; a newline cannot start a forged field."""
        notifier = path_listener.notifier()
        notifier.status("last poll 4s ago")
        notifier.status("line one\nREADY=1")
        assert path_listener.receive() == b"STATUS=last poll 4s ago\n"
        assert path_listener.receive() == b"STATUS=line one READY=1\n"

    def test_reloading_carries_the_monotonic_time(self, path_listener: Listener) -> None:
        """RELOADING=1 comes with MONOTONIC_USEC, the CLOCK_MONOTONIC time of sending in µs."""
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        path_listener.notifier().reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        lines = path_listener.receive().decode().splitlines()
        assert lines[0] == "RELOADING=1"
        key, _, value = lines[1].partition("=")
        assert key == "MONOTONIC_USEC"
        assert before <= int(value) <= after
        assert len(lines) == 2

    def test_stopping(self, path_listener: Listener) -> None:
        """``stopping()`` sends exactly STOPPING=1."""
        path_listener.notifier().stopping()
        assert path_listener.receive() == b"STOPPING=1\n"

    def test_watchdog(self, path_listener: Listener) -> None:
        """``watchdog()`` sends exactly WATCHDOG=1."""
        path_listener.notifier().watchdog()
        assert path_listener.receive() == b"WATCHDOG=1\n"

    def test_abstract_namespace(self, abstract_listener: Listener) -> None:
        """The ``@name`` form reaches a socket bound in the abstract namespace."""
        notifier = abstract_listener.notifier()
        notifier.ready()
        notifier.watchdog()
        assert abstract_listener.receive() == b"READY=1\n"
        assert abstract_listener.receive() == b"WATCHDOG=1\n"

    def test_close_is_idempotent_and_a_later_send_reopens(self, path_listener: Listener) -> None:
        """``close()`` twice is fine; sending afterwards still works."""
        notifier = path_listener.notifier()
        notifier.close()
        notifier.close()
        assert notifier.send(READY="1")
        assert path_listener.receive() == b"READY=1\n"
        notifier.close()


class TestSendFailures:
    def test_missing_socket_does_not_crash_and_warns_once(self, tmp_path: Path) -> None:
        """Sends to a socket that does not exist return False and log one warning in all."""
        notifier = SystemdNotifier(str(tmp_path / "absent"))
        with capture_logs() as logs:
            assert notifier.send(READY="1") is False
            notifier.ready()
            notifier.watchdog()
            notifier.stopping()
        assert [entry["log_level"] for entry in logs] == ["warning"]
        assert logs[0]["socket"] == str(tmp_path / "absent")
        notifier.close()

    def test_recovers_when_the_socket_appears(self) -> None:
        """After a failure, a send that works again is logged once and delivered."""
        with tempfile.TemporaryDirectory(prefix="sd-") as directory:
            path = str(Path(directory) / "notify")
            notifier = SystemdNotifier(path)
            with capture_logs() as logs:
                assert notifier.send(WATCHDOG="1") is False
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    sock.bind(path)
                    assert notifier.send(WATCHDOG="1") is True
                    assert notifier.send(WATCHDOG="1") is True
                    sock.settimeout(2)
                    assert sock.recv(100) == b"WATCHDOG=1\n"
            notifier.close()
        assert [entry["log_level"] for entry in logs] == ["warning", "info"]


class TestWatchdogInterval:
    @pytest.mark.parametrize(
        ("environ", "expected"),
        [
            ({}, None),
            ({"WATCHDOG_USEC": ""}, None),
            ({"WATCHDOG_USEC": "60000000"}, 30.0),
            ({"WATCHDOG_USEC": "1000000"}, 0.5),
            ({"WATCHDOG_USEC": " 60000000 "}, 30.0),
        ],
    )
    def test_half_of_watchdog_usec(self, environ: dict[str, str], expected: float | None) -> None:
        """The ping interval is half of $WATCHDOG_USEC, in seconds; unset means off."""
        assert watchdog_interval(environ) == expected

    @pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
    def test_invalid_value_is_ignored_with_a_warning(self, value: str) -> None:
        """A value that is not a positive integer turns the watchdog off, with a warning."""
        with capture_logs() as logs:
            assert watchdog_interval({"WATCHDOG_USEC": value}) is None
        assert [entry["log_level"] for entry in logs] == ["warning"]

    def test_watchdog_pid_of_this_process(self) -> None:
        """$WATCHDOG_PID naming this process keeps the watchdog on."""
        environ = {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
        assert watchdog_interval(environ) == 30.0

    @pytest.mark.parametrize("pid", ["1", "not-a-pid"])
    def test_watchdog_pid_of_another_process(self, pid: str) -> None:
        """Inherited variables meant for another process (or garbage) turn it off."""
        environ = {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": pid}
        assert watchdog_interval(environ) is None


class FakeTime:
    """A monotonic clock and a heartbeat the test moves by hand; counts clock reads."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.beat = 5000.0
        self.reads = 0

    def clock(self) -> float:
        self.reads += 1
        return self.now

    def heartbeat(self) -> float:
        return self.beat

    async def rounds(self, count: int) -> None:
        """Wait until the loop has read the clock ``count`` more times."""
        target = self.reads + count
        with anyio.fail_after(5):
            while self.reads < target:
                await anyio.sleep(0)


async def received(listener: Listener, count: int) -> list[bytes]:
    """Wait for at least ``count`` datagrams; returns all that arrived."""
    got: list[bytes] = []
    with anyio.fail_after(5):
        while len(got) < count:
            got.extend(listener.drain())
            await anyio.sleep(0)
    return got


class TestWatchdogLoop:
    async def test_pings_only_while_the_heartbeat_is_fresh(self, path_listener: Listener) -> None:
        """Pings while fresh, none while stuck (one warning per stale period), again when fresh."""
        notifier = path_listener.notifier()
        fake = FakeTime()
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: watchdog_loop(
                        notifier,
                        interval=0.001,
                        heartbeat=fake.heartbeat,
                        stale_after=30.0,
                        clock=fake.clock,
                    )
                )
                assert set(await received(path_listener, 3)) == {b"WATCHDOG=1\n"}

                fake.now += 30.0  # exactly at the limit: still fresh
                await fake.rounds(2)
                path_listener.drain()
                await fake.rounds(3)
                assert path_listener.drain()

                fake.now += 0.5  # the poll loop is stuck
                await fake.rounds(2)
                path_listener.drain()  # pings sent before the loop saw the stale heartbeat
                await fake.rounds(20)
                assert path_listener.drain() == []

                fake.beat = fake.now  # progress again
                assert set(await received(path_listener, 2)) == {b"WATCHDOG=1\n"}

                fake.now += 100.0  # stuck a second time
                await fake.rounds(2)
                path_listener.drain()
                await fake.rounds(10)
                assert path_listener.drain() == []
                tg.cancel_scope.cancel()
        notifier.close()
        levels = [(entry["log_level"], entry["event"].split(";")[0]) for entry in logs]
        assert levels == [
            ("warning", "poll loop stalled"),
            ("info", "poll loop is making progress again"),
            ("warning", "poll loop stalled"),
        ]
        assert logs[0]["heartbeat_age"] == 30.5

    async def test_no_heartbeat_yet_counts_from_the_start(self, path_listener: Listener) -> None:
        """A poll loop that has not beaten yet (heartbeat 0.0, the clock at the host's
        uptime) is not stalled: it has stale_after seconds from the watchdog's start."""
        notifier = path_listener.notifier()
        fake = FakeTime()
        fake.beat = 0.0
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: watchdog_loop(
                        notifier,
                        interval=0.001,
                        heartbeat=fake.heartbeat,
                        stale_after=30.0,
                        clock=fake.clock,
                    )
                )
                assert set(await received(path_listener, 3)) == {b"WATCHDOG=1\n"}
                fake.now += 30.5  # still no beat, past the grace period: stalled
                await fake.rounds(2)
                path_listener.drain()
                await fake.rounds(5)
                assert path_listener.drain() == []
                tg.cancel_scope.cancel()
        notifier.close()
        assert [(e["log_level"], e["heartbeat_age"]) for e in logs] == [("warning", 30.5)]

    async def test_a_missing_socket_does_not_stop_the_loop(self, tmp_path: Path) -> None:
        """The loop keeps going (and keeps quiet) when systemd's socket is gone."""
        notifier = SystemdNotifier(str(tmp_path / "gone"))
        fake = FakeTime()
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: watchdog_loop(
                        notifier,
                        interval=0.001,
                        heartbeat=fake.heartbeat,
                        stale_after=30.0,
                        clock=fake.clock,
                    )
                )
                await fake.rounds(10)
                tg.cancel_scope.cancel()
        notifier.close()
        assert [entry["log_level"] for entry in logs] == ["warning"]


class TestStatusLoop:
    async def test_sends_the_status_line_when_it_changes(self, path_listener: Listener) -> None:
        """STATUS= is sent for each new line, not repeated while the line stays the same."""
        notifier = path_listener.notifier()
        lines = iter(["a", "a", "a", "b", "b"])
        calls = 0

        def status_line() -> str:
            nonlocal calls
            calls += 1
            return next(lines, "b")

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: status_loop(notifier, status_line=status_line, every=0.001))
            with anyio.fail_after(5):
                while calls < 8:
                    await anyio.sleep(0)
            tg.cancel_scope.cancel()
        notifier.close()
        assert path_listener.drain() == [b"STATUS=a\n", b"STATUS=b\n"]


def daemon_uses_systemd() -> bool:
    return "SystemdNotifier" in inspect.getsource(watcher.daemon)


class TestDaemonUnderSystemd:
    @pytest.mark.skipif(
        not daemon_uses_systemd(),
        reason="watcher.daemon.serve does not use watcher.systemd yet (the lead wires it)",
    )
    async def test_ready_watchdog_reload_and_stopping(self, tmp_path: Path) -> None:
        """The real daemon: READY+STATUS, WATCHDOG pings, RELOADING then READY, STOPPING."""
        scenario = Scenario.model_validate(
            {
                "api_key": SIM_KEY,
                "clock": "manual",
                "models": [{"id": "model-a", "timeline": [[0, "STATUS_FINETUNING"]]}],
            }
        )
        with tempfile.TemporaryDirectory(prefix="sd-") as directory:
            path = str(Path(directory) / "notify")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(path)
                listener = Listener(sock, path)
                pending: list[str] = []

                async def next_message(prefix: str) -> str:
                    """The next datagram starting with ``prefix``; others before it are skipped."""
                    with anyio.fail_after(15):
                        while True:
                            pending.extend(d.decode() for d in listener.drain())
                            while pending:
                                text = pending.pop(0)
                                if text.startswith(prefix):
                                    return text
                            await anyio.sleep(0.01)

                async with running_simulator(scenario) as sim:
                    config = write_config(
                        tmp_path / "watcher.yaml",
                        base_config(sim.base_url, tmp_path, ["model-a"], []),
                    )
                    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
                    async with daemon(config, env=env) as proc:
                        ready = await next_message("READY=1")
                        assert ready.startswith("READY=1\nSTATUS=watching 1 model")
                        assert await next_message("WATCHDOG=1") == "WATCHDOG=1\n"
                        proc.send(signal.SIGHUP)
                        assert "\nMONOTONIC_USEC=" in await next_message("RELOADING=1")
                        assert (await next_message("READY=1")).startswith("READY=1\n")
                        proc.send(signal.SIGTERM)
                        assert await next_message("STOPPING=1") == "STOPPING=1\n"
                        assert await proc.wait_exit(10) == 0, proc.log()
