"""Startup: process start to first request, ``check-config`` wall time, round one, imports.

* **first request**: ``finetune-watcher run`` is spawned with a fresh state and the
  default ``poll.interval`` (60 s); the time is from the spawn to the simulator's first
  counted request (its stats are read every 5 ms). The daemon's own log line "watcher
  starting" splits it into "imports + configuration" and "until the first poll".
* **check-config**: wall time of ``finetune-watcher check-config`` on a one-model
  configuration with one ``json://`` URL (apprise validates it).
* **round one**: from the spawn until every one of N models was polled once, fresh
  state, no budget cap (``--round-one-cap`` bounds the wait; an unfinished round is
  reported with how far it got).
* **imports**: ``python -X importtime`` of the two commands, the largest top-level packages.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

HOOK = "json://127.0.0.1:9/notify"


def _first_request(sim: harness.Simulator, config: Path, workdir: Path, tag: str) -> dict[str, Any]:
    before = int(sim.stats()["requests"])
    wall0 = time.time()
    child = harness.run_watcher(config, workdir / f"{tag}.log")
    try:
        waited = harness.wait_for(
            lambda: int(sim.stats()["requests"]) > before, 60, "the first request", every=0.005
        )
    finally:
        child.stop()
    first = child.started + waited
    ready = None
    for line in child.log.read_text(errors="replace").splitlines():
        if '"watcher starting"' in line:
            stamp = json.loads(line).get("timestamp", "")
            ready = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - wall0
            break
    return {"to_first_request": first - child.started, "to_log_line": ready}


def first_request(workdir: Path, counts: list[int], reps: int, log: Any) -> list[dict[str, Any]]:
    rows = []
    with harness.running_simulator(harness.scenario(max(counts)), workdir, "sim-startup") as sim:
        for n in counts:
            runs = []
            for rep in range(reps):
                state = workdir / f"first-{n}-{rep}" / "watcher.db"
                config = harness.watcher_config(
                    workdir / f"first-{n}-{rep}" / "watcher.yaml", base_url=sim.base_url,
                    ids=harness.model_ids(n), state=state, interval=60.0, urls=[HOOK],
                )  # fmt: skip
                runs.append(_first_request(sim, config, workdir, f"first-{n}-{rep}"))
            row = {
                "models": n,
                "to_first_request": harness.median([r["to_first_request"] for r in runs]),
                "to_log_line": harness.median(
                    [r["to_log_line"] for r in runs if r["to_log_line"] is not None]
                ),
                "runs": runs,
            }
            rows.append(row)
            log(f"startup: N={n:5d} first request after {row['to_first_request']:.2f}s "
                f"(log line 'watcher starting' at {row['to_log_line']:.2f}s)")  # fmt: skip
    return rows


def check_config(workdir: Path, reps: int, log: Any) -> dict[str, Any]:
    config = harness.watcher_config(
        workdir / "check" / "watcher.yaml", base_url="http://127.0.0.1:9",
        ids=["bench-00000"], state=workdir / "check" / "watcher.db", interval=60.0, urls=[HOOK],
    )  # fmt: skip
    times = []
    for _ in range(reps):
        started = time.monotonic()
        done = subprocess.run(
            [*harness.WATCHER, "check-config", "-c", str(config)], capture_output=True,
            cwd=harness.ROOT, env=_env(), timeout=60, check=False,
        )  # fmt: skip
        times.append(time.monotonic() - started)
        if done.returncode != 0:
            raise RuntimeError(f"check-config failed: {done.stderr.decode()[-500:]}")
    result = {"median": harness.median(times), "runs": times}
    log(f"startup: check-config {result['median']:.2f}s (median of {reps})")
    return result


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "CO_API"))}
    env["CO_API_KEY"] = harness.SIM_KEY
    return env


def import_times(workdir: Path, log: Any) -> dict[str, Any]:
    """Cumulative import time of the top-level packages, per command (``-X importtime``)."""
    config = workdir / "check" / "watcher.yaml"
    result: dict[str, Any] = {}
    for command in ("check-config", "run-imports"):
        if command == "check-config":
            argv = [harness.PYTHON, "-X", "importtime", "-m", "watcher", "check-config",
                    "-c", str(config)]  # fmt: skip
        else:  # what ``run`` imports before it polls (the daemon module and its friends)
            argv = [harness.PYTHON, "-X", "importtime", "-c",
                    "import watcher.cli, watcher.settings, watcher.daemon"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, cwd=harness.ROOT, env=_env(),
                              timeout=60, check=False)  # fmt: skip
        tops: dict[str, float] = {}
        total = 0.0
        for line in done.stderr.decode(errors="replace").splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if not match:
                continue
            cumulative, depth, name = int(match.group(2)), len(match.group(3)), match.group(4)
            if depth == 1:  # a top-level import of the program
                root = name.split(".")[0] if not name.startswith("watcher") else name
                tops[root] = tops.get(root, 0.0) + cumulative / 1e6
                total += cumulative / 1e6
        ranked = sorted(tops.items(), key=lambda item: -item[1])[:12]
        result[command] = {"total": total, "top": ranked}
        log(f"startup: imports of {command}: {total:.2f}s; "
            + ", ".join(f"{k} {v:.2f}s" for k, v in ranked[:6]))  # fmt: skip
    return result


def round_one(workdir: Path, counts: list[int], cap: float, log: Any) -> list[dict[str, Any]]:
    rows = []
    with harness.running_simulator(harness.scenario(max(counts)), workdir, "sim-round") as sim:
        for n in counts:
            ids = harness.model_ids(n)
            config = harness.watcher_config(
                workdir / f"round-{n}" / "watcher.yaml", base_url=sim.base_url, ids=ids,
                state=workdir / f"round-{n}" / "watcher.db", interval=3600.0,
            )  # fmt: skip
            sim.reset_stats()
            child = harness.run_watcher(config, workdir / f"round-{n}.log")
            polled = 0
            try:
                deadline = child.started + cap
                while time.monotonic() < deadline:
                    by_model = sim.stats()["by_model"]
                    polled = sum(1 for i in ids if i in by_model)
                    if polled >= n:
                        break
                    time.sleep(0.05 if n <= 1000 else 0.5)
                seconds = time.monotonic() - child.started
                cpu = harness.cpu_seconds(child.pid)
            finally:
                child.stop()
            row = {"models": n, "polled": polled, "seconds": seconds, "cpu": cpu,
                   "finished": polled >= n}  # fmt: skip
            if not row["finished"] and polled:
                # Each first sight costs O(N) (all N models' metrics), so the rest of
                # the round goes at the rate seen so far: N polls x O(N) = O(N^2).
                row["projected_seconds"] = seconds * n / polled
            rows.append(row)
            log(f"startup: round one N={n}: {polled}/{n} polled in {seconds:.1f}s "
                f"({cpu:.1f} CPU-s){'' if row['finished'] else ' -- not finished'}")  # fmt: skip
    return rows


def run(workdir: Path, *, quick: bool = False, log: Any = print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        "first_request": first_request(workdir, [1, 10000], 3 if quick else 5, log),
        "check_config": check_config(workdir, 3 if quick else 5, log),
        "imports": import_times(workdir, log),
        "round_one": round_one(workdir, [100, 1000, 10000], 20.0 if quick else 40.0, log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/startup"))
    args = parser.parse_args()
    result = run(args.workdir, quick=args.quick)
    print(json.dumps({k: v for k, v in result.items() if k != "imports"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
