"""Default locations of the configuration and the state database.

The defaults must not depend on the working directory: two runs of the same
configuration from two directories would otherwise keep two state databases and
deliver the same notification twice, and ``status`` on a systemd host could not find
the daemon's state. Pure functions: they read only the environment mapping given and
whether a file exists.

Configuration, first match wins:

1. ``$WATCHER_CONFIG``;
2. ``/etc/finetune-watcher/watcher.yaml``, if it exists (the system-wide install);
3. ``$XDG_CONFIG_HOME/finetune-watcher/watcher.yaml`` (``~/.config`` when unset), if it
   exists;
4. ``./config/watcher.yaml`` (legacy: relative to the working directory, as before).

State: ``$STATE_DIRECTORY/watcher.db`` (systemd's ``StateDirectory=``; the first entry
when it lists several), else ``/var/lib/finetune-watcher/watcher.db`` for the system-wide
``/etc/finetune-watcher/watcher.yaml``, else ``$XDG_STATE_HOME/finetune-watcher/watcher.db``
(``~/.local/state`` when unset and ``$HOME`` is known), else ``watcher.db`` next to the
configuration file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "APP_DIR",
    "CONFIG_FILE",
    "LEGACY_CONFIG",
    "STATE_FILE",
    "SYSTEM_CONFIG",
    "SYSTEM_STATE",
    "config_candidates",
    "default_config_path",
    "default_state_path",
]

APP_DIR = "finetune-watcher"
CONFIG_FILE = "watcher.yaml"
STATE_FILE = "watcher.db"
SYSTEM_CONFIG = Path("/etc") / APP_DIR / CONFIG_FILE
#: The state of the system-wide install: the unit's StateDirectory=.
SYSTEM_STATE = Path("/var/lib") / APP_DIR / STATE_FILE
#: The old default, relative to the working directory; kept as the last resort.
LEGACY_CONFIG = Path("config") / CONFIG_FILE


def _xdg_config_home(environ: Mapping[str, str]) -> Path | None:
    """``$XDG_CONFIG_HOME`` when absolute (the spec ignores a relative one), else
    ``$HOME/.config``; None without either."""
    value = environ.get("XDG_CONFIG_HOME", "").strip()
    if value and Path(value).is_absolute():
        return Path(value)
    home = environ.get("HOME", "").strip()
    if home and Path(home).is_absolute():
        return Path(home) / ".config"
    return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a parent we may not search: treat as absent
        return False


def config_candidates(environ: Mapping[str, str]) -> list[Path]:
    """Where a configuration is looked for when ``$WATCHER_CONFIG`` is unset, in order
    (the per-user file is left out when neither ``$XDG_CONFIG_HOME`` nor ``$HOME`` is set)."""
    user = _xdg_config_home(environ)
    if user is None:
        return [SYSTEM_CONFIG, LEGACY_CONFIG]
    return [SYSTEM_CONFIG, user / APP_DIR / CONFIG_FILE, LEGACY_CONFIG]


def default_config_path(
    environ: Mapping[str, str] | None = None,
    *,
    is_file: Callable[[Path], bool] = _is_file,
) -> Path:
    """The configuration file to use when ``-c`` is not given.

    ``$WATCHER_CONFIG`` (even if the file does not exist: the caller reports that), else
    the first of ``/etc/finetune-watcher/watcher.yaml`` and
    ``$XDG_CONFIG_HOME/finetune-watcher/watcher.yaml`` that exists, else the legacy
    ``./config/watcher.yaml`` (relative to the working directory). ``environ`` defaults
    to ``os.environ``; ``is_file`` is the existence test (for tests).
    """
    environ = os.environ if environ is None else environ
    explicit = environ.get("WATCHER_CONFIG", "").strip()
    if explicit:
        return Path(explicit)
    *found, legacy = config_candidates(environ)
    for candidate in found:
        if is_file(candidate):
            return candidate
    return legacy


def default_state_path(environ: Mapping[str, str] | None, config_path: Path) -> Path:
    """The state database to use when ``state.path`` is not configured.

    1. ``$STATE_DIRECTORY/watcher.db`` under systemd (``StateDirectory=``; the first
       entry when the variable lists several, colon-separated);
    2. ``/var/lib/finetune-watcher/watcher.db`` for the system-wide configuration
       ``/etc/finetune-watcher/watcher.yaml``: the unit's ``StateDirectory=``, so that
       ``status`` run from a shell (no ``$STATE_DIRECTORY`` there) finds the daemon's state;
    3. ``$XDG_STATE_HOME/finetune-watcher/watcher.db`` when that variable holds an
       absolute path, else ``~/.local/state/finetune-watcher/watcher.db`` when ``$HOME``
       is set (and not ``/``);
    4. ``watcher.db`` next to ``config_path`` (no home directory: a system account).

    ``environ`` None means ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    state_dirs = [d.strip() for d in environ.get("STATE_DIRECTORY", "").split(":") if d.strip()]
    if state_dirs:
        return Path(state_dirs[0]) / STATE_FILE
    if Path(os.path.abspath(config_path)) == SYSTEM_CONFIG:  # also "-c watcher.yaml" in /etc/...
        return SYSTEM_STATE
    xdg_state = environ.get("XDG_STATE_HOME", "").strip()
    if xdg_state and Path(xdg_state).is_absolute():
        return Path(xdg_state) / APP_DIR / STATE_FILE
    home = environ.get("HOME", "").strip()
    if home and Path(home).is_absolute() and Path(home) != Path("/"):
        return Path(home) / ".local" / "state" / APP_DIR / STATE_FILE
    return config_path.parent / STATE_FILE
