"""Poll cost: finetune-watcher vs a bare aiohttp loop vs the official SDK, same simulator.

For each N (models, all training, nothing ever changes) one simulator process serves
every client. The clients run one at a time, each as its own process, in an order
that rotates every repetition (watcher, bare, sdk / bare, sdk, watcher / ...):

* ``watcher``: ``finetune-watcher run`` as a black box, ``poll.interval`` 1 ms (every
  model is always due, so it polls as fast as ``poll.concurrency`` allows), budget
  10^9/min (no cap), jitter 0, and a seeded state (a restarted watcher: its first
  round already finds nothing new, like every later one);
* ``bare``: ``bench/clients.py bare`` (GET + json.loads, nothing else);
* ``sdk``: ``bench/clients.py sdk`` (``cohere.AsyncClient.finetuning.list_events``).

All three run ``concurrency`` requests at once over a pool of the same size. After a
warm-up, a fixed window measures polls (the simulator's ``events`` counter), the
client's CPU (utime+stime from /proc) and its peak RSS (VmHWM).

    .venv/bin/python bench/poll_cost.py --models 100 1000 --reps 1 --window 5
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

CLIENTS = ("watcher", "bare", "sdk")
#: ``--with-proposals`` adds the daemon with bench/proposals.py applied (FW_PROPOSALS).
PROPOSED = "proposed"
CONCURRENCY = 8
WATCHER_INTERVAL = 0.001


@dataclass
class Sample:
    client: str
    models: int
    rep: int
    polls: int
    seconds: float
    cpu: float  # client CPU-seconds in the window
    sim_cpu: float  # simulator CPU-seconds in the window
    peak_rss_kib: int
    rss_kib: int
    warmup_seconds: float

    @property
    def polls_per_second(self) -> float:
        return self.polls / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu / self.polls if self.polls else float("nan")


def start_client(
    client: str, sim: harness.Simulator, n: int, workdir: Path, seeded: Path, budget_s: float
) -> harness.Child:
    log = workdir / f"{client}-{n}.log"
    if client in ("watcher", PROPOSED):
        state = workdir / "run" / "watcher.db"
        harness.copy_state(seeded, state)
        config = harness.watcher_config(
            workdir / "run" / "watcher.yaml", base_url=sim.base_url, ids=harness.model_ids(n),
            state=state, interval=WATCHER_INTERVAL, concurrency=CONCURRENCY,
        )  # fmt: skip
        if client == PROPOSED:
            launcher = str(Path(__file__).with_name("proposals.py"))
            return harness.spawn([harness.PYTHON, launcher, "run", "-c", str(config),
                                  "--log-format", "json"], log)  # fmt: skip
        return harness.run_watcher(config, log)
    return harness.spawn(
        [harness.PYTHON, str(Path(__file__).with_name("clients.py")), client,
         "--base-url", sim.base_url, "--count", str(n), "--concurrency", str(CONCURRENCY),
         "--duration", str(budget_s)],
        log,
    )  # fmt: skip


def measure(
    client: str,
    sim: harness.Simulator,
    n: int,
    rep: int,
    workdir: Path,
    seeded: Path,
    *,
    warmup: float,
    window: float,
) -> Sample:
    start_polls = sim.events_polls()
    child = start_client(client, sim, n, workdir, seeded, budget_s=warmup + window + 120)
    try:
        # Warm-up: the client is up and has polled every model once (min 200), then more.
        needed = start_polls + max(200, min(n, 10_000))
        waited = harness.wait_for(
            lambda: not child.alive() or sim.events_polls() >= needed, 300, f"{client} round one"
        )
        time.sleep(warmup)
        if not child.alive():
            raise RuntimeError(f"{client} exited early:\n{child.tail()}")
        polls0, cpu0, sim0 = sim.events_polls(), harness.cpu_seconds(child.pid), \
            harness.cpu_seconds(sim.child.pid)  # fmt: skip
        t0 = time.monotonic()
        time.sleep(window)
        polls1, cpu1, sim1 = sim.events_polls(), harness.cpu_seconds(child.pid), \
            harness.cpu_seconds(sim.child.pid)  # fmt: skip
        t1 = time.monotonic()
        memory = harness.memory_kib(child.pid)
    finally:
        child.stop()
    return Sample(
        client, n, rep, polls1 - polls0, t1 - t0, cpu1 - cpu0, sim1 - sim0,
        memory.get("VmHWM", 0), memory.get("VmRSS", 0), waited + warmup,
    )  # fmt: skip


def run(
    models: list[int],
    reps: int,
    window: float,
    warmup: float,
    workdir: Path,
    log: Any = print,
    *,
    with_proposals: bool = False,
) -> dict[str, Any]:
    clients = (*CLIENTS, PROPOSED) if with_proposals else CLIENTS
    samples: list[Sample] = []
    for n in models:
        seeded = workdir / f"seed-{n}" / "watcher.db"
        seed_seconds = harness.seed_state(seeded, harness.model_ids(n))
        log(f"poll cost: N={n}: seeded state in {seed_seconds:.1f}s")
        with harness.running_simulator(harness.scenario(n), workdir, f"sim-{n}") as sim:
            for rep in range(reps):
                shift = rep % len(clients)
                order = clients[shift:] + clients[:shift]
                for client in order:
                    sample = measure(client, sim, n, rep, workdir, seeded,
                                     warmup=warmup, window=window)  # fmt: skip
                    samples.append(sample)
                    log(f"  rep {rep} {client:8s} {sample.polls_per_second:7.0f} polls/s "
                        f"{sample.cpu_per_1000:6.3f} CPU-s/1000 polls "
                        f"peak RSS {sample.peak_rss_kib / 1024:5.1f} MiB "
                        f"(simulator {sample.sim_cpu / sample.seconds:.0%} of a core)")  # fmt: skip
    return {"samples": [asdict(s) | {"polls_per_second": s.polls_per_second,
                                      "cpu_per_1000": s.cpu_per_1000} for s in samples],
            "summary": summarise(samples, clients), "concurrency": CONCURRENCY,
            "window": window, "warmup": warmup, "reps": reps}  # fmt: skip


def summarise(samples: list[Sample], clients: tuple[str, ...] = CLIENTS) -> list[dict[str, Any]]:
    """Medians per (N, client), and the per-repetition ratios' medians."""
    rows: list[dict[str, Any]] = []
    for n in sorted({s.models for s in samples}):
        by_client = {c: [s for s in samples if s.models == n and s.client == c] for c in clients}
        row: dict[str, Any] = {"models": n}
        for client, group in by_client.items():
            row[client] = {
                "polls_per_second": harness.median([s.polls_per_second for s in group]),
                "cpu_per_1000": harness.median([s.cpu_per_1000 for s in group]),
                "peak_rss_mib": harness.median([s.peak_rss_kib / 1024 for s in group]),
                "sim_core_share": harness.median([s.sim_cpu / s.seconds for s in group]),
                "client_core_share": harness.median([s.cpu / s.seconds for s in group]),
            }
        # Ratios within a repetition (the same minute of machine noise), then the median.
        reps = sorted({s.rep for s in samples if s.models == n})
        for mine in [c for c in clients if c in ("watcher", PROPOSED)]:
            for other in ("bare", "sdk"):
                ratios = []
                for rep in reps:
                    w = [s for s in by_client[mine] if s.rep == rep]
                    o = [s for s in by_client[other] if s.rep == rep]
                    if w and o:
                        ratios.append(w[0].cpu_per_1000 / o[0].cpu_per_1000)
                row[f"{mine}_over_{other}"] = harness.median(ratios)
                row[f"{mine}_over_{other}_all"] = ratios
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/poll-cost"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--with-proposals", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = run(args.models, args.reps, args.window, args.warmup, args.workdir,
                 with_proposals=args.with_proposals)  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    for row in result["summary"]:
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
