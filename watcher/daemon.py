"""The daemon: the parts composed into a ``Watcher``, and the process around it.

``Watcher`` wires the parts -- ``Fleet`` (which models), ``Schedule`` (when), ``Poller``
(poll one), ``Delivery`` (the outbox) -- and runs them as loops: ``poll.concurrency``
poll workers, delivery, housekeeping (batched bookkeeping, metrics, the unreachable
check) and discovery -- but only while this replica holds the lease
(``watcher.leadership``): a standby makes no API request and sends nothing; on taking
the lease it loads the states (after the lease, never before) and runs the parts; on
losing it they are cancelled at once. With SQLite the lease is ``SoleLeadership``:
always held, the same code path. ``open_watcher`` is the one place every resource is opened (the
state store, per provider an HTTP session, a request budget and the provider, the
notifier); they are closed in reverse order, shielded. ``serve`` is the process:
health server, systemd, signals (``watcher.signals``), reload, shutdown.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from watcher.clients import ProviderClients
from watcher.errors import ApiError, StateError, WatcherError
from watcher.fleet import Fleet, WatchedModel, discovery_matches
from watcher.health import LIVENESS_STALE_AFTER, HealthServer, round_deadline
from watcher.leadership import (
    Leading,
    lease_for,
    open_store_patiently,
    send_timeout,
    send_window,
)
from watcher.lifecycle import ModelKey, Phase, StatusScheme
from watcher.messages import Message, ago, render_notice
from watcher.metrics import Metrics, ModelRow, status_label
from watcher.notice_doc import notice_document, notice_json
from watcher.notify import Notifier
from watcher.outbox import Delivery, DeliveryRound
from watcher.pacing import RequestPacer
from watcher.poller import ENRICH_TIMEOUT, Poller, dashboard_for
from watcher.progress import Progress
from watcher.providers import scheme_for
from watcher.schedule import (
    HEARTBEAT,
    BudgetWatch,
    PaceThenPick,
    PickPolicy,
    Schedule,
    slow_lane_size,
)
from watcher.settings import ApiKey, Settings, restart_only_changes
from watcher.signals import handle_daemon_signals
from watcher.store.base import OutboxItem, Store
from watcher.store.lease import Lease, SoleLeadership
from watcher.systemd import SystemdNotifier, status_loop, watchdog_interval, watchdog_loop
from watcher.watcher_source import WatcherSource, web_options

if TYPE_CHECKING:
    from aiohttp import web

    from watcher.web import WebMount

__all__ = ["OnceResult", "ReloadFn", "WatchedModel", "Watcher", "open_watcher", "serve"]

log = structlog.get_logger("watcher.daemon")

#: How long a stopping daemon lets an in-flight delivery finish before abandoning it.
SHUTDOWN_GRACE = 3.0
#: How often batched "polled, nothing changed" rows are written.
FLUSH_EVERY = 5.0
#: Connections of the health server that live-update streams leave for probes and pages.
STREAM_RESERVE = 16
#: The pacer of a model whose provider has no client (never binding; it is not polled).
_UNPACED = RequestPacer(10**9)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class OnceResult:
    polled: int = 0
    failed: int = 0


class Watcher:
    """Polls models, records what changed with its notices, and delivers them."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        clients: ProviderClients,
        notifier: Notifier,
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = utc_now,
        rand: Callable[[], float] = random.random,
        pick: PickPolicy | None = None,
        lease: Lease | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clients = clients
        self.notifier = notifier
        self.metrics = metrics or Metrics()
        self.progress = progress or Progress()
        #: This replica's lease (``SoleLeadership``: one replica, always the leader).
        self.lease: Lease = lease if lease is not None else SoleLeadership()
        self.fleet = Fleet()
        self.schedule = Schedule(
            self.fleet.models, heartbeat=self._beat,
            slow_lane=lambda: slow_lane_size(self.settings.poll.concurrency),
        )  # fmt: skip
        self.delivery = Delivery(
            store, notifier, notify=settings.notify, targets_for=self.fleet.targets_for,
            render=self.render, metrics=self.metrics, progress=self.progress, now=now, rand=rand,
            hold=self.fleet.holds,
        )  # fmt: skip
        self.poller = Poller(
            settings, store=store, clients=clients, fleet=self.fleet, schedule=self.schedule,
            delivery=self.delivery, metrics=self.metrics, progress=self.progress, now=now,
            rand=rand,
        )  # fmt: skip
        self.delivery.before_send = send_window(self.lease, lambda: self.notifier.timeout)
        notifier.set_timeout(send_timeout(settings.notify.timeout, self.lease))
        self._now = now
        self._pick = pick or PaceThenPick()
        self.leading = Leading(self.lease, gauge=self.metrics.leader, beat=self._beat)
        self._stop_requested = anyio.Event()
        self._budget = BudgetWatch(self.metrics)
        self._workers = 0
        self._worker_group: anyio.abc.TaskGroup | None = None
        self.metrics.watch_statuses(
            lambda: [
                (m.key.provider, m.key.id, status_label(m.status, _scheme(m).known))
                for m in self.fleet
            ]
        )
        self.metrics.watch_models(lambda: [_model_row(m) for m in self.fleet])

    async def load(self) -> None:
        """Watch what the configuration and the store say; schedule the first round.

        Forgets every model held before: a new term starts from what the store says
        (another replica may have led in between).
        """
        store = self.store
        self.fleet.models.clear()
        # The records only serve discovery (a second decode of every state otherwise).
        records = await store.model_records() if self.settings.discover.enabled else ()
        models = self.fleet.load(
            self.settings, await store.load_states(), records,
            await store.stuck_warning_counts(), is_settled=_is_settled,
        )  # fmt: skip
        self.schedule.first_round(models, self.settings.poll.interval)
        # Retries left by an earlier run are due now: a restart is usually a fix.
        await store.pull_forward_retries(self._now())
        self.leading.fresh = True

    @property
    def models(self) -> dict[ModelKey, WatchedModel]:
        return self.fleet.models

    def _beat(self) -> None:
        self.progress.heartbeat_mono = anyio.current_time()

    def _pacer_for(self, model: WatchedModel) -> RequestPacer:
        provider = model.key.provider
        return self.clients[provider].pacer if provider in self.clients else _UNPACED

    # --- the parts' entry points (also what tests and ``once`` drive) -------------------

    def poll_soon(self, key: ModelKey) -> bool:
        """Poll ``key`` as soon as its provider's pacing allows (a webhook's hint); False
        when it is not watched. A model being polled right now is polled once more right
        after (never twice at once: ``Schedule.soon``)."""
        model = self.fleet.models.get(key)
        if model is None:
            return False
        self.schedule.soon(model)
        return True

    async def poll_model(self, model: WatchedModel) -> bool:
        """Poll one model now (see ``Poller.poll``). True on success."""
        return await self.poller.poll(model)

    async def deliver_once(self) -> DeliveryRound:
        """One pass over the due outbox items."""
        return await self.delivery.deliver_once()

    def render(self, item: OutboxItem) -> Message:
        """The message for an outbox item, by the *current* configuration."""
        notice = item.notice
        if notice is None:
            return Message(item.title or "", item.body or "", item.notify_type or "info")
        model = self.fleet.get(notice.key)
        provider = self.clients[notice.provider].provider
        notify = self.settings.notify
        phase = provider.scheme.phase(notice.status)
        title_template, body_template = notify.templates_for(notice.status, phase)
        ready = phase is Phase.READY
        name = model.display_name if model else None
        dashboard_url = dashboard_for(self.settings, provider, notice.model_id)
        details = model.details if model else None
        message = render_notice(
            notice,
            name=name,
            dashboard_url=dashboard_url,
            scheme=provider.scheme,
            provider_title=provider.title,
            title_template=title_template,
            body_template=body_template,
            base_model=details.base_model if details else None,
            metrics=model.metrics if model and ready else None,
            body_format=notify.format,
            fine_tuned_model=details.fine_tuned_model if details else None,
            error_message=details.error_message if details and not ready else None,
        )
        # What webhooks: targets get (the same facts, as a JSON document).
        document = notice_document(
            notice, scheme=provider.scheme, name=name, dashboard_url=dashboard_url,
            details=details,
        )  # fmt: skip
        return replace(message, document=notice_json(document))

    async def discover_once(self) -> list[ModelKey]:
        """List each provider's jobs; watch every unsettled match not watched yet."""
        added: list[ModelKey] = []
        for client in self.clients:
            provider = client.provider
            if not provider.supports_discovery:
                continue
            try:
                listed = await provider.list_jobs()
            except ApiError as exc:
                log.warning("model discovery failed; trying again later",
                            provider=provider.name, error=str(exc))  # fmt: skip
                continue
            states = None
            for details in listed:
                key = ModelKey(provider.name, details.id)
                if not details.id.isprintable():  # NUL or a control character: no real id
                    continue
                if key in self.fleet.models or provider.scheme.is_settled(details.status):
                    continue
                if not discovery_matches(details.name or details.id, self.settings.discover):
                    continue
                if states is None:
                    states = await self.store.load_states()
                self.schedule.after(self.fleet.adopt(details, provider.name, states.get(key)), 0)
                added.append(key)
                log.info("discovered a model to watch", model_id=details.id, provider=provider.name,
                         model_name=details.name, status=details.status)  # fmt: skip
        if added:
            self._budget.check(self.fleet, self.clients, self.settings.poll)
        return added

    # --- configuration --------------------------------------------------------------------

    async def reload(self, settings: Settings) -> tuple[list[ModelKey], list[ModelKey]]:
        """Switch to reloaded ``settings``: returns (models added, models removed).

        Everything reloads live (models, targets, notify.*, discovery, budgets, timeouts,
        base URLs, concurrency) except the keys ``restart_only_changes`` names: those keep
        their running values, with one warning. State and pending notifications are kept;
        removed models stop being polled, added ones are polled right away.
        """
        restart = restart_only_changes(self.settings, settings)
        if restart:
            log.warning("reload: these settings need a restart; keeping their running values",
                        keys=restart)  # fmt: skip
            settings = _keep(self.settings, settings, restart)
        added_keys, _ = self.fleet.changes(settings)
        states = await self.store.load_states() if added_keys else {}
        # A model added back keeps its stuck-warning count: no second warning for one span.
        stuck = await self.store.stuck_warning_counts() if added_keys else {}
        self.settings = self.poller.settings = settings
        self.delivery.notify = settings.notify
        self.notifier.set_timeout(send_timeout(settings.notify.timeout, self.lease))
        for name in self.clients.update(settings):
            log.info("provider client rebuilt from the new settings", provider=name)
        added, removed = self.fleet.apply(settings, states, stuck)
        for model in added:
            self.schedule.after(model, 0)
        self._budget.reset()
        self._budget.check(self.fleet, self.clients, self.settings.poll)
        self._start_workers()
        self.schedule.wake()
        return [m.key for m in added], removed

    # --- health ---------------------------------------------------------------------------

    @property
    def liveness_window(self) -> float:
        """How old the heartbeat may get while polls are merely slow, not stuck."""
        slowest_poll = 2 * self.clients.request_timeout + ENRICH_TIMEOUT
        return max(LIVENESS_STALE_AFTER, slowest_poll)

    @property
    def round_deadline(self) -> float:
        return round_deadline(self.settings.poll, request_timeout=self.clients.request_timeout)

    @property
    def role(self) -> str:
        """``leader`` while this replica polls and delivers, else ``standby``."""
        return self.leading.role

    async def database_ok(self) -> bool:
        """True when the state store answers a trivial query."""
        try:
            return await self.store.ping()
        except WatcherError:
            return False

    def status_line(self) -> str:
        """One line for systemd's STATUS= and the logs."""
        if self.leading.replicated and self.role == "standby":
            return "standby: another replica leads; ready to take over"
        models = list(self.fleet)
        active = sum(1 for m in models if not _is_settled(m.key, m.status))
        parts = [f"watching {len(models)} models", f"{active} in progress"]
        if self.progress.last_success_mono is not None:
            parts.append(
                f"last poll {ago(anyio.current_time() - self.progress.last_success_mono)} ago"
            )
        if self.progress.auth_failing:
            parts.append("API key rejected")
        return ", ".join(parts)

    # --- running --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to stop: polling stops now, delivery gets a short grace."""
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch until ``stop()`` is called or the caller cancels: lead while this replica
        holds the lease (``watcher.leadership.Leading``), else stand by."""
        self.progress.started_mono = anyio.current_time()
        await self.leading.run(
            load=self.load, work=self._run_parts, stop=self._stop_requested,
            task_status=task_status,
        )  # fmt: skip

    async def _run_parts(self) -> None:
        """Poll workers, delivery, housekeeping and discovery, until ``stop()``."""
        self._budget.check(self.fleet, self.clients, self.settings.poll)
        try:
            async with anyio.create_task_group() as tg:
                polling = anyio.CancelScope()

                async def poll_loop() -> None:
                    with polling:
                        async with anyio.create_task_group() as workers:
                            self._worker_group = workers
                            self._start_workers()
                            await anyio.sleep_forever()

                tg.start_soon(poll_loop)
                tg.start_soon(self.delivery.run)
                tg.start_soon(self._housekeeping_loop)
                tg.start_soon(self._discovery_loop)
                await self._stop_requested.wait()
                polling.cancel()
                with anyio.move_on_after(SHUTDOWN_GRACE):
                    await self.delivery.wait_idle()
                tg.cancel_scope.cancel()
        finally:
            self._worker_group = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_GRACE):
                try:
                    await self.poller.flush_polls()
                except StateError as exc:  # bookkeeping only; a lost lease refuses it
                    log.info("batched poll times not written", error=str(exc))

    def _start_workers(self) -> None:
        """Bring the poll workers up to ``poll.concurrency`` (surplus ones end themselves)."""
        while self._worker_group is not None and self._workers < self.settings.poll.concurrency:
            self._workers += 1
            self._worker_group.start_soon(self._poll_worker)

    async def _poll_worker(self) -> None:
        """Take the next model (by the pick policy), poll it, repeat."""
        try:
            while self._workers <= self.settings.poll.concurrency:
                await self.poller.poll(await self._pick.pick(self.schedule, self._pacer_for))
        finally:
            self._workers -= 1

    async def _housekeeping_loop(self) -> None:
        next_flush = anyio.current_time() + FLUSH_EVERY
        while True:
            await anyio.sleep(HEARTBEAT)
            await self.poller.check_reachability()
            self.poller.note_last_success()
            if anyio.current_time() >= next_flush:
                next_flush = anyio.current_time() + FLUSH_EVERY
                await self.poller.flush_polls()
                pacers = [client.pacer for client in self.clients]
                used = sum(p.recent_requests() for p in pacers)
                budget = sum(p.per_minute for p in pacers) or 1
                self.metrics.budget_used.set(min(1.0, used / budget))

    async def _discovery_loop(self) -> None:
        while True:
            if self.settings.discover.enabled:
                await self.discover_once()
            await anyio.sleep(self.settings.discover.interval)

    async def poll_all_once(self) -> OnceResult:
        """Poll every model once (for ``once``), then deliver what is due."""
        result = OnceResult()
        if self.settings.discover.enabled:
            await self.discover_once()
        limiter = anyio.Semaphore(self.settings.poll.concurrency)

        async def one(model: WatchedModel) -> None:
            async with limiter:
                ok = await self.poller.poll(model)
            result.polled += 1
            result.failed += 0 if ok else 1

        async with anyio.create_task_group() as tg:
            for model in self.fleet:
                tg.start_soon(one, model)
        await self.poller.flush_polls()
        await self.delivery.deliver_once()
        return result


def _scheme(model: WatchedModel) -> StatusScheme:
    return scheme_for(model.key.provider)


def _model_row(model: WatchedModel) -> ModelRow:
    """The per-model info and age series' view of ``model`` (watcher.metrics)."""
    details = model.details
    return ModelRow(
        provider=model.key.provider,
        model_id=model.key.id,
        name=model.display_name or "",
        base_model=(details.base_model if details else None) or "",
        status_since=model.state.status_since if model.state else None,
    )


