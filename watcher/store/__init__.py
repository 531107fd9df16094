"""Persistence: model states and the notification outbox, behind one async protocol.

Callers open a store with :func:`open_store` (the daemon: read-write, locked) or
:func:`open_store_readonly` (``status``: no lock, no writes) and use only the
protocols of :mod:`watcher.store.base`. Which backend serves the ``state``
settings is decided in one place, :data:`BACKENDS`; each backend is one module
(:mod:`watcher.store.sqlite`, :mod:`watcher.store.postgres`), imported only when chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, cast

import anyio

from watcher.store.base import ModelRecord, Outbox, OutboxCounts, OutboxItem, StateStore, Store

if TYPE_CHECKING:
    from watcher.settings import StateSettings

__all__ = [
    "BACKENDS",
    "ModelRecord",
    "Outbox",
    "OutboxCounts",
    "OutboxItem",
    "StateStore",
    "Store",
    "StoreOpener",
    "open_store",
    "open_store_readonly",
]


class StoreOpener(Protocol):
    """What a backend module offers :func:`open_store`: its store, opened from the settings.

    ``readonly=True`` opens for ``status``: no lock, and writes fail with
    :class:`~watcher.errors.StateError`. Failures to open are ``StateError``
    (``StateLockedError`` when another daemon holds the state).
    """

    def __call__(self, state: StateSettings, *, readonly: bool) -> Awaitable[Store]: ...


#: Backends by the scheme of the state's location, as ``"module:attribute"`` naming a
#: :class:`StoreOpener` (uvicorn's ``HTTP_PROTOCOLS`` style: imported on first use, so a
#: backend's driver is only needed by those who choose it). Adding a backend is one
#: module and one line here (plus :func:`_scheme` when it brings a new kind of setting).
BACKENDS: dict[str, str] = {
    "sqlite": "watcher.store.sqlite:open_from_settings",
    "postgresql": "watcher.store.postgres:open_from_settings",
}


def _scheme(state: StateSettings) -> str:
    """The :data:`BACKENDS` key for ``state``: the one place a backend is chosen.

    ``state.url`` set (``postgresql://`` or ``postgres://``, checked by the settings):
    ``"postgresql"``; else the SQLite file at ``state.path``.
    """
    return "postgresql" if state.url is not None else "sqlite"


def _opener(scheme: str) -> StoreOpener:
    module_name, _, attribute = BACKENDS[scheme].partition(":")
    return cast(StoreOpener, getattr(importlib.import_module(module_name), attribute))


@asynccontextmanager
async def open_store(state: StateSettings) -> AsyncIterator[Store]:
    """The state store for the daemon: read-write, exclusive; closed on exit.

    Raises :class:`~watcher.errors.StateLockedError` when another daemon holds it and
    :class:`~watcher.errors.StateError` when it cannot be used.
    """
    store = await _opener(_scheme(state))(state, readonly=False)
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled caller still releases the lock
            await store.aclose()


@asynccontextmanager
async def open_store_readonly(state: StateSettings) -> AsyncIterator[Store]:
    """The state store for reading while a daemon may run (``status``); closed on exit.

    Never creates, locks or changes anything; writes through it raise
    :class:`~watcher.errors.StateError`, and so does a missing or empty state.
    """
    store = await _opener(_scheme(state))(state, readonly=True)
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled caller still releases the lock
            await store.aclose()
