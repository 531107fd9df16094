"""``finetune-watcher manpage`` (hidden): the manual page, in roff, from the parser.

Every command's description, options and epilog come from the same argparse objects
``--help`` prints; this module only lays them out as ``man 7 man-pages`` asks.
``finetune-watcher manpage > finetune-watcher.1; man ./finetune-watcher.1``.
"""

from __future__ import annotations

import argparse

from watcher.commands.base import Subparsers, load_every_command
from watcher.errors import EX_OK

__all__ = ["CONFIG_HELP", "add_parser", "manpage", "render_manpage"]

CONFIG_HELP = None

FILES = """\
.TP
.I /etc/finetune\\-watcher/watcher.yaml
The system\\-wide configuration (\\fBfinetune\\-watcher init\\fR writes a commented one).
.TP
.I ~/.config/finetune\\-watcher/watcher.yaml
The per\\-user configuration ($XDG_CONFIG_HOME).
.TP
.I /var/lib/finetune\\-watcher/watcher.db
The state of the system\\-wide install ($STATE_DIRECTORY under systemd).
.TP
.I ~/.local/state/finetune\\-watcher/watcher.db
The per\\-user state ($XDG_STATE_HOME); without a home directory, watcher.db next to
the configuration file.
"""

ENVIRONMENT = """\
.TP
.B WATCHER_CONFIG
The configuration file when \\fB\\-c\\fR is not given.
.TP
.B WATCHER_\\fISECTION\\fB__\\fIKEY\\fR
Overrides \\fIsection.key\\fR of the configuration (lists and mappings as JSON).
.TP
.B WATCHER_LOG_LEVEL\\fR, \\fBWATCHER_LOG_FORMAT
Defaults of \\fB\\-\\-log\\-level\\fR and \\fB\\-\\-log\\-format\\fR.
.TP
.B CO_API_KEY\\fR, \\fBCOHERE_API_KEY\\fR, \\fBOPENAI_API_KEY\\fR, ...
A provider's API key, as its official SDK reads it.
.TP
.B STATE_DIRECTORY\\fR, \\fBXDG_STATE_HOME\\fR, \\fBXDG_CONFIG_HOME
Where the state and the configuration are looked for (see FILES).
"""


EPILOG = """\
example:
  finetune-watcher manpage > finetune-watcher.1 && man ./finetune-watcher.1

exit codes:
  0   the page was printed
"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    # No help=: left out of the command list (a packaging aid, not a user command).
    parser = subparsers.add_parser(
        "manpage",
        description="Print the manual page (roff) built from the parser.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=manpage, exit_on_early_sigterm=False)
    return parser


def _roff(text: str) -> str:
    """``text`` escaped for roff: backslashes, hyphens, and a leading dot or quote."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        ("\\&" + line) if line.startswith((".", "'")) else line for line in out.splitlines()
    )


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            metavar = ""
            if action.nargs != 0:
                metavar = " " + (
                    action.metavar
                    if isinstance(action.metavar, str)
                    else "{" + ",".join(map(str, action.choices or ())) + "}"
                    if action.choices
                    else action.dest.upper()
                )
            spelled = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
            lines += [".TP", spelled + _roff(metavar)]
        else:
            choices = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else None
            lines += [".TP", f"\\fI{_roff(choices or str(action.metavar or action.dest))}\\fR"]
        lines.append(_roff(action.help or ""))
    return lines


def render_manpage(parser: argparse.ArgumentParser, version: str) -> str:
    """The manual page of ``parser`` (section 1): NAME, SYNOPSIS, DESCRIPTION, OPTIONS,
    COMMANDS, EXIT STATUS, FILES, ENVIRONMENT."""
    load_every_command(parser)  # every command's options, not only their names
    prog = parser.prog
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = {a.dest: a.help for a in subparsers._choices_actions}
    out = [
        f'.TH {prog.upper()} 1 "" "{prog} {version}" "User Commands"',
        ".SH NAME",
        f"{_roff(prog)} \\- {_roff(parser.description or '')}",
        ".SH SYNOPSIS",
        f"\\fB{_roff(prog)}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(parser.description or ""),
        ".SH OPTIONS",
        *_options(parser),
        ".SH COMMANDS",
    ]
    for name, sub in subparsers.choices.items():
        if name not in listed:
            continue  # hidden commands (this one)
        out += [".SS " + _roff(name), _roff(listed[name] or "")]
        if sub.description and sub.description != listed[name]:
            out += [".PP", ".nf", _roff(sub.description), ".fi"]
        out += _options(sub)
        if sub.epilog:
            out += [".PP", ".nf", _roff(sub.epilog.rstrip()), ".fi"]
    out += [".SH EXIT STATUS", ".nf", _roff((parser.epilog or "").rstrip()), ".fi"]
    out += [".SH FILES", FILES.rstrip(), ".SH ENVIRONMENT", ENVIRONMENT.rstrip()]
    return "\n".join(out) + "\n"


def manpage(args: argparse.Namespace) -> int:
    from watcher import __version__

    print(render_manpage(args.root_parser, __version__), end="")
    return EX_OK
