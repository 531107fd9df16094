"""Hardening of the health/web server (issue 11, finding 3): its port must not stop the watcher.

* (a) 1,100 slow clients (each opens a connection, sends half a request and stalls) against
  a daemon whose descriptor limit is 1,024: ``/healthz`` still answers within 1 s, the log
  holds at most a few lines about it, and a READY is still delivered within interval + 1 s.
  Before the fix the daemon ran out of descriptors: ``/healthz`` and the webhook delivery
  failed, and asyncio logged "socket.accept() out of system resource" in a tight loop.
* (b) ``/metrics`` of 5,000 models hammered by 8 scrapers: polling keeps more than half
  of its unscraped rate. Before the fix each scrape built the page on the event loop.
* The descriptor limit is raised to the hard limit at start, and the connection cap is
  derived from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest
import yaml
from prometheus_client import generate_latest

from tests.conftest import ROOT, SIM_KEY, base_config, cli_env, write_config
from tests.receivers import LOOPBACK, free_port, webhook_receiver
from tests.test_reliability import T0, timeline
from watcher.health import MAX_CONNECTIONS, METRICS_PER_SECOND, HealthServer, connection_cap
from watcher.metrics import Metrics, ModelRow
from watcher.providers.cohere import READY
from watcher.simulator import Scenario, running_simulator

#: The soft *and* hard descriptor limit of the attacked daemon: nothing to raise it to.
NOFILE = 1024
SLOW_CLIENTS = 1100
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@asynccontextmanager
async def limited_daemon(
    config: Path, *, nofile: tuple[int, int], log_path: Path
) -> AsyncIterator[anyio.abc.Process]:
    """``finetune-watcher run -c CONFIG`` with ``RLIMIT_NOFILE`` set to ``nofile`` (soft,
    hard) before the interpreter starts; killed if the test leaves it running."""
    soft, hard = nofile
    launcher = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'watcher', *sys.argv[1:]])\n"
    )
    with log_path.open("ab") as log_file:
        process = await anyio.open_process(
            [sys.executable, "-c", launcher, "run", "-c", str(config), "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=cli_env(), cwd=ROOT,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()


async def get_status(url: str, timeout: float) -> tuple[int, float]:
    """GET ``url`` on a new connection (as a probe does): (status or 0, seconds taken)."""
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url) as answer,
        ):
            await answer.read()
            return answer.status, time.monotonic() - started
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0, time.monotonic() - started


async def wait_healthy(url: str, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while (await get_status(url, 1.0))[0] != 200:
            await anyio.sleep(0.1)


class SlowClients:
    """``count`` connections that each send half a request and then say nothing."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.opened = 0
        self.refused = 0
        self._streams: list[anyio.abc.SocketStream] = []

    async def open_all(self) -> None:
        limiter = anyio.CapacityLimiter(100)

        async def one() -> None:
            async with limiter:
                try:
                    with anyio.fail_after(5):
                        stream = await anyio.connect_tcp(LOOPBACK, self.port)
                        await stream.send(HALF_REQUEST)
                except (OSError, TimeoutError, anyio.BrokenResourceError):
                    self.refused += 1
                    return
                self._streams.append(stream)
                self.opened += 1

        async with anyio.create_task_group() as tg:
            for _ in range(self.count):
                tg.start_soon(one)

    async def aclose(self) -> None:
        for stream in self._streams:
            with suppress(Exception):
                await stream.aclose()


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def about_descriptors(lines: list[str]) -> list[str]:
    words = ("out of system resource", "Too many open files", "accept", "EMFILE", "connection")
    return [line for line in lines if any(word in line for word in words)]


