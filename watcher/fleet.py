"""The watched models: which ones, by key, and where their notifications go.

``Fleet`` applies the configuration (``models``, their targets, ``notify.urls``,
``notify.webhooks``, ``notify.routes`` and ``notify.ops_urls``), restores discovered
models across restarts, adopts newly discovered ones, and says what a reload adds and
removes. It does no I/O: states come in as arguments, and scheduling is
``watcher.schedule``'s job.

Where a notice goes (``targets_for``), by the current configuration: the union of
``notify.urls`` / ``notify.webhooks`` and the model's ``urls`` / ``webhooks`` (when
``notify.on`` names its status) and the targets of every global route and every route
of the model whose ``on`` names it; one send per target (``unique_targets``). Which
statuses are announced at all (``notify_on_for``) is the union of those ``on`` lists.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar, cast, overload

from pydantic import SecretStr

from watcher.lifecycle import ModelKey, ModelState
from watcher.notify import Target, make_targets, make_webhook_target, unique_targets
from watcher.providers import scheme_for
from watcher.providers.base import JobDetails
from watcher.settings import (
    DiscoverSettings,
    ModelSpec,
    NotifySettings,
    RouteSettings,
    Settings,
)
from watcher.store.base import ModelRecord, OutboxItem

__all__ = ["Fleet", "Route", "WatchedModel", "discovery_matches", "make_routes"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Route:
    """Notices whose status ``on`` names (statuses and common words) go to ``targets``."""

    on: frozenset[str]
    targets: tuple[Target, ...]


def _targets(urls: Iterable[SecretStr], webhooks: Iterable[SecretStr]) -> tuple[Target, ...]:
    """Apprise targets of ``urls`` and JSON-document targets of ``webhooks``, de-duplicated."""
    hooks = (make_webhook_target(u.get_secret_value()) for u in webhooks)
    return unique_targets((*make_targets(u.get_secret_value() for u in urls), *hooks))


def make_routes(routes: Iterable[RouteSettings]) -> tuple[Route, ...]:
    """The configured ``routes`` (of ``notify`` or a model) with their targets."""
    return tuple(Route(frozenset(r.on), _targets(r.urls, r.webhooks)) for r in routes)


@dataclass(slots=True)
class _Rare:
    """What few watched models ever set, in one object made on the first such write
    (8 B per model until then instead of a slot per field; issue 15)."""

    not_found_reported: bool = False
    metrics: dict[str, float] | None = None  # final training metrics, fetched on READY
    stuck_warnings: int = 0  # "still stuck" warnings sent in the current status
    rejected_since: float | None = None  # monotonic time of its first rejection in a row
    rejection_reported: bool = False  # "the key works, but not for this job" was sent
    # Its own JSON-document targets (``webhooks``) and routes, besides the global ones.
    webhooks: tuple[Target, ...] = ()
    routes: tuple[Route, ...] = ()


class _RareField(Generic[T]):
    """A ``WatchedModel`` attribute kept in its ``_Rare``: the default is read while the
    model has none, and writing the default then makes none."""

    def __init__(self, default: T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, model: None, owner: type) -> _RareField[T]: ...
    @overload
    def __get__(self, model: WatchedModel, owner: type) -> T: ...
    def __get__(self, model: WatchedModel | None, owner: type) -> T | _RareField[T]:
        if model is None:
            return self
        rare = model._rare
        return self.default if rare is None else cast(T, getattr(rare, self.name))

    def __set__(self, model: WatchedModel, value: T) -> None:
        rare = model._rare
        if rare is None:
            if value == self.default:
                return
            rare = model._rare = _Rare()
        setattr(rare, self.name, value)


@dataclass(slots=True)
class WatchedModel:
    """A model the watcher polls, and what it remembers between polls.

    One per watched model: the fields few models set (``_Rare``) live in one optional
    object behind properties of the same names (memory per model, issue 15).
    """

    key: ModelKey
    name: str | None  # configured; else the provider's name (``details``) is shown
    targets: tuple[Target, ...]  # its own apprise URLs, besides ``notify.urls``
    state: ModelState | None
    discovered: bool = False
    failures: int = 0  # consecutive failed polls
    token: int = 0  # bumped on every reschedule; stale heap entries are skipped
    due: float = 0.0  # monotonic time of its live schedule entry (``Schedule.at``)
    details: JobDetails | None = None  # fetched on first sight / on a notice
    digest: bytes | None = None  # of the last one-page answer already folded into ``state``
    # The slow lane (watcher.schedule): its last request was slow; it is being polled.
    slow: bool = False
    in_flight: bool = False
    in_slow_lane: bool = False  # taken as a slow model (counted in the lane until released)
    poll_again: bool = False  # asked to poll while in flight: polled once more right after
    # Its provider's key, as this model's polls saw it (watcher.policy.judge_rejection).
    accepted: bool = False  # its last poll that got an answer was not a 401/403
    # Its details are being fetched for a notice just recorded: delivery waits for them
    # (a webhook's document carries the error message and fine-tuned model from them).
    enriching: bool = False
    # The last round of the fleet it was attempted in (``Fleet.mark_polled``).
    polled_round: int = 0
    _rare: _Rare | None = field(default=None, repr=False)

    # In ``_rare`` (see ``_Rare`` for what each means).
    not_found_reported = _RareField(False)
    metrics = _RareField[dict[str, float] | None](None)
    stuck_warnings = _RareField(0)
    rejected_since = _RareField[float | None](None)
    rejection_reported = _RareField(False)
    webhooks = _RareField[tuple[Target, ...]](())
    routes = _RareField[tuple[Route, ...]](())

    def configure(self, spec: ModelSpec) -> None:
        """Take the name and every target of its (reloaded) configuration."""
        self.name = spec.name
        self.targets = make_targets(u.get_secret_value() for u in spec.urls)
        self.webhooks = _targets((), spec.webhooks)
        self.routes = make_routes(spec.routes)

    @property
    def model_id(self) -> str:
        return self.key.id

    @property
    def status(self) -> str | None:
        return self.state.status if self.state else None

    @property
    def display_name(self) -> str | None:
        """The configured name, else the provider's name for it, else None."""
        return self.name or (self.details.name if self.details else None)

    @property
    def label(self) -> str:
        """The name people see: ``display_name``, else the id."""
        return self.display_name or self.key.id


