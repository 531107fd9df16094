"""Spending the request budget: no 429s, polls spread evenly, latency as the budget allows.

**Budget run.** The simulator enforces ``rate_limit`` requests/minute per key (429
beyond); the watcher gets ``poll.max_requests_per_minute`` = 96 % of it (480 of 500 in
Cohere's terms) and more models than that covers at ``poll.interval``, so its effective
interval is ``active models x 60 / budget``. The run is Cohere's 500/min scaled up
12x (6,000/min, budget 5,760/min) so that a few hundred READY events fit in a minute;
the pacer's rule (spacing = 60 / budget) is the same at any scale. Measured: 429s
(every request is the watcher's), requests per second against the budget, polls per
training model over the READY window (even spreading: every model the same count, +-1),
and the detection latency of ``ready`` models against the ideal ``E(t) / 2`` where
``E(t) = active(t) x 60 / budget`` (models that turned READY leave the active set).

**Lifecycle.** API requests per model-hour over a realistic lifecycle (queued 30 min,
training 3 h, READY and watched for a day) by the scheduling rules in
``watcher.lifecycle.poll_interval`` against fixed-interval polling of every model at
``poll.interval`` (the same worst-case detection time on active models), then checked
by a run compressed 3,600x (one hour -> one second) counting the simulator's requests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from latency import _READY_ID, collect, latency_scenario, ready_ids

BUDGET_SHARE = 480 / 500  # the watcher's budget against the API's limit


def budget_run(
    workdir: Path,
    *,
    models: int = 1000,
    ready: int = 200,
    rate_limit: int = 6000,
    interval: float = 2.0,
    gap: float = 0.35,
    start: float = 15.0,
    proposals: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """One run; ``proposals=POLICY`` runs the daemon through bench/proposals.py with
    ``--pick POLICY`` (``pick-then-pace``: the policy before P9, for comparison)."""
    workdir.mkdir(parents=True, exist_ok=True)
    budget = int(rate_limit * BUDGET_SHARE)
    spec, offsets = latency_scenario(models, ready, start, gap, rate_limit=rate_limit)
    training = harness.model_ids(models - ready)
    ids = [*training, *ready_ids(ready)]
    state = workdir / "watcher.db"
    harness.seed_state(state, ids)
    per_second: list[tuple[float, int]] = []
    with (
        harness.WebhookReceiver() as receiver,
        harness.running_simulator(spec, workdir, "sim-budget") as sim,
    ):
        origin = sim.origin_mono()
        config = harness.watcher_config(
            workdir / "watcher.yaml", base_url=sim.base_url, ids=ids, state=state,
            interval=interval, jitter=0.1, budget=budget, urls=[receiver.url],
        )  # fmt: skip
        if proposals is None:
            child = harness.run_watcher(config, workdir / "watcher.log")
        else:
            launcher = str(Path(__file__).with_name("proposals.py"))
            argv = [harness.PYTHON, launcher, "run", "-c", str(config), "--log-format", "json",
                    "--pick", proposals]  # fmt: skip
            child = harness.spawn(argv, workdir / "watcher.log")
        window: dict[str, Any] = {}
        try:
            last = origin + max(offsets.values())
            effective = models * 60 / budget
            deadline = last + 2 * effective + 20
            while time.monotonic() < deadline:
                time.sleep(1.0)
                stats = sim.stats()
                now = time.monotonic() - origin
                per_second.append((now, int(stats["requests"])))
                if "start" not in window and now >= start:
                    window["start"] = (now, dict(stats["by_model"]))
                if "end" not in window and now >= start + ready * gap:
                    window["end"] = (now, dict(stats["by_model"]))
                if not child.alive():
                    raise RuntimeError(f"the watcher exited:\n{child.tail()}")
                if "end" in window and len(collect(receiver, origin, offsets)) >= ready:
                    break
            final = sim.stats()
        finally:
            child.stop()
    latencies = collect(receiver, origin, offsets)
    enrich = int(final["by_endpoint"]["model"]) + int(final["by_endpoint"]["metrics"])
    # The ideal for each event: half the effective interval of the active set then;
    # "net": the same with the budget left after the requests that are not polls.
    per_minute_not_polls = enrich / (ready * gap) * 60 if ready else 0.0
    ordered = sorted(offsets.values())
    ideal: dict[str, float] = {}
    ideal_net: dict[str, float] = {}
    for model_id, offset in offsets.items():
        active = models - sum(1 for o in ordered if o < offset)
        ideal[model_id] = active * 60 / budget / 2
        ideal_net[model_id] = active * 60 / max(1.0, budget - per_minute_not_polls) / 2
    measured = [latencies[m] for m in latencies]
    ideal_mean = sum(ideal[m] for m in latencies) / len(latencies) if latencies else float("nan")
    ideal_net_mean = (
        sum(ideal_net[m] for m in latencies) / len(latencies) if latencies else float("nan")
    )
    mean = sum(measured) / len(measured) if measured else float("nan")
    detection, pipeline = _split(workdir / "watcher.log", origin, offsets, receiver)
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(per_second)]
    steady = [r for (t, _), r in zip(per_second[1:], rates, strict=False) if t > 5]
    counts: list[int] = []
    if "start" in window and "end" in window:
        before, after = window["start"][1], window["end"][1]
        counts = [int(after.get(m, 0)) - int(before.get(m, 0)) for m in training]
    result = {
        "models": models, "ready": ready, "rate_limit": rate_limit, "budget": budget,
        "interval": interval, "effective_interval_start": models * 60 / budget,
        "requests": final["requests"], "rate_limited": final["rate_limited"],
        "enrichment_requests": enrich,
        "rate_mean": sum(steady) / len(steady) if steady else float("nan"),
        "rate_max": max(steady) if steady else float("nan"),
        "rate_series": per_second,
        "polls_per_training_model": {
            "min": min(counts) if counts else None,
            "median": harness.median(counts) if counts else None,
            "max": max(counts) if counts else None,
            "window": (window["end"][0] - window["start"][0]) if counts else None,
        },
        "notified": len(latencies), "mean": mean, "ideal_mean": ideal_mean,
        "p99": harness.percentile(measured, 0.99), "max": max(measured, default=float("nan")),
        "latencies": sorted(measured),
        "mean_over_ideal": mean / ideal_mean if latencies else float("nan"),
        "ideal_net_mean": ideal_net_mean,
        "mean_over_ideal_net": mean / ideal_net_mean if latencies else float("nan"),
        "detection_mean": _mean(detection), "pipeline_mean": _mean(pipeline),
        "samples_relative_error": 1 / math.sqrt(3 * len(measured)) if measured else None,
        "proposals": proposals,
    }  # fmt: skip
    log(f"budget{' (' + proposals + ')' if proposals else ''}: {final['rate_limited']} x 429 "
        f"of {final['requests']} requests; {result['rate_mean']:.1f} req/s (budget "
        f"{budget / 60:.1f}/s); mean latency {mean:.2f}s vs ideal {ideal_mean:.2f}s "
        f"({result['mean_over_ideal']:.2f}x; net of enrichment {ideal_net_mean:.2f}s); "
        f"detection {result['detection_mean']:.2f}s + pipeline {result['pipeline_mean']:.3f}s; "
        f"polls/model in window {result['polls_per_training_model']}")  # fmt: skip
    return result


def _tolerant(step: Any, log: Any) -> Any:
    """The prototype runs against a daemon that moves on: a failure is reported, not fatal."""
    try:
        return step()
    except Exception as exc:
        log(f"budget: the prototype run failed ({type(exc).__name__}: {exc}); skipped")
        return None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _split(
    log_path: Path,
    origin: float,
    offsets: dict[str, float],
    receiver: harness.WebhookReceiver,
) -> tuple[list[float], list[float]]:
    """Per READY event: visible -> "status changed" logged (detection), logged -> webhook.

    The daemon logs in wall-clock time; the simulator's t=0 is converted once.
    """
    from datetime import datetime

    wall_minus_mono = time.time() - time.monotonic()
    logged: dict[str, float] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"status changed"' not in line or "STATUS_READY" not in line:
            continue
        entry = json.loads(line)
        stamp = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        logged.setdefault(entry["model_id"], stamp - wall_minus_mono)
    detection, pipeline = [], []
    arrivals = {}
    for arrived, body in receiver.received:
        match = _READY_ID.search(body)
        if match:
            arrivals.setdefault(match.group().decode(), arrived)
    for model_id, seen in logged.items():
        if model_id in offsets and model_id in arrivals:
            detection.append(seen - (origin + offsets[model_id]))
            pipeline.append(arrivals[model_id] - seen)
    return detection, pipeline


# --- requests per model-hour ------------------------------------------------------------

QUEUED_S, TRAINING_S, WATCHED_S = 1800.0, 3 * 3600.0, 24 * 3600.0


def lifecycle_rules(interval: float = 60.0, settled_interval: float = 1800.0) -> dict[str, Any]:
    """Requests per model-hour by the watcher's scheduling rules vs fixed-interval polling."""
    from watcher.lifecycle import poll_interval

    # (settled?, seconds): queued and training are active, READY is settled.
    phases = ((False, QUEUED_S), (False, TRAINING_S), (True, WATCHED_S))
    polls = sum(s / poll_interval(settled, interval, settled_interval) for settled, s in phases)
    # Enrichment: the model's details on first sight (no name configured) and on READY,
    # plus its final metrics on READY.
    extra = 3
    hours = sum(s for _, s in phases) / 3600
    watcher = (polls + extra) / hours
    fixed = sum(s for _, s in phases) / interval / hours
    return {
        "interval": interval, "settled_interval": settled_interval, "hours": hours,
        "watcher_requests": polls + extra, "fixed_requests": fixed * hours,
        "watcher_per_model_hour": watcher, "fixed_per_model_hour": fixed,
        "ratio": fixed / watcher,
    }  # fmt: skip


