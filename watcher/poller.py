"""Polling one model: fetch, decide, record, enrich, and what a failure means.

``Poller.poll`` fetches a model's history from its provider (skipping an answer byte
for byte like the last one), lets the pure core decide (``lifecycle.observe`` with the
provider's status scheme), records the new state with its notices in one store
transaction, enriches the notice (details, final metrics; bounded by
``ENRICH_TIMEOUT``), and schedules the next poll. A failure goes to the pure policy
(``policy.after_failure``); the poller carries out its decision and keeps each
provider's ops state (key rejected, unreachable) so every ops message is sent once.

Whether a provider's key is failing is judged from evidence, with hysteresis
(``policy.judge_rejection`` / ``judge_success``, issue 11 finding 5): a 401/403 on one
model while others are accepted is that model's problem (reported once to its
targets), not "cannot authenticate"; ``/readyz`` follows the key's verdict only.

Each poll is timed: a request slower than ``schedule.slow_after(timeout)`` puts its
model in the schedule's slow lane until a quick answer (finding 7). Events dated more
than ``lifecycle.FUTURE_TOLERANCE`` after the poll's wall time are quarantined by the
core (``observe(now=...)``) and logged here (finding 12).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from watcher.errors import ApiError
from watcher.lifecycle import ModelKey, Phase, jittered, observe, poll_interval, stuck_warnings_due
from watcher.messages import (
    Message,
    auth_failing_message,
    auth_recovered_message,
    dashboard_link,
    format_duration,
    not_found_message,
    reachable_again_message,
    stuck_message,
    unreachable_message,
)
from watcher.policy import (
    AuthVerdict,
    KeyEvidence,
    Report,
    after_failure,
    judge_rejection,
    judge_success,
)
from watcher.schedule import slow_after

if TYPE_CHECKING:
    from watcher.clients import ProviderClient, ProviderClients
    from watcher.fleet import Fleet, WatchedModel
    from watcher.metrics import Metrics
    from watcher.outbox import Delivery
    from watcher.progress import Progress
    from watcher.providers.base import Provider
    from watcher.schedule import Schedule
    from watcher.settings import Settings
    from watcher.store.base import StateStore

__all__ = ["ENRICH_TIMEOUT", "Poller", "ProviderHealth", "dashboard_for"]

log = structlog.get_logger("watcher.poller")

#: Longest wait for enrichment (model details, metrics) before a notice goes out without it.
ENRICH_TIMEOUT = 5.0

#: The poll's clock: what ``anyio.current_time()`` reads on asyncio (``loop.time()`` is
#: ``time.monotonic()``), without the backend look-up, twice a poll (P13).
_clock = time.monotonic


@dataclass(slots=True)
class ProviderHealth:
    """What the watcher has reported about one provider (each ops message goes out once)."""

    key: KeyEvidence = field(default_factory=KeyEvidence)  # what answers say about its key
    unreachable_reported: bool = False
    last_success_mono: float | None = None
    last_error: str | None = None

    @property
    def auth_failing(self) -> bool:
        """Its key is declared failing (reported once; cleared by ``judge_success``)."""
        return self.key.failing


def dashboard_for(settings: Settings, provider: Provider, job_id: str) -> str:
    """The job's dashboard link: ``notify.dashboard_url`` when configured, else the provider's."""
    if "dashboard_url" in settings.notify.model_fields_set:
        return dashboard_link(settings.notify.dashboard_url, job_id)
    return provider.dashboard_url(job_id)


class Poller:
    """Polls models for the daemon; ``settings`` is the current configuration (reloads swap it)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: StateStore,
        clients: ProviderClients,
        fleet: Fleet,
        schedule: Schedule,
        delivery: Delivery,
        metrics: Metrics,
        progress: Progress,
        now: Callable[[], datetime],
        rand: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.health: dict[str, ProviderHealth] = {}
        self._store = store
        self._clients = clients
        self._fleet = fleet
        self._schedule = schedule
        self._delivery = delivery
        self._metrics = metrics
        self._progress = progress
        self._now = now
        self._rand = rand
        # model -> when it was last polled with nothing new (written every FLUSH_EVERY).
        self._polled: dict[ModelKey, datetime] = {}
        # Plain counters (metrics.py, P14): one addition each per poll, no lock.
        self._polls_ok = metrics.polls.labels("ok")
        self._polls_changed = metrics.polls.labels("changed")
        self._latency = metrics.poll_latency
        self._requests = metrics.api_requests

    def health_of(self, provider: str) -> ProviderHealth:
        health = self.health.get(provider)  # built only the first time (once per provider)
        if health is None:
            health = self.health[provider] = ProviderHealth()
        return health

    async def poll(self, model: WatchedModel) -> bool:
        """Poll one model, record the outcome and schedule its next poll. True on success."""
        try:
            return await self._poll(model)
        finally:
            self._schedule.release(model)  # in flight no more (whatever happened)

    async def _poll(self, model: WatchedModel) -> bool:
        if model.key.provider not in self._clients:  # no key for it: nothing to ask with
            self._mark_polled(model)  # attempted, as far as readiness goes
            self._schedule.after(model, self.settings.poll.settled_interval)
            return False
        client = self._clients[model.key.provider]
        provider = client.provider
        started = _clock()
        # An answer byte for byte like the last one folded into the state is skipped
        # unparsed: observe() is idempotent, so the same events could change nothing.
        unless = model.digest if model.state is not None else None
        try:
            history = await provider.fetch_history(model.key.id, unless_digest=unless)
        except ApiError as exc:
            error: ApiError | None = exc
        else:
            error = None
        finally:
            finished = _clock()  # the poll's one other clock read (P13)
            took = finished - started
            self._latency.observe(took)
            self._requests.value += 1
            # A hang, a timeout or a very slow answer: the slow lane until a quick one.
            model.slow = took >= slow_after(client.timeout)
        if error is not None:
            await self._after_failure(model, client, error)
            return False
        if not self._fleet.is_current(model):
            return True  # removed by a reload while we were polling
        polled_at = self._now()
        if history.unchanged:
            self._polled[model.key] = polled_at
            self._polls_ok.inc()
            await self._after_success(model, client, polled_at, finished)
            return True
        bound = _bound(model)
        notify_on = self._fleet.notify_on_for(model)  # notify.on and the routes' on
        observation = observe(
            model.state, model.key.id, history.events, notify_on, scheme=provider.scheme,
            now=polled_at,
        )  # fmt: skip
        if history.malformed:
            bound.warning("skipped malformed events", malformed=history.malformed)
        if observation.quarantined:
            bound.warning("ignored events dated in the future", events=observation.quarantined,
                          polled_at=polled_at.isoformat())  # fmt: skip
        if observation.changed:
            first_sight = model.state is None
            previous = model.state.status if model.state else None
            await self._store.record_observation(
                observation.state,
                observation.notices,
                polled_at=polled_at,
                name=model.display_name,
                discovered=model.discovered,
            )
            model.state = observation.state
            self._progress.bump()  # recorded: the status page shows it within a second
            if observation.state.status != previous:
                model.stuck_warnings = 0  # the store reset its count in the same write
                bound.info(
                    "status changed",
                    status=observation.state.status,
                    previous_status=previous,
                    notices=len(observation.notices),
                )
            if observation.notices or (first_sight and model.display_name is None):
                # Recorded first (crash-safe), enriched second, delivered third: a
                # delivery pass another model started meanwhile leaves its notices alone.
                model.enriching = bool(observation.notices)
                try:
                    await self._enrich(model, client, bound, polled_at)
                finally:
                    model.enriching = False
            if observation.notices:
                self._delivery.wake()
            self._polls_changed.inc()
        else:
            self._polled[model.key] = polled_at
            self._polls_ok.inc()
        # Only once the observation is recorded may an identical answer be skipped.
        model.digest = history.digest
        await self._after_success(model, client, polled_at, finished)
        return True

    async def _enrich(
        self, model: WatchedModel, client: ProviderClient, bound: Any, polled_at: datetime
    ) -> None:
        """Fetch the model's details (and final metrics when READY); never blocks for long.

        Failing enrichment only costs the message some detail: it is logged and skipped.
        """
        provider = client.provider
        named_before = model.display_name
        with anyio.move_on_after(min(ENRICH_TIMEOUT, client.timeout)):
            try:
                model.details = await provider.job_details(model.key.id)
                if provider.scheme.phase(model.status) is Phase.READY:
                    model.metrics = await provider.final_metrics(model.key.id) or None
            except ApiError as exc:
                bound.info("model details unavailable; notifying without them", error=str(exc))
        if model.display_name != named_before and model.state is not None:
            await self._store.record_observation(
                model.state, (), polled_at=polled_at, name=model.display_name,
                discovered=model.discovered,
            )  # fmt: skip
            self._progress.bump()

    async def _after_success(
        self, model: WatchedModel, client: ProviderClient, polled_at: datetime, now: float
    ) -> None:
        """``now``: the monotonic time the answer came (read once per poll)."""
        await self._note_success(model, client, now)
        await self._warn_if_stuck(model, client.provider, polled_at)
        poll = self.settings.poll
        settled = client.provider.scheme.is_settled(model.status)
        delay = poll_interval(settled, poll.interval, poll.settled_interval)
        # From the due time, not the end of the poll (docs/benchmarks.md, P12).
        self._schedule.after_due(model, jittered(delay, poll.jitter, self._rand()), now)

    async def _warn_if_stuck(self, model: WatchedModel, provider: Provider, now: datetime) -> None:
        stuck_after = self.settings.notify.stuck_after
        state = model.state
        if stuck_after is None or state is None or state.status is None:
            return
        settled = provider.scheme.is_settled(state.status)
        due = stuck_warnings_due(
            state.status, state.status_since, now, stuck_after, settled=settled
        )
        if due <= model.stuck_warnings or state.status_since is None:
            return
        model.stuck_warnings = due
        message = stuck_message(
            label=model.label,
            model_id=model.key.id,
            status=state.status,
            status_since=state.status_since,
            now=now,
            scheme=provider.scheme,
            dashboard=dashboard_for(self.settings, provider, model.key.id),
        )
        await self._store.record_stuck_warning(
            model.key,
            warnings=due,
            title=message.title,
            body=message.body,
            notify_type=message.notify_type,
            created_at=now,
        )
        self._progress.bump()
        log.warning("model looks stuck", model_id=model.key.id, status=state.status,
                    stuck_for=format_duration((now - state.status_since).total_seconds()),
                    warning=due)  # fmt: skip
        self._delivery.wake()

    async def _note_success(self, model: WatchedModel, client: ProviderClient, now: float) -> None:
        if model.failures:
            _bound(model).info("polling recovered", after_failures=model.failures)
        model.failures = 0
        model.not_found_reported = False
        model.accepted, model.rejected_since, model.rejection_reported = True, None, False
        self._progress.last_success_mono = now
        health = self.health_of(model.key.provider)
        health.last_success_mono = now
        title = client.provider.title
        if health.unreachable_reported:
            health.unreachable_reported = False
            log.info(f"the {title} API answers again", provider=model.key.provider)
            await self._delivery.enqueue(reachable_again_message(title))
        health.key, verdict = judge_success(health.key)
        if verdict is AuthVerdict.KEY_RECOVERED:
            self._progress.auth_failing = any(h.auth_failing for h in self.health.values())
            log.info("authentication works again", provider=model.key.provider)
            await self._delivery.enqueue(auth_recovered_message(title))
        self._mark_polled(model)

    def _mark_polled(self, model: WatchedModel) -> None:
        if self._fleet.mark_polled(model.key):
            self._progress.rounds_completed += 1
            self._progress.last_round_mono = anyio.current_time()
            self._progress.bump()

    async def _after_failure(
        self, model: WatchedModel, client: ProviderClient, exc: ApiError
    ) -> None:
        """Carry out what ``policy.after_failure`` decides; send each ops message once."""
        poll = self.settings.poll
        provider = client.provider
        model.failures += 1
        decision = after_failure(
            exc,
            failures=model.failures,
            settled=provider.scheme.is_settled(model.status),
            interval=poll.interval,
            settled_interval=poll.settled_interval,
            backoff_cap=poll.backoff_cap,
            jitter=poll.jitter,
            rand=self._rand(),
            pause_rand=self._rand(),
            jitter_rand=self._rand(),
        )
        self._metrics.polls.labels(decision.outcome).inc()
        health = self.health_of(model.key.provider)
        health.last_error = str(exc)
        bound = _bound(model)
        if decision.pause_provider is not None:
            client.pacer.pause(decision.pause_provider)
            bound.warning(
                "rate limited by the API; pausing every request",
                pause_seconds=round(decision.pause_provider, 2),
            )
        elif decision.report is Report.AUTH_FAILING:
            await self._judge_rejection(model, client, exc)
        elif decision.report is Report.NOT_FOUND:
            if not model.not_found_reported:
                model.not_found_reported = True
                bound.warning("model not found; checking again slowly")
                message = not_found_message(
                    model.name or model.key.id, model.key.id, provider.title
                )
                await self._delivery.enqueue(message, model=model.key)
        else:
            bound.warning(
                "poll failed; backing off",
                error=str(exc),
                failures=model.failures,
                retry_in=round(decision.delay, 2),
            )
        # The row already names the model: store the reason, not "events of <id>: ...".
        reason = str(exc).removeprefix(f"events of {model.key.id}: ")
        await self._store.record_poll_failure(
            model.key, polled_at=self._now(), error=reason, failures=model.failures
        )
        self._progress.bump()  # last error and failures: the status page shows them
        # A round is "every model attempted": one failing model must not hold readiness.
        self._mark_polled(model)
        self._schedule.after(model, decision.delay)

    async def _judge_rejection(
        self, model: WatchedModel, client: ProviderClient, exc: ApiError
    ) -> None:
        """Weigh a 401/403 as evidence about the provider's key (``policy.judge_rejection``):
        report the key failing, or this model's own problem, each once."""
        provider = client.provider
        health = self.health_of(model.key.provider)
        was_accepted = model.accepted
        model.accepted = False
        if model.rejected_since is None:
            model.rejected_since = anyio.current_time()
        last_success = health.last_success_mono
        accepted_elsewhere = not health.key.failing and any(
            other.accepted and other is not model and other.key.provider == model.key.provider
            for other in self._fleet
        )  # scanned only while the key is not declared failing (rejections are rare)
        health.key, verdict = judge_rejection(
            health.key,
            was_accepted=was_accepted,
            accepted_elsewhere=accepted_elsewhere,
            accepted_since=last_success is not None and last_success > model.rejected_since,
        )
        if verdict is AuthVerdict.KEY_FAILING:
            self._progress.auth_failing = True
            key_source = self._clients.api_keys[model.key.provider].source
            log.error(f"the {provider.title} API rejects the key; retrying slowly",
                      provider=model.key.provider, status=exc.status,
                      key_source=key_source)  # fmt: skip
            await self._delivery.enqueue(
                auth_failing_message(provider.title, exc.status, key_source)
            )
        elif verdict is AuthVerdict.MODEL_REJECTED and not model.rejection_reported:
            model.rejection_reported = True
            _bound(model).warning("the API refuses this model, not the key; checking again slowly",
                                  status=exc.status)  # fmt: skip
            message = _rejected_message(model.label, model.key.id, provider.title, exc.status)
            await self._delivery.enqueue(message, model=model.key)
        elif verdict is None and not health.key.failing and not model.rejection_reported:
            _bound(model).info("request rejected; the key or this model? checking again slowly",
                               status=exc.status, rejections=health.key.rejections)  # fmt: skip

    async def check_reachability(self) -> None:
        """One ops message per provider none of whose polls succeeded for
        ``notify.unreachable_after``."""
        now = anyio.current_time()
        in_use = {model.key.provider for model in self._fleet}
        for client in self._clients:
            name = client.provider.name
            health = self.health_of(name)
            if health.unreachable_reported or health.auth_failing or name not in in_use:
                continue
            since = health.last_success_mono or self._progress.started_mono
            down_for = now - since
            if down_for < self.settings.notify.unreachable_after:
                continue
            health.unreachable_reported = True
            title = client.provider.title
            log.error(f"the {title} API has been unreachable", provider=name,
                      for_seconds=round(down_for), last_error=health.last_error)  # fmt: skip
            await self._delivery.enqueue(unreachable_message(title, down_for, health.last_error))

    async def flush_polls(self) -> None:
        """Write the batched "polled, nothing changed" rows (one per model: the last)."""
        if self._polled:
            batch, self._polled = self._polled, {}
            await self._store.record_polls(list(batch.items()))

    def note_last_success(self) -> None:
        """The wall time of the last success, for the gauge (per tick, not per poll)."""
        last = self._progress.last_success_mono
        if last is not None:
            ago = anyio.current_time() - last
            self._progress.last_success_wall = self._now() - timedelta(seconds=ago)
            self._metrics.last_success.set(self._progress.last_success_wall.timestamp())


def _rejected_message(
    label: str, model_id: str, provider_title: str, status: int | None
) -> Message:
    """This job is refused while the key works for others (a candidate for messages.py)."""
    code = f"HTTP {status}" if status is not None else "rejected"
    return Message(
        f"{label}: access denied ({code})",
        f"{provider_title} refuses fine-tuned model {model_id} ({code}) while the same key "
        "works for other models: the job belongs to another project or organisation, or "
        "this key may not see it. finetune-watcher keeps checking, slowly.",
        "warning",
    )


def _bound(model: WatchedModel) -> Any:
    """The log with the model bound (only built when something is logged)."""
    return log.bind(model_id=model.key.id, model_name=model.display_name)
