"""Typed errors: every failure a user can meet is one of these.

The CLI turns a ``WatcherError`` into one line on stderr and the exit code it
carries; anything else is a bug and is reported as such (still without a
traceback unless ``--log-level debug``). Messages never contain secrets: they
are built from labels, ids and status codes, never from keys or URLs.

The tree (exit codes on the right; an ``ApiError``'s ``outcome`` is its metric label)::

    WatcherError                      exit 1
    ├── ConfigError                   exit 78
    ├── StateError                    exit 74
    │   ├── StateLockedError          exit 75
    │   ├── StateUnavailableError     exit 75   the database cannot be reached: retry later
    │   └── LeaseLostError            exit 74   (watcher.store.lease) this replica no longer leads
    └── ApiError                      a request to a provider failed    "other_error"
        ├── AuthError                 401/403: the key is wrong         "auth_error"
        ├── NotFoundError             404: no such job                  "not_found"
        ├── RateLimitedError          429: pauses that provider         "rate_limited"
        ├── ServerError               5xx, 408, 409                     "server_error"
        ├── TransportError            reset, DNS, refused, timeout      "transport_error"
        └── BadResponseError          content type, JSON, shape, size   "bad_response"

Why ``StateUnavailableError`` exits 75 and not 74: 74 (EX_IOERR) says "the state itself
is unusable -- a person must look" (corrupt file, newer schema, wrong password); 75
(EX_TEMPFAIL) says "nothing is wrong with the state, it cannot be reached *now*; run me
again later" -- PostgreSQL restarting, the network down, a lock or statement timeout. A
one-shot command (``status``, ``migrate``, ``state copy``) exits 75 so a script or a
cron job may simply retry; the daemon never exits on it (it retries with backoff), and
systemd's ``Restart=on-failure`` restarts on both codes, never on 78.

What a failed request *means* (how long to wait, whether to pause the provider,
which ops message) is decided by :mod:`watcher.policy` from these types alone.
"""

from __future__ import annotations

EX_OK = 0
EX_FAILURE = 1
EX_CONFIG = 78  # sysexits.h EX_CONFIG; the systemd unit refuses to restart on it
EX_STATE = 74  # sysexits.h EX_IOERR: the state database is unusable
EX_LOCKED = 75  # sysexits.h EX_TEMPFAIL: another daemon holds the state file
EX_TEMPFAIL = EX_LOCKED  # the same code: the state cannot be used *now*; try again later


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


class StateUnavailableError(StateError):
    """The database cannot be reached, or the connection broke: retry later.

    A :class:`StateError` the daemon retries with backoff rather than exits on
    (PostgreSQL restarting, the network down, a lock wait or a statement that timed
    out). A one-shot command exits 75 (EX_TEMPFAIL: "try again later"; see above).
    After one on a *write*, the outcome of that write is unknown (a ``COMMIT`` whose
    answer was lost): the daemon reloads the states before deciding anything again.
    """

    exit_code = EX_TEMPFAIL


class ApiError(WatcherError):
    """A request to a provider's API failed.

    ``status`` is the HTTP status, if any; ``provider`` the registry name of the
    provider that answered (``"cohere"``), empty when unknown.
    """

    #: The ``outcome`` label of the polls metric for this kind of failure.
    outcome = "other_error"

    def __init__(self, message: str, *, status: int | None = None, provider: str = "") -> None:
        self.status = status
        self.provider = provider
        super().__init__(message)


class AuthError(ApiError):
    """401/403: the key is missing, wrong or lacks permission."""

    outcome = "auth_error"


class NotFoundError(ApiError):
    """404: the job does not exist (typo, or deleted)."""

    outcome = "not_found"


class RateLimitedError(ApiError):
    """429: the key's request limit is exhausted. Pauses every request to that provider.

    ``retry_after`` is the provider's ``Retry-After`` in seconds (capped), if it sent one.
    """

    outcome = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        status: int = 429,
        provider: str = "",
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, provider=provider)


class ServerError(ApiError):
    """5xx, 408 or 409: the provider's side, worth retrying."""

    outcome = "server_error"


class TransportError(ApiError):
    """Connection refused, reset, DNS failure or timeout: worth retrying."""

    outcome = "transport_error"


class BadResponseError(ApiError):
    """The response was not what the API documents (content type, JSON, shape, size)."""

    outcome = "bad_response"


#: Every ``ApiError.outcome`` label, in tree order (the polls metric pre-creates them).
API_OUTCOMES: tuple[str, ...] = (
    AuthError.outcome,
    NotFoundError.outcome,
    RateLimitedError.outcome,
    ServerError.outcome,
    TransportError.outcome,
    BadResponseError.outcome,
    ApiError.outcome,
)
