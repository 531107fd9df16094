"""The scheduler: when each model is polled, what happens to the answer, and shutdown.

``Watcher`` owns the poll loop (a heap of due times on the monotonic clock, at
most ``poll.concurrency`` polls in flight, every request paced by the shared
budget), the delivery loop (the outbox, retried with backoff) and housekeeping
(batched bookkeeping writes, metrics). ``serve`` opens the resources in one
place, handles signals, and closes everything in reverse order.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import math
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import structlog

from watcher.cohere import CohereClient, ModelInfo, open_session
from watcher.errors import (
    AuthError,
    BadResponseError,
    CohereError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    WatcherError,
)
from watcher.health import LIVENESS_STALE_AFTER, HealthServer
from watcher.lifecycle import (
    READY,
    ModelState,
    backoff_delay,
    is_settled,
    jittered,
    observe,
    poll_interval,
    stuck_warnings_due,
)
from watcher.metrics import Metrics
from watcher.notify import (
    DeliveryRound,
    Message,
    Notifier,
    Target,
    dashboard_link,
    deliver_due,
    format_duration,
    human_status,
    make_target,
    render_notice,
)
from watcher.pacing import RequestPacer
from watcher.settings import ApiKey, Settings
from watcher.store import OutboxItem, Store
from watcher.systemd import SystemdNotifier, status_loop, watchdog_interval, watchdog_loop

log = structlog.get_logger("watcher.daemon")

#: How long a stopping daemon lets an in-flight delivery finish before abandoning it.
SHUTDOWN_GRACE = 3.0
#: How often batched "polled, nothing changed" rows are written.
FLUSH_EVERY = 5.0
#: The poll loop wakes at least this often, so its heartbeat shows it is alive.
HEARTBEAT = 1.0
#: Longest wait for enrichment (model details, metrics) before a notice goes out without it.
ENRICH_TIMEOUT = 5.0
#: A wall clock that moved back by more than this (against the monotonic clock) is a jump.
CLOCK_JUMP = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class WatchedModel:
    """A model the watcher polls, and what it remembers between polls."""

    model_id: str
    name: str | None
    targets: tuple[Target, ...]
    state: ModelState | None
    discovered: bool = False
    failures: int = 0
    token: int = 0  # bumped on every reschedule; stale heap entries are skipped
    not_found_reported: bool = False
    info: ModelInfo | None = None  # the model's details, fetched on first sight / settling
    metrics: dict[str, float] | None = None  # final training metrics, fetched on READY
    stuck_warnings: int = 0  # "still stuck" warnings sent in the current status
    digest: bytes | None = None  # of the last one-page answer already folded into ``state``

    @property
    def label(self) -> str:
        """The configured name, else the name Cohere gave, else the id."""
        return self.name or (self.info.name if self.info and self.info.name else self.model_id)

    @property
    def display_name(self) -> str | None:
        return self.name or (self.info.name if self.info else None)


@dataclass(slots=True)
class OnceResult:
    polled: int = 0
    failed: int = 0
    notices: int = 0


@dataclass(slots=True)
class Progress:
    """Liveness and readiness facts for health checks, systemd and the demo."""

    started_mono: float = 0.0
    heartbeat_mono: float = 0.0  # the poll loop went round
    last_poll_mono: float | None = None  # any poll finished (success or failure)
    last_success_mono: float | None = None
    last_success_wall: datetime | None = None
    rounds_completed: int = 0  # every watched model polled at least once since start
    last_round_mono: float | None = None  # when the last such round completed
    delivered: int = 0  # notifications fully delivered since start
    auth_failing: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)

    def bump(self) -> None:
        """Wake whoever waits on a change (the demo, tests)."""
        self.changed.set()
        self.changed = anyio.Event()


class Watcher:
    """Polls models, records what changed with its notices, and delivers them."""

    def __init__(
        self,
        settings: Settings,
        *,
        api_key: ApiKey,
        store: Store,
        client: CohereClient,
        notifier: Notifier,
        pacer: RequestPacer,
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = utc_now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._api_key = api_key
        self._store = store
        self._client = client
        self._notifier = notifier
        self._pacer = pacer
        self.metrics = metrics or Metrics()
        self._now = now
        self._rand = rand
        self.progress = Progress()
        self._models: dict[str, WatchedModel] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._wakeup = anyio.Event()
        self._delivery_wakeup = anyio.Event()
        # model id -> when it was last polled with nothing new (written every FLUSH_EVERY).
        self._polled: dict[str, datetime] = {}
        self._stop_requested = anyio.Event()
        self._delivering = False
        self._delivery_idle = anyio.Event()
        self._global_targets: tuple[Target, ...] = ()
        self._ops_targets: tuple[Target, ...] = ()
        self._unpolled: set[str] = set()
        self._budget_warned = False
        self._unreachable_reported = False
        self._last_error: str | None = None
        self._wall_offset: float | None = None
        self._apply_targets(settings)
        self.metrics.watch_statuses(
            lambda: [(m.model_id, _status(m)) for m in self._models.values()]
        )
        self._polls_ok = self.metrics.polls.labels("ok")
        self._polls_changed = self.metrics.polls.labels("changed")
        self._load_models(settings, store.load_states())
        # Retries left by an earlier run are due now: a restart is usually a fix.
        store.pull_forward_retries(self._now())

    # --- configuration -------------------------------------------------------

    def _apply_targets(self, settings: Settings) -> None:
        self._global_targets = tuple(
            make_target(u.get_secret_value()) for u in settings.notify.urls
        )
        ops = settings.notify.ops_urls or settings.notify.urls
        self._ops_targets = tuple(make_target(u.get_secret_value()) for u in ops)
        self._notify_on = frozenset(settings.notify.on)

    def _load_models(self, settings: Settings, states: dict[str, ModelState]) -> None:
        now = anyio.current_time()
        stuck = self._store.stuck_warning_counts()
        for spec in settings.models:
            model = WatchedModel(
                model_id=spec.id,
                name=spec.name,
                targets=tuple(make_target(u.get_secret_value()) for u in spec.urls),
                state=states.get(spec.id),
                stuck_warnings=stuck.get(spec.id, 0),
            )
            self._models[spec.id] = model
        if settings.discover.enabled:
            # Discovered models still in progress stay watched across restarts, so an
            # outcome that happened while we were down is still announced.
            for record in self._store.model_records():
                model_id = record.state.model_id
                if (
                    record.discovered
                    and model_id not in self._models
                    and not is_settled(record.state.status)
                ):
                    self._models[model_id] = WatchedModel(
                        model_id, record.name, (), states.get(model_id),
                        discovered=True, stuck_warnings=stuck.get(model_id, 0),
                    )  # fmt: skip
        spread = min(1.0, settings.poll.interval / 4)
        count = max(1, len(self._models))
        for index, model in enumerate(self._models.values()):
            # Spread the first round evenly over a fraction of the interval (no thundering
            # herd); the first model goes at once.
            self._schedule(model, now + spread * index / count)
        self._unpolled = set(self._models)

    def apply_settings(self, settings: Settings) -> tuple[list[str], list[str]]:
        """Switch to reloaded ``settings``: returns (models added, models removed).

        State and pending notifications are kept; removed models stop being polled,
        added ones are polled right away, changed targets apply to the next delivery.
        """
        old = set(self._models)
        new_specs = {spec.id: spec for spec in settings.models}
        added = [m for m in new_specs if m not in old]
        # Discovered models stay while discovery is on; configured ones follow the file.
        removed = [
            m
            for m in old
            if m not in new_specs and not (self._models[m].discovered and settings.discover.enabled)
        ]
        states = self._store.load_states() if added else {}
        self.settings = settings
        self._apply_targets(settings)
        for model_id in removed:
            del self._models[model_id]
            self._unpolled.discard(model_id)
        now = anyio.current_time()
        for model_id, spec in new_specs.items():
            targets = tuple(make_target(u.get_secret_value()) for u in spec.urls)
            existing = self._models.get(model_id)
            if existing is not None:
                existing.name, existing.targets = spec.name, targets
                continue
            model = WatchedModel(model_id, spec.name, targets, states.get(model_id))
            self._models[model_id] = model
            self._schedule(model, now)
        self._budget_warned = False
        self._warn_if_over_budget()
        self._wake()
        return added, removed

    @property
    def models(self) -> dict[str, WatchedModel]:
        return self._models

    @property
    def store(self) -> Store:
        return self._store

    @property
    def pacer(self) -> RequestPacer:
        return self._pacer

    # --- scheduling ------------------------------------------------------------

    def _schedule(self, model: WatchedModel, due: float) -> None:
        model.token = next(self._seq)  # unique across models, so a stale entry never revives
        heapq.heappush(self._heap, (due, next(self._seq), model.model_id, model.token))
        if self._heap[0][3] == model.token:
            self._wake()  # the new entry is the earliest: the sleeping loop must see it

    def _wake(self) -> None:
        self._wakeup.set()

    async def _next_due(self) -> WatchedModel:
        while True:
            self.progress.heartbeat_mono = anyio.current_time()
            while self._heap:
                due, _, model_id, token = self._heap[0]
                model = self._models.get(model_id)
                if model is None or model.token != token:
                    heapq.heappop(self._heap)
                    continue
                if due <= anyio.current_time():
                    heapq.heappop(self._heap)
                    return model
                break
            wait = HEARTBEAT
            if self._heap:
                wait = min(wait, max(0.0, self._heap[0][0] - anyio.current_time()))
            with anyio.move_on_after(wait):
                await self._wakeup.wait()
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()

    def _warn_if_over_budget(self) -> None:
        poll = self.settings.poll
        active = sum(1 for m in self._models.values() if not is_settled(_status(m)))
        settled = len(self._models) - active
        needed = active * 60.0 / poll.interval + settled * 60.0 / poll.settled_interval
        budget = poll.max_requests_per_minute
        effective = poll.interval
        if needed > budget and active:
            spare = max(1.0, budget - settled * 60.0 / poll.settled_interval)
            effective = active * 60.0 / spare
            if not self._budget_warned:
                log.warning(
                    "request budget too small for the interval; polls are spread out",
                    models=len(self._models),
                    budget_per_minute=budget,
                    interval=poll.interval,
                    effective_interval=round(effective, 2),
                )
                self._budget_warned = True
        self.metrics.effective_interval.set(effective)
        self.metrics.budget_per_minute.set(budget)

    # --- polling ---------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """``poll.concurrency`` long-lived workers, each taking the most overdue model.

        A worker refreshes the heartbeat whenever it looks for work; a poll is bounded by
        the request timeout, so a heartbeat older than ``liveness_window`` means stuck.
        """

        async def worker() -> None:
            while True:
                await self.poll_model(await self._next_due())

        async with anyio.create_task_group() as workers:
            for _ in range(self.settings.poll.concurrency):
                workers.start_soon(worker)

    @property
    def liveness_window(self) -> float:
        """How old the heartbeat may get while polls are merely slow, not stuck."""
        slowest_poll = 2 * self.settings.cohere.timeout + ENRICH_TIMEOUT
        return max(LIVENESS_STALE_AFTER, slowest_poll)

    async def poll_model(self, model: WatchedModel) -> bool:
        """Poll one model, record the outcome and schedule its next poll. True on success."""
        started = anyio.current_time()
        # An answer byte for byte like the last one folded into the state is skipped
        # unparsed: observe() is idempotent, so the same events could change nothing.
        unless = model.digest if model.state is not None else None
        try:
            history = await self._client.list_events(model.model_id, unless_digest=unless)
        except CohereError as exc:
            self.progress.last_poll_mono = anyio.current_time()
            self._on_poll_error(model, exc, _bound(model))
            return False
        finally:
            self.metrics.poll_latency.observe(anyio.current_time() - started)
            self.metrics.api_requests.inc()
        if self._models.get(model.model_id) is not model:
            return True  # removed by a reload while we were polling
        polled_at = self._now()
        if history.unchanged:
            self._polled[model.model_id] = polled_at
            self._polls_ok.inc()
            self._after_success(model, polled_at)
            return True
        bound = _bound(model)
        observation = observe(model.state, model.model_id, history.events, self._notify_on)
        if history.malformed:
            bound.warning("skipped malformed events", malformed=history.malformed)
        if observation.changed:
            first_sight = model.state is None
            previous = model.state.status if model.state else None
            self._store.record_observation(
                observation.state,
                observation.notices,
                polled_at=polled_at,
                name=model.display_name,
                discovered=model.discovered,
            )
            model.state = observation.state
            if observation.state.status != previous:
                model.stuck_warnings = 0  # the store reset its count in the same write
                bound.info(
                    "status changed",
                    status=observation.state.status,
                    previous_status=previous,
                    notices=len(observation.notices),
                )
            if observation.notices or (first_sight and model.display_name is None):
                # Recorded first (crash-safe), enriched second, delivered third.
                await self._enrich(model, bound, polled_at)
            if observation.notices:
                self._delivery_wakeup.set()
            self._polls_changed.inc()
        else:
            self._polled[model.model_id] = polled_at
            self._polls_ok.inc()
        # Only once the observation is recorded may an identical answer be skipped.
        model.digest = history.digest
        self._after_success(model, polled_at)
        return True

    def _after_success(self, model: WatchedModel, polled_at: datetime) -> None:
        self._on_poll_success(model)
        self._warn_if_stuck(model, polled_at)
        poll = self.settings.poll
        delay = poll_interval(_status(model), poll.interval, poll.settled_interval)
        self._schedule(model, anyio.current_time() + jittered(delay, poll.jitter, self._rand()))

    async def _enrich(self, model: WatchedModel, bound: Any, polled_at: datetime) -> None:
        """Fetch the model's details (and final metrics when READY); never blocks for long.

        Failing enrichment only costs the message some detail: it is logged and skipped.
        """
        named_before = model.display_name
        with anyio.move_on_after(min(ENRICH_TIMEOUT, self.settings.cohere.timeout)):
            try:
                model.info = await self._client.get_model(model.model_id)
                if _status(model) == READY:
                    step = await self._client.last_step_metrics(model.model_id)
                    model.metrics = step.metrics if step and step.metrics else None
            except CohereError as exc:
                bound.info("model details unavailable; notifying without them", error=str(exc))
        if model.display_name != named_before and model.state is not None:
            self._store.record_observation(
                model.state, (), polled_at=polled_at, name=model.display_name,
                discovered=model.discovered,
            )  # fmt: skip

    def _warn_if_stuck(self, model: WatchedModel, now: datetime) -> None:
        stuck_after = self.settings.notify.stuck_after
        if stuck_after is None or model.state is None:
            return
        due = stuck_warnings_due(model.state.status, model.state.status_since, now, stuck_after)
        if due <= model.stuck_warnings or model.state.status_since is None:
            return
        model.stuck_warnings = due
        stuck_for = format_duration((now - model.state.status_since).total_seconds())
        status = human_status(model.state.status)
        self._store.record_stuck_warning(
            model.model_id,
            warnings=due,
            title=f"⏳ {model.label} has been {status} for {stuck_for}",
            body=(
                f"The fine-tuned model {model.label} ({model.model_id}) has been in "
                f"{model.state.status} since {model.state.status_since.isoformat()} "
                f"({stuck_for}), longer than notify.stuck_after. "
                f"Dashboard: {dashboard_link(self.settings.notify.dashboard_url, model.model_id)}"
            ),
            notify_type="warning",
            created_at=now,
        )
        log.warning("model looks stuck", model_id=model.model_id, status=model.state.status,
                    stuck_for=stuck_for, warning=due)  # fmt: skip
        self._delivery_wakeup.set()

    def _on_poll_success(self, model: WatchedModel) -> None:
        now = anyio.current_time()
        if model.failures:
            _bound(model).info("polling recovered", after_failures=model.failures)
        model.failures = 0
        if model.not_found_reported:
            model.not_found_reported = False
        self.progress.last_poll_mono = now
        self.progress.last_success_mono = now
        if self._unreachable_reported:
            self._unreachable_reported = False
            log.info("the Cohere API answers again")
            self._ops_message(
                "finetune-watcher reaches the Cohere API again",
                "Polling works again; notifications resume.",
                "success",
            )
        if self.progress.auth_failing:
            self.progress.auth_failing = False
            log.info("authentication works again")
            self._ops_message(
                "finetune-watcher can authenticate again",
                "The Cohere API accepts the key again; watching resumed.",
                "success",
            )
        self._mark_polled(model.model_id)

    def _mark_polled(self, model_id: str) -> None:
        if model_id in self._unpolled:
            self._unpolled.discard(model_id)
            if not self._unpolled:
                self.progress.rounds_completed += 1
                self.progress.last_round_mono = anyio.current_time()
                self._unpolled = set(self._models)
                self.progress.bump()

    def _on_poll_error(self, model: WatchedModel, exc: CohereError, bound: Any) -> None:
        poll = self.settings.poll
        model.failures += 1
        base = poll_interval(_status(model), poll.interval, poll.settled_interval)
        delay = max(
            base, backoff_delay(model.failures, poll.interval, poll.backoff_cap, self._rand())
        )
        outcome = _outcome(exc)
        self.metrics.polls.labels(outcome).inc()
        self._last_error = str(exc)
        if isinstance(exc, RateLimitedError):
            pause = exc.retry_after
            if pause is None:
                pause = backoff_delay(
                    model.failures, max(1.0, poll.interval), poll.backoff_cap, self._rand()
                )
            self._pacer.pause(pause)
            delay = pause + jittered(base, poll.jitter, self._rand()) * 0.1
            bound.warning(
                "rate limited by the API; pausing every request", pause_seconds=round(pause, 2)
            )
        elif isinstance(exc, AuthError):
            delay = max(delay, min(poll.backoff_cap, 60.0))
            if not self.progress.auth_failing:
                self.progress.auth_failing = True
                log.error(
                    "the Cohere API rejects the key; retrying slowly",
                    status=exc.status,
                    key_source=self._api_key.source,
                )
                self._ops_message(
                    "finetune-watcher cannot authenticate",
                    f"The Cohere API answered HTTP {exc.status} to the key from "
                    f"{self._api_key.source}. No model can be watched until the key is fixed.",
                    "failure",
                )
        elif isinstance(exc, NotFoundError):
            delay = max(delay, poll.settled_interval)
            if not model.not_found_reported:
                model.not_found_reported = True
                label = model.name or model.model_id
                bound.warning("model not found; checking again slowly")
                self._ops_message(
                    f"{label}: model not found",
                    f"Cohere says fine-tuned model {model.model_id} does not exist "
                    "(a typo in the configuration, or it was deleted). "
                    "finetune-watcher keeps checking, slowly.",
                    "warning",
                    model_id=model.model_id,
                )
        else:
            bound.warning(
                "poll failed; backing off",
                error=str(exc),
                failures=model.failures,
                retry_in=round(delay, 2),
            )
        # The row already names the model: store the reason, not "events of <id>: ...".
        reason = str(exc).removeprefix(f"events of {model.model_id}: ")
        self._store.record_poll_failure(
            model.model_id, polled_at=self._now(), error=reason, failures=model.failures
        )
        # A round is "every model attempted": one failing model must not hold readiness.
        self._mark_polled(model.model_id)
        self._schedule(model, anyio.current_time() + delay)

    def _ops_message(
        self, title: str, body: str, notify_type: str, *, model_id: str | None = None
    ) -> None:
        self._store.enqueue_message(
            kind="ops",
            title=title,
            body=body,
            notify_type=notify_type,
            created_at=self._now(),
            model_id=model_id,
        )
        self._delivery_wakeup.set()

    # --- discovery ---------------------------------------------------------------

    async def discover_once(self) -> list[str]:
        """List the account's models; watch every unsettled match not watched yet."""
        rules = self.settings.discover
        try:
            listed = await self._client.list_models()
        except CohereError as exc:
            log.warning("model discovery failed; trying again later", error=str(exc))
            return []
        added: list[str] = []
        states: dict[str, ModelState] | None = None
        for info in listed:
            if info.id in self._models or is_settled(info.status):
                continue
            if not _matches(info.name or info.id, rules.include, rules.exclude):
                continue
            if states is None:
                states = self._store.load_states()
            model = WatchedModel(info.id, None, (), states.get(info.id), discovered=True, info=info)
            self._models[info.id] = model
            self._schedule(model, anyio.current_time())
            added.append(info.id)
            log.info("discovered a model to watch", model_id=info.id, model_name=info.name,
                     status=info.status)  # fmt: skip
        if added:
            self._warn_if_over_budget()
            self._wake()
        return added

    async def _discovery_loop(self) -> None:
        while True:
            if self.settings.discover.enabled:
                await self.discover_once()
            await anyio.sleep(self.settings.discover.interval)

    # --- delivery ----------------------------------------------------------------

    def targets_for(self, item: OutboxItem) -> Sequence[Target]:
        """Where an outbox item goes, by the *current* configuration."""
        if item.kind == "ops" and item.model_id is None:
            return self._ops_targets
        model = self._models.get(item.model_id or "")
        own = model.targets if model else ()
        return _unique((*self._global_targets, *own))

    def render(self, item: OutboxItem) -> Message:
        if item.notice is None:
            return Message(item.title or "", item.body or "", item.notify_type or "info")
        model = self._models.get(item.notice.model_id)
        notify = self.settings.notify
        title_template, body_template = notify.templates_for(item.notice.status)
        return render_notice(
            item.notice,
            name=model.display_name if model else None,
            dashboard_url=notify.dashboard_url,
            title_template=title_template,
            body_template=body_template,
            base_model=model.info.base_model if model and model.info else None,
            metrics=model.metrics if model and item.notice.status == READY else None,
            body_format=notify.format,
        )

    async def deliver_once(self) -> DeliveryRound:
        """One pass over the due outbox items."""
        self._delivering = True
        try:
            result = await deliver_due(
                self._store,
                self._notifier,
                targets_for=self.targets_for,
                render=self.render,
                now=self._now(),
                give_up_after=self.settings.notify.give_up_after,
                rand=self._rand,
            )
        finally:
            self._delivering = False
            self._delivery_idle.set()
            self._delivery_idle = anyio.Event()
        self.metrics.notifications.labels("sent").inc(result.delivered)
        self.metrics.notifications.labels("failed").inc(result.failed)
        self.metrics.notifications.labels("given_up").inc(result.given_up)
        if result.given_up_models:
            # Only model notifications: reporting our own given-up reports would loop.
            self._ops_message(
                f"finetune-watcher gave up {result.given_up_models} notification(s)",
                f"{result.given_up_models} model notification(s) could not be delivered within "
                f"notify.give_up_after ({format_duration(self.settings.notify.give_up_after)}). "
                "`finetune-watcher status` lists the models; the log names the failing targets.",
                "failure",
            )
        if result.delivered or result.given_up:
            self.progress.delivered += result.delivered
            self.progress.bump()
        return result

    def _check_wall_clock(self) -> None:
        """Pull retries forward when the wall clock jumped backwards (no stalled outbox)."""
        offset = self._now().timestamp() - anyio.current_time()
        if self._wall_offset is not None and offset < self._wall_offset - CLOCK_JUMP:
            moved = self._store.pull_forward_retries(self._now())
            log.warning(
                "the system clock moved backwards; retrying pending notifications now",
                seconds=round(self._wall_offset - offset),
                rescheduled=moved,
            )
        self._wall_offset = offset

    async def _delivery_loop(self) -> None:
        while not self._stop_requested.is_set():
            self._check_wall_clock()
            await self.deliver_once()
            self.metrics.outbox_pending.set(self._store.outbox_counts().pending)
            next_due = self._store.next_due_at()
            wait = 60.0
            if next_due is not None:
                wait = min(wait, max(0.05, (next_due - self._now()).total_seconds()))
            with anyio.move_on_after(wait):
                await self._delivery_wakeup.wait()
            self._delivery_wakeup = anyio.Event()

    # --- housekeeping ---------------------------------------------------------------

    def flush_polls(self) -> None:
        """Write the batched "polled, nothing changed" rows (one per model: the last)."""
        if self._polled:
            batch, self._polled = self._polled, {}
            self._store.record_polls(list(batch.items()))

    def _note_last_success(self) -> None:
        """The wall time of the last success, for the gauge (per tick, not per poll)."""
        last = self.progress.last_success_mono
        if last is not None:
            ago = anyio.current_time() - last
            self.progress.last_success_wall = self._now() - timedelta(seconds=ago)
            self.metrics.last_success.set(self.progress.last_success_wall.timestamp())

    def _check_reachability(self) -> None:
        """One ops message when no poll has succeeded for ``notify.unreachable_after``."""
        if self._unreachable_reported or self.progress.auth_failing or not self._models:
            return
        since = self.progress.last_success_mono or self.progress.started_mono
        down_for = anyio.current_time() - since
        if down_for < self.settings.notify.unreachable_after:
            return
        self._unreachable_reported = True
        log.error("the Cohere API has been unreachable", for_seconds=round(down_for),
                  last_error=self._last_error)  # fmt: skip
        self._ops_message(
            "finetune-watcher cannot reach the Cohere API",
            f"No poll has succeeded for {format_duration(down_for)}. Last error: "
            f"{self._last_error or 'none recorded'}. Notifications resume when it answers again.",
            "failure",
        )

    async def _housekeeping_loop(self) -> None:
        next_flush = anyio.current_time() + FLUSH_EVERY
        while True:
            await anyio.sleep(HEARTBEAT)
            self._check_reachability()
            self._note_last_success()
            if anyio.current_time() >= next_flush:
                next_flush = anyio.current_time() + FLUSH_EVERY
                self.flush_polls()
                self.metrics.budget_used.set(
                    min(1.0, self._pacer.recent_requests() / self._pacer.per_minute)
                )

    def database_ok(self) -> bool:
        """True when the state database answers a trivial query."""
        try:
            self._store.outbox_counts()
        except WatcherError:
            return False
        return True

    def status_line(self) -> str:
        """One line for systemd's STATUS= and the logs."""
        statuses = [_status(m) for m in self._models.values()]
        active = sum(1 for s in statuses if not is_settled(s))
        parts = [f"watching {len(statuses)} models", f"{active} in progress"]
        if self.progress.last_success_mono is not None:
            ago = anyio.current_time() - self.progress.last_success_mono
            parts.append(f"last poll {_ago(ago)} ago")
        if self.progress.auth_failing:
            parts.append("API key rejected")
        return ", ".join(parts)

    # --- running ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to stop: polling stops now, delivery gets a short grace."""
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch until ``stop()`` is called or the caller cancels."""
        self.progress.started_mono = anyio.current_time()
        self._warn_if_over_budget()
        try:
            async with anyio.create_task_group() as tg:
                polling = anyio.CancelScope()
                delivery = anyio.CancelScope()

                async def poll_loop() -> None:
                    with polling:
                        await self._poll_loop()

                async def delivery_loop() -> None:
                    with delivery:
                        await self._delivery_loop()

                tg.start_soon(poll_loop)
                tg.start_soon(delivery_loop)
                tg.start_soon(self._housekeeping_loop)
                tg.start_soon(self._discovery_loop)
                task_status.started()
                await self._stop_requested.wait()
                polling.cancel()
                if self._delivering:
                    with anyio.move_on_after(SHUTDOWN_GRACE):
                        await self._delivery_idle.wait()
                tg.cancel_scope.cancel()
        finally:
            self.flush_polls()  # synchronous: nothing here can be cancelled

    async def poll_all_once(self) -> OnceResult:
        """Poll every model once (for ``once``), then deliver what is due."""
        result = OnceResult()
        if self.settings.discover.enabled:
            await self.discover_once()
        limiter = anyio.Semaphore(self.settings.poll.concurrency)

        async def one(model: WatchedModel) -> None:
            async with limiter:
                ok = await self.poll_model(model)
            result.polled += 1
            result.failed += 0 if ok else 1

        async with anyio.create_task_group() as tg:
            for model in list(self._models.values()):
                tg.start_soon(one, model)
        self.flush_polls()
        await self.deliver_once()
        return result


# --- helpers ----------------------------------------------------------------------


def _bound(model: WatchedModel) -> Any:
    """The log with the model bound (only built when something is logged)."""
    return log.bind(model_id=model.model_id, model_name=model.display_name)


def _status(model: WatchedModel) -> str | None:
    return model.state.status if model.state else None


def _matches(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Glob rules of ``discover``: any include pattern matches and no exclude pattern does."""
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def _unique(targets: Sequence[Target]) -> tuple[Target, ...]:
    seen: dict[str, Target] = {}
    for t in targets:
        seen.setdefault(t.key, t)
    return tuple(seen.values())