def _is_settled(key: ModelKey, status: str | None) -> bool:
    return scheme_for(key.provider).is_settled(status)


def _keep(running: Settings, new: Settings, keys: list[str]) -> Settings:
    """``new`` with the running value of every ``section.key`` in ``keys``."""
    for dotted in keys:
        section_name, _, key = dotted.partition(".")
        section = getattr(new, section_name)
        kept = section.model_copy(update={key: getattr(getattr(running, section_name), key)})
        new = new.model_copy(update={section_name: kept})
    return new


# --- the process ---------------------------------------------------------------------------

ReloadFn = Callable[[], Settings]


@asynccontextmanager
async def open_watcher(
    settings: Settings,
    api_keys: Mapping[str, ApiKey],
    *,
    now: Callable[[], datetime] = utc_now,
    rand: Callable[[], float] = random.random,
    pick: PickPolicy | None = None,
    metrics: Metrics | None = None,
    progress: Progress | None = None,
) -> AsyncIterator[Watcher]:
    """A Watcher with its resources: state store (and its lease), per-provider clients,
    notifier.

    The one place they are opened, in order; they are closed in reverse order,
    shielded from cancellation, and a failure while closing is logged, not raised. A
    database that cannot be reached yet is waited for (``open_store_patiently``). The
    states are loaded here when this replica is the only one (SQLite); with a lease they
    are loaded when it is taken.
    """
    progress = progress or Progress()
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            open_store_patiently(settings.state, beat=partial(_beat, progress))
        )
        lease = lease_for(store, ttl=settings.state.lease_ttl)
        clients = ProviderClients(api_keys)
        stack.push_async_callback(clients.aclose)
        clients.update(settings)
        notifier = Notifier(timeout=settings.notify.timeout)
        stack.push_async_callback(_aclose_logged, "notifier", notifier.aclose)
        watcher = Watcher(
            settings, store=store, clients=clients, notifier=notifier, now=now, rand=rand,
            pick=pick, lease=lease, metrics=metrics, progress=progress,
        )  # fmt: skip
        if isinstance(lease, SoleLeadership):
            await watcher.load()
        yield watcher


