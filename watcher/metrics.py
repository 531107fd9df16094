"""Prometheus metrics of one watcher, in a registry of its own.

Label sets are bounded: ``outcome`` (a failed poll's ``ApiError.outcome``, or ``ok`` /
``changed``) and ``result`` are small enums, ``status`` is the provider's status set
(unknown statuses fold into ``other``). Model ids appear only as labels of the per-model
families (``finetune_watcher_model_status``, ``_model_info``, ``_model_status_seconds``:
one series per watched model, configured or discovered, never per id an API mentions).
The per-model families are built when scraped, from the watched models themselves: a
status change costs nothing, and no object is held per model. So are the outbox's age
(from the counts the delivery loop reads anyway) and the providers' deprecation notices.
So are the per-poll series (``finetune_watcher_polls_total``, ``_poll_latency_seconds``,
``_api_requests_total``): the poller adds to plain numbers (``Count``, ``PollCounter``,
``LatencyHistogram``: no lock, the loop is their only writer) and ``_PollCollector``
writes them as prometheus_client's ``Counter`` and ``Histogram`` would, byte for byte.

The registry also holds prometheus_client's process (``process_*``: CPU, memory, open
files) and Python (``python_info``, ``python_gc_*``) collectors.

``/metrics`` is built in a worker thread (``watcher.health``): ``Metrics.snapshot()``,
on the event loop, copies the rows of the collectors that read the daemon's state (a
``_StateCollector``: its ``read()`` runs on the loop, its ``build(rows)`` anywhere).
A new collector that reads the daemon's state must be one of those, registered through
``Metrics._watch``; any other collector must be safe to collect from another thread.
"""

from __future__ import annotations

import bisect
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
    Info,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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
#: The upper bounds of ``finetune_watcher_poll_latency_seconds``' buckets (and +Inf).
POLL_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        # The per-poll series: plain numbers the event loop bumps, exported as
        # finetune_watcher_polls_total, _poll_latency_seconds and _api_requests_total
        # (the same text as prometheus_client's Counter and Histogram; P14).
        self.polls = PollCounter()
        self.poll_latency = LatencyHistogram(POLL_LATENCY_BUCKETS)
        self.api_requests = Count()
        self._watch(_PollCollector(self.polls, self.poll_latency, self.api_requests))
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
            self.polls.labels(outcome)  # each series exists from 0
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


class Count:
    """A counter the event loop bumps with a plain addition (no lock: the loop is its only
    writer; scrapes copy it on the loop, ``Metrics.snapshot``)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class PollCounter:
    """``finetune_watcher_polls_total{outcome}``: a ``Count`` per outcome, in the order
    the outcomes were first counted (like a labelled ``Counter``)."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: dict[str, Count] = {}

    def labels(self, outcome: str) -> Count:
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = Count()
        return child

    def values(self) -> list[tuple[str, float]]:
        return [(outcome, child.value) for outcome, child in self._children.items()]


class LatencyHistogram:
    """``finetune_watcher_poll_latency_seconds``: per-bucket counts and the sum as plain
    numbers; ``observe`` is one bisection and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount (prometheus_client's "le").
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


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


_PollRow = tuple[list[tuple[str, float]], list[int], float, float]


class _PollCollector(_StateCollector[_PollRow]):
    """The per-poll families, as prometheus_client's ``Counter`` / ``Histogram`` write
    them: ``finetune_watcher_polls_total``, ``_poll_latency_seconds``,
    ``_api_requests_total``."""

    def __init__(self, polls: PollCounter, latency: LatencyHistogram, requests: Count) -> None:
        self._polls = polls
        self._latency = latency
        self._requests = requests
        # "le" as prometheus_client writes these bounds (repr; no exponent below 1e6).
        self._les = [repr(float(b)) for b in latency.bounds] + ["+Inf"]

    def read(self) -> list[_PollRow]:
        latency = self._latency
        return [(self._polls.values(), list(latency.counts), latency.sum, self._requests.value)]

    def build(self, rows: list[_PollRow]) -> Iterator[Metric]:
        outcomes, counts, latency_sum, requests = rows[0]
        polls = CounterMetricFamily(
            "finetune_watcher_polls", "Polls of a model's events, by outcome.", labels=["outcome"]
        )
        for outcome, value in outcomes:
            polls.add_metric([outcome], value)
        yield polls
        latency = HistogramMetricFamily(
            "finetune_watcher_poll_latency_seconds",
            "Time to fetch one model's event history (all pages).",
        )
        cumulative, buckets = 0.0, []
        for le, count in zip(self._les, counts, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        latency.add_metric([], buckets, latency_sum)
        yield latency
        yield CounterMetricFamily(
            "finetune_watcher_api_requests",
            "HTTP requests sent to the providers' APIs.",
            value=requests,
        )
