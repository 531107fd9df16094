"""Detection latency: READY at known times, notification at a local webhook, the difference.

The simulator (own process, real clock) serves N models: ``ready`` of them turn READY
one every ``gap`` seconds from ``start``; the others keep training. The watcher polls
all N every ``poll.interval`` (default jitter 0.1, budget uncapped, seeded state so its
round one is a plain poll) and notifies a ``json://`` receiver in this process, which timestamps
each POST on the machine-wide monotonic clock. The simulator's t=0 on that clock comes
from ``/_sim/stats`` (the reading with the shortest round trip), so

    latency = arrival at the webhook - (simulator t=0 + the READY offset).

Ideal polling with period I gives a detection delay uniform on [0, I]: mean I/2, max I.

    .venv/bin/python bench/latency.py --interval 5 --ready 200
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

READY_PREFIX = "ready-"
_READY_ID = re.compile(rb"ready-\d{4}")


def ready_ids(count: int) -> list[str]:
    return [f"{READY_PREFIX}{i:04d}" for i in range(count)]


def latency_scenario(
    models: int, ready: int, start: float, gap: float, *, rate_limit: int | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """``models - ready`` generated training models plus ``ready`` explicit ones."""
    offsets = {model_id: start + k * gap for k, model_id in enumerate(ready_ids(ready))}
    spec = harness.scenario(models - ready, rate_limit_per_minute=rate_limit)
    spec["models"] = [
        {"id": model_id, "timeline": [*harness.TRAINING, [offset, "STATUS_READY"]]}
        for model_id, offset in offsets.items()
    ]
    return spec, offsets


def collect(
    receiver: harness.WebhookReceiver, origin: float, offsets: dict[str, float]
) -> dict[str, float]:
    """Latency per model, from the first notification naming it."""
    latencies: dict[str, float] = {}
    for arrived, body in list(receiver.received):
        match = _READY_ID.search(body)
        if match is None:
            continue
        model_id = match.group().decode()
        if model_id in offsets and model_id not in latencies:
            latencies[model_id] = arrived - (origin + offsets[model_id])
    return latencies


def ideal_mean(interval: float, jitter: float) -> float:
    """Mean wait for the next poll when gaps are uniform on [(1 - jitter) I, I].

    An event lands in a gap with probability proportional to its length, then uniformly
    inside it: E[G^2] / (2 E[G]); I / 2 without jitter.
    """
    if jitter <= 0:
        return interval / 2
    low = (1 - jitter) * interval
    mean_gap = (low + interval) / 2
    mean_square = (interval**3 - low**3) / (3 * (interval - low))
    return mean_square / (2 * mean_gap)


def summary(values: list[float], interval: float, jitter: float = 0.0) -> dict[str, float]:
    return {
        "count": len(values),
        "mean": sum(values) / len(values) if values else float("nan"),
        "p50": harness.percentile(values, 0.50),
        "p90": harness.percentile(values, 0.90),
        "p99": harness.percentile(values, 0.99),
        "max": max(values) if values else float("nan"),
        "ideal_mean": ideal_mean(interval, jitter),
        "ideal_max": interval,
    }


def run(
    workdir: Path,
    *,
    models: int = 1000,
    ready: int = 200,
    interval: float = 5.0,
    gap: float = 0.25,
    start: float = 12.0,
    jitter: float = 0.1,
    log: Any = print,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    spec, offsets = latency_scenario(models, ready, start, gap)
    training = harness.model_ids(models - ready)
    ids = [*training, *ready_ids(ready)]
    state = workdir / "watcher.db"
    harness.seed_state(state, ids)
    with (
        harness.WebhookReceiver() as receiver,
        harness.running_simulator(spec, workdir, "sim-latency") as sim,
    ):
        origin = sim.origin_mono()
        config = harness.watcher_config(
            workdir / "watcher.yaml", base_url=sim.base_url, ids=ids, state=state,
            interval=interval, jitter=jitter, urls=[receiver.url],
        )  # fmt: skip
        child = harness.run_watcher(config, workdir / "watcher.log")
        try:
            last = origin + max(offsets.values())
            deadline = last + 2 * interval + 30
            while time.monotonic() < deadline:
                if len(collect(receiver, origin, offsets)) >= ready:
                    break
                if not child.alive():
                    raise RuntimeError(f"the watcher exited:\n{child.tail()}")
                time.sleep(0.5)
            stats = sim.stats()
        finally:
            child.stop()
    latencies = collect(receiver, origin, offsets)
    values = sorted(latencies.values())
    from budget import _split  # the same split of each latency as the budget run

    detection, pipeline = _split(workdir / "watcher.log", origin, offsets, receiver)
    result = {
        "models": models,
        "ready": ready,
        "interval": interval,
        "gap": gap,
        "jitter": jitter,
        "latencies": values,
        "missing": ready - len(values),
        "requests": stats["requests"],
        "rate_limited": stats["rate_limited"],
        "detection_mean": sum(detection) / len(detection) if detection else float("nan"),
        "pipeline_mean": sum(pipeline) / len(pipeline) if pipeline else float("nan"),
        "pipeline_p99": harness.percentile(pipeline, 0.99),
        **summary(values, interval, jitter),
    }
    log(f"latency: N={models} I={interval:g}s: {len(values)}/{ready} notified; "
        f"p50 {result['p50']:.2f}s p99 {result['p99']:.2f}s max {result['max']:.2f}s "
        f"(ideal mean {result['ideal_mean']:.2f}s, max {interval:g}s)")  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--ready", type=int, default=200)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--gap", type=float, default=0.25)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/latency"))
    args = parser.parse_args()
    result = run(args.workdir, models=args.models, ready=args.ready, interval=args.interval,
                 gap=args.gap)  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "latencies"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
