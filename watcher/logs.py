"""Logging: structlog configuration and the processor that keeps secrets out of every line.

One event per line: JSON when the stream is not a terminal, coloured key=value on one.
Standard-library loggers (aiohttp, apprise) go through the same processors and the
same stream, so every line has one format and passes the same redaction.

A JSON line always has ``timestamp`` (ISO-8601 UTC), ``level``, ``logger`` and
``message`` (structlog's ``event``, renamed: in this tool "event" means a fine-tuning
event). When the stream is the systemd journal (``$JOURNAL_STREAM`` names it) each line
starts with its syslog priority, ``<4>`` for a warning, so ``journalctl -p warning``
finds it; without the prefix journald records every line at "info".
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

__all__ = [
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "reset_logging",
    "resolve_log_options",
    "writes_to_journal",
]

LogFormat = Literal["json", "console"]

_FORMATS: tuple[LogFormat, ...] = ("json", "console")

#: The logger name of a line whose logger has none (``structlog.get_logger()``).
DEFAULT_LOGGER = "watcher"

# syslog priorities (sd-daemon.h's SD_ERR ...): the prefix journald reads.
_SYSLOG_PRIORITY = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
}

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
    event_dict.setdefault("logger", name or DEFAULT_LOGGER)
    return event_dict


def _default_logger_name(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    if not event_dict.get("logger"):
        event_dict["logger"] = DEFAULT_LOGGER
    return event_dict


def resolve_log_options(
    fmt: str | None = None,
    level: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    default_level: str = "info",
) -> tuple[LogFormat | None, str]:
    """The log format and level to use: explicit arguments, else the environment.

    ``fmt``/``level`` (the ``--log-format``/``--log-level`` options) win; else
    ``$WATCHER_LOG_FORMAT`` and ``$WATCHER_LOG_LEVEL`` (blank counts as unset); else
    ``None`` for the format (``configure_logging`` picks by TTY) and ``default_level``.
    Raises ``ValueError`` naming the option or variable for an unknown value.
    """
    environ = os.environ if environ is None else environ
    chosen_fmt, fmt_source = fmt, "--log-format"
    if not chosen_fmt:
        chosen_fmt, fmt_source = (
            environ.get("WATCHER_LOG_FORMAT", "").strip(),
            "$WATCHER_LOG_FORMAT",
        )
    chosen_level, level_source = level, "--log-level"
    if not chosen_level:
        chosen_level, level_source = (
            environ.get("WATCHER_LOG_LEVEL", "").strip(),
            "$WATCHER_LOG_LEVEL",
        )
    resolved_fmt: LogFormat | None = None
    if chosen_fmt:
        lowered = chosen_fmt.strip().lower()
        if lowered not in _FORMATS:
            raise ValueError(
                f"{fmt_source}: unknown log format {chosen_fmt!r}; use json or console"
            )
        resolved_fmt = lowered
    resolved_level = (chosen_level or default_level).strip().lower()
    if resolved_level not in _LEVELS:
        raise ValueError(
            f"{level_source}: unknown log level {chosen_level!r}; use one of {', '.join(_LEVELS)}"
        )
    return resolved_fmt, resolved_level


def writes_to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream ``$JOURNAL_STREAM`` (``DEV:INODE``) names.

    systemd sets the variable when stdout or stderr is connected to journald; comparing
    the stream's own device and inode keeps the prefix out of a redirected stream.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("JOURNAL_STREAM", "").strip()
    if not raw:
        return False
    try:
        dev, ino = (int(part) for part in raw.split(":", 1))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _SyslogPrefixed:
    """Wraps a renderer: ``<N>`` (the syslog priority of the line's level) before the line."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", method_name)).lower()
        prefix = f"<{_SYSLOG_PRIORITY.get(level, 6)}>"
        rendered = self._renderer(logger, method_name, event_dict)
        text = rendered if isinstance(rendered, str) else str(rendered)
        # A multi-line console rendering (a traceback) keeps the priority on every line.
        return "\n".join(prefix + line for line in text.split("\n"))


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
    journal: bool | None = None,
) -> None:
    """Configure structlog and the stdlib root logger to write one line per event.

    ``stream`` defaults to ``sys.stderr``; ``fmt`` None picks ``console`` when the stream
    is a TTY and ``json`` otherwise. Colours only on a TTY and when ``$NO_COLOR`` is unset
    or empty. ``level`` is a name (``debug`` ... ``critical``; ``ValueError`` otherwise).
    apprise and aiohttp's access log stay at WARNING unless ``level`` is ``debug``.
    ``journal`` True prefixes every line with its syslog priority (``<3>`` ... ``<7>``);
    None does so when the stream is the one ``$JOURNAL_STREAM`` names.
    JSON lines carry ``message`` rather than structlog's ``event``.
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

    if journal is None:
        journal = writes_to_journal(stream)

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    renderer = _renderer(fmt, colors)
    if journal:
        renderer = _SyslogPrefixed(renderer)
    tail: list[Processor] = [_exception_formatter(fmt), redact_secrets]
    if fmt == "json":
        tail.append(structlog.processors.EventRenamer("message"))
    tail.append(renderer)

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
                _default_logger_name,
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