def _outcome(exc: CohereError) -> str:
    for kind, name in (
        (AuthError, "auth_error"),
        (NotFoundError, "not_found"),
        (RateLimitedError, "rate_limited"),
        (ServerError, "server_error"),
        (TransportError, "transport_error"),
        (BadResponseError, "bad_response"),
    ):
        if isinstance(exc, kind):
            return name
    return "other_error"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, math.floor(seconds))}s"
    if seconds < 5400:
        return f"{math.floor(seconds / 60)}m"
    return f"{math.floor(seconds / 3600)}h"


# --- the process --------------------------------------------------------------------

ReloadFn = Callable[[], Settings]


@asynccontextmanager
async def open_watcher(
    settings: Settings,
    api_key: ApiKey,
    *,
    now: Callable[[], datetime] = utc_now,
    rand: Callable[[], float] = random.random,
) -> AsyncIterator[Watcher]:
    """A Watcher with its resources: state store, HTTP session, notifier.

    The one place they are opened, in order; they are closed in reverse order,
    shielded from cancellation, and a failure while closing is logged, not raised.
    """
    async with AsyncExitStack() as stack:
        store = Store.open(settings.state.path)
        stack.callback(_close_logged, "state store", store.close)
        pacer = RequestPacer(settings.poll.max_requests_per_minute)
        session = open_session(
            api_key=api_key.value.get_secret_value(),
            timeout=settings.cohere.timeout,
            concurrency=settings.poll.concurrency,
            client_name=settings.cohere.client_name,
        )
        stack.push_async_callback(_aclose_logged, "http session", session.close)
        client = CohereClient(
            session,
            base_url=settings.cohere.base_url,
            timeout=settings.cohere.timeout,
            page_size=settings.cohere.page_size,
            pacer=pacer,
        )
        notifier = Notifier(timeout=settings.notify.timeout, body_format=settings.notify.format)
        stack.push_async_callback(_aclose_logged, "notifier", notifier.aclose)
        yield Watcher(
            settings,
            api_key=api_key,
            store=store,
            client=client,
            notifier=notifier,
            pacer=pacer,
            now=now,
            rand=rand,
        )


