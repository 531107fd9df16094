"""The machine-readable notice: a ``Notice`` as a versioned JSON document (pure).

What ``webhooks:`` targets receive as the body of a ``POST`` (``application/json``).
The fields, their types and their meaning are the contract documented in the README
("Machine-readable notices"); a change that is not backwards compatible bumps
``NOTICE_DOCUMENT_VERSION``. Adding a field is compatible; renaming, removing or
changing the type or meaning of one is not.

Values from outside (names, ids, statuses, an API's error text) are made safe as in
``watcher.messages``: every registered secret masked, one line, capped. They are not
escaped: JSON encoding is the only escaping a document needs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from watcher.lifecycle import Notice, StatusScheme
from watcher.messages import dashboard_link, format_time
from watcher.redact import ERROR_LIMIT, NAME_LIMIT, safe_text

if TYPE_CHECKING:
    from watcher.providers.base import JobDetails

__all__ = [
    "NOTICE_DOCUMENT_FIELDS",
    "NOTICE_DOCUMENT_KIND",
    "NOTICE_DOCUMENT_VERSION",
    "notice_document",
    "notice_json",
]

#: The schema's version: bumped only by a change a receiver could break on.
NOTICE_DOCUMENT_VERSION = 1
#: What the document is (a receiver may get other kinds one day).
NOTICE_DOCUMENT_KIND = "finetune-watcher.notice"
#: Every field, in the order the document has them (the README's table, in order).
NOTICE_DOCUMENT_FIELDS: tuple[str, ...] = (
    "version",
    "kind",
    "provider",
    "model_id",
    "model_name",
    "status",
    "provider_status",
    "previous_status",
    "previous_provider_status",
    "at",
    "duration_seconds",
    "fine_tuned_model",
    "base_model",
    "error_message",
    "dashboard_url",
    "first_observation",
)


def _outside(value: str | None, limit: int = NAME_LIMIT) -> str | None:
    """An outside value made safe (no secret, one line, capped); None stays None."""
    if value is None or not value.strip():
        return None
    return safe_text(value, limit)


def notice_document(
    notice: Notice,
    *,
    scheme: StatusScheme,
    name: str | None = None,
    dashboard_url: str,
    details: JobDetails | None = None,
) -> dict[str, Any]:
    """The document announcing ``notice`` (fields in ``NOTICE_DOCUMENT_FIELDS`` order).

    ``scheme`` is the provider's (it gives ``status``, the common word); ``name`` the
    model's name as people see it (configured, else the provider's); ``dashboard_url``
    the job's link (``{model_id}`` is filled in); ``details`` what the provider said
    about the job (fine-tuned model, base model, error message). Unknown is ``null``.
    """
    previous = notice.previous_status
    duration = notice.duration_seconds
    return {
        "version": NOTICE_DOCUMENT_VERSION,
        "kind": NOTICE_DOCUMENT_KIND,
        "provider": notice.provider,
        "model_id": _outside(notice.model_id),
        "model_name": _outside(name),
        "status": scheme.phase(notice.status).value,
        "provider_status": _outside(notice.status),
        "previous_status": scheme.phase(previous).value if previous else None,
        "previous_provider_status": _outside(previous),
        "at": format_time(notice.event_at),
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "fine_tuned_model": _outside(details.fine_tuned_model if details else None),
        "base_model": _outside(details.base_model if details else None),
        "error_message": _outside(details.error_message if details else None, ERROR_LIMIT),
        "dashboard_url": _outside(dashboard_link(dashboard_url, notice.model_id), ERROR_LIMIT),
        "first_observation": notice.first_observation,
    }


def notice_json(document: Mapping[str, Any]) -> str:
    """The document as the body of a request: compact JSON, UTF-8 as is, fields in order."""
    return json.dumps(dict(document), ensure_ascii=False, separators=(",", ":"))
