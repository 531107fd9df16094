"""Shared machinery of the benchmarks: processes, the simulator, /proc readings, configs.

Every process the benchmarks start is a child of the benchmark, bound to loopback,
bounded in time, and stopped by its own pid (SIGTERM, then SIGKILL) when a step ends.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
WATCHER = [PYTHON, "-m", "watcher"]
SIM_KEY = "sim-key"
LOOPBACK = "127.0.0.1"
PREFIX = "bench-"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The fixed moment of the simulator's t=0, so seeded states match what it serves.
SIM_START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
TRAINING = [[0, "STATUS_QUEUED"], [1, "STATUS_FINETUNING"]]


def model_ids(count: int, prefix: str = PREFIX) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(count)]


# --- the machine -------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures ran on (for every table's caption)."""
    cpu = "unknown CPU"
    with suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import PackageNotFoundError, version

    try:
        sdk = version("cohere")
    except PackageNotFoundError:
        sdk = "not installed"
    return {
        "cohere": sdk,
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


# --- processes ---------------------------------------------------------------------------


@dataclass
class Child:
    """A process the benchmark started, with its log file."""

    process: subprocess.Popen[bytes]
    log: Path
    started: float  # time.monotonic() just before the spawn

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait, SIGKILL if it will not go; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return int(self.process.returncode)

    def tail(self, lines: int = 20) -> str:
        with suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Child:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHER_", "CO_API", "COHERE_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    full_env.update({"CO_API_KEY": SIM_KEY, "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=ROOT,
        )  # fmt: skip
    return Child(process, log, started)


# --- the venv measured ------------------------------------------------------------------

#: Where ``plain_venv`` builds the venv users have: ``pip install .``, no extras (no ``rich``,
#: no test or dev tools, which the development venv imports through structlog and others).
PLAIN_VENV = Path("/tmp/fw-bench/plain-venv")
_STAMP = ".finetune-watcher-deps"


def plain_venv(path: Path = PLAIN_VENV, *, log: Any = print) -> str:
    """The python of the venv at ``path``, built if missing: ``python -m venv`` +
    ``pip install -q ROOT`` (a plain install; rebuilt when the dependencies changed).

    A venv that is not ours (no stamp; e.g. the development ``.venv``) is used as it is.
    Either way the benchmark runs the *working tree's* code: ``python -m watcher`` from
    ``ROOT`` (``spawn``'s working directory) imports ``watcher`` from the tree before the
    installed copy, so the venv only decides the dependencies and what they import.
    """
    import tomllib

    python = path / "bin" / "python"
    stamp = path / _STAMP
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = json.dumps(project["dependencies"])
    if python.exists() and (not stamp.exists() or stamp.read_text() == wanted):
        return str(python)
    log(f"building a plain venv in {path} (pip install {ROOT}, no extras)")
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", str(ROOT)], check=True)
    stamp.write_text(wanted)
    return str(python)


def venv_label(python: str) -> str:
    """How a table names the venv ``python`` belongs to (the one measured)."""
    venv = Path(python).parent.parent
    kind = "plain install" if (venv / _STAMP).exists() else "as found"
    if venv.resolve() == (ROOT / ".venv").resolve():
        kind = "development venv"
    return f"{venv} ({kind})"


# --- the simulator -----------------------------------------------------------------------


def scenario(
    count: int,
    *,
    timeline: list[list[Any]] | None = None,
    stagger: float = 0.0,
    rate_limit_per_minute: int | None = None,
) -> dict[str, Any]:
    return {
        "api_key": SIM_KEY,
        "page_size_cap": 50,
        "clock": "real",
        "start": SIM_START.isoformat(),
        "rate_limit_per_minute": rate_limit_per_minute,
        "generate": {
            "count": count,
            "prefix": PREFIX,
            "timeline": timeline or TRAINING,
            "stagger": stagger,
        },
    }


@dataclass
class Simulator:
    child: Child
    base_url: str

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as answer:  # noqa: S310
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def stats(self) -> dict[str, Any]:
        return self.get("/_sim/stats")

    def reset_stats(self) -> None:
        # S310: base_url is the simulator's own http://127.0.0.1 address.
        request = urllib.request.Request(self.base_url + "/_sim/reset-stats", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            answer.read()

    def events_polls(self) -> int:
        return int(self.stats()["by_endpoint"]["events"])

    def origin_mono(self, tries: int = 7) -> float:
        """This process's ``time.monotonic()`` at the simulator's t=0 (CLOCK_MONOTONIC is
        machine-wide); the reading with the shortest round trip wins."""
        best: tuple[float, float] | None = None
        for _ in range(tries):
            before = time.monotonic()
            sim_time = float(self.stats()["sim_time"])
            after = time.monotonic()
            if best is None or after - before < best[0]:
                best = (after - before, (before + after) / 2 - sim_time)
        assert best is not None
        return best[1]


@contextmanager
def running_simulator(
    spec: dict[str, Any], workdir: Path, name: str = "sim"
) -> Iterator[Simulator]:
    """``python -m watcher.simulator`` in its own process on a free loopback port."""
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    child = spawn([PYTHON, "-m", "watcher.simulator", "--scenario", str(path),
                   "--host", LOOPBACK, "--port", "0"], workdir / f"{name}.log")  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        base_url = ""
        while not base_url:
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start:\n{child.tail()}")
            for line in child.log.read_text(errors="replace").splitlines():
                if line.startswith("simulator listening on "):
                    base_url = line.split(" on ", 1)[1].strip()
            time.sleep(0.05)
        yield Simulator(child, base_url)
    finally:
        child.stop()


# --- the watcher -------------------------------------------------------------------------


def watcher_config(
    path: Path,
    *,
    base_url: str,
    ids: Sequence[str],
    state: Path,
    interval: float,
    settled_interval: float = 3600.0,
    concurrency: int = 8,
    budget: int = 1_000_000_000,
    jitter: float = 0.0,
    urls: Sequence[str] = (),
    health_listen: str | None = None,
) -> Path:
    config: dict[str, Any] = {
        "cohere": {"base_url": base_url, "timeout": 30},
        "poll": {
            "interval": interval,
            "settled_interval": settled_interval,
            "concurrency": concurrency,
            "jitter": jitter,
            "max_requests_per_minute": budget,
        },
        "state": {"path": str(state)},
        "notify": {"urls": list(urls), "timeout": 10},
        "models": list(ids),
    }
    if health_listen is not None:
        config["health"] = {"listen": health_listen}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_watcher(config: Path, log: Path, python: str = PYTHON) -> Child:
    """``python -m watcher run`` (``python``: another venv's, see ``plain_venv``)."""
    return spawn([python, "-m", "watcher", "run", "-c", str(config), "--log-format", "json"], log)


def seed_state(path: Path, ids: Sequence[str], timeline: list[list[Any]] | None = None) -> float:
    """A state file in which every model was already observed with ``timeline``'s events.

    That is a restarted watcher's state: its first polls find nothing new, like every
    later poll. Returns the seconds it took (one transaction per model, as the store does).
    """
    import anyio

    from watcher.lifecycle import Event, observe
    from watcher.providers.cohere import COHERE_SCHEME
    from watcher.store.sqlite import SqliteStore

    started = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    events = [
        Event(status, SIM_START + timedelta(seconds=offset))
        for offset, status in (timeline or TRAINING)
    ]
    polled_at = datetime.now(UTC)

    async def seed() -> None:
        store = await SqliteStore.open(path)
        try:
            for model_id in ids:
                state = observe(None, model_id, events, frozenset(), scheme=COHERE_SCHEME).state
                await store.record_observation(state, (), polled_at=polled_at, name=None)
        finally:
            await store.aclose()

    anyio.run(seed)
    return time.monotonic() - started


def copy_state(source: Path, target: Path) -> None:
    """A fresh copy of a seeded state file (the store's WAL is checkpointed on close)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", ".lock"):
        with suppress(FileNotFoundError):
            (target.parent / (target.name + suffix)).unlink()
    shutil.copyfile(source, target)


# --- waiting and statistics ------------------------------------------------------------


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.05) -> float:
    """Wait until ``predicate()`` is true; returns the seconds waited, raises on timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# --- a webhook receiver (apprise json://) ----------------------------------------------


class WebhookReceiver:
    """An aiohttp server on loopback, in a thread of its own, that timestamps every POST.

    ``received`` holds ``(time.monotonic() at arrival, body)``; ``url`` is the apprise URL.
    """

    def __init__(self) -> None:
        import threading

        self.received: list[tuple[float, bytes]] = []
        self.port = 0
        self._ready = threading.Event()
        self._stop: Any = None
        self._loop: Any = None
        self._thread = threading.Thread(target=self._serve, name="webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"json://{LOOPBACK}:{self.port}/notify"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        import asyncio

        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.received.append((time.monotonic(), body))
            return web.Response(text="ok")

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, LOOPBACK, 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())
