"""What the store tests share: a fixed clock, two status schemes, keys and observations.

The store names no provider, so the two schemes stand for any two; the first uses Cohere's
spelling (what every state stored before providers existed belongs to).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from watcher import lifecycle
from watcher.lifecycle import (
    DEFAULT_NOTIFY_ON,
    Event,
    ModelKey,
    ModelState,
    Phase,
    StatusScheme,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

QUEUED, FINETUNING, READY, FAILED = (
    "STATUS_QUEUED",
    "STATUS_FINETUNING",
    "STATUS_READY",
    "STATUS_FAILED",
)
SCHEME = StatusScheme(
    provider="cohere",
    table={
        QUEUED: (Phase.QUEUED, 10),
        FINETUNING: (Phase.RUNNING, 20),
        "STATUS_PAUSED": (Phase.OTHER, 40),
        READY: (Phase.READY, 70),
        FAILED: (Phase.FAILED, 80),
        "STATUS_DELETED": (Phase.CANCELLED, 90),
    },
    settled=frozenset({READY, FAILED, "STATUS_DELETED"}),
)
OTHER_SCHEME = StatusScheme(
    provider="other",
    table={
        "queued": (Phase.QUEUED, 10),
        "running": (Phase.RUNNING, 20),
        "succeeded": (Phase.READY, 70),
        "failed": (Phase.FAILED, 80),
    },
    settled=frozenset({"succeeded", "failed"}),
)
SCHEMES = {scheme.provider: scheme for scheme in (SCHEME, OTHER_SCHEME)}


def key(model_id: str = "m-1", provider: str = "cohere") -> ModelKey:
    return ModelKey(provider, model_id)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def observe(
    previous: ModelState | None,
    model_id: str,
    events: Sequence[Event],
    notify_on: frozenset[str] = DEFAULT_NOTIFY_ON,
    *,
    scheme: StatusScheme = SCHEME,
) -> lifecycle.Observation:
    return lifecycle.observe(previous, model_id, events, notify_on, scheme=scheme)


def finished_model(model_id: str = "m-1", status: str = READY) -> lifecycle.Observation:
    """A first observation of a model that went QUEUED -> FINETUNING -> ``status``."""
    events = [Event(QUEUED, minutes(0)), Event(FINETUNING, minutes(1)), Event(status, minutes(30))]
    return observe(None, model_id, events)
