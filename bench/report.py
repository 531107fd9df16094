"""Turns the results of ``bench/run_all.py`` into docs/benchmarks.md and docs/img/*.png."""

# ruff: noqa: E501 -- this module is Markdown prose and table rows; wrapping them hurts more.

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

CLIENT_NAMES = {
    "watcher": "finetune-watcher (`run`)",
    "bare": "bare aiohttp loop",
    "sdk": "cohere SDK loop",
    "proposed": "finetune-watcher + proposals (prototype)",
    "no-url": "finetune-watcher, no notification URL",
}


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _bound(c: dict[str, float]) -> str:
    if c["client_core_share"] >= 0.9:
        return "client CPU"
    if c["sim_core_share"] >= 0.9:
        return "simulator CPU"
    return "round trips"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# --- plots ------------------------------------------------------------------------------


def plots(results: dict[str, Any], img: Path) -> dict[str, str]:
    """Write the PNGs; returns name -> path relative to docs/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    poll = results.get("poll_cost")
    if poll:
        rows = poll["summary"]
        clients = [c for c in ("watcher", "proposed", "bare", "sdk") if c in rows[0]]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        width = 0.8 / len(clients)
        for i, client in enumerate(clients):
            xs = [j + i * width for j in range(len(rows))]
            left.bar(xs, [r[client]["cpu_per_1000"] * 1000 / 1000 for r in rows], width,
                     label=CLIENT_NAMES[client])  # fmt: skip
            right.bar(xs, [r[client]["polls_per_second"] for r in rows], width,
                      label=CLIENT_NAMES[client])  # fmt: skip
        for ax, title in ((left, "CPU per poll (ms) — lower is better"),
                          (right, "polls per second — higher is better")):  # fmt: skip
            ax.set_xticks([j + width * (len(clients) - 1) / 2 for j in range(len(rows))])
            ax.set_xticklabels([f"N = {r['models']:,}" for r in rows])
            ax.set_title(title)
            ax.grid(axis="y", alpha=0.3)
        left.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "poll-cost.png", dpi=110)
        plt.close(fig)
        written["poll_cost"] = "img/poll-cost.png"

    memory = results.get("memory")
    if memory:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for kind in ("watcher", "no-url", "proposed"):
            rows = [r for r in memory["rows"] if r["kind"] == kind]
            if rows:
                # Two points only without a URL: markers, since a line on a log axis would
                # suggest a curve that was not measured.
                ax.plot([r["models"] for r in rows], [r["rss_kib"] / 1024 for r in rows],
                        marker="o", linestyle="none" if kind == "no-url" else "-",
                        label=CLIENT_NAMES[kind])  # fmt: skip
        base = next(r for r in memory["rows"] if r["kind"] == "watcher" and r["models"] == 1)
        xs = [1, 100, 1000, 10000]
        mib = 2**20
        ax.plot(xs, [base["rss_kib"] / 1024 + (x - 1) * 2000 / mib for x in xs], "--",
                color="grey", label="target slope: +2 KB per model")  # fmt: skip
        ax.axhline(80e6 / mib, color="red", linestyle=":",
                   label=f"target: 80 MB (= {80e6 / mib:.1f} MiB) at 10,000")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("watched models")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title(f"RSS after {memory['settle']:g} s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "memory.png", dpi=110)
        plt.close(fig)
        written["memory"] = "img/memory.png"

    latency = results.get("latency")
    if latency and latency["latencies"]:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        values = latency["latencies"]
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post", label="measured")
        interval = latency["interval"]
        ax.plot([0, interval], [0, 1], "--", color="grey", label="ideal: uniform on [0, interval]")
        ax.axvline(
            interval + 0.1, color="red", linestyle=":", label="target: p99 ≤ interval + 100 ms"
        )
        ax.set_xlabel("READY visible → notification received (s)")
        ax.set_ylabel("fraction of notifications")
        ax.set_title(f"Detection latency, {latency['models']:,} models, interval {interval:g} s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(img / "latency.png", dpi=110)
        plt.close(fig)
        written["latency"] = "img/latency.png"

    budget = results.get("budget")
    if budget:
        run = budget["budget"]
        series = run["rate_series"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        ts = [b[0] for b in series[1:]]
        rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(series)]
        left.plot(ts, rates, label="requests/s at the simulator")
        left.axhline(run["budget"] / 60, color="green", linestyle="--",
                     label=f"watcher budget ({run['budget']}/min)")  # fmt: skip
        left.axhline(run["rate_limit"] / 60, color="red", linestyle=":",
                     label=f"API limit ({run['rate_limit']}/min)")  # fmt: skip
        left.set_ylim(0, run["rate_limit"] / 60 * 1.15)
        left.set_xlabel("seconds since the simulator started")
        left.set_ylabel("requests per second")
        left.set_title(f"{run['rate_limited']} responses were 429")
        left.grid(alpha=0.3)
        left.legend(fontsize=8, loc="lower right")
        values = run["latencies"]
        if values:
            n = len(values)
            right.step(values, [(i + 1) / n for i in range(n)], where="post", label="measured")
            right.axvline(run["ideal_mean"], color="grey", linestyle="--",
                          label=f"ideal mean {run['ideal_mean']:.2f} s")  # fmt: skip
            right.axvline(run["mean"], color="C0", linestyle=":",
                          label=f"measured mean {run['mean']:.2f} s")  # fmt: skip
        right.set_xlabel("detection latency (s)")
        right.set_title("Latency under the budget")
        right.grid(alpha=0.3)
        right.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(img / "budget.png", dpi=110)
        plt.close(fig)
        written["budget"] = "img/budget.png"

        rules = budget["rules"]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        labels = [f"{r['interval']:g}s / {r['settled_interval'] / 60:g}m" for r in rules]
        xs = range(len(rules))
        ax.bar([x - 0.2 for x in xs], [r["fixed_per_model_hour"] for r in rules], 0.4,
               label="fixed interval, every model")  # fmt: skip
        ax.bar([x + 0.2 for x in xs], [r["watcher_per_model_hour"] for r in rules], 0.4,
               label="finetune-watcher")  # fmt: skip
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels)
        ax.set_xlabel("poll.interval / poll.settled_interval")
        ax.set_ylabel("API requests per model-hour")
        ax.set_title("Queued 30 min, training 3 h, READY watched 24 h")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "lifecycle.png", dpi=110)
        plt.close(fig)
        written["lifecycle"] = "img/lifecycle.png"
    return written


# --- markdown ---------------------------------------------------------------------------


def markdown(results: dict[str, Any], images: dict[str, str]) -> str:
    m = results["machine"]
    command = results["command"]
    out: list[str] = []
    w = out.append
    w("# Benchmarks\n")
    w("Generated by `bench/run_all.py`; do not edit by hand (re-run it). The scripts, what")
    w(
        "each one measures and how to profile are described in [bench/README.md](../bench/README.md).\n"
    )
    w(f"- **Command:** `{command}`")
    w(f"- **Date:** {m['date']} (total {results['seconds'] / 60:.1f} min)")
    w(f"- **Machine:** {m['nproc']} cores ({m['cpu']}), Python {m['python']}, "
      f"Linux {m['kernel']}; shared and noisy (other jobs ran at the same time), which is "
      "why every comparison alternates the clients within one run and reports medians "
      "and per-repetition ratios.")  # fmt: skip
    w("- **Set-up:** the simulator (`python -m watcher.simulator`) always runs in its own "
      "process on loopback; every client is a separate process measured from /proc.\n")  # fmt: skip

    w("## Targets\n")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    for row in targets(results):
        w(f"| {row[0]} | {row[1]} | {row[2]} |")
    w("")

    poll = results.get("poll_cost")
    if poll:
        w("## 1. Poll cost\n")
        w(f"N models, all training, nothing changes; no budget cap; {poll['concurrency']} "
          f"requests in flight for every client (the watcher's `poll.concurrency`, the aiohttp "
          f"connector limit, the SDK's httpx pool); each client saturated: the watcher's "
          f"`poll.interval` is 1 ms so every model is always due. This is the fair comparison "
          f"we chose: same simulator, same parallelism, each client as fast as it goes; the "
          f"figure that matters is CPU per poll, which does not depend on how fast the "
          f"simulator answers. Window {poll['window']:g} s after a warm-up (round one done "
          f"+ {poll['warmup']:g} s), {poll['reps']} repetitions, clients alternating in a "
          f"rotating order. CPU = utime + stime of the client process; polls = the simulator's "
          f"`events` counter; peak RSS = VmHWM. The SDK loop is what a user would write with "
          f"cohere {results['machine'].get('cohere', '?')}: `cohere.AsyncClient(api_key=…, "
          f"base_url=<simulator>, httpx_client=httpx.AsyncClient(limits=8 connections), "
          f"max_retries=0)` and `await client.finetuning.list_events(finetuned_model_id=…, "
          f"page_size=50, order_by=\"created_at\")`; the bare loop is an aiohttp session with "
          f"a connector of 8, `session.get(url, params=…)` and `json.loads(await r.read())` "
          f"(bench/clients.py).\n")  # fmt: skip
        w("Command: `.venv/bin/python bench/poll_cost.py` (part of `run_all`).\n")
        clients = [c for c in ("watcher", "proposed", "bare", "sdk") if c in poll["summary"][0]]
        w(
            "| N | client | polls/s | CPU-s per 1,000 polls | peak RSS (MiB) | client CPU | simulator CPU | polls/s bound by |"
        )
        w("|---:|---|---:|---:|---:|---:|---:|---|")
        for row in poll["summary"]:
            for client in clients:
                c = row[client]
                w(f"| {row['models']:,} | {CLIENT_NAMES[client]} | {c['polls_per_second']:,.0f} "
                  f"| {c['cpu_per_1000']:.3f} | {c['peak_rss_mib']:.1f} "
                  f"| {c['client_core_share']:.0%} | {c['sim_core_share']:.0%} | {_bound(c)} |")  # fmt: skip
        w("")
        w(
            "Ratios of CPU per poll (median of the per-repetition ratios; every repetition's in brackets):\n"
        )
        w("| N | watcher / bare (target ≤ 1.25) | watcher / SDK (target ≤ 0.33) |"
          + (" prototype / bare | prototype / SDK |" if "proposed" in clients else ""))  # fmt: skip
        w("|---:|---:|---:|" + ("---:|---:|" if "proposed" in clients else ""))
        for row in poll["summary"]:
            cells = [f"{row['models']:,}"]
            for mine in [c for c in ("watcher", "proposed") if c in clients]:
                for other in ("bare", "sdk"):
                    allr = ", ".join(f"{x:.2f}" for x in row[f"{mine}_over_{other}_all"])
                    cells.append(f"{row[f'{mine}_over_{other}']:.2f} ({allr})")
            w("| " + " | ".join(cells) + " |")
        w("")
        if "poll_cost" in images:
            w(f"![poll cost]({images['poll_cost']})\n")
        w("*What limits these figures:* polls/s is bounded by whichever process saturates a "
          "core (last column: the client at ≥ 90 % of a core, the simulator at ≥ 90 %), else "
          "by the loopback round trip on this VM (each `send()` that wakes the other process "
          "costs hundreds of microseconds of wall time that /proc charges to neither), and it "
          "moves with the machine's load. CPU per poll is the figure that compares clients: "
          "it varies by a few per cent between repetitions, the ratios less since they are "
          "taken within one repetition.\n")  # fmt: skip

    memory = results.get("memory")
    if memory:
        w("## 2. Memory and startup\n")
        w(f"RSS after {memory['settle']:g} s of watching N training models (all polled within "
          f"that time: `poll.interval` {memory['interval']:g} s, no budget cap), one `json://` "
          f"notification URL configured, state seeded (a restarted watcher, every model "
          f"already observed; a fresh start's round one is timed under *Startup*; seeding "
          f"keeps this figure independent of how fast that round is). The watchers run side "
          f"by side against one simulator.\n")  # fmt: skip
        w("Command: `.venv/bin/python bench/memory.py` (part of `run_all`).\n")
        w("| N | finetune-watcher RSS (MiB) | peak (MiB) | KiB per model vs N = 1 |"
          + (" prototype RSS (MiB) | prototype KiB per model |"
             if any(r["kind"] == "proposed" for r in memory["rows"]) else ""))  # fmt: skip
        has_proto = any(r["kind"] == "proposed" for r in memory["rows"])
        w("|---:|---:|---:|---:|" + ("---:|---:|" if has_proto else ""))
        for row in [r for r in memory["rows"] if r["kind"] == "watcher"]:
            cells = [f"{row['models']:,}", f"{row['rss_kib'] / 1024:.1f}",
                     f"{row['peak_kib'] / 1024:.1f}", _f(row.get("kib_per_model"))]  # fmt: skip
            if has_proto:
                proto = next(r for r in memory["rows"]
                             if r["kind"] == "proposed" and r["models"] == row["models"])  # fmt: skip
                cells += [f"{proto['rss_kib'] / 1024:.1f}", _f(proto.get("kib_per_model"))]
            w("| " + " | ".join(cells) + " |")
        w("")
        nourl = {r["models"]: r for r in memory["rows"] if r["kind"] == "no-url"}
        if 1 in nourl and 10000 in nourl:
            w(f"Without any notification URL (apprise never loads its plugins): "
              f"{nourl[1]['rss_kib'] / 1024:.1f} MiB with 1 model, "
              f"{nourl[10000]['rss_kib'] / 1024:.1f} MiB "
              f"({nourl[10000]['rss_kib'] * 1.024 / 1000:.1f} MB) with 10,000, "
              f"{nourl[10000]['kib_per_model']:.2f} KiB per model.\n")  # fmt: skip
        if "memory" in images:
            w(f"![memory]({images['memory']})\n")
        w("*What limits these figures:* the floor is the imports, not the models: Python "
          "10.6 MiB, + aiohttp 14 MiB (its import builds the default TLS context with the CA "
          "bundle), + pydantic/pydantic-settings 11 MiB, + apprise 13 MiB once a URL is "
          "parsed (apprise loads all its ~270 plugin modules on the first `Apprise.add`), + "
          "the rest ~8 MiB (measured by importing them one after the other).\n")  # fmt: skip

    startup = results.get("startup")
    if startup:
        w("### Startup\n")
        w("Command: `.venv/bin/python bench/startup.py` (part of `run_all`).\n")
        w("| measurement | median | runs |")
        w("|---|---:|---|")
        for row in startup["first_request"]:
            runs = ", ".join(f"{r['to_first_request']:.2f}" for r in row["runs"])
            w(f"| spawn → first request, {row['models']:,} model(s), interval 60 s | "
              f"{row['to_first_request']:.2f} s | {runs} |")  # fmt: skip
            runs = ", ".join(_f(r["to_log_line"]) for r in row["runs"])
            w(f"| spawn → log line \"watcher starting\", {row['models']:,} model(s) | "
              f"{_f(row['to_log_line'])} s | {runs} |")  # fmt: skip
        cc = startup["check_config"]
        w(f"| `check-config` wall time (1 model, 1 json:// URL) | {cc['median']:.2f} s | "
          + ", ".join(f"{x:.2f}" for x in cc["runs"]) + " |")  # fmt: skip
        w("")
        w("Round one from a fresh state (spawn → every model polled once, no budget cap):\n")
        w("| N | polled | seconds | CPU-s | note |")
        w("|---:|---:|---:|---:|---|")
        for row in startup["round_one"]:
            note = "" if row["finished"] else (
                f"stopped at the cap; at this rate the round would take "
                f"~{row.get('projected_seconds', float('nan')):,.0f} s")  # fmt: skip
            w(
                f"| {row['models']:,} | {row['polled']:,} | {row['seconds']:.1f} | {row['cpu']:.1f} | {note} |"
            )
        w("")
        w(
            "Imports (`python -X importtime`, cumulative seconds of the largest top-level imports):\n"
        )
        for command, data in startup["imports"].items():
            tops = ", ".join(f"{name} {sec:.2f}" for name, sec in data["top"][:8])
            w(f"- `{command}`: {data['total']:.2f} s in all — {tops}")
        w("")
        one = next(r for r in startup["first_request"] if r["models"] == 1)
        w("*What limits these figures:* interpreter start, imports and configuration (the "
          f"daemon logs \"watcher starting\" {_f(one['to_log_line'])} s after the spawn with one "
          "model; apprise's plugin loading is ~0.15–0.25 s of it when a URL is validated), "
          "then the first poll: round one is spread over `min(1 s, interval / 4)` with the "
          "first model polled at once (before P7 it was a random delay that a single "
          "model paid in full; P7 in the last section). At 10,000 models the configuration (YAML and pydantic) "
          "dominates.\n")  # fmt: skip

    latency = results.get("latency")
    if latency:
        from latency import ideal_mean

        latency = {
            **latency,
            "ideal_mean": ideal_mean(latency["interval"], latency.get("jitter", 0)),
        }
        w("## 3. Detection latency\n")
        w(f"{latency['models']:,} models watched; {latency['ready']} of them turn READY one every "
          f"{latency['gap']:g} s (simulator real clock); `poll.interval` {latency['interval']:g} s, "
          f"jitter {latency.get('jitter', 0):g} (the default; since P6 it only shortens an "
          f"interval, so the gaps lie in [{1 - latency.get('jitter', 0):g}, 1] × interval and "
          f"the ideal mean is E[G²] / (2 E[G]) = {latency['ideal_mean']:.2f} s rather than "
          f"interval / 2), no budget cap. Latency = arrival "
          f"of the `json://` POST at a "
          f"receiver in the benchmark process − the moment the READY event became visible "
          f"(the simulator's t = 0 on the shared monotonic clock + the event's offset).\n")  # fmt: skip
        w("Command: `.venv/bin/python bench/latency.py` (part of `run_all`).\n")
        w("| notified | mean | p50 | p90 | p99 | max | ideal mean | ideal max | target p99 |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        w(f"| {latency['count']}/{latency['ready']} | {latency['mean']:.2f} s | {latency['p50']:.2f} s "
          f"| {latency['p90']:.2f} s | {latency['p99']:.2f} s | {latency['max']:.2f} s "
          f"| {latency['ideal_mean']:.2f} s | {latency['ideal_max']:.2f} s "
          f"| ≤ {latency['interval'] + 0.1:.2f} s |\n")  # fmt: skip
        if "latency" in images:
            w(f"![latency]({images['latency']})\n")
        w("*What limits this figure:* the interval itself (a READY event waits on average half "
          "an interval for the next poll; the mean of "
          f"{latency['count']} such waits is known to ±{latency['interval'] / 2 / math.sqrt(3 * max(1, latency['count'])) * 1000:.0f} ms). "
          "Split with the daemon's own log: READY visible → \"status changed\" logged "
          f"{latency.get('detection_mean', float('nan')):.2f} s on average; logged → webhook "
          "(the model's details and metrics fetched, the outbox row written with its fsync, "
          f"apprise's POST from its worker thread) {latency.get('pipeline_mean', float('nan')) * 1000:.0f} ms "
          f"on average, {latency.get('pipeline_p99', float('nan')) * 1000:.0f} ms at p99.\n")  # fmt: skip

    budget = results.get("budget")
    if budget:
        run = budget["budget"]
        w("## 4. Spending the request budget\n")
        w(f"The simulator limits the key to {run['rate_limit']:,} requests/min (429 beyond); the "
          f"watcher's budget is {run['budget']:,}/min — Cohere's 500 vs 480 scaled 12× so that a "
          f"minute holds a few hundred READY events (the pacer spaces requests 60 / budget "
          f"seconds apart at any scale). {run['models']:,} models at `poll.interval` "
          f"{run['interval']:g} s would need {run['models'] * 60 / run['interval']:,.0f}/min, so "
          f"the effective interval is models × 60 / budget = {run['effective_interval_start']:.2f} s "
          f"at the start, shrinking as the {run['ready']} READY models leave the active set.\n")  # fmt: skip
        w("Command: `.venv/bin/python bench/budget.py` (part of `run_all`).\n")
        ppm = run["polls_per_training_model"]
        w("| measurement | value |")
        w("|---|---:|")
        w(f"| requests answered 429 | {run['rate_limited']} of {run['requests']:,} |")
        w(f"| request rate (1 s samples after 5 s) | mean {run['rate_mean']:.1f}/s, max "
          f"{run['rate_max']:.1f}/s; budget {run['budget'] / 60:.1f}/s |")  # fmt: skip
        w(f"| polls per training model during the READY window ({_f(ppm['window'], 1)} s) | "
          f"min {ppm['min']}, median {_f(ppm['median'], 1)}, max {ppm['max']} |")  # fmt: skip
        w(f"| enrichment requests (model details, metrics) | {run['enrichment_requests']} |")
        w(f"| notified | {run['notified']}/{run['ready']} |")
        w(f"| mean detection latency | {run['mean']:.2f} s (p99 {run['p99']:.2f} s) |")
        w(
            f'| … of which READY visible → "status changed" logged (detection) | {run["detection_mean"]:.2f} s |'
        )
        w(
            f"| … of which logged → webhook (details, metrics, delivery) | {run['pipeline_mean'] * 1000:.0f} ms |"
        )
        w(f"| ideal mean, E(t)/2 with E(t) = active(t) × 60 / budget | {run['ideal_mean']:.2f} s |")
        w(
            f"| ideal mean with the budget left after the enrichment requests | {run['ideal_net_mean']:.2f} s |"
        )
        w(
            f"| measured / ideal | {run['mean_over_ideal']:.2f} (target ≤ 1.10); net of enrichment {run['mean_over_ideal_net']:.2f} |"
        )
        w(
            f"| sampling error of the mean (1σ, {run['notified']} events) | ±{(run['samples_relative_error'] or 0):.1%} |\n"
        )
        proto = budget.get("proposals")
        if proto:
            w(f"The same run with P9 (*pace, then pick*; prototype `bench/proposals.py`): "
              f"{proto['rate_limited']} × 429, {proto['rate_mean']:.1f} req/s, mean "
              f"{proto['mean']:.2f} s = {proto['mean_over_ideal']:.2f} × ideal (net "
              f"{proto['mean_over_ideal_net']:.2f}), detection {proto['detection_mean']:.2f} s + "
              f"pipeline {proto['pipeline_mean'] * 1000:.0f} ms.\n")  # fmt: skip
        if "budget" in images:
            w(f"![budget]({images['budget']})\n")
        w("*What limits these figures:* the budget: at "
          f"{run['budget'] / 60:.0f} requests/s every active model waits its turn in a "
          "round-robin of the whole active set. The measured mean sits above the ideal by "
          "(1) the requests that are not polls — each READY costs two more (the model's "
          "details and its metrics) from the same budget, which this benchmark inflates by "
          "turning hundreds of models READY within a minute; (2) the pipeline: every request, "
          "the two enrichment requests included, queues in the pacer behind up to "
          "`poll.concurrency` polls chosen earlier (≈ concurrency × 60 / budget each); and "
          "(3) sampling: the mean of n uniform delays is known to ±1/√(3n).\n")  # fmt: skip
        w("### Requests per model-hour over a lifecycle\n")
        w("Queued 30 min, training 3 h, then READY and watched for 24 h (27.5 h). "
          "finetune-watcher polls active models every `poll.interval` and settled ones every "
          "`poll.settled_interval`, plus three enrichment requests (details on first sight "
          "and on READY, metrics on READY); the alternative polls every model at "
          "`poll.interval` all the time — the same worst-case detection time on active "
          "models. Computed from `watcher.lifecycle.poll_interval`:\n")  # fmt: skip
        w(
            "| interval | settled interval | finetune-watcher req/model-hour | fixed-interval req/model-hour | fewer |"
        )
        w("|---:|---:|---:|---:|---:|")
        for r in budget["rules"]:
            w(f"| {r['interval']:g} s | {r['settled_interval'] / 60:g} min | {r['watcher_per_model_hour']:.1f} "
              f"| {r['fixed_per_model_hour']:.1f} | {r['ratio']:.1f}× |")  # fmt: skip
        lc = budget["lifecycle_run"]
        w("")
        w(f"Checked by a run compressed {lc['compression']:g}× ({lc['models']} models, the whole "
          f"27.5 h in {lc['seconds']:.1f} s, interval 60 s / settled 30 min scaled alike): "
          f"{lc['per_model']:.0f} requests per model = {lc['per_model_hour']:.1f} per model-hour "
          f"(rules: {lc['expected_per_model_hour']:.1f}; fewer because each poll is scheduled an "
          f"interval after the previous one *ended*, which at a compressed interval of "
          f"{60 / lc['compression'] * 1000:.0f} ms is visible), i.e. {lc['ratio']:.1f}× fewer "
          f"than fixed-interval polling.\n")  # fmt: skip
        if "lifecycle" in images:
            w(f"![lifecycle]({images['lifecycle']})\n")
        w("*What limits this figure:* the ratio is (queued + training + watched) / (queued + "
          "training + watched × interval / settled_interval); with the defaults (60 s, 30 min) "
          "it tends to 6.3× for this lifecycle, more when models are watched longer after "
          "READY, less when `settled_interval` is close to `interval`.\n")  # fmt: skip

    w(results.get("notes", ""))
    return "\n".join(out) + "\n"


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    poll = results.get("poll_cost")
    if poll:
        worst_bare = max(r["watcher_over_bare"] for r in poll["summary"])
        worst_sdk = max(r["watcher_over_sdk"] for r in poll["summary"])
        per_n = ", ".join(
            f"{r['models']:,}: {r['watcher_over_bare']:.2f}×" for r in poll["summary"]
        )
        extra = ""
        if "proposed_over_bare" in poll["summary"][0]:
            proto = max(r["proposed_over_bare"] for r in poll["summary"])
            extra = f"; with the proposals (prototype) ≤ {proto:.2f}×"
        rows.append(("CPU per poll ≤ 1.25 × bare loop", f"{per_n}{extra}",
                     _verdict(worst_bare <= 1.25) + (f", over by {worst_bare / 1.25 - 1:.0%}"
                                                      if worst_bare > 1.25 else "")))  # fmt: skip
        per_n = ", ".join(f"{r['models']:,}: {r['watcher_over_sdk']:.2f}×" for r in poll["summary"])
        rows.append(("CPU per poll ≤ 1/3 of the SDK loop", per_n, _verdict(worst_sdk <= 1 / 3)))
    memory = results.get("memory")
    if memory:
        mine = {r["models"]: r for r in memory["rows"] if r["kind"] == "watcher"}
        per_model = mine[10000]["kib_per_model"] * 1.024  # KiB -> KB
        total = mine[10000]["rss_kib"] * 1.024 / 1000  # KiB -> MB
        proto = {r["models"]: r for r in memory["rows"] if r["kind"] == "proposed"}
        extra = (f"; prototype {proto[10000]['kib_per_model'] * 1.024:.2f} KB"
                 if proto else "")  # fmt: skip
        rows.append(("≤ 2 KB per additional model", f"{per_model:.2f} KB (1 → 10,000){extra}",
                     _verdict(per_model <= 2) + (f", over by {per_model / 2 - 1:.0%}"
                                                 if per_model > 2 else "")))  # fmt: skip
        extra = f"; prototype {proto[10000]['rss_kib'] * 1.024 / 1000:.1f} MB" if proto else ""
        nourl = {r["models"]: r for r in memory["rows"] if r["kind"] == "no-url"}
        if 10000 in nourl and 1 in nourl:
            extra += (
                f"; {nourl[10000]['rss_kib'] * 1.024 / 1000:.1f} MB without a notification "
                f"URL; the 1-model floor alone is {mine[1]['rss_kib'] * 1.024 / 1000:.1f} MB"
            )
        rows.append(("≤ 80 MB RSS at 10,000 models", f"{total:.1f} MB{extra}",
                     _verdict(total <= 80) + (f", over by {total - 80:.1f} MB"
                                              if total > 80 else "")))  # fmt: skip
    startup = results.get("startup")
    if startup:
        one = next(r for r in startup["first_request"] if r["models"] == 1)
        rows.append(("process start → first request ≤ 1 s (1 model)",
                     f"{one['to_first_request']:.2f} s (ready to poll at {_f(one['to_log_line'])} s)",
                     _verdict(one["to_first_request"] <= 1.0)))  # fmt: skip
        cc = startup["check_config"]["median"]
        rows.append(("`check-config` ≤ 0.6 s", f"{cc:.2f} s", _verdict(cc <= 0.6)))
    latency = results.get("latency")
    if latency:
        limit = latency["interval"] + 0.1
        rows.append((f"p99 latency ≤ interval + 100 ms at {latency['models']:,} models",
                     f"p99 {latency['p99']:.2f} s vs {limit:.2f} s (p50 {latency['p50']:.2f} s)",
                     _verdict(latency["p99"] <= limit and latency["missing"] == 0)))  # fmt: skip
    budget = results.get("budget")
    if budget:
        run = budget["budget"]
        rows.append(("zero 429s caused by the watcher", f"{run['rate_limited']} of {run['requests']:,}",
                     _verdict(run["rate_limited"] == 0)))  # fmt: skip
        ppm = run["polls_per_training_model"]
        even = ppm["min"] is not None and ppm["max"] - ppm["min"] <= 1
        rows.append(("polls spread evenly (effective interval = models / budget)",
                     f"{ppm['min']}–{ppm['max']} polls per model per window; "
                     f"{run['rate_mean']:.1f} req/s vs budget {run['budget'] / 60:.1f}/s",
                     _verdict(even and run["rate_mean"] <= run["budget"] / 60 * 1.02)))  # fmt: skip
        rows.append(("mean latency within 10 % of the budget's ideal",
                     f"{run['mean']:.2f} s vs {run['ideal_mean']:.2f} s ({run['mean_over_ideal']:.2f}×; "
                     f"{run['mean_over_ideal_net']:.2f}× against the budget left for polls; "
                     f"±{(run['samples_relative_error'] or 0):.0%} sampling error)",
                     _verdict(run["mean_over_ideal"] <= 1.10)
                     + ("" if run["mean_over_ideal"] <= 1.10 else
                        f", over by {run['mean_over_ideal'] - 1.10:.2f}")))  # fmt: skip
        default = next(
            r for r in budget["rules"] if r["interval"] == 60 and r["settled_interval"] == 1800
        )
        lc = budget["lifecycle_run"]
        rows.append(("≥ 5× fewer requests per model-hour than fixed-interval polling",
                     f"{default['ratio']:.1f}× by the rules (60 s / 30 min); {lc['ratio']:.1f}× measured (compressed run)",
                     _verdict(default["ratio"] >= 5)))  # fmt: skip
    return rows


# --- the analysis: what the profiles showed, what changed, what is proposed -------------


#: Figures of earlier runs of this suite on the same machine, same day, for the record:
#: before any change (daemon at 7ae3d73, client before 41a6ff6; poll_cost.py --models 1000
#: --reps 2 and memory/startup probes), and the full run after the client changes only.
HISTORY = (
    (
        "before any change (2026-11-26 07:55–08:25, probes)",
        "2.11–2.31× (1,000 models)",
        "3.3 KB",
        "106 MB (92 MB without a URL)",
        "1.14 s",
        "round one of 10,000 models ~770 s (O(N²))",
    ),
    (
        "client changes only (41a6ff6), full run 08:46",
        "1.78–2.10×",
        "3.33 KB",
        "106.9 MB",
        "1.08 s",
        "budget run 1.18× ideal; round one of 10,000 ~725 s",
    ),
)


def notes(results: dict[str, Any]) -> str:
    out: list[str] = []
    w = out.append
    bd = results.get("breakdown")
    w("## Where the time goes, what changed, what is still proposed\n")
    w("Profiles first: `bench/profile_daemon.py` runs the daemon in steady state (seeded "
      "state, 1,000–10,000 training models, `poll.interval` 1 ms) under pyinstrument, "
      "py-spy or tracemalloc; `bench/breakdown.py` (part of `run_all`) splits a poll's CPU "
      "into layers with `time.process_time` and no profiler.\n")  # fmt: skip
    if bd:
        client = {k: harness_median(v) for k, v in bd["client"].items()}
        w("| layer (1,000 models, 8 in flight, this run) | CPU per poll |")
        w("|---|---:|")
        w(f"| bare aiohttp GET + `json.loads` | {client['bare']:.1f} µs |")
        w(f"| `CohereClient.list_events` (full parse) | {client['client']:.1f} µs |")
        w(
            f"| `CohereClient.list_events(unless_digest=…)` (what the daemon calls) | {client['client+digest']:.1f} µs |"
        )
        if "as-is" in bd["daemon"]:
            w(
                f"| the daemon's poll loop around an instant client (no HTTP) | {bd['daemon']['as-is']:.1f} µs |"
            )
        w("")
        w("The first profile (pyinstrument and cProfile on the daemon, 1,000 models) put the "
          "daemon's own cost at ~56 µs per poll — 43 µs of it the poll loop: a new anyio task, "
          "a semaphore and a cancel scope per poll, 7 `anyio.current_time()` and 11 backend "
          "look-ups — plus `log.bind` and label look-ups on every poll; `list_events` cost "
          "~30 µs more than the bare loop. Round one was O(N²): every first sight rebuilt "
          "every model's Prometheus series. tracemalloc at 10,000 models found ~650 bytes "
          "per model in Prometheus children and locks, and a datetime and a status string "
          "per model per field in the loaded states.\n")  # fmt: skip
    w("### How the figures moved\n")
    w(
        "| state | CPU/poll vs bare | KB per model | RSS at 10,000 | first request (1 model) | other |"
    )
    w("|---|---:|---:|---:|---:|---|")
    for row in HISTORY:
        w("| " + " | ".join(row) + " |")
    now = _current_row(results)
    if now:
        w("| " + " | ".join(now) + " |")
    w("")
    w("### Changed by this work (watcher/cohere.py, watcher/pacing.py; commit 41a6ff6)\n")
    w(
        "- The first page of events is requested with a pre-encoded query string instead of a "
        "`params` dict that yarl re-encodes on every request (3–4 µs)."
    )
    w(
        "- A body with a declared `Content-Length` within the cap is read with one "
        "`response.read()`; the capped chunk loop remains for bodies without one."
    )
    w(
        "- `list_events` no longer runs through the `_pages` async generator (shared guards "
        "moved to `_next_token`)."
    )
    w(
        "- The session has no `sock_read` timeout: it was equal to `total`, so it could never "
        "fire first, and aiohttp re-armed its timer on every chunk (~5 µs a request)."
    )
    w(
        "- `parse_timestamp` runs its regex only when there is a fraction and skips "
        "`astimezone` when the value is already UTC; statuses are interned."
    )
    w(
        "- `EventHistory.digest` (BLAKE2b-128 of a one-page body) and "
        "`list_events(model_id, unless_digest=…)`, which answers `unchanged=True` without "
        "decoding when the body is byte for byte the one with that digest (opt-in; nothing "
        "changes for callers that do not pass it)."
    )
    w(
        "- `RequestPacer.seconds_until_free()` (read-only) for P9 below; `reserve()` itself "
        "costs 0.6 µs and needed nothing.\n"
    )
    w("### Applied by the lead from the proposals (commits 8f84418, a7ca65e)\n")
    w("P1 `poll.concurrency` long-lived poll workers; P2 skip an answer whose digest is the "
      "last one folded in (`observe` is idempotent); P3 per-model status series built at "
      "scrape time (a status change is O(1), round one O(N)); P4 no `log.bind` or label "
      "look-up per poll, last-success gauge per tick; P5 `_schedule` wakes the loop when "
      "the new entry is the earliest (before, with every model in flight the loop slept a "
      "whole 1 s heartbeat: 10 models, concurrency 10, interval 16.7 ms gave ~20 polls/s "
      "instead of ~520/s); P6 jitter only shortens an interval, so the interval is the "
      "worst case (symmetric ±10 % made p99 ≈ 1.04 × interval); P7 round one spread "
      "evenly with the first model polled at once; P8 (store) one datetime per distinct "
      "time and interned statuses when loading states; P10 one no-change entry per model "
      "instead of one per poll between flushes. The tables above are measured with all of "
      "them.\n")  # fmt: skip
    w("### Still proposed\n")
    budget = results.get("budget") or {}
    run, proto = budget.get("budget"), budget.get("proposals")
    evidence = ""
    if run and proto:
        evidence = (
            f" Measured in the budget run: logged → webhook {run['pipeline_mean'] * 1000:.0f} ms "
            f"today vs {proto['pipeline_mean'] * 1000:.0f} ms with the prototype; mean "
            f"latency {run['mean_over_ideal']:.2f} vs {proto['mean_over_ideal']:.2f} × "
            f"the ideal (the detection part of one run is only known to "
            f"±{(run['samples_relative_error'] or 0):.0%})."
        )
    w("**P9 — daemon.py: pace, then pick.** Under a binding budget every poll is chosen when "
      "a worker frees up and then waits in the pacer behind up to `poll.concurrency − 1` "
      "others, and so do the two enrichment requests of a READY model: ≈ 3 × concurrency "
      "× 60 / budget between the poll that sees READY and the notification (~0.1 s at the "
      "benchmark's scale, ~3 s at 480/min with 8 workers). With "
      "`RequestPacer.seconds_until_free()` one worker at a time waits for a free slot and "
      "only then takes the most overdue model; its request reserves that slot before any "
      "other task runs. Prototype: `bench/proposals.py` (it wakes one spacing early, or "
      "the slot goes unused)." + evidence + "\n")  # fmt: skip
    w("What a watched model still costs, tracemalloc at 10,000 models after this work "
      "(`bench/profile_daemon.py --tool tracemalloc --models 10000 --interval 5`): its "
      "settings ~590 B (pydantic `ModelSettings` 477 B, the `urls` default list "
      "deep-copied into each 55 B, the id string from YAML 59 B); its loaded state ~540 B "
      "(the `seen` frozenset 211 B, two `EventId`s 94 B, two datetimes 94 B, `ModelState` "
      "78 B, the row's strings 59 B); the daemon's bookkeeping ~420 B (`WatchedModel` "
      "125 B, heap entry 106 B + its token and due time 50 B, `_unpolled` 51 B, digest "
      "48 B, dict slots); ~1.55 KB traced, ~2.2 KB of RSS with the allocator's overhead.\n")  # fmt: skip
    w("**P8 (rest) — settings.py: a lighter per-model object.** A slotted dataclass (or "
      "`urls` a tuple) for what the daemon keeps of each model instead of a pydantic "
      "instance: ~0.45 KB per model, which alone brings the slope to about 2 KB.\n")  # fmt: skip
    w("**P11 — lifecycle.py / store.py: a compact `seen`.** A frozenset costs 216 bytes "
      "even for the two or three identities a model has; a sorted tuple (membership by "
      "scan is as fast at this size; `SEEN_LIMIT` bounds it at 64) costs 56–80. ~0.15 KB "
      "per model; lower priority, it touches the pure core's types.\n")  # fmt: skip
    w("**A decision, not a proposal — the fixed footprint.** With a notification URL "
      "configured the daemon starts at ~70 MiB: apprise loads all its plugins (~270 "
      "modules, 13 MiB, ~0.2 s) on the first `Apprise.add`, which settings validation does "
      "at load time; aiohttp builds its default TLS context at import (14 MiB with the rest "
      "of it); pydantic-settings adds 7 MiB. The 80 MB target at 10,000 models leaves "
      "~1 KB per model on top of that. Validating URLs without apprise would change what a "
      "bad URL does at start (today: exit 78 at once).\n")  # fmt: skip
    failed = results.get("failed")
    if failed:
        w("### Steps that failed in this run\n")
        for step, error in failed.items():
            w(f"- `{step}`: {error}")
        w("")
    return "\n".join(out) + "\n"


def _current_row(results: dict[str, Any]) -> tuple[str, ...] | None:
    poll, memory, startup = results.get("poll_cost"), results.get("memory"), results.get("startup")
    if not (poll and memory and startup):
        return None
    ratios = [r["watcher_over_bare"] for r in poll["summary"]]
    mine = {r["models"]: r for r in memory["rows"] if r["kind"] == "watcher"}
    one = next(r for r in startup["first_request"] if r["models"] == 1)
    other = ""
    budget = (results.get("budget") or {}).get("budget")
    if budget:
        other = f"budget run {budget['mean_over_ideal']:.2f}× ideal"
    rounds = {r["models"]: r for r in startup["round_one"]}
    if 10000 in rounds:
        r = rounds[10000]
        other += f"; round one of 10,000 models {'in' if r['finished'] else 'not done in'} {r['seconds']:.0f} s"
    return (
        f"this run ({results['machine']['date']})",
        f"{min(ratios):.2f}–{max(ratios):.2f}×",
        f"{mine[10000]['kib_per_model'] * 1.024:.2f} KB",
        f"{mine[10000]['rss_kib'] * 1.024 / 1000:.1f} MB",
        f"{one['to_first_request']:.2f} s",
        other,
    )


def harness_median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
