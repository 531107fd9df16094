"""Memory: the daemon's RSS with 1, 100, 1,000 and 10,000 watched models after settling.

One simulator (10,000 training models) serves every watcher; the watchers run side by
side, each with its own seeded state (a restarted watcher: every model already has a
state, as after its first round), ``poll.interval`` 30 s (every model is polled within
the settle period), no budget cap, and one ``json://`` notification URL (a real
configuration has one; it makes the daemon load apprise; 1 and 10,000 models are also
run without one, to show apprise's share). RSS (VmRSS) and its peak
(VmHWM) come from /proc after the settle period.

The watchers run in the venv ``--venv`` names (default: a plain install, ``pip install .``
without extras, built by ``harness.plain_venv`` if missing: what users run; the
development venv's extras add imports, e.g. structlog's ``rich``); the code is the
working tree's either way. The output names the venv measured.

``--proposals`` adds the same set run through bench/proposals.py.

    .venv/bin/python bench/memory.py --settle 60
    .venv/bin/python bench/memory.py --venv .venv     # the development venv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

COUNTS = (1, 100, 1000, 10000)
INTERVAL = 30.0
DEAD_HOOK = "json://127.0.0.1:9/notify"  # never called: nothing changes
#: Also measured without any notification URL (apprise then never loads its plugins).
NO_URL_COUNTS = (1, 10000)


def run(
    workdir: Path,
    *,
    settle: float = 60.0,
    proposals: bool = True,
    log: Any = print,
    python: str | None = None,
) -> dict[str, Any]:
    """``python``: the venv's interpreter the watchers run in (default: ``harness.plain_venv``)."""
    python = python or harness.plain_venv(log=log)
    venv = harness.venv_label(python)
    # The tree's code in any venv (bench/proposals.py is run as a script, not with -m).
    tree = {"PYTHONPATH": str(harness.ROOT)}
    kinds = ("watcher", "no-url", "proposed") if proposals else ("watcher", "no-url")
    top = max(COUNTS)
    children: dict[tuple[str, int], harness.Child] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    for n in COUNTS:
        harness.seed_state(workdir / f"seed-{n}" / "watcher.db", harness.model_ids(n))
    with harness.running_simulator(harness.scenario(top), workdir, "sim-memory") as sim:
        for kind in kinds:
            for n in NO_URL_COUNTS if kind == "no-url" else COUNTS:
                ids = harness.model_ids(n)
                state = workdir / f"{kind}-{n}" / "watcher.db"
                harness.copy_state(workdir / f"seed-{n}" / "watcher.db", state)
                config = harness.watcher_config(
                    workdir / f"{kind}-{n}" / "watcher.yaml", base_url=sim.base_url, ids=ids,
                    state=state, interval=INTERVAL, urls=[] if kind == "no-url" else [DEAD_HOOK],
                )  # fmt: skip
                logfile = workdir / f"{kind}-{n}" / "watcher.log"
                if kind != "proposed":
                    children[(kind, n)] = harness.run_watcher(config, logfile, python)
                else:
                    launcher = str(Path(__file__).with_name("proposals.py"))
                    children[(kind, n)] = harness.spawn(
                        [python, launcher, "run", "-c", str(config),
                         "--log-format", "json"], logfile, env=tree)  # fmt: skip
        started = time.monotonic()
        log(f"memory: {len(children)} watchers started in {venv}; settling {settle:g}s")
        try:
            while time.monotonic() - started < settle:
                time.sleep(min(5.0, settle))
                elapsed = round(time.monotonic() - started, 1)
                for (kind, n), child in children.items():
                    if not child.alive():
                        raise RuntimeError(f"{kind} with {n} models exited:\n{child.tail()}")
                    samples.setdefault(f"{kind}-{n}", []).append(
                        {"t": elapsed, **harness.memory_kib(child.pid)}
                    )
            polled = sim.stats()["by_model"]
        finally:
            for child in children.values():
                child.stop()
    rows = []
    for kind in kinds:
        for n in NO_URL_COUNTS if kind == "no-url" else COUNTS:
            last = samples[f"{kind}-{n}"][-1]
            rows.append({"kind": kind, "models": n, "rss_kib": last["VmRSS"],
                         "peak_kib": last["VmHWM"]})  # fmt: skip
        base = next(r for r in rows if r["kind"] == kind and r["models"] == 1)
        for row in rows:
            if row["kind"] == kind and row["models"] > 1:
                row["kib_per_model"] = (row["rss_kib"] - base["rss_kib"]) / (row["models"] - 1)
    unpolled = sum(1 for i in harness.model_ids(top) if int(polled.get(i, 0)) == 0)
    log(f"  venv measured: {venv}; models of N={top} never polled at the end: {unpolled}")
    for row in rows:
        log(f"  {row['kind']:8s} N={row['models']:5d} RSS {row['rss_kib'] / 1024:6.1f} MiB "
            f"peak {row['peak_kib'] / 1024:6.1f} MiB "
            f"{row.get('kib_per_model', 0):5.2f} KiB/model")  # fmt: skip
    return {"settle": settle, "interval": INTERVAL, "venv": venv, "rows": rows,
            "samples": samples, "unpolled_at_end": unpolled}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--no-proposals", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/memory"))
    parser.add_argument(
        "--venv", type=Path, default=harness.PLAIN_VENV,
        help="the venv the watchers run in; built with `pip install .` (no extras) if "
             f"missing (default {harness.PLAIN_VENV}; `.venv` for the development venv)",
    )  # fmt: skip
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    python = harness.plain_venv(args.venv.absolute())
    result = run(args.workdir, settle=args.settle, proposals=not args.no_proposals, python=python)
    print(f"venv measured: {result['venv']}")
    print(json.dumps(result["rows"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
