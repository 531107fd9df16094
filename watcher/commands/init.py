"""``finetune-watcher init``: write a commented configuration (and, with ``--systemd``, the
unit and its environment file) from the copies shipped in the package.

The wheel ships ``watcher/data/watcher.example.yaml`` and
``watcher/data/finetune-watcher.service`` (the checkout's ``config/`` and ``systemd/``
files are links to them: one copy), so a pipx user needs no checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from watcher.commands.base import Subparsers, add_command
from watcher.errors import EX_FAILURE, EX_OK

__all__ = [
    "CONFIG_HELP",
    "ENV_FILE",
    "EXAMPLE_CONFIG",
    "UNIT_FILE",
    "add_parser",
    "init",
    "init_config_path",
    "shipped_text",
]

CONFIG_HELP = (
    "where to write the configuration (default: $WATCHER_CONFIG, else "
    "/etc/finetune-watcher/watcher.yaml as root, else "
    "$XDG_CONFIG_HOME/finetune-watcher/watcher.yaml, ~/.config when unset)"
)

#: The shipped files, under ``watcher/data/``.
EXAMPLE_CONFIG = "watcher.example.yaml"
UNIT_FILE = "finetune-watcher.service"
#: Where the unit reads its environment file (``EnvironmentFile=-...``) and its config.
ENV_FILE = Path("/etc/finetune-watcher/watcher.env")
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
UNIT_BINARY = "/usr/local/bin/finetune-watcher"

ENV_TEMPLATE = """\
# finetune-watcher's environment: EnvironmentFile= of finetune-watcher.service.
# Root-only (mode 0600): it may hold secrets. One VARIABLE=value a line, no quotes needed.
#
# The API key, when it is not the credential /etc/credstore/cohere-api-key:
#CO_API_KEY=
# Any setting, e.g. apprise URLs that hold tokens (JSON for lists):
#WATCHER_NOTIFY__URLS=["slack://TOKENA/TOKENB/TOKENC/#fine-tuning"]
# Logs: debug, info, warning, error.
#WATCHER_LOG_LEVEL=info
"""

EPILOG = """\
examples:
  finetune-watcher init                       # the default location (see -c)
  finetune-watcher init -c ./watcher.yaml     # a file of your choosing
  sudo finetune-watcher init --systemd        # plus /etc/systemd/system/finetune-watcher.service
                                              # and /etc/finetune-watcher/watcher.env
  finetune-watcher init --systemd --dest out/ # all three files into out/ (to review first)

exit codes:
  0   the files were written
  1   a file exists (pass --force to overwrite it) or cannot be written
