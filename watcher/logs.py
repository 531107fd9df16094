"""Logging: structlog configuration and the processor that keeps secrets out of every line.

One event per line: JSON when the stream is not a terminal, coloured key=value on one.
Standard-library loggers (aiohttp, apprise) go through the same processors and the
same stream, so every line has one format and passes the same redaction.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from watcher.redact import MASK, SECRETS

__all__ = ["configure_logging", "get_logger", "redact_secrets", "reset_logging"]

LogFormat = Literal["json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Keys whose whole value is a credential, whatever it looks like: api_key, X-Api-Key,
# auth_token, Authorization, client_secret, password ... (but not "tokens_used").
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:api_?key|apikey|token|password|passwd|secret|authorization)(?:_|$)"
)

# Loggers of libraries that are chatty at INFO; quiet unless we debug.
_QUIET_LOGGERS = ("apprise", "aiohttp.access")


class _SharedStreamHandler(logging.Handler):
    """Writes formatted stdlib records through a structlog ``WriteLogger``.

    structlog's writers share one lock per stream, so a line from a stdlib logger in
    apprise's thread pool never interleaves with one from our own loggers.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.writer = structlog.WriteLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


class _NamedWriteLogger(structlog.WriteLogger):
    """A ``WriteLogger`` that knows the name it was asked for (``get_logger(name)``)."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _NamedWriteLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return _NamedWriteLogger(self._file, name)


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key.lower().replace("-", "_")))


def _scrub(value: object) -> object:
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {
            k: (MASK if _is_secret_key(k) and v is not None else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    # Anything else (exceptions, paths, URLs, dates) is rendered as text by every
    # renderer anyway; render it here so a secret inside it can be scrubbed.
    return SECRETS.scrub(str(value))


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: mask registered secrets anywhere in the event and secret-named keys whole.

    Every string in the values (recursively through mappings and sequences, including a
    rendered exception) has each string registered in ``watcher.redact.SECRETS`` replaced
    by ``***``; the value of a key named like a credential (``api_key``, ``token``,
    ``password``, ``secret``, ``authorization`` ...) is replaced by ``***`` entirely.
    Must run after exception formatting and before the renderer.
    """
    for key, value in list(event_dict.items()):
        if key.startswith("_"):  # ProcessorFormatter's bookkeeping (_record, ...)
            continue
        if _is_secret_key(key) and value is not None:
            event_dict[key] = MASK
        elif key == "exc_info":
            continue  # formatted into "exception" (and scrubbed there) before us
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _renderer(fmt: LogFormat, colors: bool) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(
        colors=colors, exception_formatter=structlog.dev.plain_traceback
    )


def _exception_formatter(fmt: LogFormat) -> Processor:
    if fmt == "json":
        # No locals: they would put arbitrary values (keys, URLs) into the line.
        return structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    # Render to text *before* redaction, so the traceback is scrubbed too.
    return structlog.processors.format_exc_info


def configure_logging(
    *,
    fmt: LogFormat | None = None,
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger to write one line per event.

    ``stream`` defaults to ``sys.stderr``; ``fmt`` None picks ``console`` when the stream
    is a TTY and ``json`` otherwise. Colours only on a TTY and when ``$NO_COLOR`` is unset
    or empty. ``level`` is a name (``debug`` ... ``critical``; ``ValueError`` otherwise).
    apprise and aiohttp's access log stay at WARNING unless ``level`` is ``debug``.
    Idempotent: calling it again replaces the previous configuration. Loggers are not
    cached on first use, so a later call (or ``structlog.testing.capture_logs``) applies.
    """
    try:
        threshold = _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}") from None
    stream = sys.stderr if stream is None else stream
    is_tty = _isatty(stream)
    if fmt is None:
        fmt = "console" if is_tty else "json"
    colors = is_tty and not os.environ.get("NO_COLOR")

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    tail: list[Processor] = [_exception_formatter(fmt), redact_secrets, _renderer(fmt, colors)]

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            timestamper,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_NamedWriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )

    handler = _SharedStreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SharedStreamHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
        )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger; ``name`` (e.g. ``"watcher.daemon"``) shows as the ``logger`` key.

    Lazy: safe to create at import time, it uses whatever ``configure_logging`` set
    when it logs.
    """
    args = () if name is None else (name,)
    return cast(FilteringBoundLogger, structlog.get_logger(*args))


def reset_logging() -> None:
    """Undo ``configure_logging``: structlog's defaults, and our handler off the root logger."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SharedStreamHandler)]:
        root.removeHandler(old)
