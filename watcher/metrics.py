"""Prometheus metrics of one watcher, in a registry of its own.

Label sets are bounded: ``outcome`` (a failed poll's ``ApiError.outcome``, or ``ok`` /
``changed``) and ``result`` are small enums, ``status`` is the provider's status set
(unknown statuses fold into ``other``). Model ids appear only as
a label of ``finetune_watcher_model_status`` (one series per watched model).
The two per-status families are built when scraped, from the watched models
themselves: a status change costs nothing, and no object is held per model.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from watcher import __version__
from watcher.errors import ApiError


def _outcomes(error: type[ApiError]) -> list[str]:
    """``outcome`` of ``error`` and of every subclass: the failure labels, from the types."""
    found = [error.outcome]
    for sub in error.__subclasses__():
        found += [o for o in _outcomes(sub) if o not in found]
    return found


#: Every ``outcome`` label of the polls counter, pre-created so each series exists from 0.
POLL_OUTCOMES = ("ok", "changed", *_outcomes(ApiError))


def status_label(status: str | None, known: Collection[str]) -> str:
    """A bounded label value for ``status``: itself when ``known``, else ``other``."""
    if status is None:
        return "none"
    return status if status in known else "other"


# The *_created series double the output and say nothing a restart counter would not.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client


class Metrics:
    """Every series the watcher exports; one instance per daemon."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Info("finetune_watcher_build", "Version of finetune-watcher.", registry=r)
        self.build_info.info({"version": __version__})
        self.polls = Counter(
            "finetune_watcher_polls", "Polls of a model's events, by outcome.", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.poll_latency = Histogram(
            "finetune_watcher_poll_latency_seconds",
            "Time to fetch one model's event history (all pages).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.api_requests = Counter(
            "finetune_watcher_api_requests",
            "HTTP requests sent to the providers' APIs.",
            registry=r,
        )
        self.notifications = Counter(
            "finetune_watcher_notifications",
            "Notification deliveries to one target, by result (sent, failed, given_up).",
            ["result"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "finetune_watcher_outbox_pending", "Notifications not yet delivered.", registry=r
        )
        self.budget_per_minute = Gauge(
            "finetune_watcher_request_budget_per_minute",
            "The configured request budget (poll.max_requests_per_minute).",
            registry=r,
        )
        self.budget_used = Gauge(
            "finetune_watcher_request_budget_used_ratio",
            "Requests in the last minute divided by the budget.",
            registry=r,
        )
        self.last_success = Gauge(
            "finetune_watcher_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll of any model.",
            registry=r,
        )
        self.effective_interval = Gauge(
            "finetune_watcher_effective_interval_seconds",
            "The poll interval the budget allows for the active models.",
            registry=r,
        )
        self.leader = Gauge(
            "finetune_watcher_leader",
            "1 on the replica that holds the lease (polls and delivers), 0 on standbys.",
            registry=r,
        )
        for outcome in POLL_OUTCOMES:
            self.polls.labels(outcome)
        for result in ("sent", "failed", "given_up"):
            self.notifications.labels(result)

    def watch_statuses(self, statuses: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Export ``(model_id, status label)`` pairs (``status_label``), read at every scrape."""
        self.registry.register(_StatusCollector(statuses))


class _StatusCollector(Collector):
    """``finetune_watcher_models`` and ``finetune_watcher_model_status``, built per scrape."""

    def __init__(self, statuses: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        per_model = GaugeMetricFamily(
            "finetune_watcher_model_status",
            "1 for the current status of each watched model (one series per model).",
            labels=["model_id", "status"],
        )
        counts: dict[str, int] = {}
        for model_id, label in self._statuses():
            counts[label] = counts.get(label, 0) + 1
            per_model.add_metric([model_id, label], 1)
        by_status = GaugeMetricFamily(
            "finetune_watcher_models", "Watched models by status.", labels=["status"]
        )
        for label, count in sorted(counts.items()):
            by_status.add_metric([label], count)
        yield by_status
        yield per_model
