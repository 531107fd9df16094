"""Paced poll cost: the daemon at the rate users run it, against loops paced alike.

The saturated benchmark (bench/poll_cost.py) runs every client flat out. A real daemon
is paced by its interval: ``models / interval`` polls a second, sleeping in between.
This benchmark asks every client for the same evenly paced rate and measures what
each one pays per poll:

* ``watcher``: ``finetune-watcher run`` against the simulator; ``poll.interval`` 2 s,
  jitter 0 (so the rate asked is exactly models / interval), ``poll.concurrency`` 16,
  budget 10^9/min (not binding), no notification target, a fresh state (round one,
  with its first-sight detail requests, is part of the warm-up, not the window);
* ``bare``: ``bench/clients.py bare --rate R`` -- an aiohttp session (connector of 16)
  whose 16 workers start poll k at ``t0 + k / R``, GET the model's status URL (one
  pre-encoded string, like the daemon's clients) and ``json.loads`` the body: the
  practical floor for a Python client at that rate;
* ``sdk`` (Cohere only): ``bench/clients.py sdk --rate R`` --
  ``cohere.AsyncClient.finetuning.list_events`` paced the same way, 16 connections.

Each client runs alone, as its own process, clients alternating in a rotating order
every repetition. After a warm-up
(N requests on the poll endpoint at Cohere, 2 N elsewhere, where round one's detail
requests are counted on the same endpoint; then one more interval)
a window of ``--intervals`` intervals measures: polls (the simulator's counter of
the provider's poll endpoint), every request to that provider, the client's CPU
(utime + stime from /proc/PID/stat), RSS and peak RSS (VmRSS, VmHWM).

Per provider (``--providers``): the same at one rate, the daemon watching only that
provider's jobs against the bare loop on that provider's endpoint. OpenAI and Azure:
the daemon GETs the job, and only for a job whose body changed and that has no
``finished_at`` also the newest event (``/events?limit=1``); in the steady state of
this benchmark the job bodies do not change, so the daemon sends one request a poll,
and so does the bare loop. The window's requests per poll are reported for both, and
when the daemon sent more than 1.5 requests a poll the bare loop is run with
``--newest-event`` (two requests a poll) so the comparison stays like for like.

    .venv/bin/python bench/paced.py --rates 1000 100 --reps 3 --intervals 8
    .venv/bin/python bench/paced.py --providers all --rates 1000 --reps 2 --intervals 4

``--tree NAME=DIR`` (repeatable) adds a daemon client ``watcher@NAME`` run from another
copy of the package (``DIR/watcher``, e.g. ``git archive HEAD watcher | tar -x -C DIR``),
alternating with the others in the same session, so a change is measured before/after
against the same bare loop minutes apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

INTERVAL = 2.0
CONCURRENCY = 16
#: Requests counted on the poll endpoint before the last interval of warm-up, in rounds
#: of N: Cohere's details go to another endpoint; elsewhere round one's first sights count
#: twice there (the poll and the job's details).
WARMUP_ROUNDS = {"cohere": 1}
WARMUP_ROUNDS_OTHERS = 2
PROVIDERS = ("cohere", "openai", "azure-openai", "mistral", "together", "fireworks")
#: The simulator endpoint counted as one poll, per provider.
PROVIDER_POLL = {p: ("events" if p == "cohere" else "model") for p in PROVIDERS}
#: The simulator's URL prefix that is each provider's base URL (SDK convention).
BASE_PATHS = {
    "cohere": "",
    "openai": "/openai/v1",
    "azure-openai": "/azure/openai/v1",
    "mistral": "/mistral",
    "together": "/together",
    "fireworks": "/fireworks",
}
KEY_VARIABLES = {
    "cohere": "CO_API_KEY",
    "openai": "OPENAI_API_KEY",
    "azure-openai": "AZURE_OPENAI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "together": "TOGETHER_API_KEY",
    "fireworks": "FIREWORKS_API_KEY",
}


@dataclass
class Sample:
    client: str
    provider: str
    models: int
    rate: float  # polls per second asked
    rep: int
    polls: int
    requests: int  # every request to the provider in the window
    seconds: float
    cpu: float
    sim_cpu: float
    rss_kib: int
    peak_rss_kib: int
    newest_event: bool = False

    @property
    def achieved(self) -> float:
        return self.polls / self.seconds

    @property
    def cpu_ms_per_poll(self) -> float:
        return 1000 * self.cpu / self.polls if self.polls else float("nan")

    @property
    def requests_per_poll(self) -> float:
        return self.requests / self.polls if self.polls else float("nan")


def counters(sim: harness.Simulator, provider: str) -> tuple[int, int]:
    """(polls, all requests) the simulator counted for ``provider``."""
    stats = sim.stats()
    mine = stats.get("by_provider", {}).get(provider)
    if mine is None:  # an older simulator: Cohere only
        return int(stats["by_endpoint"]["events"]), int(stats["requests"])
    by_endpoint = mine["by_endpoint"]
    return int(by_endpoint[PROVIDER_POLL[provider]]), int(sum(by_endpoint.values()))


def daemon_config(
    path: Path, sim: harness.Simulator, provider: str, ids: list[str], state: Path
) -> Path:
    section = provider.replace("-", "_")
    provider_section: dict[str, Any] = {
        "base_url": sim.base_url + BASE_PATHS[provider],
        "timeout": 30,
    }
    if provider == "fireworks":
        provider_section["account_id"] = "sim-account"
    models: list[Any] = (
        list(ids) if provider == "cohere" else [{"id": i, "provider": provider} for i in ids]
    )
    config = {
        section: provider_section,
        "poll": {
            "interval": INTERVAL,
            "settled_interval": 3600.0,
            "concurrency": CONCURRENCY,
            "jitter": 0.0,
            "max_requests_per_minute": 1_000_000_000,
        },
        "state": {"path": str(state)},
        "notify": {"urls": [], "timeout": 10},
        "models": models,
    }
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start(
    client: str,
    sim: harness.Simulator,
    provider: str,
    n: int,
    rate: float,
    workdir: Path,
    duration: float,
    *,
    newest_event: bool,
    trees: dict[str, Path] | None = None,
) -> harness.Child:
    log = workdir / f"{client}-{provider}-{n}.log"
    env = {KEY_VARIABLES[provider]: harness.SIM_KEY}
    if is_daemon(client):
        state = workdir / "run" / "watcher.db"
        for suffix in ("", "-wal", "-shm", ".lock"):  # a fresh state every run
            (state.parent / (state.name + suffix)).unlink(missing_ok=True)
        config = daemon_config(workdir / "run" / "watcher.yaml", sim, provider,
                               harness.model_ids(n), state)  # fmt: skip
        command = harness.WATCHER
        if "@" in client:  # another copy of the package: first on the path, cwd not
            env["PYTHONPATH"] = str((trees or {})[client.partition("@")[2]])
            command = [harness.PYTHON, "-P", "-m", "watcher"]
        argv = [*command, "run", "-c", str(config), "--log-format", "json",
                "--log-level", "warning"]  # fmt: skip
        return harness.spawn(argv, log, env)
    argv = [harness.PYTHON, str(Path(__file__).with_name("clients.py")), client,
            "--base-url", sim.base_url, "--count", str(n), "--concurrency", str(CONCURRENCY),
            "--rate", str(rate), "--duration", str(duration), "--provider", provider]  # fmt: skip
    if newest_event:
        argv.append("--newest-event")
    return harness.spawn(argv, log, env)


def measure(
    client: str,
    sim: harness.Simulator,
    provider: str,
    n: int,
    rep: int,
    workdir: Path,
    *,
    intervals: float,
    newest_event: bool = False,
    trees: dict[str, Path] | None = None,
) -> Sample:
    rate = n / INTERVAL
    window = intervals * INTERVAL
    polls_start, _ = counters(sim, provider)
    child = start(client, sim, provider, n, rate, workdir, 120 + 2 * window,
                  newest_event=newest_event, trees=trees)  # fmt: skip
    try:
        # Warm-up: round one (whose first sights also fetch each job's details, counted
        # on the same endpoint at most providers) and one more full round, then one more
        # interval: the window sees only the steady state.
        warm = polls_start + WARMUP_ROUNDS.get(provider, WARMUP_ROUNDS_OTHERS) * n
        harness.wait_for(lambda: not child.alive() or counters(sim, provider)[0] >= warm,
                         180, f"{client} warm-up")  # fmt: skip
        time.sleep(INTERVAL)
        if not child.alive():
            raise RuntimeError(f"{client} exited early:\n{child.tail()}")
        (p0, r0), c0, s0 = counters(sim, provider), harness.cpu_seconds(child.pid), \
            harness.cpu_seconds(sim.child.pid)  # fmt: skip
        t0 = time.monotonic()
        time.sleep(window)
        (p1, r1), c1, s1 = counters(sim, provider), harness.cpu_seconds(child.pid), \
            harness.cpu_seconds(sim.child.pid)  # fmt: skip
        t1 = time.monotonic()
        memory = harness.memory_kib(child.pid)
    finally:
        child.stop()
    return Sample(client, provider, n, rate, rep, p1 - p0, r1 - r0, t1 - t0, c1 - c0, s1 - s0,
                  memory.get("VmRSS", 0), memory.get("VmHWM", 0), newest_event)  # fmt: skip


def is_daemon(client: str) -> bool:
    """``watcher`` or ``watcher@NAME`` (the daemon from another tree)."""
    return client == "watcher" or client.startswith("watcher@")


def loadavg() -> float:
    with open("/proc/loadavg", encoding="ascii") as f:
        return float(f.read().split()[0])


def run(
    rates: list[float],
    reps: int,
    intervals: float,
    workdir: Path,
    log: Any = print,
    *,
    providers: tuple[str, ...] = ("cohere",),
    with_sdk: bool = True,
    trees: dict[str, Path] | None = None,
    with_main: bool = True,
) -> dict[str, Any]:
    samples: list[Sample] = []
    loads: list[float] = []
    for provider in providers:
        daemons = ("watcher",) if with_main else ()
        clients: tuple[str, ...] = (*daemons, *(f"watcher@{t}" for t in trees or {}), "bare")
        if provider == "cohere" and with_sdk:
            clients = (*clients, "sdk")
        for rate in rates:
            n = int(rate * INTERVAL)
            spec = harness.scenario(n)
            if provider != "cohere":
                spec["generate"]["provider"] = provider
                del spec["generate"]["timeline"]  # the provider's running status
            with harness.running_simulator(spec, workdir, f"sim-{provider}-{n}") as sim:
                newest = False
                for rep in range(reps):
                    shift = rep % len(clients)
                    for client in clients[shift:] + clients[:shift]:
                        loads.append(loadavg())
                        sample = measure(client, sim, provider, n, rep, workdir,
                                         intervals=intervals,
                                         newest_event=newest and client == "bare",
                                         trees=trees)  # fmt: skip
                        samples.append(sample)
                        if is_daemon(client) and sample.requests_per_poll > 1.5:
                            newest = True  # the bare loop sends what the daemon sends
                        log(f"  paced {provider} {rate:g}/s rep {rep} {client:14s} "
                            f"{sample.achieved:7.1f} polls/s "
                            f"{sample.cpu_ms_per_poll:6.3f} ms CPU/poll "
                            f"{sample.requests_per_poll:4.2f} req/poll "
                            f"RSS {sample.rss_kib / 1024:5.1f} MiB "
                            f"(load {loads[-1]:.1f})")  # fmt: skip
    return {
        "samples": [asdict(s) | {"achieved": s.achieved, "cpu_ms_per_poll": s.cpu_ms_per_poll,
                                 "requests_per_poll": s.requests_per_poll} for s in samples],
        "summary": summarise(samples),
        "interval": INTERVAL, "concurrency": CONCURRENCY, "intervals": intervals, "reps": reps,
        "load": {"min": min(loads, default=0.0), "median": harness.median(loads),
                 "max": max(loads, default=0.0)},
    }  # fmt: skip


def summarise(samples: list[Sample]) -> list[dict[str, Any]]:
    """Medians per (provider, rate, client) and the per-repetition ratios' medians."""
    rows: list[dict[str, Any]] = []
    for provider, rate in sorted({(s.provider, s.rate) for s in samples},
                                 key=lambda k: (PROVIDERS.index(k[0]), -k[1])):  # fmt: skip
        group = [s for s in samples if s.provider == provider and s.rate == rate]
        row: dict[str, Any] = {"provider": provider, "rate": rate, "models": group[0].models}
        order = ("watcher", "bare", "sdk")
        clients = sorted({s.client for s in group},
                         key=lambda c: (order.index(c) if c in order else 0.5, c))  # fmt: skip
        for client in clients:
            mine = [s for s in group if s.client == client]
            row[client] = {
                "cpu_ms_per_poll": harness.median([s.cpu_ms_per_poll for s in mine]),
                "achieved": harness.median([s.achieved for s in mine]),
                "rss_mib": harness.median([s.rss_kib / 1024 for s in mine]),
                "peak_rss_mib": harness.median([s.peak_rss_kib / 1024 for s in mine]),
                "requests_per_poll": harness.median([s.requests_per_poll for s in mine]),
                "core_share": harness.median([s.cpu / s.seconds for s in mine]),
                "newest_event": any(s.newest_event for s in mine),
            }
        for daemon in (c for c in clients if is_daemon(c)):
            for other in ("bare", "sdk"):
                if other not in clients:
                    continue
                ratios = []
                for rep in sorted({s.rep for s in group}):
                    w = [s for s in group if s.rep == rep and s.client == daemon]
                    o = [s for s in group if s.rep == rep and s.client == other]
                    if w and o:
                        ratios.append(w[0].cpu_ms_per_poll / o[0].cpu_ms_per_poll)
                row[f"{daemon}_over_{other}"] = harness.median(ratios)
                row[f"{daemon}_over_{other}_all"] = ratios
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 100.0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--intervals", type=float, default=8.0, help="window, in intervals")
    parser.add_argument("--providers", default="cohere",
                        help="comma-separated, or 'all' (default: cohere)")  # fmt: skip
    parser.add_argument("--no-sdk", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/paced"))
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="also run the daemon from DIR/watcher as watcher@NAME")  # fmt: skip
    parser.add_argument("--no-main", action="store_true",
                        help="only the --tree daemons, not this working tree's")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    providers = PROVIDERS if args.providers == "all" else tuple(args.providers.split(","))
    args.workdir.mkdir(parents=True, exist_ok=True)
    trees = {name: Path(path).resolve()
             for name, _, path in (t.partition("=") for t in args.tree)}  # fmt: skip
    result = run(args.rates, args.reps, args.intervals, args.workdir,
                 providers=providers, with_sdk=not args.no_sdk, trees=trees,
                 with_main=not args.no_main)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    for row in result["summary"]:
        print(json.dumps(row))
    print(json.dumps({"load": result["load"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
