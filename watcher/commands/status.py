"""``finetune-watcher status``: every watched model, from the state database (never the API).

Safe while the daemon runs: the state is opened read-only and without the lock. The
rows and the JSON document come from :mod:`watcher.views` (what the web page serves
too); this module only reads and prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from watcher.commands.base import (
    CONFIG_HELP,
    Subparsers,
    add_command,
    config_path,
    load_settings_for_reading,
)
from watcher.commands.console import Style, scrub
from watcher.errors import EX_OK

if TYPE_CHECKING:
    from watcher.lifecycle import StatusScheme
    from watcher.store.base import ModelRecord, OutboxCounts
    from watcher.store.lease import LeaderInfo
    from watcher.views import ModelRow

__all__ = ["CONFIG_HELP", "add_parser", "status_command", "status_table"]

_LAST_ERROR_WIDTH = 40
_NAME_WIDTH = 32

EPILOG = """\
example:
  finetune-watcher status -c /etc/finetune-watcher/watcher.yaml
  finetune-watcher status --json | jq -r '.models[] | select(.status == "STATUS_READY") | .id'

--json prints one object (times: ISO-8601 UTC ending in Z, or null):
  {"generated_at", "state_path",
   "models": [{"id", "provider", "name", "status", "status_since", "last_poll_at",
               "last_success_at", "last_error", "failures", "pending_notifications",
               "discovered", "configured"}],
   "outbox": {"pending", "done", "given_up"},
   "leader": {"holder", "epoch", "since", "expires_at", "live"} or null (SQLite)}

exit codes:
  0   success
  74  no state database at state.path yet, or it is unusable
  75  the PostgreSQL database (state.url) cannot be reached now: try again later
  78  the configuration is invalid
"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "status",
        _from_args,
        summary="Show every watched model's status from the state database.",
        description=(
            "Show every watched model from the state database: its name, provider, id,\n"
            "current status, since when, the last poll, the last error and its undelivered\n"
            "notifications, then the outbox counts. Makes no API calls and is safe while the\n"
            "daemon runs. Models in the configuration that the daemon has not polled yet show\n"
            'as "not polled yet".'
        ),
        epilog=EPILOG,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document (see below)")
    return parser


def _from_args(args: argparse.Namespace) -> int:
    return status_command(config_path(args), as_json=args.json)


def status_command(config: Path, *, as_json: bool, out: TextIO | None = None) -> int:
    """Read the state database and show it; returns 0.

    Raises ``ConfigError`` (78) for a bad configuration and ``StateError`` (74) when
    the state is missing or unusable.
    """
    import anyio

    from watcher.leadership import leader_of
    from watcher.store import open_store_readonly
    from watcher.views import leader_line, status_document, status_rows

    out = out or sys.stdout
    settings = load_settings_for_reading(config, parse_targets=False)  # it sends nothing

    async def read() -> tuple[list[ModelRecord], OutboxCounts, str, LeaderInfo | None]:
        async with open_store_readonly(settings.state) as store:
            records, counts = await store.model_records(), await store.outbox_counts()
            return records, counts, store.location, await leader_of(store)

    records, counts, location, leader = anyio.run(read)
    now = datetime.now(UTC)
    rows = status_rows(records, {m.key: m.name for m in settings.models})
    if as_json:
        document = status_document(rows, counts, now=now, state_location=location, leader=leader)
        out.write(scrub(json.dumps(document, ensure_ascii=False, indent=2)) + "\n")
    else:
        lines = status_table(rows, counts, now=now, style=Style.for_stream(out))
        leading = leader_line(leader, now)
        if leading is not None:
            lines.append(leading)
        out.write("".join(scrub(text) + "\n" for text in lines))
    out.flush()
    return EX_OK


def _name_text(row: ModelRow) -> str:
    from watcher.views import shorten

    name = shorten(row.name, _NAME_WIDTH) if row.name else "-"
    if row.discovered:
        return f"{name} [discovered]"
    if not row.configured:
        return f"{name} [not in config]"
    return name


def status_table(
    rows: Sequence[ModelRow],
    counts: OutboxCounts,
    *,
    now: datetime,
    style: Style,
    scheme_of: Callable[[str], StatusScheme | None] | None = None,
) -> list[str]:
    """The ``status`` table and its footer, one string per line.

    ``scheme_of`` finds a provider's status scheme by name (default: the registry's).
    """
    from watcher.commands.base import scheme_for
    from watcher.views import shorten, status_text, time_ago

    scheme_of = scheme_of or scheme_for
    headers = ("NAME", "PROVIDER", "ID", "STATUS", "SINCE", "LAST POLL", "LAST ERROR", "UNSENT")
    schemes = [scheme_of(row.provider) for row in rows]
    cells = [
        (
            _name_text(row),
            row.provider,
            row.model_id,
            status_text(row, scheme),
            time_ago(row.status_since, now, never="-"),
            time_ago(row.last_poll_at, now),
            shorten(row.last_error, _LAST_ERROR_WIDTH) if row.last_error else "-",
            str(row.pending_notifications),
        )
        for row, scheme in zip(rows, schemes, strict=True)
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    status_column, error_column, unsent_column = 3, 6, 7

    def line(values: Sequence[str], paint: Callable[[int, str], str]) -> str:
        padded = [
            paint(i, value.rjust(widths[i]) if i == len(values) - 1 else value.ljust(widths[i]))
            for i, value in enumerate(values)
        ]
        return "  ".join(padded).rstrip()

    lines = [line(headers, lambda _i, text: style.bold(text))]
    for row, scheme, values in zip(rows, schemes, cells, strict=True):

        def paint(
            i: int, text: str, row: ModelRow = row, scheme: StatusScheme | None = scheme
        ) -> str:
            if i == status_column:
                known = row.status if row.last_success_at else None
                if scheme is None or known is None:
                    return style.phase(text, None, settled=False)
                return style.phase(text, scheme.phase(known), settled=scheme.is_settled(known))
            if i == error_column and row.last_error:
                return style.paint(text, "31")
            if i == unsent_column and row.pending_notifications:
                return style.paint(text, "33")
            return text

        lines.append(line(values, paint))
    if not rows:
        lines.append(style.dim("(no models yet)"))
    lines.append("")
    lines.append(
        f"outbox: {counts.pending} pending · {counts.done} delivered · {counts.given_up} given up"
    )
    return lines