@pytest.mark.realtime
class TestSlowClients:
    async def test_1100_slow_clients_do_not_stop_health_or_deliveries(self, tmp_path: Path) -> None:
        """The daemon's limit is 1,024 descriptors (soft and hard); 1,100 slow clients hold
        connections to its health port. /healthz answers each probe within 1 s, the log
        has at most 3 lines about it, and a READY during the attack is delivered within
        interval + 1 s."""
        interval = 1.0
        model = "c0ffee00-attacked"
        spec = Scenario.model_validate(
            {"api_key": SIM_KEY, "clock": "manual", "start": T0.isoformat(),
             "models": [{"id": model, "timeline": timeline(READY, at=100)}]}
        )  # fmt: skip
        port = free_port()
        log_path = tmp_path / "daemon.log"
        async with running_simulator(spec) as sim, webhook_receiver() as hook:
            config = base_config(sim.base_url, tmp_path, [model], [hook.url], interval=interval)
            config["health"] = {"listen": f"{LOOPBACK}:{port}"}
            path = write_config(tmp_path / "watcher.yaml", config)
            url = f"http://{LOOPBACK}:{port}/healthz"
            async with limited_daemon(path, nofile=(NOFILE, NOFILE), log_path=log_path) as proc:
                await wait_healthy(url)
                sim.advance(2)  # FINETUNING: seen, and no notice for it
                await anyio.sleep(2 * interval)
                before = len(log_lines(log_path))
                attackers = SlowClients(port, SLOW_CLIENTS)
                probes: list[tuple[int, float]] = []
                try:
                    with anyio.move_on_after(30):
                        await attackers.open_all()
                    descriptors = 0
                    for _ in range(16):  # 4 s of probes, every 0.25 s, each on its own
                        probes.append(await get_status(url, 1.0))
                        descriptors = max(descriptors, open_descriptors(proc.pid))
                        await anyio.sleep(0.25)
                    sim.advance(200)  # READY now, in the middle of the attack
                    happened = time.monotonic()
                    with anyio.move_on_after(interval + 10):
                        await hook.wait_for(1, timeout=interval + 10)
                    latency = time.monotonic() - happened
                    for _ in range(4):
                        probes.append(await get_status(url, 1.0))
                        await anyio.sleep(0.25)
                finally:
                    await attackers.aclose()
                with anyio.fail_after(10):
                    await wait_healthy(url)
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(10):
                    code = await proc.wait()
        attack_log = log_lines(log_path)[before:]
        noisy = about_descriptors(attack_log)
        print(
            f"\nslow clients opened {attackers.opened}, refused {attackers.refused}; "
            f"probes {[(s, round(t, 3)) for s, t in probes]}; READY latency {latency:.2f}s; "
            f"daemon's descriptors at most {descriptors}; "
            f"log lines during attack {len(attack_log)} ({len(noisy)} about connections, "
            f"{sum(len(line) for line in attack_log)} bytes)"
        )
        assert [status for status, _ in probes] == [200] * len(probes), probes
        assert max(taken for _, taken in probes) < 1.0, probes
        assert len(hook.messages) == 1, hook.messages
        assert latency < interval + 1.0, latency
        assert len(noisy) <= 3, noisy[:5]
        assert descriptors <= MAX_CONNECTIONS + 64, descriptors  # the rest stays in reserve
        assert code == 0, log_lines(log_path)[-20:]


# --- (b) /metrics of 5,000 models under 8 scrapers -------------------------------------------


@contextmanager
def simulator_process(spec: dict[str, Any], workdir: Path) -> Iterator[str]:
    """``python -m watcher.simulator`` in its own process; yields its base URL."""
    path = workdir / "sim.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    log = (workdir / "sim.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "watcher.simulator", "--scenario", str(path),
         "--host", LOOPBACK, "--port", "0"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=cli_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            text = (workdir / "sim.log").read_text(errors="replace")
            found = [ln for ln in text.splitlines() if ln.startswith("simulator listening on ")]
            if found:
                yield found[0].split(" on ", 1)[1].strip()
                break
            assert child.poll() is None, text
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        log.close()


