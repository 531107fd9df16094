"""Prometheus metrics of one watcher, in a registry of its own.

Label sets are bounded: ``outcome`` and ``result`` are small enums, ``status`` is
the status set (unknown statuses fold into ``other``). Model ids appear only as
a label of ``finetune_watcher_model_status`` (one series per watched model), a
gauge that is cleared when a model stops being watched.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from watcher import __version__
from watcher.lifecycle import KNOWN_STATUSES

POLL_OUTCOMES = (
    "ok",
    "changed",
    "auth_error",
    "not_found",
    "rate_limited",
    "server_error",
    "transport_error",
    "bad_response",
    "other_error",
)


def status_label(status: str | None) -> str:
    """A bounded label value for ``status``."""
    if status is None:
        return "none"
    return status if status in KNOWN_STATUSES else "other"


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
            "finetune_watcher_api_requests", "HTTP requests sent to the Cohere API.", registry=r
        )
        self.models = Gauge(
            "finetune_watcher_models", "Watched models by status.", ["status"], registry=r
        )
        self.model_status = Gauge(
            "finetune_watcher_model_status",
            "1 for the current status of each watched model (one series per model).",
            ["model_id", "status"],
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
        for outcome in POLL_OUTCOMES:
            self.polls.labels(outcome)
        for result in ("sent", "failed", "given_up"):
            self.notifications.labels(result)

    def set_model_statuses(self, statuses: dict[str, str | None]) -> None:
        """Replace the per-status counts and per-model series with ``statuses``."""
        counts: dict[str, int] = {}
        self.model_status.clear()
        for model_id, status in statuses.items():
            label = status_label(status)
            counts[label] = counts.get(label, 0) + 1
            self.model_status.labels(model_id, label).set(1)
        self.models.clear()
        for label, count in counts.items():
            self.models.labels(label).set(count)
