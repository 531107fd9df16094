"""The pure failure policy: what a failed request to a provider means.

Given the typed error (:mod:`watcher.errors`) and how the model stood, decide how
long until its next poll, whether every request to that provider must pause (429),
which ops notice the failure calls for, and its metric label. Like
:mod:`watcher.lifecycle`: no I/O, no clock, no logging; randomness comes in as
numbers uniform in [0, 1).

The rules, in one place:

* every failure backs off: the model's usual interval, or full-jitter exponential
  backoff on ``interval`` (capped at ``backoff_cap``) if that is longer;
* rate limited (429): pause the provider for ``Retry-After`` (or a backoff on at
  least 1 s without one); the model itself retries just after the pause, plus a
  tenth of its jittered interval, so the paused models do not all fire at once;
* auth rejected (401/403): at least ``min(backoff_cap, 60 s)``, and weigh it as
  evidence about the provider's key (``judge_rejection``, below): the key is declared
  failing only when the evidence says so, else it is that model's own problem;
* not found (404): no sooner than the settled interval, and report it (once per model);
* anything else (server, transport, bad response): the backoff alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from watcher.errors import (
    ApiError,
    AuthError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from watcher.lifecycle import backoff_delay, jittered, poll_interval

__all__ = [
    "AUTH_FAILING_AFTER",
    "AUTH_FAILING_MODELS",
    "AUTH_RECOVERED_AFTER",
    "DELIVERY_RETRY_CAP",
    "DELIVERY_RETRY_FIRST",
    "AuthVerdict",
    "FailureDecision",
    "KeyEvidence",
    "Report",
    "after_failure",
    "delivery_retry_delay",
    "follow_retry_delay",
    "is_transient",
]

#: Longest slow-down for a rejected key: it may be fixed any minute.
AUTH_RETRY_CAP = 60.0


class Report(StrEnum):
    """An ops notice a failure calls for; the caller sends each one once."""

    AUTH_FAILING = "auth_failing"  # a rejection (401/403): weigh it with judge_rejection
    NOT_FOUND = "not_found"  # per model: the job does not exist


@dataclass(frozen=True, slots=True)
class FailureDecision:
    """What to do after one failed poll of one model."""

    delay: float  # seconds until this model's next poll
    pause_provider: float | None  # pause every request to the provider this long (429)
    report: Report | None  # the ops notice this failure calls for, if any
    outcome: str  # the polls metric label ("auth_error", ...)


def after_failure(
    error: ApiError,
    *,
    failures: int,
    settled: bool,
    interval: float,
    settled_interval: float,
    backoff_cap: float,
    jitter: float,
    rand: float,
    pause_rand: float | None = None,
    jitter_rand: float | None = None,
) -> FailureDecision:
    """Decide what follows a failed poll of a model (see the module docstring).

    ``failures`` counts consecutive failures *including* this one (>= 1); ``settled``
    says whether the model's last known status is settled (its scheme decides).
    ``rand`` draws the backoff; a 429 without ``Retry-After`` draws its pause from
    ``pause_rand`` and the model's spread after the pause from ``jitter_rand`` (each
    defaults to ``rand``; pass independent draws in production, any constants in tests).
    """
    base = poll_interval(settled, interval, settled_interval)
    delay = max(base, backoff_delay(failures, interval, backoff_cap, rand))
    if isinstance(error, RateLimitedError):
        pause = error.retry_after
        if pause is None:
            pause = backoff_delay(
                failures,
                max(1.0, interval),
                backoff_cap,
                rand if pause_rand is None else pause_rand,
            )
        spread = jittered(base, jitter, rand if jitter_rand is None else jitter_rand) * 0.1
        return FailureDecision(pause + spread, pause, None, error.outcome)
    if isinstance(error, AuthError):
        delay = max(delay, min(backoff_cap, AUTH_RETRY_CAP))
        return FailureDecision(delay, None, Report.AUTH_FAILING, error.outcome)
    if isinstance(error, NotFoundError):
        delay = max(delay, settled_interval)
        return FailureDecision(delay, None, Report.NOT_FOUND, error.outcome)
    return FailureDecision(delay, None, None, error.outcome)


_TRANSIENT = (ServerError, TransportError, RateLimitedError, BadResponseError)


def is_transient(error: ApiError) -> bool:
    """True when retrying the same request later may succeed (not auth, not 404)."""
    return isinstance(error, _TRANSIENT)


def follow_retry_delay(error: ApiError, *, interval: float) -> float | None:
    """For a one-off loop (``events --follow``): seconds before retrying, or None to give up.

    Transient errors retry after ``interval``, or after ``Retry-After`` if a 429 asks
    for longer; any other error ends the loop (None).
    """
    if not is_transient(error):
        return None
    if isinstance(error, RateLimitedError) and error.retry_after:
        return max(interval, error.retry_after)
    return interval


# --- Delivery retries (a notification a target did not take) ---------------------------

#: The first retry of a failed delivery comes after 0.5-1 s (a blip costs seconds).
DELIVERY_RETRY_FIRST = 1.0
#: The longest pause between two attempts of one notification.
DELIVERY_RETRY_CAP = 3600.0


def delivery_retry_delay(
    attempts: int,
    *,
    first: float = DELIVERY_RETRY_FIRST,
    cap: float = DELIVERY_RETRY_CAP,
    rand: float,
) -> float:
    """Seconds until the next attempt of a notification that failed ``attempts`` times.

    Exponential with *equal* jitter: the ceiling ``min(cap, first * 2**(attempts-1))``
    times a factor uniform in [0.5, 1) (``rand`` uniform in [0, 1)). With the defaults:
    0.5-1 s, 1-2 s, 2-4 s, 4-8 s, ... up to 30-60 min. Half the ceiling is never
    jittered away, so a failing target is not hammered (the ceilings double each
    time until the cap); and a delay never exceeds its ceiling, so the attempt after
    a target recovers is less than one ceiling late. That ceiling is at most twice
    the time already spent failing plus ``first``: a target still failing ``F``
    seconds after the first attempt gets the notice less than ``min(cap, 2 * F +
    first)`` after it recovers (a receiver down for 3 s, a notice at 0.5 s: within
    4 s; tests/test_policy.py proves it for every ``rand``). A failure of any kind
    (an HTTP error, a refused connection, a timeout) follows the same schedule.
    """
    if attempts <= 0:
        return 0.0
    ceiling = min(cap, first * (2.0 ** min(attempts - 1, 64)))
    return ceiling * (0.5 + rand / 2.0)


# --- Is the key failing, or one model? (evidence per provider, with hysteresis) ----------

#: Rejections in a row at a provider (no success in between) before its key may be
#: declared failing -- and only when no other model's last poll was accepted...
AUTH_FAILING_AFTER = 2
#: ...or when this many models whose previous poll *had been accepted* were rejected in
#: a row (a key revoked while older successes of other models are still on record).
AUTH_FAILING_MODELS = 3
#: Successes in a row before a key declared failing is declared good again.
AUTH_RECOVERED_AFTER = 2


class AuthVerdict(StrEnum):
    """What the evidence about a provider's key calls for; the caller reports each once."""

    KEY_FAILING = "key_failing"  # per provider: its key is rejected
    KEY_RECOVERED = "key_recovered"  # per provider: its key is accepted again
    MODEL_REJECTED = "model_rejected"  # per model: the key works, but not for this job