def _beat(progress: Progress) -> None:
    progress.heartbeat_mono = anyio.current_time()


@dataclass
class _Connecting:
    """The health server's source until the state database answers: alive, not ready."""

    metrics: Metrics
    progress: Progress
    round_deadline: float = float("inf")
    role: str = "standby"

    def status_line(self) -> str:
        return "waiting for the state database"

    async def database_ok(self) -> bool:
        return False


async def serve(
    settings: Settings,
    api_keys: Mapping[str, ApiKey],
    *,
    once: bool = False,
    reload_settings: ReloadFn | None = None,
    on_started: Callable[[Watcher], Awaitable[None]] | None = None,
    handle_signals: bool = True,
    pick: PickPolicy | None = None,
) -> int:
    """Open every resource, watch until a signal (or one round with ``once``), close.

    Returns the process exit code. Resources are closed in reverse order of opening,
    shielded from cancellation; a failure while closing is logged, not raised.

    With ``handle_signals`` the signals are the event loop's before anything is opened:
    SIGTERM/SIGINT while still starting (the health port already open, the database not
    yet answering, a standby waiting) abandons the start, closes what was opened and
    returns 0; once running, it stops gracefully (``_Control``).
    """
    if once or not handle_signals:
        return await _serve(settings, api_keys, once=once, reload_settings=reload_settings,
                            on_started=on_started, pick=pick, control=None)  # fmt: skip
    code = 0
    async with anyio.create_task_group() as tg:
        control = _Control(reload_settings, stop_now=tg.cancel_scope.cancel)
        await tg.start(partial(
            handle_daemon_signals, reload=control.reload, stop=control.stop,
            stop_now=control.stop_now, stopping=control.stopping,
        ))  # fmt: skip
        try:
            code = await _serve(settings, api_keys, once=False, reload_settings=reload_settings,
                                on_started=on_started, pick=pick, control=control)  # fmt: skip
        finally:
            tg.cancel_scope.cancel()  # the signal task: serve is done
    return code


