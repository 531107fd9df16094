"""``finetune-watcher state copy``: move a SQLite state into PostgreSQL (moving house)."""

from __future__ import annotations

import argparse
from pathlib import Path

from watcher.commands.base import EXIT_CODES_HELP, Subparsers, add_command

__all__ = ["CONFIG_HELP", "add_parser", "state_command"]

CONFIG_HELP: str | None = None  # the locations are given on the command line

EPILOG = f"""\
Copies every model (its status, what was seen, its floor, poll bookkeeping, stuck
warnings), every notification (pending, done or given up, with its id and retry time)
and every delivery from a SQLite state file into a PostgreSQL database, in one
transaction. Stop the daemon first (the state file's lock is taken); the database must
hold no state and no replica may run on it (--force replaces a state it holds). Then
set state.url instead of state.path and start the replicas.

example:
  finetune-watcher state copy --from /var/lib/finetune-watcher/watcher.db \\
      --to postgresql://watcher@db.internal/watcher --password-file /run/secrets/db

{EXIT_CODES_HELP}"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "state",
        state_command,
        summary="Work on a state database: `state copy` moves SQLite into PostgreSQL.",
        epilog=EPILOG,
    )
    parser.add_argument("action", choices=("copy",), help="copy: SQLite -> PostgreSQL")
    parser.add_argument("--from", dest="source", required=True, metavar="PATH_OR_URL",
                        help="the SQLite state file")  # fmt: skip
    parser.add_argument("--to", dest="target", required=True, metavar="PATH_OR_URL",
                        help="the PostgreSQL database (postgresql://…)")  # fmt: skip
    parser.add_argument("--password-file", type=Path, default=None, metavar="FILE",
                        help="the database password (else the URL's, PGPASSWORD, …)")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="replace a state the target already holds")  # fmt: skip
    return parser


def state_command(args: argparse.Namespace) -> int:
    """Copy, then print what was copied (the target without its password)."""
    import anyio

    from watcher.errors import EX_OK
    from watcher.redact import SECRETS
    from watcher.store.postgres import read_password_file
    from watcher.store.transfer import copy_state

    if args.password_file is not None:
        SECRETS.add(read_password_file(args.password_file))
    for location in (args.source, args.target):
        _register_url_password(location)

    async def copy() -> tuple[dict[str, int], str]:
        rows, location = await copy_state(
            args.source, args.target, password_file=args.password_file, force=args.force
        )
        return rows.counts(), location

    counts, location = anyio.run(copy)
    print(
        f"copied {counts['models']} models, {counts['outbox']} notifications "
        f"({counts['pending']} pending) and {counts['deliveries']} deliveries "
        f"from {args.source} to {location}"
    )
    return EX_OK


def _register_url_password(location: str) -> None:
    from urllib.parse import unquote, urlsplit

    from watcher.redact import SECRETS

    try:
        password = urlsplit(location).password
    except ValueError:
        return
    if password:
        SECRETS.add(password)
        SECRETS.add(unquote(password))
