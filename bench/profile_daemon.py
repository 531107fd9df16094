"""Profile ``finetune-watcher run`` in steady state (not part of ``run_all``).

Starts the simulator in its own process with N training models, seeds the state (so
the first round already finds nothing new), then runs the daemon *in this process*
under pyinstrument or py-spy, profiling only a window after a warm-up:

    .venv/bin/python bench/profile_daemon.py --models 1000 --seconds 10 --out /tmp/prof.txt
    .venv/bin/python bench/profile_daemon.py --models 10000 --tool py-spy --out /tmp/prof.svg
    .venv/bin/python bench/profile_daemon.py --models 10000 --tool tracemalloc \
        --interval 5 --out /tmp/memory.txt --url json://127.0.0.1:9/notify
    # the paced daemon (1,000 polls/s) under py-spy, raw stacks for bench/collapse
    .venv/bin/python bench/profile_daemon.py --models 2000 --interval 2 --concurrency 16 \
        --tool py-spy --seconds 20 --out /tmp/paced.txt

pyinstrument samples the main thread (the event loop); py-spy records the daemon as a
subprocess (``finetune-watcher run``) and writes a flame graph; tracemalloc snapshots
the heap after the warm-up and lists the allocation sites still holding the most memory.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness


def profile_in_process(config: Path, warmup: float, seconds: float, out: Path) -> None:
    from pyinstrument import Profiler

    from watcher.cli import main

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    # Signal handlers run on the main thread: the event loop's thread is the one sampled.
    signal.signal(signal.SIGUSR1, lambda *_: profiler.start())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.stop())

    def window() -> None:
        time.sleep(warmup)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(seconds)
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    os.environ["CO_API_KEY"] = harness.SIM_KEY
    threading.Thread(target=window, daemon=True).start()
    main(["run", "-c", str(config), "--log-format", "json", "--log-level", "warning"])
    out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))


def profile_tracemalloc(config: Path, warmup: float, out: Path) -> None:
    import linecache
    import tracemalloc

    from watcher.cli import main

    snapshot: list[tracemalloc.Snapshot] = []
    signal.signal(signal.SIGUSR1, lambda *_: snapshot.append(tracemalloc.take_snapshot()))

    def window() -> None:
        time.sleep(warmup)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    os.environ["CO_API_KEY"] = harness.SIM_KEY
    threading.Thread(target=window, daemon=True).start()
    tracemalloc.start(1)
    main(["run", "-c", str(config), "--log-format", "json", "--log-level", "warning"])
    stats = snapshot[0].statistics("lineno")
    lines = [f"traced: {sum(s.size for s in stats) / 2**20:.1f} MiB"]
    for stat in stats[:40]:
        frame = stat.traceback[0]
        source = linecache.getline(frame.filename, frame.lineno).strip()[:70]
        where = frame.filename.split("site-packages/")[-1].replace(str(harness.ROOT) + "/", "")
        lines.append(f"{stat.size / 1024:9.1f} KiB {stat.count:7d} {where}:{frame.lineno} {source}")
    out.write_text("\n".join(lines) + "\n")


def summarise_collapsed(raw: Path, top: int = 40) -> str:
    """Self and inclusive shares of the functions in py-spy's collapsed stacks (``raw``).

    Inclusive counts a function once per sample however deep it recurses. py-spy skips
    idle threads unless given ``--idle``, so the shares are of the time spent on a CPU.
    """
    from collections import Counter

    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                  for f in stack.split(";")]  # fmt: skip
        total += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"{total} samples", "", "self:"]
    lines += [f"{c / total:6.1%} {name}" for name, c in self_counts.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{c / total:6.1%} {name}" for name, c in incl.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def profile_py_spy(config: Path, workdir: Path, warmup: float, seconds: float, out: Path) -> None:
    child = harness.run_watcher(config, workdir / "watcher.log")
    try:
        time.sleep(warmup)
        fmt = "raw" if out.suffix == ".txt" else "flamegraph"
        subprocess.run(
            [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(child.pid),
             "-d", str(int(seconds)), "-r", "250", "-f", fmt, "-o", str(out), "--nonblocking"],
            check=True,
        )  # fmt: skip
        if fmt == "raw":
            summary = out.with_suffix(".summary.txt")
            summary.write_text(summarise_collapsed(out))
            print(f"summary in {summary}")
    finally:
        child.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.001)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fresh", action="store_true", help="no seeded state: profile round one")
    parser.add_argument("--url", action="append", default=[],
                        help="a notification target (repeatable; made-up ones are fine: "
                             "nothing changes, so nothing is sent)")  # fmt: skip
    parser.add_argument(
        "--tool", choices=("pyinstrument", "py-spy", "tracemalloc"), default="pyinstrument"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fw-profile-") as tmp:
        workdir = Path(tmp)
        ids = harness.model_ids(args.models)
        with harness.running_simulator(harness.scenario(args.models), workdir) as sim:
            state = workdir / "state" / "watcher.db"
            if not args.fresh:
                harness.seed_state(state, ids)
            config = harness.watcher_config(
                workdir / "watcher.yaml", base_url=sim.base_url, ids=ids, state=state,
                interval=args.interval, concurrency=args.concurrency, urls=args.url,
            )  # fmt: skip
            before = sim.events_polls()
            if args.tool == "pyinstrument":
                profile_in_process(config, args.warmup, args.seconds, args.out)
            elif args.tool == "tracemalloc":
                profile_tracemalloc(config, args.warmup + args.seconds, args.out)
            else:
                profile_py_spy(config, workdir, args.warmup, args.seconds, args.out)
            polls = sim.events_polls() - before
            print(f"{polls} polls in {args.warmup + args.seconds:g}s; profile in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