class _Control:
    """What a signal does, as far as the daemon has come: while starting, SIGTERM/SIGINT
    cancel the start (``starting``) and SIGHUP is ignored; once a watcher runs, they stop
    it gracefully and reload; a second SIGTERM/SIGINT stops at once."""

    def __init__(self, reload_settings: ReloadFn | None, *, stop_now: Callable[[], None]) -> None:
        self.reload_settings = reload_settings
        self.stop_now = stop_now
        self.starting = anyio.CancelScope()
        self.watcher: Watcher | None = None
        self.systemd: SystemdNotifier | None = None

    def running(self, watcher: Watcher, systemd: SystemdNotifier | None) -> None:
        self.watcher, self.systemd = watcher, systemd

    def stopping(self) -> bool:
        return self.watcher.stopping if self.watcher is not None else self.starting.cancel_called

    def stop(self) -> None:
        if self.watcher is None:
            log.info("stopping before the start completed")
            self.starting.cancel()
            return
        if self.systemd is not None:
            self.systemd.stopping()
        self.watcher.stop()

    async def reload(self) -> None:
        if self.watcher is None:
            log.warning("reload requested while starting; the configuration just loaded is used")
            return
        await _reload(self.watcher, self.reload_settings, self.systemd)


async def _serve(
    settings: Settings,
    api_keys: Mapping[str, ApiKey],
    *,
    once: bool,
    reload_settings: ReloadFn | None,
    on_started: Callable[[Watcher], Awaitable[None]] | None,
    pick: PickPolicy | None,
    control: _Control | None,
) -> int:
    async with AsyncExitStack() as stack:
        starting = control.starting if control is not None else anyio.CancelScope()
        with starting:
            opened = await _open_all(settings, api_keys, stack, once=once, pick=pick)
        if starting.cancelled_caught:
            return 0  # stopped while starting; the stack closes what was opened
        watcher, health, web_source = opened
        log.info("watcher starting", models=len(settings.models),
                 interval=settings.poll.interval, state=watcher.store.location,
                 lease=None if isinstance(watcher.lease, SoleLeadership) else watcher.lease.holder,
                 once=once)  # fmt: skip
        if once:
            async with watcher.lease.hold():
                if not isinstance(watcher.lease, SoleLeadership):
                    await watcher.load()
                result = await watcher.poll_all_once()
            log.info("one round done", polled=result.polled, failed=result.failed)
            return 1 if result.polled and result.failed == result.polled else 0

        systemd = SystemdNotifier.from_environ()
        if systemd is not None:
            stack.callback(systemd.close)
        if health is not None:
            health.stale_after = watcher.liveness_window
            health.source = watcher
            if web_source is not None:
                web_source.attach(watcher)
        if control is not None:
            control.running(watcher, systemd)

        async with anyio.create_task_group() as tg:

            async def run_then_stop_all(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                try:
                    await watcher.run(task_status=task_status)
                finally:
                    tg.cancel_scope.cancel()  # the systemd tasks too

            await tg.start(run_then_stop_all)
            if systemd is not None:
                systemd.ready(watcher.status_line())
                tg.start_soon(partial(status_loop, systemd, status_line=watcher.status_line))
                interval = watchdog_interval()
                if interval is not None:
                    tg.start_soon(partial(
                        watchdog_loop, systemd, interval=interval,
                        heartbeat=lambda: watcher.progress.heartbeat_mono,
                        stale_after=watcher.liveness_window,
                    ))  # fmt: skip
            if on_started is not None:
                await on_started(watcher)
        log.info("watcher stopped")
    return 0


async def _open_all(
    settings: Settings,
    api_keys: Mapping[str, ApiKey],
    stack: AsyncExitStack,
    *,
    once: bool,
    pick: PickPolicy | None,
) -> tuple[Watcher, HealthServer | None, WatcherSource | None]:
    """The health server (with the web layer) first, then the watcher; each pushed on
    ``stack`` as soon as it is open, so whatever was opened is closed by it."""
    metrics, progress = Metrics(), Progress()
    health: HealthServer | None = None
    web_source: WatcherSource | None = None
    host, port = settings.health.host, settings.health.port
    if not once and host is not None and port is not None:
        # Before the store and READY: a busy port fails the start at once, and while
        # the database cannot be reached /healthz is 200 and /readyz 503.
        # The status page, the API and webhooks share the port; a bad token or webhook
        # secret is a ConfigError now, before anything listens.
        from watcher.web.app import mount_web  # aiohttp.web: only with health.listen

        options = web_options(settings)
        web_source = source = WatcherSource(
            None, listening_since=lambda: health.listening_since if health else 0.0
        )
        mounted: list[WebMount] = []

        def mount(app: web.Application) -> None:
            # Streams stay below the server's connection cap (set by start() before it
            # mounts), so open streams can never lock the probes out.
            cap = health.guard.cap if health is not None else STREAM_RESERVE * 2
            streams = min(options.max_streams, cap - min(STREAM_RESERVE, cap // 2))
            if streams < options.max_streams:
                log.warning("web.max_streams lowered to stay below the connection limit",
                            max_streams=streams, connection_limit=cap)  # fmt: skip
            mounted.append(mount_web(app, source, replace(options, max_streams=streams)))

        health = HealthServer(_Connecting(metrics, progress), host=host, port=port, mount=mount)
        stack.push_async_callback(_aclose_logged, "health server", health.aclose)
        bound_host, bound_port = await health.start()
        _log_status_page(mounted[0], bound_host, bound_port)
    watcher = await stack.enter_async_context(
        open_watcher(settings, api_keys, pick=pick, metrics=metrics, progress=progress)
    )
    return watcher, health, web_source


def _log_status_page(mounted: WebMount, host: str, port: int) -> None:
    """Say at start who may read the status page (``web.*``; README "The status page")."""
    from watcher.web.access import Access

    shown = f"[{host}]" if ":" in host else host
    level = log.warning if mounted.access is Access.LOCKED else log.info
    level("status page", url=f"http://{shown}:{port}/", access=mounted.access.value,
          rule=mounted.describe())  # fmt: skip


async def _reload(
    watcher: Watcher, reload_settings: ReloadFn | None, systemd: SystemdNotifier | None
) -> None:
    if systemd is not None:
        systemd.reloading()
    try:
        if reload_settings is None:
            log.warning("reload requested, but this watcher has no configuration file to re-read")
            return
        try:
            # Off the event loop: a large file takes seconds to parse, and the heartbeat,
            # polls and deliveries must go on meanwhile (issue 11, finding 10).
            settings = await anyio.to_thread.run_sync(reload_settings)
        except WatcherError as exc:
            log.error("reload rejected; keeping the running configuration", error=str(exc))
            return
        added, removed = await watcher.reload(settings)
        log.info("configuration reloaded", added=[str(k) for k in added],
                 removed=[str(k) for k in removed], models=len(watcher.models))  # fmt: skip
    finally:
        if systemd is not None:
            systemd.ready(watcher.status_line())  # also after a rejected reload


async def _aclose_logged(what: str, aclose: Callable[[], Awaitable[Any]]) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await aclose()
        except Exception as exc:  # cleanup must not mask the real outcome
            log.error("error while closing", resource=what, error=str(exc))
