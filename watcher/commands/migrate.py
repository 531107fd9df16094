"""``finetune-watcher migrate``: create or upgrade the state's schema, print the versions."""

from __future__ import annotations

import argparse

from watcher.commands.base import (
    CONFIG_HELP,
    EXIT_CODES_HELP,
    Subparsers,
    add_command,
    config_path,
    load_settings_for_reading,
)
from watcher.errors import EX_OK

__all__ = ["CONFIG_HELP", "add_parser", "migrate_command"]

EPILOG = f"""\
The daemon does the same when it starts; run this before a rolling update of several
replicas, or to prepare a database a DBA created. SQLite: under the state file's lock
(refused while a daemon runs on it). PostgreSQL: in one transaction under an advisory
lock, so replicas starting at the same time do not race; a newer schema is refused.

example:
  finetune-watcher migrate -c /etc/finetune-watcher/watcher.yaml

{EXIT_CODES_HELP}"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "migrate",
        migrate_command,
        summary="Create or upgrade the state database's schema and print its version.",
        epilog=EPILOG,
    )


def migrate_command(args: argparse.Namespace) -> int:
    """Open the state read-write (which creates or upgrades it) and say what happened."""
    import anyio

    from watcher.store import open_store
    from watcher.store.migrations import SCHEMA_VERSION

    settings = load_settings_for_reading(config_path(args), parse_targets=False)
    state = settings.state
    existed = state.url is not None or state.path.exists()

    async def migrate() -> tuple[str, int | None, bool]:
        async with open_store(state) as store:
            upgraded_from: int | None = getattr(store, "upgraded_from", None)
            created = bool(getattr(store, "created", not existed))
            return store.location, upgraded_from, created

    location, upgraded_from, created = anyio.run(migrate)
    backend = "PostgreSQL" if state.url is not None else "SQLite"
    if created:
        change = f"created at version {SCHEMA_VERSION}"
    elif upgraded_from is not None:
        change = f"upgraded from version {upgraded_from} to {SCHEMA_VERSION}"
    else:
        change = f"already at version {SCHEMA_VERSION}"
    print(f"state: {backend} {location}: schema {change}")
    print(f"schema versions: database {SCHEMA_VERSION}, this finetune-watcher {SCHEMA_VERSION}")
    return EX_OK