def lifecycle_run(
    workdir: Path, *, compression: float = 3600.0, models: int = 10, log: Any = print
) -> dict[str, Any]:
    """The lifecycle with every duration divided by ``compression``, counted for real.

    The models appear (QUEUED) ``lead`` seconds after the simulator starts, once the
    watcher is up; requests are counted from then to the end of the watched day.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    lead = 3.0
    q, t, w = QUEUED_S / compression, TRAINING_S / compression, WATCHED_S / compression
    interval, settled = 60.0 / compression, 1800.0 / compression
    timeline = [[lead, "STATUS_QUEUED"], [lead + q, "STATUS_FINETUNING"],
                [lead + q + t, "STATUS_READY"]]  # fmt: skip
    spec = harness.scenario(models, timeline=timeline)
    ids = harness.model_ids(models)
    with harness.running_simulator(spec, workdir, "sim-lifecycle") as sim:
        origin = sim.origin_mono()
        config = harness.watcher_config(
            workdir / "watcher.yaml", base_url=sim.base_url, ids=ids,
            state=workdir / "watcher.db", interval=interval, settled_interval=settled,
            # Fewer workers than models: with every model in flight the poll loop
            # sleeps up to a heartbeat (1 s) before it sees the next due time (see
            # the report), which at these compressed intervals would skew the count.
            jitter=0.1, concurrency=2,
        )  # fmt: skip
        child = harness.run_watcher(config, workdir / "watcher.log")
        try:
            snapshots = []
            for moment in (origin + lead, origin + lead + q + t + w):
                while time.monotonic() < moment:
                    if not child.alive():
                        raise RuntimeError(f"the watcher exited:\n{child.tail()}")
                    time.sleep(min(0.2, max(0.0, moment - time.monotonic())))
                snapshots.append(sim.stats())
        finally:
            child.stop()
    before, after = snapshots
    requests = int(after["requests"]) - int(before["requests"])
    by_endpoint = {k: int(v) - int(before["by_endpoint"].get(k, 0))
                   for k, v in after["by_endpoint"].items()}  # fmt: skip
    per_model = requests / models
    hours = (q + t + w) * compression / 3600
    expected = lifecycle_rules(interval * compression, settled * compression)
    result = {
        "compression": compression, "models": models, "seconds": q + t + w,
        "requests": requests, "by_endpoint": by_endpoint,
        "per_model": per_model, "per_model_hour": per_model / hours,
        "fixed_per_model_hour": expected["fixed_per_model_hour"],
        "expected_per_model_hour": expected["watcher_per_model_hour"],
        "ratio": expected["fixed_per_model_hour"] / (per_model / hours),
    }  # fmt: skip
    log(f"lifecycle (compressed {compression:g}x): {per_model:.0f} requests/model = "
        f"{result['per_model_hour']:.1f}/model-hour (rules: "
        f"{expected['watcher_per_model_hour']:.1f}); fixed-interval "
        f"{expected['fixed_per_model_hour']:.1f} -> {result['ratio']:.1f}x fewer")  # fmt: skip
    return result


def run(
    workdir: Path, *, quick: bool = False, with_proposals: bool = True, log: Any = print
) -> dict[str, Any]:
    rules = [lifecycle_rules(i, s) for i, s in ((30, 1800), (60, 1800), (300, 1800), (60, 3600))]
    for r in rules:
        log(f"lifecycle rules: interval {r['interval']:g}s settled {r['settled_interval']:g}s: "
            f"{r['watcher_per_model_hour']:.1f} vs {r['fixed_per_model_hour']:.1f} "
            f"requests/model-hour -> {r['ratio']:.1f}x")  # fmt: skip
    if quick:
        kwargs: dict[str, Any] = {"models": 400, "ready": 100, "gap": 0.2, "start": 10.0}
    else:
        kwargs = {}
    budget = budget_run(workdir / "budget", log=log, **kwargs)
    proto = None
    if with_proposals:
        # The default is P9 ("pace, then pick"); the comparison is the policy before it.
        proto = _tolerant(lambda: budget_run(workdir / "budget-proposals",
                                             proposals="pick-then-pace", log=log, **kwargs),
                          log)  # fmt: skip
    compressed = lifecycle_run(workdir / "lifecycle", compression=3600.0, log=log)
    return {"budget": budget, "proposals": proto, "rules": rules, "lifecycle_run": compressed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/budget"))
    args = parser.parse_args()
    result = run(args.workdir, quick=args.quick)
    for key in ("budget", "proposals"):
        if result[key]:
            result[key].pop("rate_series")
            result[key].pop("latencies")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
