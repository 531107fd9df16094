"""The watched models: which ones, by key, and where their notifications go.

``Fleet`` applies the configuration (``models``, their targets, ``notify.urls`` and
``notify.ops_urls``), restores discovered models across restarts, adopts newly
discovered ones, and says what a reload adds and removes. It does no I/O: states come
in as arguments, and scheduling is ``watcher.schedule``'s job.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from watcher.lifecycle import ModelKey, ModelState
from watcher.notify import Target, make_targets, unique_targets
from watcher.providers.base import JobDetails
from watcher.settings import DiscoverSettings, NotifySettings, Settings
from watcher.store.base import ModelRecord, OutboxItem

__all__ = ["Fleet", "WatchedModel", "discovery_matches"]


@dataclass(slots=True)
class WatchedModel:
    """A model the watcher polls, and what it remembers between polls."""

    key: ModelKey
    name: str | None  # configured; else the provider's name (``details``) is shown
    targets: tuple[Target, ...]  # its own, besides ``notify.urls``
    state: ModelState | None
    discovered: bool = False
    failures: int = 0  # consecutive failed polls
    token: int = 0  # bumped on every reschedule; stale heap entries are skipped
    not_found_reported: bool = False
    details: JobDetails | None = None  # fetched on first sight / on a notice
    metrics: dict[str, float] | None = None  # final training metrics, fetched on READY
    stuck_warnings: int = 0  # "still stuck" warnings sent in the current status
    digest: bytes | None = None  # of the last one-page answer already folded into ``state``
    # The slow lane (watcher.schedule): its last request was slow; it is being polled.
    slow: bool = False
    in_flight: bool = False
    in_slow_lane: bool = False  # taken as a slow model (counted in the lane until released)
    # Its provider's key, as this model's polls saw it (watcher.policy.judge_rejection).
    accepted: bool = False  # its last poll that got an answer was not a 401/403
    rejected_since: float | None = None  # monotonic time of its first rejection in a row
    rejection_reported: bool = False  # "the key works, but not for this job" was sent

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
        self.ops_targets: tuple[Target, ...] = ()
        self._unpolled: set[ModelKey] = set()

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
            self.models[key] = WatchedModel(
                key,
                spec.name,
                make_targets(u.get_secret_value() for u in spec.urls),
                states.get(key),
                stuck_warnings=stuck.get(key, 0),
            )
        if settings.discover.enabled:
            for record in records:
                key = record.key
                if (
                    record.discovered
                    and key not in self.models
                    and not is_settled(key, record.state.status)
                ):
                    self.models[key] = WatchedModel(
                        key, record.name, (), states.get(key),
                        discovered=True, stuck_warnings=stuck.get(key, 0),
                    )  # fmt: skip
        self._unpolled = set(self.models)
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
            del self.models[key]
            self._unpolled.discard(key)
        added: list[WatchedModel] = []
        for spec in settings.models:
            key = ModelKey(spec.provider, spec.id)
            targets = make_targets(u.get_secret_value() for u in spec.urls)
            existing = self.models.get(key)
            if existing is not None:
                existing.name, existing.targets = spec.name, targets
                continue
            model = WatchedModel(
                key, spec.name, targets, states.get(key),
                stuck_warnings=(stuck or {}).get(key, 0),
            )  # fmt: skip
            self.models[key] = model
            added.append(model)
        return added, removed

    def adopt(self, details: JobDetails, provider: str, state: ModelState | None) -> WatchedModel:
        """Watch a model discovery found."""
        key = ModelKey(provider, details.id)
        model = WatchedModel(key, None, (), state, discovered=True, details=details)
        self.models[key] = model
        return model

    # --- rounds -------------------------------------------------------------------------

    def mark_polled(self, key: ModelKey) -> bool:
        """Note that ``key`` was attempted; True when that completed a round of every model."""
        if key not in self._unpolled:
            return False
        self._unpolled.discard(key)
        if self._unpolled:
            return False
        self._unpolled = set(self.models)
        return True

    # --- delivery -----------------------------------------------------------------------

    def targets_for(self, item: OutboxItem) -> tuple[Target, ...]:
        """Where an outbox item goes, by the *current* configuration."""
        if item.kind == "ops" and item.model is None:
            return self.ops_targets
        model = self.get(item.model)
        own = model.targets if model else ()
        return unique_targets((*self.global_targets, *own))
