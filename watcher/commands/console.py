"""Terminal output for the commands: colours only on a terminal, a live status line.

Every line is scrubbed of registered secrets (``watcher.redact.SECRETS``) on its way
out. Colours follow the common lifecycle (:class:`~watcher.lifecycle.Phase`), so no
provider's status names appear here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from watcher.lifecycle import Phase

__all__ = ["Console", "Style", "isatty", "scrub"]

_PHASE_COLOURS = {"ready": "32", "failed": "31"}  # green, red
_RUNNING = "33"  # yellow: still on its way
_DIM = "2"


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced."""
    from watcher.redact import SECRETS

    return SECRETS.scrub(text)


class Style:
    """ANSI colours for a terminal; plain text when colours are off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        """Colours when ``stream`` is a terminal and ``$NO_COLOR`` is unset."""
        return cls(isatty(stream) and not os.environ.get("NO_COLOR"))

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and code else text

    def phase(self, text: str, phase: Phase | None, *, settled: bool) -> str:
        """Green when ready, red when it failed, dim when otherwise settled (cancelled,
        deleted) or unknown (``phase`` None), yellow while on its way."""
        if phase is None:
            return self.paint(text, _DIM)
        colour = _PHASE_COLOURS.get(phase.value)
        if colour is None:
            colour = _DIM if settled else _RUNNING
        return self.paint(text, colour)

    def dim(self, text: str) -> str:
        return self.paint(text, _DIM)

    def bold(self, text: str) -> str:
        return self.paint(text, "1")


class Console:
    """stdout and stderr for a command: lines, warnings and a live status line on a TTY.

    The live line is redrawn in place with ``\\r``; it is wiped before any other
    output, so lines and warnings never mix with it.
    """

    def __init__(self, out: TextIO, err: TextIO, *, live: bool) -> None:
        self.out = out
        self.err = err
        self.live = live
        self.style = Style.for_stream(out)
        self._showing = False

    def print(self, text: str) -> None:
        self.clear_live()
        self.out.write(scrub(text) + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.clear_live()
        self.err.write(scrub(f"finetune-watcher: warning: {text}") + "\n")
        self.err.flush()

    def show_live(self, text: str) -> None:
        if not self.live:
            return
        self.out.write("\r\x1b[K" + scrub(text))
        self.out.flush()
        self._showing = True

    def clear_live(self) -> None:
        if self._showing:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._showing = False
