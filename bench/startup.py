"""Startup: process start to first request, ``check-config`` wall time, round one, imports.

* **first request**: ``finetune-watcher run`` is spawned with a fresh state and the
  default ``poll.interval`` (60 s); the time is from the spawn to the simulator's first
  counted request (its stats are read every 5 ms). The daemon's own log line "watcher
  starting" splits it into "imports + configuration" and "until the first poll".
* **commands**: wall time of ``finetune-watcher check-config`` on a one-model
  configuration with no target, one ``json://`` target, and four targets of different
  kinds (``json://``, ``mailto://``, ``slack://``, ``ntfys://``: apprise validates each);
  ``status`` on a seeded one-model state; ``healthcheck --url`` against a running daemon
  (health.listen set). Medians of ``reps`` (5, also with ``--quick``).
* **round one**: from the spawn until every one of N models was polled once, fresh
  state, no budget cap (``--round-one-cap`` bounds the wait; an unfinished round is
  reported with how far it got).
* **imports**: ``python -X importtime`` of each command (``run``: what it imports before it
  polls), the largest top-level packages.
* **floor**: ``python -c pass`` and ``python -c "import aiohttp, pydantic_settings, structlog,
  yaml, anyio"`` (the libraries the daemon cannot start without), medians of ``reps``: what
  part of a start is the interpreter and the fixed choices, what part is ours.

Every command runs in the venv ``--venv`` names, default a plain install (``pip install
.``, no extras: what the Dockerfile and the systemd unit's venv hold), built by
``harness.plain_venv`` if missing; the development venv (``--venv .venv``) also has the
[dev] extras, e.g. ``rich``, which structlog imports when it is there. The code is the
working tree's either way (``python -m watcher`` from the tree); the output names the
venv measured.

    .venv/bin/python bench/startup.py --quick                 # the plain install
    .venv/bin/python bench/startup.py --quick --venv .venv    # the development venv
    .venv/bin/python bench/startup.py --steps commands floor  # only these steps
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
#: The floor: what the daemon cannot start without (the project's fixed choices).
FLOOR_IMPORTS = "import aiohttp, pydantic_settings, structlog, yaml, anyio"
#: What each command cannot do without: the libraries it imports (none of them ours),
#: measured alone so the report can say which part of a command's time is the project's.
COMMAND_FLOORS = (
    ("check-config (4 targets)",
     "import pydantic_settings, structlog, yaml, apprise.plugins.custom_json, "
     "apprise.plugins.email, apprise.plugins.slack, apprise.plugins.ntfy"),
    ("status", "import pydantic_settings, structlog, yaml, anyio, sqlite3"),
    ("run", FLOOR_IMPORTS + ", apprise.plugins.custom_json, prometheus_client, sqlite3"),
)  # fmt: skip
#: Four targets of different kinds (made-up credentials; nothing is sent by check-config).
FOUR_TARGETS = [
    HOOK,
    "mailto://user:password@example.com?to=ops@example.com",
    "slack://T1JJ3T3L2/A1BRTD4JD/TWNG1Y2L6WR1GNUUHJ2DPQ9N/#general",
    "ntfys://ntfy.example.com/finetunes",
]


def _first_request(
    sim: harness.Simulator, config: Path, workdir: Path, tag: str, python: str
) -> dict[str, Any]:
    before = int(sim.stats()["requests"])
    wall0 = time.time()
    child = harness.run_watcher(config, workdir / f"{tag}.log", python)
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


def first_request(
    workdir: Path, counts: list[int], reps: int, log: Any, python: str = harness.PYTHON
) -> list[dict[str, Any]]:
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
                runs.append(_first_request(sim, config, workdir, f"first-{n}-{rep}", python))
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


def _timed(argv: list[str], reps: int, what: str) -> list[float]:
    times = []
    for _ in range(reps):
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, cwd=harness.ROOT, env=_env(),
                              timeout=60, check=False)  # fmt: skip
        times.append(time.monotonic() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr).decode()[-500:]}")  # fmt: skip
    return times


def _check_configs(workdir: Path) -> dict[str, Path]:
    configs = {}
    for tag, urls in (("no target", []), ("1 json:// target", [HOOK]),
                      ("4 targets (json, mailto, slack, ntfys)", FOUR_TARGETS)):  # fmt: skip
        slug = str(len(urls))
        configs[tag] = harness.watcher_config(
            workdir / f"check-{slug}" / "watcher.yaml", base_url="http://127.0.0.1:9",
            ids=["bench-00000"], state=workdir / f"check-{slug}" / "watcher.db", interval=60.0,
            urls=urls,
        )  # fmt: skip
    return configs


def check_config(
    workdir: Path, reps: int, log: Any, python: str = harness.PYTHON
) -> dict[str, Any]:
    """``check-config`` with 0, 1 and 4 targets; the 1-target figure is the old one."""
    rows = {}
    for tag, config in _check_configs(workdir).items():
        times = _timed([python, "-m", "watcher", "check-config", "-c", str(config)], reps,
                       "check-config")  # fmt: skip
        rows[tag] = {"median": harness.median(times), "runs": times}
        log(f"startup: check-config, {tag}: {rows[tag]['median']:.2f}s (median of {reps})")
    one = rows["1 json:// target"]
    return {"median": one["median"], "runs": one["runs"], "variants": rows}


def status_and_healthcheck(
    workdir: Path, reps: int, log: Any, python: str = harness.PYTHON
) -> dict[str, Any]:
    """``status`` on a seeded one-model state; ``healthcheck`` against a running daemon."""
    ids = ["bench-00000"]
    result: dict[str, Any] = {}
    with harness.running_simulator(harness.scenario(1), workdir, "sim-commands") as sim:
        state = workdir / "commands" / "watcher.db"
        for suffix in ("", "-wal", "-shm", ".lock"):
            (state.parent / (state.name + suffix)).unlink(missing_ok=True)
        harness.seed_state(state, ids)
        import socket

        with socket.socket() as probe:
            probe.bind((harness.LOOPBACK, 0))
            port = probe.getsockname()[1]
        config = harness.watcher_config(
            workdir / "commands" / "watcher.yaml", base_url=sim.base_url, ids=ids, state=state,
            interval=60.0, urls=[HOOK], health_listen=f"{harness.LOOPBACK}:{port}",
        )  # fmt: skip
        times = _timed([python, "-m", "watcher", "status", "-c", str(config)], reps, "status")
        result["status"] = {"median": harness.median(times), "runs": times}
        log(f"startup: status {result['status']['median']:.2f}s (median of {reps})")
        child = harness.run_watcher(config, workdir / "commands" / "daemon.log", python)
        try:
            url = f"http://{harness.LOOPBACK}:{port}/healthz"
            harness.wait_for(lambda: _answers(url), 30, "the health server")
            times = _timed([python, "-m", "watcher", "healthcheck", "--url", url], reps,
                           "healthcheck")  # fmt: skip
        finally:
            child.stop()
        result["healthcheck"] = {"median": harness.median(times), "runs": times}
        log(f"startup: healthcheck {result['healthcheck']['median']:.2f}s (median of {reps})")
    result["config"] = str(config)
    result["health_url"] = url
    return result


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback)
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "CO_API"))}
    env["CO_API_KEY"] = harness.SIM_KEY
    return env


def import_times(
    workdir: Path, log: Any, commands: dict[str, Any] | None = None, python: str = harness.PYTHON
) -> dict[str, Any]:
    """Cumulative import time of the top-level packages, per command (``-X importtime``)."""
    check4 = _check_configs(workdir)["4 targets (json, mailto, slack, ntfys)"]
    argvs: dict[str, list[str]] = {
        "check-config": [python, "-X", "importtime", "-m", "watcher", "check-config",
                         "-c", str(workdir / "check-1" / "watcher.yaml")],
        "check-config (4 targets)": [python, "-X", "importtime", "-m", "watcher",
                                     "check-config", "-c", str(check4)],
        # what ``run`` imports before it polls (the daemon module and its friends)
        "run-imports": [python, "-X", "importtime", "-c",
                        "import watcher.cli, watcher.settings, watcher.daemon"],
    }  # fmt: skip
    if commands:
        argvs["status"] = [python, "-X", "importtime", "-m", "watcher", "status",
                           "-c", commands["config"]]  # fmt: skip
        # the daemon is gone by now: the probe fails fast, its imports are the same
        argvs["healthcheck"] = [python, "-X", "importtime", "-m", "watcher",
                                "healthcheck", "--url", commands["health_url"]]  # fmt: skip
    result: dict[str, Any] = {}
    for command, argv in argvs.items():
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


def floor(reps: int, log: Any, python: str = harness.PYTHON) -> dict[str, Any]:
    """The interpreter alone, and the libraries the daemon cannot start without."""
    result: dict[str, Any] = {}
    cases = [("python -c pass", "pass"), (f"python -c {FLOOR_IMPORTS!r}", FLOOR_IMPORTS)]
    cases += [(f"the libraries {cmd} imports", libs) for cmd, libs in COMMAND_FLOORS]
    for tag, code in cases:
        times = _timed([python, "-c", code], reps, tag)
        result[tag] = {"median": harness.median(times), "runs": times}
        log(f"startup: floor, {tag}: {result[tag]['median']:.2f}s (median of {reps})")
    return result


def round_one(
    workdir: Path, counts: list[int], cap: float, log: Any, python: str = harness.PYTHON
) -> list[dict[str, Any]]:
    rows = []
    with harness.running_simulator(harness.scenario(max(counts)), workdir, "sim-round") as sim:
        for n in counts:
            ids = harness.model_ids(n)
            config = harness.watcher_config(
                workdir / f"round-{n}" / "watcher.yaml", base_url=sim.base_url, ids=ids,
                state=workdir / f"round-{n}" / "watcher.db", interval=3600.0,
            )  # fmt: skip
            sim.reset_stats()
            child = harness.run_watcher(config, workdir / f"round-{n}.log", python)
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


STEPS = ("commands", "first_request", "check_config", "imports", "floor", "round_one")


def run(
    workdir: Path,
    *,
    quick: bool = False,
    log: Any = print,
    python: str | None = None,
    steps: tuple[str, ...] = STEPS,
) -> dict[str, Any]:
    """``python``: the venv's interpreter the commands run in (default: ``harness.plain_venv``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    python = python or harness.plain_venv(log=log)
    venv = harness.venv_label(python)
    log(f"startup: venv measured: {venv}")
    reps = 5  # medians of 5 even with --quick (issue 15, goal 2)
    result: dict[str, Any] = {"venv": venv}
    # A page cache warm for this venv: the first of all runs is not a start users see twice.
    _timed([python, "-m", "watcher", "--help"], 1, "warm-up")
    if "commands" in steps or "imports" in steps:
        result["commands"] = status_and_healthcheck(workdir, reps, log, python)
    if "first_request" in steps:
        result["first_request"] = first_request(workdir, [1, 10000], reps, log, python)
    if "check_config" in steps:
        result["check_config"] = check_config(workdir, reps, log, python)
    if "imports" in steps:
        result["imports"] = import_times(workdir, log, result["commands"], python)
    if "floor" in steps:
        result["floor"] = floor(reps, log, python)
    if "round_one" in steps:
        result["round_one"] = round_one(
            workdir, [100, 1000, 10000], 20.0 if quick else 40.0, log, python
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench/startup"))
    parser.add_argument(
        "--venv", type=Path, default=harness.PLAIN_VENV,
        help=f"the venv to measure in, built if missing (default {harness.PLAIN_VENV}: a plain "
        "`pip install .`, no extras, what users run; the development venv: --venv .venv)",
    )  # fmt: skip
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="only these steps (default: all)")  # fmt: skip
    args = parser.parse_args()
    python = harness.plain_venv(args.venv.absolute())
    result = run(args.workdir, quick=args.quick, python=python, steps=tuple(args.steps))
    print(json.dumps({k: v for k, v in result.items() if k != "imports"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
