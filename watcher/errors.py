"""Typed errors: every failure a user can meet is one of these.

The CLI turns a ``WatcherError`` into one line on stderr and the exit code it
carries; anything else is a bug and is reported as such (still without a
traceback unless ``--log-level debug``). Messages never contain secrets: they
are built from labels, ids and status codes, never from keys or URLs.
"""

from __future__ import annotations

EX_OK = 0
EX_FAILURE = 1
EX_CONFIG = 78  # sysexits.h EX_CONFIG; the systemd unit refuses to restart on it
EX_STATE = 74  # sysexits.h EX_IOERR: the state database is unusable
EX_LOCKED = 75  # sysexits.h EX_TEMPFAIL: another daemon holds the state file


class WatcherError(Exception):
    """Base of every error the watcher raises on purpose."""

    exit_code = EX_FAILURE


class ConfigError(WatcherError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    exit_code = EX_CONFIG

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class StateError(WatcherError):
    """The state database cannot be opened, read or written."""

    exit_code = EX_STATE


class StateLockedError(StateError):
    """Another watcher already uses this state file."""

    exit_code = EX_LOCKED


class CohereError(WatcherError):
    """A request to the Cohere API failed. ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AuthError(CohereError):
    """401/403: the key is missing, wrong or lacks permission."""


class NotFoundError(CohereError):
    """404: the model does not exist (typo, or deleted)."""


class RateLimitedError(CohereError):
    """429: the key's request limit is exhausted. Applies to the whole watcher."""

    def __init__(self, message: str, *, retry_after: float | None, status: int = 429) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)


class ServerError(CohereError):
    """5xx or another unexpected status: Cohere's side, worth retrying."""


class TransportError(CohereError):
    """Connection refused, reset, DNS failure or timeout: worth retrying."""


class BadResponseError(CohereError):
    """The response was not what the API documents (content type, JSON, shape, size)."""


class DeliveryError(WatcherError):
    """A notification target could not be reached or refused the message."""
