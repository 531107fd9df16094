"""The metrics of issue 14, scraped from a real /metrics: process and Python collectors,
each model's info and time in status, the outbox's oldest pending age, the providers'
deprecation notices; and the store query the outbox age comes from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_daemon import START, Clock, poll_all, scenario, settings_file, watcher_for
from watcher.health import HealthServer
from watcher.metrics import Metrics, ModelRow
from watcher.providers.cohere import FINETUNING, QUEUED, READY
from watcher.providers.http import (
    DeprecationInfo,
    _note_deprecation,
    deprecations,
    forget_deprecations,
)
from watcher.settings import load_settings
from watcher.simulator import running_simulator


@pytest.fixture
def no_deprecations() -> Iterator[None]:
    forget_deprecations()
    yield
    forget_deprecations()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a Prometheus text page, by sample name."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


async def scrape(metrics_source: object) -> str:
    server = HealthServer(metrics_source, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    host, port = await server.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as response,
        ):
            assert response.status == 200
            return await response.text()
    finally:
        await server.aclose()


class TestDaemonMetrics:
    async def test_a_real_daemons_metrics_page(self, tmp_path: Path, no_deprecations: None) -> None:
        """A Watcher that polled a simulated model serves, on its real /metrics: the process
        and Python collectors; one info series naming the model (name, provider, base
        model: dashboards need no bare ids); its time in status, counted from the event
        that started it; the oldest undelivered notification's age."""
        scn = scenario(
            [
                {
                    "id": "m-ready",
                    "name": "support-classifier",
                    "base_model": "command-r-08-2024",
                    "timeline": [[0, QUEUED], [5, FINETUNING], [60, READY]],
                }
            ]
        )
        wall = START + timedelta(seconds=100)
        async with running_simulator(scn) as sim:
            path = settings_file(tmp_path, sim.base_url, ["m-ready"], ["json://127.0.0.1:9/x"])
            async with watcher_for(load_settings(path), now=Clock(wall)) as (watcher, store):
                # The metrics' wall clock is the test's (status_since is simulated time).
                watcher.metrics._wall_clock = lambda: wall.timestamp()
                sim.advance(100)
                await poll_all(watcher)
                counts = await store.outbox_counts()
                assert counts.pending >= 1
                assert counts.oldest_pending_at is not None
                watcher.metrics.oldest_pending_at = counts.oldest_pending_at
                text = await scrape(watcher)
        found = samples(text)
        assert "process_cpu_seconds_total" in found
        assert "process_resident_memory_bytes" in found
        assert "python_info" in found
        assert "python_gc_collections_total" in found
        (info,) = found["finetune_watcher_model_info"]
        assert info == (
            {
                "provider": "cohere",
                "model_id": "m-ready",
                "name": "support-classifier",
                "base_model": "command-r-08-2024",
            },
            1.0,
        )
        (age,) = found["finetune_watcher_model_status_seconds"]
        assert age[0] == {"provider": "cohere", "model_id": "m-ready"}
        assert age[1] == pytest.approx(40.0)  # READY at t=60, now t=100
        (oldest,) = found["finetune_watcher_outbox_oldest_pending_seconds"]
        expected = (wall - counts.oldest_pending_at).total_seconds()
        assert oldest[1] == pytest.approx(expected)


class TestMetricsUnits:
    def test_nothing_pending_is_zero(self) -> None:
        """No pending notification: the age is 0, not absent (alerts compare it)."""
        metrics = Metrics(wall_clock=lambda: 1000.0)
        assert (
            metrics.registry.get_sample_value("finetune_watcher_outbox_oldest_pending_seconds")
            == 0.0
        )
        metrics.oldest_pending_at = datetime.fromtimestamp(400.0, UTC)
        assert (
            metrics.registry.get_sample_value("finetune_watcher_outbox_oldest_pending_seconds")
            == 600.0
        )

    def test_only_watched_models_have_series(self) -> None:
        """The per-model families hold exactly the rows the daemon gives (its watched
        models): a model with no status yet has an info series but no age."""
        metrics = Metrics(wall_clock=lambda: 1000.0)
        rows = [
            ModelRow("cohere", "a", "Alpha", "command-r", datetime.fromtimestamp(990.0, UTC)),
            ModelRow("openai", "ftjob-b", "", "", None),
        ]
        metrics.watch_models(lambda: rows)
        get = metrics.registry.get_sample_value
        info = "finetune_watcher_model_info"
        labels = {"provider": "openai", "model_id": "ftjob-b", "name": "", "base_model": ""}
        assert get(info, labels) == 1.0
        status_seconds = "finetune_watcher_model_status_seconds"
        assert get(status_seconds, {"provider": "cohere", "model_id": "a"}) == 10.0
        assert get(status_seconds, {"provider": "openai", "model_id": "ftjob-b"}) is None

    async def test_deprecation_gauges(self, tmp_path: Path, no_deprecations: None) -> None:
        """A provider that sent Deprecation/Sunset headers: api_deprecated 1 and its sunset
        as a Unix time, on a real /metrics; none before."""
        metrics = Metrics()
        get = metrics.registry.get_sample_value
        assert get("finetune_watcher_api_deprecated", {"provider": "cohere"}) is None
        sunset = datetime(2026, 9, 15, tzinfo=UTC)
        _note_deprecation(
            DeprecationInfo(
                "cohere", "@1757894400", "Tue, 15 Sep 2026 00:00:00 GMT", sunset_at=sunset
            )
        )
        assert "cohere" in deprecations()
        assert get("finetune_watcher_api_deprecated", {"provider": "cohere"}) == 1.0
        assert get("finetune_watcher_api_sunset_timestamp_seconds", {"provider": "cohere"}) == (
            sunset.timestamp()
        )