@dataclass(frozen=True, slots=True)
class KeyEvidence:
    """What one provider's recent answers say about its key."""

    failing: bool = False  # declared failing (reported)
    rejections: int = 0  # 401/403 in a row at the provider, since its last success
    turned: int = 0  # of those: models whose previous poll had been accepted
    successes: int = 0  # successful polls in a row, since the last rejection


#: Evidence of a key with nothing against it (what every success of a working key leaves).
_CLEAN = KeyEvidence()


def judge_rejection(
    evidence: KeyEvidence, *, was_accepted: bool, accepted_elsewhere: bool, accepted_since: bool
) -> tuple[KeyEvidence, AuthVerdict | None]:
    """Fold one rejected poll (401 or 403) of a model into its provider's ``evidence``.

    ``was_accepted``: the model's previous poll succeeded. ``accepted_elsewhere``: some
    other model of the provider was accepted at its last poll. ``accepted_since``: some
    other model was accepted after this model's first rejection in a row. A 403 on one
    job beside 200s on others is that job's problem (``MODEL_REJECTED``, once evidence
    shows the key still works); the key is failing only when nothing contradicts it
    (see ``AUTH_FAILING_AFTER``, ``AUTH_FAILING_MODELS``). Never a verdict on the first
    rejection, and none while the key is already declared failing.
    """
    evidence = KeyEvidence(
        failing=evidence.failing,
        rejections=evidence.rejections + 1,
        turned=evidence.turned + (1 if was_accepted else 0),
        successes=0,
    )
    if evidence.failing:
        return evidence, None
    if evidence.rejections >= AUTH_FAILING_AFTER and (
        not accepted_elsewhere or evidence.turned >= AUTH_FAILING_MODELS
    ):
        return replace(evidence, failing=True), AuthVerdict.KEY_FAILING
    if accepted_since:
        return evidence, AuthVerdict.MODEL_REJECTED
    return evidence, None


def judge_success(evidence: KeyEvidence) -> tuple[KeyEvidence, AuthVerdict | None]:
    """Fold one successful poll into its provider's ``evidence``: the streak of rejections
    ends; a failing key is good again after ``AUTH_RECOVERED_AFTER`` successes in a row."""
    successes = evidence.successes + 1
    if evidence.failing and successes >= AUTH_RECOVERED_AFTER:
        return KeyEvidence(), AuthVerdict.KEY_RECOVERED
    if not evidence.failing:
        return _CLEAN, None  # frozen: one shared instance, nothing built per poll
    return KeyEvidence(failing=True, successes=successes), None