def _sharing_id(state: ModelState | None, key: ModelKey) -> ModelState | None:
    """``state`` naming its model with ``key``'s id string, not an equal copy of its own
    (the store's row and the configuration each bring one: 60 B a model; issue 15)."""
    if state is None or state.model_id is key.id:
        return state
    return replace(state, model_id=key.id)


def discovery_matches(name: str, rules: DiscoverSettings) -> bool:
    """Glob rules of ``discover``: any include pattern matches and no exclude pattern does."""
    return any(fnmatch.fnmatchcase(name, p) for p in rules.include) and not any(
        fnmatch.fnmatchcase(name, p) for p in rules.exclude
    )


class Fleet:
    """The watched models by key, and the targets every notification goes to."""

    def __init__(self) -> None:
        self.models: dict[ModelKey, WatchedModel] = {}
        self.global_targets: tuple[Target, ...] = ()
        self.global_webhooks: tuple[Target, ...] = ()
        self.routes: tuple[Route, ...] = ()
        self.notify_on: frozenset[str] = frozenset()
        self.ops_targets: tuple[Target, ...] = ()
        # Rounds (``mark_polled``): the current one's number, and how many models of it
        # are still to be attempted (a counter and a number per model, not a set of keys).
        self._round = 1
        self._left = 0

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self) -> Iterator[WatchedModel]:
        return iter(list(self.models.values()))

    def get(self, key: ModelKey | None) -> WatchedModel | None:
        return None if key is None else self.models.get(key)

    def is_current(self, model: WatchedModel) -> bool:
        """False once a reload removed ``model`` (a poll in flight then records nothing)."""
        return self.models.get(model.key) is model

    # --- configuration ---------------------------------------------------------------

    def apply_targets(self, notify: NotifySettings) -> None:
        self.global_targets = make_targets(u.get_secret_value() for u in notify.urls)
        self.global_webhooks = _targets((), notify.webhooks)
        self.routes = make_routes(notify.routes)
        self.notify_on = frozenset(notify.on)
        ops = notify.ops_urls or notify.urls
        self.ops_targets = make_targets(u.get_secret_value() for u in ops)

    def load(
        self,
        settings: Settings,
        states: Mapping[ModelKey, ModelState],
        records: Sequence[ModelRecord],
        stuck: Mapping[ModelKey, int],
        *,
        is_settled: Callable[[ModelKey, str | None], bool],
    ) -> list[WatchedModel]:
        """Watch the configured models and, with discovery on, the discovered ones still
        in progress (so an outcome reached while the watcher was down is still announced)."""
        self.apply_targets(settings.notify)
        for spec in settings.models:
            key = ModelKey(spec.provider, spec.id)
            model = WatchedModel(key, spec.name, (), _sharing_id(states.get(key), key))
            model.stuck_warnings = stuck.get(key, 0)
            model.configure(spec)
            self.models[key] = model
        if settings.discover.enabled:
            for record in records:
                key = record.key
                if (
                    record.discovered
                    and key not in self.models
                    and not is_settled(key, record.state.status)
                ):
                    model = WatchedModel(key, record.name, (), states.get(key), discovered=True)
                    model.stuck_warnings = stuck.get(key, 0)
                    self.models[key] = model
        self._new_round()
        return list(self.models.values())

    def changes(self, settings: Settings) -> tuple[list[ModelKey], list[ModelKey]]:
        """What applying ``settings`` would do: (keys added, keys removed).

        Discovered models stay while discovery is on; configured ones follow the file.
        """
        wanted = {ModelKey(spec.provider, spec.id) for spec in settings.models}
        added = [key for key in wanted if key not in self.models]
        removed = [
            key
            for key, model in self.models.items()
            if key not in wanted and not (model.discovered and settings.discover.enabled)
        ]
        return sorted(added), removed

    def apply(
        self,
        settings: Settings,
        states: Mapping[ModelKey, ModelState],
        stuck: Mapping[ModelKey, int] | None = None,
    ) -> tuple[list[WatchedModel], list[ModelKey]]:
        """Switch to reloaded ``settings``: returns (models added, keys removed).

        Kept models keep their state; their names and targets follow the file. An added
        model starts from its stored state and stuck-warning count (``stuck``, from the
        store): one removed and added back is not warned again for the same span.
        """
        _, removed = self.changes(settings)
        self.apply_targets(settings.notify)
        for key in removed:
            if self.models.pop(key).polled_round < self._round:
                self._left -= 1
        if removed and self._left <= 0:  # the round's last models went: start the next
            self._new_round()
        added: list[WatchedModel] = []
        for spec in settings.models:
            key = ModelKey(spec.provider, spec.id)
            existing = self.models.get(key)
            if existing is not None:
                existing.configure(spec)
                continue
            model = WatchedModel(key, spec.name, (), _sharing_id(states.get(key), key))
            model.stuck_warnings = (stuck or {}).get(key, 0)
            model.polled_round = self._round  # counted from the next round on
            model.configure(spec)
            self.models[key] = model
            added.append(model)
        return added, removed

    def adopt(self, details: JobDetails, provider: str, state: ModelState | None) -> WatchedModel:
        """Watch a model discovery found."""
        key = ModelKey(provider, details.id)
        model = WatchedModel(key, None, (), state, discovered=True, details=details)
        model.polled_round = self._round  # counted from the next round on
        self.models[key] = model
        return model

    # --- rounds -------------------------------------------------------------------------

    def mark_polled(self, key: ModelKey) -> bool:
        """Note that ``key`` was attempted; True when that completed a round of every model.

        A round is every model watched when it began; one added during it (a reload,
        discovery) counts from the next round on.
        """
        model = self.models.get(key)
        if model is None or model.polled_round >= self._round:
            return False
        model.polled_round = self._round
        self._left -= 1
        if self._left > 0:
            return False
        self._new_round()
        return True

    def _new_round(self) -> None:
        self._round += 1
        self._left = len(self.models)

    # --- delivery -----------------------------------------------------------------------

    def notify_on_for(self, model: WatchedModel) -> frozenset[str]:
        """What is announced for ``model``: ``notify.on`` and every ``on`` of a route
        that can reach it (the global ones and its own)."""
        routes = (*self.routes, *model.routes)
        return self.notify_on.union(*(route.on for route in routes))

    def holds(self, item: OutboxItem) -> bool:
        """True while ``item``'s model is being enriched (``Delivery`` takes it later)."""
        model = self.get(item.model)
        return item.notice is not None and model is not None and model.enriching

    def targets_for(self, item: OutboxItem) -> tuple[Target, ...]:
        """Where an outbox item goes, by the *current* configuration (module docstring).

        The watcher's own reports about a model (stuck, not found) go to the apprise
        targets of ``notify.urls`` and the model's ``urls``; daemon-wide ones to
        ``notify.ops_urls``. Neither goes to routes or webhooks.
        """
        if item.kind == "ops" and item.model is None:
            return self.ops_targets
        model = self.get(item.model)
        own = model.targets if model else ()
        notice = item.notice
        if notice is None:
            return unique_targets((*self.global_targets, *own))
        scheme = scheme_for(notice.provider)
        wanted: list[Target] = []
        if scheme.announces(notice.status, self.notify_on):
            wanted += [*self.global_targets, *own, *self.global_webhooks]
            wanted += model.webhooks if model else ()
        for route in (*self.routes, *(model.routes if model else ())):
            if scheme.announces(notice.status, route.on):
                wanted += route.targets
        return unique_targets(wanted)