class TestOutboxOldest:
    async def test_an_empty_outbox_has_no_oldest(self, tmp_path: Path) -> None:
        """Nothing pending: the counts say None (the daemon test covers a pending item)."""
        from watcher.store.sqlite import SqliteStore

        async with await SqliteStore.open(tmp_path / "s.db") as store:
            assert (await store.outbox_counts()).oldest_pending_at is None


class TestPerPollSeries:
    """The per-poll counters are plain numbers (P14); /metrics must not notice."""

    def test_written_exactly_as_prometheus_clients_counter_and_histogram_write_them(
        self,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

        from watcher.metrics import POLL_LATENCY_BUCKETS, POLL_OUTCOMES

        reference = CollectorRegistry()
        polls = Counter("finetune_watcher_polls", "Polls of a model's events, by outcome.",
                        ["outcome"], registry=reference)  # fmt: skip
        latency = Histogram("finetune_watcher_poll_latency_seconds",
                            "Time to fetch one model's event history (all pages).",
                            buckets=POLL_LATENCY_BUCKETS, registry=reference)  # fmt: skip
        requests = Counter(
            "finetune_watcher_api_requests",
            "HTTP requests sent to the providers' APIs.",
            registry=reference,
        )
        for outcome in POLL_OUTCOMES:
            polls.labels(outcome)
        metrics = Metrics()
        # On and between the bounds, below the first and above the last.
        for took in (0.0, 0.001, 0.01, 0.0100001, 0.07, 0.25, 1, 2.5, 29.9, 30, 31, 500):
            for histogram, counter in ((latency, requests),
                                       (metrics.poll_latency, metrics.api_requests)):  # fmt: skip
                histogram.observe(took)
                counter.inc()
        counted = (("ok", 3), ("changed", 1), ("timeout", 2), ("new_outcome", 1))
        for outcome, times in counted:
            for _ in range(times):
                polls.labels(outcome).inc()
                metrics.polls.labels(outcome).inc()

        names = (
            "finetune_watcher_polls",
            "finetune_watcher_poll_latency",
            "finetune_watcher_api_requests",
        )

        def families(text: str) -> str:
            def wanted(line: str) -> bool:
                return line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(names)

            return "\n".join(line for line in text.splitlines() if wanted(line))

        ours = generate_latest(metrics.snapshot()).decode()
        theirs = generate_latest(reference).decode()
        assert families(ours) == families(theirs)
        outcomes = set(POLL_OUTCOMES) | {outcome for outcome, _ in counted}
        lines = (2 + len(outcomes)) + (2 + len(POLL_LATENCY_BUCKETS) + 3) + (2 + 1)
        assert families(ours).count("\n") + 1 == lines  # nothing went missing on both sides
        # The three families sit where the Counter and Histogram used to be: right after
        # the build info, before the notifications.
        order = [line for line in ours.splitlines() if line.startswith("# TYPE finetune_")]
        at = order.index("# TYPE finetune_watcher_build_info gauge")
        assert order[at + 1 : at + 5] == [
            "# TYPE finetune_watcher_polls_total counter",
            "# TYPE finetune_watcher_poll_latency_seconds histogram",
            "# TYPE finetune_watcher_api_requests_total counter",
            "# TYPE finetune_watcher_notifications_total counter",
        ]
