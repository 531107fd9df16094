"""Prometheus metrics of one watcher, in a registry of its own.

Label sets are bounded: ``outcome`` (a failed poll's ``ApiError.outcome``, or ``ok`` /
``changed``) and ``result`` are small enums, ``status`` is the provider's status set
(unknown statuses fold into ``other``). Model ids appear only as labels of the per-model
families (``finetune_watcher_model_status``, ``_model_info``, ``_model_status_seconds``:
one series per watched model, configured or discovered, never per id an API mentions).
The per-model families are built when scraped, from the watched models themselves: a
status change costs nothing, and no object is held per model. So are the outbox's age
(from the counts the delivery loop reads anyway) and the providers' deprecation notices.

The registry also holds prometheus_client's process (``process_*``: CPU, memory, open
files) and Python (``python_info``, ``python_gc_*``) collectors.

``/metrics`` is built in a worker thread (``watcher.health``): ``Metrics.snapshot()``,
on the event loop, copies the rows of the collectors that read the daemon's state (a
``_StateCollector``: its ``read()`` runs on the loop, its ``build(rows)`` anywhere).
A new collector that reads the daemon's state must be one of those, registered through
``Metrics._watch``; any other collector must be safe to collect from another thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher import __version__
from watcher.errors import ApiError

RowT = TypeVar("RowT")


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

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_* and python_* (the same objects as on prometheus_client's default
        # registry: they hold no state of their own).
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(standard)
        #: When the oldest undelivered notification was queued (the delivery loop sets it
        #: from the outbox counts); None: nothing pending.
        self.oldest_pending_at: datetime | None = None
        self._wall_clock = wall_clock
        #: The collectors that read the daemon's state (``snapshot`` reads them on the loop).
        self._state_collectors: list[_StateCollector[Any]] = []
        r.register(_OutboxAgeCollector(self))
        r.register(_DeprecationCollector())
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
            "The request budgets of the providers in use, summed "
            "(each provider section's max_requests_per_minute).",
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

    def watch_statuses(self, statuses: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        """Export ``(provider, model_id, status label)`` rows (``status_label``), read at
        every scrape. The provider is a label because two providers may share a job id."""
        self._watch(_StatusCollector(statuses))

    def watch_models(self, models: Callable[[], Iterable[ModelRow]]) -> None:
        """Export ``finetune_watcher_model_info`` and ``_model_status_seconds`` for each
        watched model ``models()`` yields, read at every scrape."""
        self._watch(_ModelCollector(models, lambda: self._wall_clock()))

    def _watch(self, collector: _StateCollector[Any]) -> None:
        self._state_collectors.append(collector)
        self.registry.register(collector)

    def snapshot(self) -> Collector:
        """The registry, with the daemon's state read now: call on the event loop.

        The collectors that read the daemon's state (``watch_statuses``, ``watch_models``)
        copy their rows here, which is cheap; collecting the result (e.g.
        ``generate_latest(snapshot)``: building and formatting every family, the
        expensive part) is then safe in another thread. Everything else in the registry
        (counters, gauges, process facts) is thread-safe to collect anywhere.
        """
        rows = {id(c): c.read() for c in self._state_collectors}
        return _Snapshot(self.registry, rows)

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest undelivered notification was queued; 0 when none."""
        oldest = self.oldest_pending_at
        if oldest is None:
            return 0.0
        return max(0.0, self._wall_clock() - oldest.timestamp())


@dataclass(frozen=True, slots=True)
class ModelRow:
    """What the per-model info and age series say about one watched model."""

    provider: str
    model_id: str
    name: str  # the configured or provider's name; "" when unknown
    base_model: str  # "" when unknown
    status_since: datetime | None  # when its current status began (None: no status yet)


#: The rows ``Metrics.snapshot`` read on the loop, by collector, while that snapshot is
#: collected (in the collecting thread's context only).
_PINNED: ContextVar[Mapping[int, list[Any]] | None] = ContextVar("metrics_pinned", default=None)


