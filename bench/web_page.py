"""The status page of the real daemon: size, first paint, the cost of 200 open streams, and
whether they delay detection (issue 13). Not part of run_all.py (it needs Chromium).

    .venv/bin/python bench/web_page.py [--models 100] [--clients 200] [--stagger 0.5]

The simulator (its own process) runs ``--models`` Cohere models, one becoming FINETUNING
every ``--stagger`` seconds; the daemon (``finetune-watcher run``, its own process) polls
them every 5 s with ``health.listen`` on loopback. Measured: the page's transfer sizes and
first contentful paint in Debian's Chromium (5 loads), then twice over the same window of
changes -- without streams, and with ``--clients`` open ``/api/stream`` clients -- the
daemon's CPU (utime + stime from /proc), the status events delivered, and detection
latency (scheduled change -> the first stream event showing it; without streams: the
``status changed`` log line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

KEY = "sim-key-0123456789"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            await asyncio.sleep(0.1)


class Run:
    """The simulator and the daemon for one measurement, in a temporary folder."""

    def __init__(self, models: int, stagger: float, lead: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fw-web-bench-"))
        self.models, self.stagger = models, stagger
        self.start = datetime.now(UTC) + timedelta(seconds=lead)
        self.first_change = 8.0
        self.sim_port, self.port = free_port(), free_port()
        self.t0 = self.start.timestamp()  # until sync_clock
        self.base = f"http://127.0.0.1:{self.port}"

    def change_at(self, index: int) -> float:
        """Wall time (epoch seconds) model ``index`` becomes FINETUNING."""
        return self.t0 + self.first_change + index * self.stagger

    async def sync_clock(self) -> None:
        """The wall time of the simulator's t=0 (its clock starts with its app, not at
        ``start``, which only dates the events)."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.sim_port}/_sim/stats") as answer,
        ):
            self.t0 = time.time() - float((await answer.json())["sim_time"])

    def __enter__(self) -> Run:
        scenario = {
            "api_key": KEY, "clock": "real", "start": self.start.isoformat(),
            "generate": {"count": self.models, "prefix": "web-", "stagger": self.stagger,
                         "timeline": [[0, "STATUS_QUEUED"],
                                      [self.first_change, "STATUS_FINETUNING"]]},
        }  # fmt: skip
        (self.dir / "scenario.yaml").write_text(json.dumps(scenario))
        config = {
            "cohere": {"base_url": f"http://127.0.0.1:{self.sim_port}", "timeout": 10},
            "poll": {"interval": 5, "jitter": 0.1, "concurrency": 8,
                     "max_requests_per_minute": 60_000},
            "state": {"path": str(self.dir / "watcher.db")},
            "health": {"listen": f"127.0.0.1:{self.port}"},
            "models": [f"web-{i:05}" for i in range(self.models)],
        }  # fmt: skip
        (self.dir / "watcher.yaml").write_text(json.dumps(config))
        env = {**os.environ, "CO_API_KEY": KEY, "WATCHER_LOG_FORMAT": "json"}
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "watcher.simulator", "--scenario",
             str(self.dir / "scenario.yaml"), "--port", str(self.sim_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.log = (self.dir / "daemon.log").open("w")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "-c", str(self.dir / "watcher.yaml")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in (self.daemon, self.sim):
            proc.terminate()
            proc.wait(10)
        self.log.close()

    def logged_changes(self) -> dict[str, float]:
        """model id -> when the daemon logged its FINETUNING (from the JSON log)."""
        seen: dict[str, float] = {}
        for line in (self.dir / "daemon.log").read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            event = entry.get("message", entry.get("event"))
            if event == "status changed" and entry.get("status") == "STATUS_FINETUNING":
                at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
                seen.setdefault(entry["model_id"], at.timestamp())
        return seen


async def page_figures(base: str) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    sizes: dict[str, Any] = {}
    gzipped = {"Accept-Encoding": "gzip"}
    async with (
        aiohttp.ClientSession() as plain,
        aiohttp.ClientSession(auto_decompress=False) as raw,
    ):
        for name, path in (
            ("html", "/"),
            ("page.css", "/static/page.css"),
            ("page.js", "/static/page.js"),
            ("icon.svg", "/static/icon.svg"),
        ):
            async with plain.get(base + path) as answer:
                body = await answer.read()
            async with raw.get(base + path, headers=gzipped) as answer:
                sent = await answer.read()
            sizes[name] = {"bytes": len(body), "sent (gzip when asked)": len(sent)}  # fmt: skip
    fcps = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(5):
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(base + "/")
            await page.wait_for_selector("#live.on")
            fcps.append(await page.evaluate(
                "() => performance.getEntriesByName('first-contentful-paint')[0].startTime"
            ))  # fmt: skip
            await context.close()
        await browser.close()
    return {"sizes": sizes, "fcp_ms": sorted(fcps)}


def summary(values: list[float]) -> dict[str, Any]:
    """Median, p90 and max of latencies (seconds), and how many."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p90 = ordered[int(0.9 * len(ordered))]
    return {"n": len(ordered), "median": round(statistics.median(ordered), 2),
            "p90": round(p90, 2), "max": round(ordered[-1], 2)}  # fmt: skip


async def measure(run: Run, clients: int, window: tuple[float, float]) -> dict[str, Any]:
    """CPU of the daemon over ``window`` (seconds after t=0), events and latencies."""
    stream_seen: dict[str, float] = {}
    events = [0]

    async def follow(http: aiohttp.ClientSession, first: bool) -> None:
        async with http.get(run.base + "/api/stream") as stream:
            kind = None
            async for raw in stream.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "status":
                    events[0] += 1
                    if first:
                        now = time.time()
                        for model in json.loads(line[6:])["models"]:
                            if model["status"] == "STATUS_FINETUNING":
                                stream_seen.setdefault(model["id"], now)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [asyncio.create_task(follow(http, i == 0)) for i in range(clients)]
        t0 = run.t0
        await asyncio.sleep(max(0.0, t0 + window[0] - time.time()))
        cpu0, events0, at0 = cpu_seconds(run.daemon.pid), events[0], time.time()
        await asyncio.sleep(max(0.0, t0 + window[1] - time.time()))
        cpu1, events1, at1 = cpu_seconds(run.daemon.pid), events[0], time.time()
        await asyncio.sleep(7)  # the last changes of the window are detected
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    logged = run.logged_changes()

    def latencies(seen: dict[str, float]) -> list[float]:
        return [
            seen[f"web-{index:05}"] - run.change_at(index)
            for index in range(run.models)
            if t0 + window[0] <= run.change_at(index) <= t0 + window[1]
            and f"web-{index:05}" in seen
        ]

    span = at1 - at0
    return {
        "clients": clients,
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / span, 1),
        "status_events_per_s": round((events1 - events0) / span, 1),
        "detected (status changed logged)": summary(latencies(logged)),
        "on an open page (first stream event)": summary(latencies(stream_seen)),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--stagger", type=float, default=0.5)
    args = parser.parse_args()
    results: dict[str, Any] = {"models": args.models, "changes_per_s": 1 / args.stagger}
    end = 8.0 + args.models * args.stagger
    window = (12.0, end - 2.0)
    for clients in (0, args.clients):
        with Run(args.models, args.stagger, lead=4.0) as run:
            await wait_http(run.base + "/readyz", timeout=60)  # a full round: every model shown
            await run.sync_clock()
            if clients == 0:
                results["page"] = await page_figures(run.base)
            results[f"{clients} streams"] = await measure(run, clients, window)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