async def serve(
    settings: Settings,
    api_key: ApiKey,
    *,
    once: bool = False,
    reload_settings: ReloadFn | None = None,
    on_started: Callable[[Watcher], Awaitable[None]] | None = None,
    handle_signals: bool = True,
) -> int:
    """Open every resource, watch until a signal (or one round with ``once``), close.

    Returns the process exit code. Resources are closed in reverse order of opening,
    shielded from cancellation; a failure while closing is logged, not raised.
    """
    async with AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(open_watcher(settings, api_key))
        log.info(
            "watcher starting",
            models=len(watcher.models),
            interval=settings.poll.interval,
            state=str(settings.state.path),
            once=once,
        )
        if once:
            result = await watcher.poll_all_once()
            log.info("one round done", polled=result.polled, failed=result.failed)
            return 1 if result.polled and result.failed == result.polled else 0

        systemd = SystemdNotifier.from_environ()
        if systemd is not None:
            stack.callback(systemd.close)
        host, port = settings.health.host, settings.health.port
        if host is not None and port is not None:
            # Before READY, so a busy port fails the start instead of a running daemon.
            health = HealthServer(
                watcher, host=host, port=port, stale_after=watcher.liveness_window
            )
            await health.start()
            stack.push_async_callback(_aclose_logged, "health server", health.aclose)

        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(
                    _handle_signals, watcher, reload_settings, systemd, tg.cancel_scope.cancel
                )

            async def run_then_stop_all(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                try:
                    await watcher.run(task_status=task_status)
                finally:
                    tg.cancel_scope.cancel()  # the signal and systemd tasks too

            await tg.start(run_then_stop_all)
            if systemd is not None:
                systemd.ready(watcher.status_line())
                tg.start_soon(partial(status_loop, systemd, status_line=watcher.status_line))
                interval = watchdog_interval()
                if interval is not None:
                    tg.start_soon(
                        partial(
                            watchdog_loop,
                            systemd,
                            interval=interval,
                            heartbeat=lambda: watcher.progress.heartbeat_mono,
                            stale_after=watcher.liveness_window,
                        )
                    )
            if on_started is not None:
                await on_started(watcher)
        log.info("watcher stopped")
    return 0


async def _handle_signals(
    watcher: Watcher,
    reload_settings: ReloadFn | None,
    systemd: SystemdNotifier | None,
    stop_now: Callable[[], None],
) -> None:
    """SIGHUP reloads; the first SIGTERM/SIGINT stops gracefully, a second one at once."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if systemd is not None:
                    systemd.reloading()
                _reload(watcher, reload_settings)
                if systemd is not None:
                    systemd.ready(watcher.status_line())  # also after a rejected reload
                continue
            if watcher.stopping:
                log.warning("second signal; stopping now", signal=name)
                stop_now()
                return
            log.info("stopping", signal=name)
            if systemd is not None:
                systemd.stopping()
            watcher.stop()


def _reload(watcher: Watcher, reload_settings: ReloadFn | None) -> None:
    if reload_settings is None:
        log.warning("reload requested, but this watcher has no configuration file to re-read")
        return
    try:
        settings = reload_settings()
    except WatcherError as exc:
        log.error("reload rejected; keeping the running configuration", error=str(exc))
        return
    added, removed = watcher.apply_settings(settings)
    log.info("configuration reloaded", added=added, removed=removed, models=len(watcher.models))


def _close_logged(what: str, close: Callable[[], None]) -> None:
    try:
        close()
    except Exception as exc:  # cleanup must not mask the real outcome
        log.error("error while closing", resource=what, error=str(exc))


async def _aclose_logged(what: str, aclose: Callable[[], Awaitable[Any]]) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await aclose()
        except Exception as exc:
            log.error("error while closing", resource=what, error=str(exc))
