"""Run every benchmark and write docs/benchmarks.md and docs/img/*.png.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/run_all.py            # ~30 min on 2 cores
    .venv/bin/python bench/run_all.py --quick    # ~25 min: paced tables in full, the rest shorter

``--only poll_cost,latency`` runs a subset (the others are left out of the report);
``--render results.json`` re-renders the report from saved results without running.
Raw results are saved as ``results.json`` in ``--workdir`` (default /tmp/fw-bench).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import breakdown
import budget
import harness
import latency
import memory
import paced
import poll_cost
import report
import startup
import suite

STEPS = ("paced", "providers", "poll_cost", "breakdown", "memory", "startup", "latency", "budget",
         "suite")  # fmt: skip
#: A hand-kept section of docs/benchmarks.md (not produced here) that a re-render keeps.
KEPT_SECTIONS = ("## Container image",)


def _code() -> str:
    """The commit measured, and whether the working tree differed from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=harness.ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"commit {head}" + (" plus uncommitted changes" if dirty else "")


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def run_step(step: str, workdir: Path, quick: bool) -> Any:
    where = workdir / step
    where.mkdir(parents=True, exist_ok=True)
    # The paced tables lead the report (issue 15): full repetitions even with --quick.
    if step == "paced":
        return paced.run([1000.0, 100.0], 3, 8.0, where, log)
    if step == "providers":
        return paced.run([1000.0], 2, 4.0, where, log,
                         providers=paced.PROVIDERS, with_sdk=False)  # fmt: skip
    if step == "poll_cost":
        return poll_cost.run([100, 1000, 10000], 1 if quick else 3, 3.0 if quick else 6.0,
                             1.0 if quick else 2.0, where, log)  # fmt: skip
    if step == "breakdown":
        return breakdown.run(where, quick=quick, log=log)
    if step == "memory":
        return memory.run(where, settle=20.0 if quick else 60.0, proposals=False, log=log)
    if step == "startup":
        return startup.run(where, quick=quick, log=log)
    if step == "latency":
        if quick:
            return latency.run(where, ready=60, interval=2.0, gap=0.25, start=8.0, log=log)
        return latency.run(where, log=log)
    if step == "budget":
        return budget.run(where, quick=quick, log=log)
    if step == "suite":
        return suite.run(log=log)
    raise ValueError(step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter runs")
    parser.add_argument("--only", default=",".join(STEPS), help="comma-separated steps")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fw-bench"))
    parser.add_argument("--docs", type=Path, default=harness.ROOT / "docs")
    parser.add_argument("--render", type=Path, help="render saved results.json only")
    args = parser.parse_args()

    if args.render:
        results = json.loads(args.render.read_text())
    else:
        steps = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(steps) - set(STEPS)
        if unknown:
            parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
        args.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        results = {
            "machine": harness.machine(),
            "command": "python bench/run_all.py"
            + (" --quick" if args.quick else "")
            + ("" if args.only == ",".join(STEPS) else f" --only {shlex.quote(args.only)}"),
            "quick": args.quick,
            "code": _code(),
        }
        saved = args.workdir / "results.json"
        for step in steps:
            log(f"== {step}")
            step_started = time.monotonic()
            try:
                results[step] = run_step(step, args.workdir, args.quick)
            except Exception as exc:  # one broken step must not cost the others' figures
                log(f"== {step} FAILED: {type(exc).__name__}: {exc}")
                results.setdefault("failed", {})[step] = f"{type(exc).__name__}: {exc}"
            log(f"== {step} done in {time.monotonic() - step_started:.0f}s")
            results["seconds"] = time.monotonic() - started
            saved.write_text(json.dumps(results, indent=1))  # after every step
        log(f"results saved to {saved}")

    results["notes"] = report.notes(results)
    images = report.plots(results, args.docs / "img")
    target = args.docs / "benchmarks.md"
    text = report.markdown(results, images)
    if target.exists():  # keep the hand-kept sections (e.g. the container image's size)
        old = target.read_text()
        for heading in KEPT_SECTIONS:
            if heading in old and heading not in text:
                text = text.rstrip("\n") + "\n\n" + old[old.index(heading) :]
    target.write_text(text)
    log(f"wrote {args.docs / 'benchmarks.md'} and {len(images)} plots")
    for row in report.targets(results):
        log(f"  {row[0]}: {row[1]} -> {row[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