"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "init",
        init,
        summary="Write a commented configuration (and, with --systemd, the unit).",
        description=(
            "Write the commented example configuration to the default location (or -c FILE);\n"
            "with --systemd, also the systemd unit and its environment file, then print\n"
            "the commands that remain. Existing files are kept unless --force is given."
        ),
        epilog=EPILOG,
    )
    parser.add_argument(
        "--systemd",
        action="store_true",
        help="also write finetune-watcher.service and watcher.env",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        metavar="DIR",
        help="with --systemd: write the unit and watcher.env into DIR "
        "(default: /etc/systemd/system and /etc/finetune-watcher)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def shipped_text(name: str) -> str:
    """The text of a file shipped under ``watcher/data/`` (``EXAMPLE_CONFIG``, ``UNIT_FILE``)."""
    from importlib.resources import files

    return files("watcher").joinpath("data", name).read_text(encoding="utf-8")


def init_config_path(environ: dict[str, str] | None = None, *, is_root: bool | None = None) -> Path:
    """Where ``init`` writes when ``-c`` is not given: ``$WATCHER_CONFIG``, else the system
    file as root, else the per-user file (what ``watcher.paths`` then finds first)."""
    from watcher import paths

    environ = dict(os.environ) if environ is None else environ
    explicit = environ.get("WATCHER_CONFIG", "").strip()
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0 if is_root is None else is_root:
        return paths.SYSTEM_CONFIG
    candidates = paths.config_candidates(environ)
    # [system, user, legacy] or [system, legacy] without a home directory.
    return candidates[1] if len(candidates) == 3 else paths.SYSTEM_CONFIG


def _write(path: Path, text: str, *, mode: int, force: bool) -> None:
    """Write ``text`` to ``path`` (its folder created), refusing an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_TRUNC if force else os.O_EXCL
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(path, mode)


def _unit_text(binary: str | None) -> str:
    """The shipped unit, its ``/usr/local/bin/finetune-watcher`` replaced by ``binary``."""
    text = shipped_text(UNIT_FILE)
    return text.replace(UNIT_BINARY, binary) if binary else text


def _installed_binary() -> str | None:
    """The absolute path of this ``finetune-watcher`` script, when it is one."""
    import shutil

    found = shutil.which("finetune-watcher")
    return os.path.abspath(found) if found else None


def init(args: argparse.Namespace) -> int:
    """Write the files; print what was written and what to do next."""
    config: Path = args.config if args.config is not None else init_config_path()
    planned: list[tuple[Path, str, int]] = [(config, shipped_text(EXAMPLE_CONFIG), 0o644)]
    binary = _installed_binary()
    if args.systemd:
        unit_dir = args.dest if args.dest is not None else SYSTEM_UNIT_DIR
        env_dir = args.dest if args.dest is not None else ENV_FILE.parent
        planned.append((unit_dir / UNIT_FILE, _unit_text(binary), 0o644))
        planned.append((env_dir / ENV_FILE.name, ENV_TEMPLATE, 0o600))
    elif args.dest is not None:
        print("finetune-watcher: --dest applies to --systemd only", file=sys.stderr)
        return EX_FAILURE
    if not args.force:
        existing = [str(path) for path, _, _ in planned if path.exists() or path.is_symlink()]
        if existing:
            print(
                f"finetune-watcher: {', '.join(existing)} already exist"
                f"{'s' if len(existing) == 1 else ''}; pass --force to overwrite",
                file=sys.stderr,
            )
            return EX_FAILURE
    for path, text, mode in planned:
        try:
            _write(path, text, mode=mode, force=args.force)
        except OSError as exc:
            print(f"finetune-watcher: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return EX_FAILURE
        print(f"wrote {path}")
    print()
    print("next:")
    print(f"  edit {config}  (models, notify.urls)")
    if args.systemd:
        _print_systemd_steps(config, args.dest, binary)
    else:
        print("  export CO_API_KEY=...  (or cohere.api_key_file; other providers: their own)")
        print(f"  finetune-watcher check-config -c {config}")
        print(f"  finetune-watcher run -c {config}")
    return EX_OK


def _print_systemd_steps(config: Path, dest: Path | None, binary: str | None) -> None:
    from watcher import paths

    if dest is not None:
        print(f"  sudo install -m 0644 {dest / UNIT_FILE} {SYSTEM_UNIT_DIR}/")
        print(f"  sudo install -D -m 0600 {dest / ENV_FILE.name} {ENV_FILE}")
    if Path(os.path.abspath(config)) != paths.SYSTEM_CONFIG:
        print(f"  sudo install -D -m 0644 {config} {paths.SYSTEM_CONFIG}  (the unit reads this)")
    if binary and binary.startswith(("/home/", "/root/")):
        print(
            f"  note: the unit runs {binary}, under a home directory the service cannot see "
            "(ProtectHome=yes): install system-wide (e.g. pipx install --global, or a venv "
            "in /opt) and edit ExecStart="
        )
    print("  sudo install -d -m 0700 /etc/credstore")
    print("  sudo sh -c 'umask 077; cat > /etc/credstore/cohere-api-key'   # paste the key, Ctrl-D")
    print(f"  sudo finetune-watcher check-config -c {paths.SYSTEM_CONFIG}")
    print("  sudo systemctl daemon-reload")
    print("  sudo systemctl enable --now finetune-watcher.service")
    print("  sudo finetune-watcher status   # finds the daemon's state with no flags")