async def sim_polls(base_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(base_url + "/_sim/stats") as answer:
        stats = json.loads(await answer.text())
    return int(stats["by_endpoint"]["events"])


async def poll_rate(base_url: str, seconds: float) -> float:
    first, started = await sim_polls(base_url), time.monotonic()
    await anyio.sleep(seconds)
    last, ended = await sim_polls(base_url), time.monotonic()
    return (last - first) / (ended - started)


class Scrapers:
    """``count`` clients fetching ``/metrics`` back to back on keep-alive connections, like
    Prometheus (``Accept-Encoding: gzip``), reading each answer to its end."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.scrapes = 0
        self.bytes = 0
        self.failures = 0

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self.count):
                tg.start_soon(self._one)

    async def _one(self) -> None:
        request = (
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n"
            b"Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\n\r\n"
        )
        while True:
            try:
                reader, writer = await _open(self.port)
                try:
                    while True:
                        writer.write(request)
                        head = await reader.readuntil(b"\r\n\r\n")
                        length = _content_length(head)
                        await reader.readexactly(length)
                        self.scrapes += 1
                        self.bytes += length
                finally:
                    writer.close()
            except (OSError, EOFError, ValueError) as exc:  # IncompleteReadError is an EOFError
                del exc
                self.failures += 1
                await anyio.sleep(0.05)


async def _open(port: int) -> tuple[Any, Any]:
    import asyncio

    return await asyncio.open_connection(LOOPBACK, port, limit=1 << 20)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("no Content-Length")


@pytest.mark.realtime
class TestMetricsUnderScrapers:
    async def test_8_scrapers_of_5000_models_keep_polling_going(self, tmp_path: Path) -> None:
        """5,000 models polled as fast as the daemon can (interval 0.5 s): the rate with 8
        scrapers fetching /metrics back to back stays above half the rate without them."""
        count, interval = 5000, 0.5
        spec = {
            "api_key": SIM_KEY, "page_size_cap": 50, "clock": "real", "start": T0.isoformat(),
            "generate": {"count": count, "prefix": "m-", "timeline": timeline()},
        }  # fmt: skip
        port = free_port()
        log_path = tmp_path / "daemon.log"
        with simulator_process(spec, tmp_path) as base_url:
            config = base_config(
                base_url, tmp_path, [f"m-{i:05d}" for i in range(count)], [],
                interval=interval, settled_interval=3600, concurrency=8,
                max_requests_per_minute=1_000_000,
            )  # fmt: skip
            config["cohere"]["timeout"] = 30
            config["health"] = {"listen": f"{LOOPBACK}:{port}"}
            path = write_config(tmp_path / "watcher.yaml", config)
            async with limited_daemon(path, nofile=(4096, 4096), log_path=log_path) as proc:
                await wait_healthy(f"http://{LOOPBACK}:{port}/healthz", timeout=60)
                # Past round one (every model's first state written; the slow part: ~30 s
                # on a loaded 2-core machine), then at the steady rate that is compared.
                await wait_until_polled(base_url, count + count // 10)
                scrapers = Scrapers(port, 8)
                quiet_rates, scraped_rates = [], []
                for _ in range(3):  # alternated, against drift and the machine's other load
                    quiet_rates.append(await poll_rate(base_url, 1.5))
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(scrapers.run)
                        await anyio.sleep(0.5)
                        scraped_rates.append(await poll_rate(base_url, 1.5))
                        tg.cancel_scope.cancel()
                quiet, scraped = sum(quiet_rates) / 3, sum(scraped_rates) / 3
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(10):
                    await proc.wait()
        print(
            f"\npolls/s unscraped {quiet:.0f}, with 8 scrapers {scraped:.0f} "
            f"({scraped / quiet:.0%}; {[round(r) for r in quiet_rates]}, "
            f"{[round(r) for r in scraped_rates]}); {scrapers.scrapes} scrapes "
            f"({scrapers.scrapes / 6:.0f}/s), "
            f"{scrapers.bytes / max(1, scrapers.scrapes) / 1024:.0f} KiB each, "
            f"{scrapers.failures} failures"
        )
        assert scraped > 0.5 * quiet, (scraped, quiet)
        assert scrapers.scrapes > 8, scrapers.scrapes


async def wait_until_polled(base_url: str, count: int, timeout: float = 90.0) -> None:
    """Until the simulator has answered ``count`` polls (the first round is done)."""
    with anyio.fail_after(timeout):
        while await sim_polls(base_url) < count:
            await anyio.sleep(0.2)


# --- The parts, one by one ------------------------------------------------------------------


class TestLimits:
    def test_soft_limit_raised_to_the_hard_limit(self) -> None:
        """Soft 1,024 under a hard 4,096: the server raises it, and caps itself at 256."""
        code = (
            "import resource\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))\n"
            "from watcher.health import connection_cap, raise_open_files_limit\n"
            "limit = raise_open_files_limit()\n"
            "print(limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0], connection_cap(limit))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        assert result.stdout.split() == ["4096", "4096", "256"], result.stderr

    def test_connection_cap(self) -> None:
        assert [connection_cap(n) for n in (16, 256, 1024, 4096, 1 << 20)] == [8, 64, 256, 256, 256]


class TestMetricsPage:
    def test_a_snapshot_collects_what_the_registry_does(self) -> None:
        """Rows read on the loop, families built elsewhere: the same page."""
        metrics = Metrics(wall_clock=lambda: 1000.0)
        rows = [ModelRow("cohere", f"m{i}", f"n{i}", "b", None) for i in range(50)]
        metrics.watch_models(lambda: rows)
        metrics.watch_statuses(lambda: [("cohere", row.model_id, "READY") for row in rows])
        snapshot = metrics.snapshot()
        rows.append(ModelRow("cohere", "later", "", "", None))  # after the snapshot
        from_snapshot = generate_latest(snapshot).decode()
        assert "later" not in from_snapshot
        assert 'model_id="m49"' in from_snapshot
        assert "later" in generate_latest(metrics.registry).decode()

    async def test_scrapers_share_renders_and_are_paced(self) -> None:
        """20 scrapes at once: one render; answers spaced at METRICS_PER_SECOND; one that
        would wait longer than its limit gets 429 at once."""
        metrics = Metrics()
        server = HealthServer(_Source(metrics), host=LOOPBACK, port=0)  # type: ignore[arg-type]
        server.metrics_page.max_wait = 1.0
        host, port = await server.start()
        try:
            async with aiohttp.ClientSession() as http:

                async def scrape() -> int:
                    async with http.get(f"http://{host}:{port}/metrics") as answer:
                        await answer.read()
                        return answer.status

                started = time.monotonic()
                statuses: list[int] = []
                async with anyio.create_task_group() as tg:
                    for _ in range(20):
                        tg.start_soon(lambda: _append(statuses, scrape()))
                took = time.monotonic() - started
        finally:
            await server.aclose()
        per_turn = 1 / METRICS_PER_SECOND
        assert statuses.count(200) == 11, statuses  # now, then 10 turns within 1 s
        assert statuses.count(429) == 9, statuses
        assert server.metrics_page.renders == 1
        assert took >= 10 * per_turn - 0.05, took


class _Source:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics


async def _append(into: list[int], answer: Any) -> None:
    into.append(await answer)