class _StateCollector(Collector, Generic[RowT]):
    """A collector whose input is the daemon's state, which only the event loop may read.

    ``read()`` copies the rows (on the loop); ``build(rows)`` makes the families from
    them, anywhere. ``collect()`` uses the rows a ``Metrics.snapshot`` pinned when there
    is one, else reads them now (a scrape on the loop, ``get_sample_value``).
    """

    def read(self) -> list[RowT]:
        raise NotImplementedError

    def build(self, rows: list[RowT]) -> Iterator[Metric]:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        pinned = _PINNED.get()
        rows = pinned.get(id(self)) if pinned is not None else None
        return self.build(rows if rows is not None else self.read())


class _Snapshot(Collector):
    """``Metrics.snapshot``: the registry, collected with the rows read on the loop."""

    def __init__(self, registry: CollectorRegistry, rows: Mapping[int, list[Any]]) -> None:
        self._registry = registry
        self._rows = rows

    def collect(self) -> Iterable[Metric]:
        token = _PINNED.set(self._rows)
        try:
            return list(self._registry.collect())
        finally:
            _PINNED.reset(token)


class _ModelCollector(_StateCollector[ModelRow]):
    """``finetune_watcher_model_info`` (constant 1, the labels are the information) and
    ``finetune_watcher_model_status_seconds``, built per scrape."""

    def __init__(
        self, models: Callable[[], Iterable[ModelRow]], clock: Callable[[], float]
    ) -> None:
        self._models = models
        self._clock = clock

    def read(self) -> list[ModelRow]:
        return list(self._models())

    def build(self, rows: list[ModelRow]) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "finetune_watcher_model_info",
            "1 per watched model; its name, provider and base model as labels (join on model_id).",
            labels=["provider", "model_id", "name", "base_model"],
        )
        age = GaugeMetricFamily(
            "finetune_watcher_model_status_seconds",
            "Seconds since each watched model entered its current status.",
            labels=["provider", "model_id"],
        )
        now = self._clock()
        for row in rows:
            info.add_metric([row.provider, row.model_id, row.name, row.base_model], 1)
            if row.status_since is not None:
                age.add_metric(
                    [row.provider, row.model_id], max(0.0, now - row.status_since.timestamp())
                )
        yield info
        yield age


class _OutboxAgeCollector(Collector):
    """``finetune_watcher_outbox_oldest_pending_seconds``, from what the delivery loop read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "finetune_watcher_outbox_oldest_pending_seconds",
            "Age of the oldest undelivered notification (0 when none is pending).",
            value=self._metrics.oldest_pending_age(),
        )


class _DeprecationCollector(Collector):
    """``finetune_watcher_api_deprecated{provider}`` and
    ``finetune_watcher_api_sunset_timestamp_seconds{provider}``: what a provider's
    ``Deprecation`` / ``Sunset`` headers said (``watcher.providers.http.deprecations``)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from watcher.providers.http import deprecations

        deprecated = GaugeMetricFamily(
            "finetune_watcher_api_deprecated",
            "1 for each provider whose API answered with a Deprecation or Sunset header.",
            labels=["provider"],
        )
        sunset = GaugeMetricFamily(
            "finetune_watcher_api_sunset_timestamp_seconds",
            "When a provider's API said it stops answering (its Sunset header), Unix time.",
            labels=["provider"],
        )
        for provider, notice in sorted(deprecations().items()):
            deprecated.add_metric([provider], 1)
            if notice.sunset_at is not None:
                sunset.add_metric([provider], notice.sunset_at.timestamp())
        yield deprecated
        yield sunset


class _StatusCollector(_StateCollector[tuple[str, str, str]]):
    """``finetune_watcher_models`` and ``finetune_watcher_model_status``, built per scrape."""

    def __init__(self, statuses: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        self._statuses = statuses

    def read(self) -> list[tuple[str, str, str]]:
        return list(self._statuses())

    def build(self, rows: list[tuple[str, str, str]]) -> Iterator[Metric]:
        per_model = GaugeMetricFamily(
            "finetune_watcher_model_status",
            "1 for the current status of each watched model (one series per model).",
            labels=["provider", "model_id", "status"],
        )
        counts: dict[str, int] = {}
        for provider, model_id, label in rows:
            counts[label] = counts.get(label, 0) + 1
            per_model.add_metric([provider, model_id, label], 1)
        by_status = GaugeMetricFamily(
            "finetune_watcher_models", "Watched models by status.", labels=["status"]
        )
        for label, count in sorted(counts.items()):
            by_status.add_metric([label], count)
        yield by_status
        yield per_model
