"""The test suite's wall time on this machine (issue 15, goal 5): the README's pytest step.

    .venv/bin/python bench/suite.py

Runs ``pytest`` exactly as the README's test command does (the whole suite, which
tests/conftest.py spreads over 2 xdist workers), times it, and reads pytest's summary line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def run(log: Any = print) -> dict[str, Any]:
    pytest = str(Path(harness.PYTHON).parent / "pytest")
    load = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run([pytest, "-q", "-p", "no:cacheprovider"], cwd=harness.ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    wall = time.monotonic() - started
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
              for n, kind in _COUNTS.findall(summary)}  # fmt: skip
    result = {"wall": wall, "exit": done.returncode, "summary": summary.strip("= "),
              "counts": counts, "load_before": load}  # fmt: skip
    log(f"suite: exit {done.returncode} in {wall:.0f}s: {result['summary']}")
    return result


if __name__ == "__main__":
    print(run())
