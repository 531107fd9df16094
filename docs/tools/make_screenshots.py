#!/usr/bin/env python3
"""Regenerate every picture of docs/screenshots.md from scratch, without network.

    .venv/bin/python docs/tools/make_screenshots.py            # all pictures into docs/img
    .venv/bin/python docs/tools/make_screenshots.py --only status,mail --keep

Everything shown is the real output of the real commands, run as subprocesses against
the bundled Cohere simulator, which runs inside this script with a manual clock so that
the script decides when each fine-tune moves on:

* ``status``: ``finetune-watcher once`` runs twice against a handful of simulated
  fine-tunes (between the two runs the clock jumps ahead and one model starts failing
  with HTTP 503), then ``finetune-watcher status`` runs in a tmux pane.
* ``mail``: the notifications of those ``once`` runs go to a ``mailto://`` target, an
  aiosmtpd server on loopback (``tests/receivers.py``); the received e-mails are drawn
  in a plain mail-reader frame.
* ``events``: ``finetune-watcher events ID --follow`` in a tmux pane while the script moves
  the simulated model QUEUED -> FINETUNING -> READY.
* ``demo``: ``finetune-watcher demo`` in a tmux pane.

Terminal captures keep their colours (``tmux capture-pane -e``); a small SGR-to-HTML
converter turns them into a page that headless Chromium screenshots. Needs Debian's
``tmux`` and ``chromium`` (and fonts-dejavu-core, fonts-noto-color-emoji for the
glyphs), plus the test extra of this project (``aiosmtpd``). Every socket is on
127.0.0.1; Chromium is started with DNS disabled and pages that forbid remote content.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the working tree's watcher and tests.receivers

import anyio  # noqa: E402
import yaml  # noqa: E402

from tests.receivers import ReceivedMail, free_port, smtp_receiver  # noqa: E402
from watcher.simulator import RunningSimulator, parse_scenario, running_simulator  # noqa: E402

PICTURES = ("status", "events", "mail", "demo")
SIM_KEY = "sim-key-screenshots"
DEVICE_SCALE = 1.5  # sharper than 1 on dense screens, PNGs stay well under 300 KB
TMUX_ROWS = 30
TIMEOUT = 60.0  # seconds any one step may take

# Ids that look like Cohere's (UUIDs), and the names people gave them.
READY_ID = "4f9d0c1e-7b2a-4c6d-9e1f-2a3b4c5d6e7f"
FAILED_ID = "8a2b7e55-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
TRAINING_ID = "c0ffee00-5d6e-4f70-8192-a3b4c5d6e7f8"
ERROR_ID = "9b1c2d3e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
DISCOVERED_ID = "d15c0e7e-2a3b-4c5d-8e6f-7a8b9c0d1e2f"
UNPOLLED_ID = "0a0a0a0a-3c4d-4e5f-9a0b-1c2d3e4f5a6b"
FOLLOW_ID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"


def note(text: str) -> None:
    print(f"make_screenshots: {text}", file=sys.stderr, flush=True)


# --- the commands ---------------------------------------------------------------------


@dataclass
class Toolbox:
    """Paths and environments shared by every step."""

    work: Path
    tmux: str
    chromium: str
    bin_dir: Path = field(init=False)
    tmux_socket: str = field(init=False)
    tmux_conf: Path = field(init=False)

    def __post_init__(self) -> None:
        # A private tmux server (its own socket and configuration), stopped at the end.
        self.tmux_socket = f"fw-screenshots-{os.getpid()}"
        self.tmux_conf = self.work / "tmux.conf"
        self.tmux_conf.write_text("set -g status off\nset -g history-limit 5000\n")
        # ``finetune-watcher`` on PATH runs this working tree with this interpreter.
        self.bin_dir = self.work / "bin"
        self.bin_dir.mkdir()
        wrapper = self.bin_dir / "finetune-watcher"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m watcher "$@"\n')
        wrapper.chmod(0o755)

    def env(self, **extra: str) -> dict[str, str]:
        """A small, clean environment: no WATCHER_*/CO_API_* from the developer's shell."""
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.work),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "TZ": "UTC",
        }
        env.update(extra)
        return env


async def run_command(
    tools: Toolbox, args: Sequence[str], *, cwd: Path, log: Path, env: dict[str, str]
) -> int:
    """Run ``finetune-watcher ARGS`` to its end (the simulator keeps serving meanwhile)."""
    with anyio.fail_after(TIMEOUT):
        result = await anyio.run_process(["finetune-watcher", *args], cwd=cwd, env=env, check=False)
    await anyio.Path(log).write_bytes(result.stdout + result.stderr)
    return result.returncode


# --- tmux -----------------------------------------------------------------------------


@dataclass
class Pane:
    """A command running in its own detached tmux session on a private server socket."""

    tools: Toolbox
    name: str
    cols: int
    rows: int = TMUX_ROWS

    async def _tmux(self, *args: str) -> str:
        result = await tmux(self.tools, *args, check=True)
        return result.stdout.decode("utf-8", "replace")

    async def start(self, shown: str, command: str, env: dict[str, str], cwd: Path) -> Path:
        """Show a prompt and ``shown``, run ``command``; returns where its exit code lands."""
        done = self.tools.work / f"{self.name}.exit"
        done.unlink(missing_ok=True)
        script = self.tools.work / f"{self.name}.sh"
        script.write_text(
            f"cd {shlex.quote(str(cwd))}\n"
            f"printf '\\033[1;32m$\\033[0m %s\\n' {shlex.quote(shown)}\n"
            f"{command}\n"
            f"echo $? > {shlex.quote(str(done))}\n"
            "printf '\\033[1;32m$\\033[0m '\n"
            "exec sleep 3600\n"
        )
        flags = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
        await self._tmux(
            "new-session", "-d", "-s", self.name, "-x", str(self.cols), "-y", str(self.rows),
            *flags, f"sh {shlex.quote(str(script))}",
        )  # fmt: skip
        return done

    async def text(self, *, colours: bool = False) -> str:
        args = ["capture-pane", "-p", "-t", self.name, "-S", "-", "-E", "-"]
        return await self._tmux(*args, *(["-e"] if colours else []))

    # Polling is the only way to wait on what another process draws or writes.
    async def wait_for(self, needle: str) -> None:
        with anyio.fail_after(TIMEOUT):
            while needle not in await self.text():  # noqa: ASYNC110
                await anyio.sleep(0.1)

    async def wait_exit(self, done: Path) -> int:
        exit_file = anyio.Path(done)
        with anyio.fail_after(TIMEOUT):
            while not (await exit_file.exists() and (await exit_file.read_text()).strip()):  # noqa: ASYNC110
                await anyio.sleep(0.1)
        await anyio.sleep(0.3)  # let the closing prompt reach the pane
        return int(await exit_file.read_text())

    async def close(self) -> None:
        await self._tmux("kill-session", "-t", self.name)


async def tmux(tools: Toolbox, *args: str, check: bool) -> subprocess.CompletedProcess[bytes]:
    """Run a tmux command against the private server (UTF-8, our configuration)."""
    command = [tools.tmux, "-u", "-L", tools.tmux_socket, "-f", str(tools.tmux_conf), *args]
    return await anyio.run_process(command, env=tools.env(TERM="xterm-256color"), check=check)


async def stop_tmux_server(tools: Toolbox) -> None:
    await tmux(tools, "kill-server", check=False)


@dataclass(frozen=True)
class Screen:
    """A terminal capture: ANSI text and the terminal's width."""

    title: str
    ansi: str
    cols: int


# --- scenario 1: status and the e-mails -----------------------------------------------


def status_scenario(start: datetime) -> dict[str, Any]:
    """Five fine-tunes; times are seconds after ``start`` (three hours before now).

    support-classifier becomes READY and intent-router FAILED a minute before "now".
    """
    q, ft, ready, failed = "STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_READY", "STATUS_FAILED"
    return {
        "api_key": SIM_KEY,
        "clock": "manual",
        "start": start.isoformat(),
        "page_size_cap": 2,
        "models": [
            {
                "id": READY_ID,
                "name": "support-classifier",
                "base_model": "command-r-08-2024",
                "timeline": [[2580, q], [2645, ft], [10725, ready]],
                "metrics": {"loss": 0.0841, "accuracy": 0.912},
            },
            {
                "id": FAILED_ID,
                "name": "intent-router",
                "base_model": "command-r-08-2024",
                "timeline": [[1200, q], [1390, ft], [10760, failed]],
            },
            {
                "id": TRAINING_ID,
                "name": "summariser-xl",
                "base_model": "command-r-plus-08-2024",
                "timeline": [[1800, q], [1865, ft]],
            },
            {
                "id": ERROR_ID,
                "name": "faq-retriever",
                "timeline": [[3600, q], [4020, ft]],
            },
            {
                "id": DISCOVERED_ID,
                "name": "triage-bot-v2",
                "timeline": [[6000, q], [6100, ft]],
            },
        ],
    }


def status_config(
    sim: RunningSimulator, mail_url: str, dead_url: str, *, with_new_model: bool, fmt: str
) -> dict[str, Any]:
    models: list[Any] = [
        {"id": READY_ID, "name": "support-classifier", "urls": [dead_url]},
        {"id": FAILED_ID, "name": "intent-router"},
        {"id": TRAINING_ID, "name": "summariser-xl"},
        {"id": ERROR_ID, "name": "faq-retriever"},
    ]
    if with_new_model:
        models.append({"id": UNPOLLED_ID, "name": "release-notes-gen"})
    return {
        "cohere": {"base_url": sim.base_url, "timeout": 5},
        "poll": {"interval": 60, "jitter": 0.0},
        "state": {"path": "state/watcher.db"},
        "notify": {"urls": [mail_url], "timeout": 10, "format": fmt},
        "discover": {"enabled": True, "include": ["triage-*"]},
        "models": models,
    }


async def capture_status_and_mail(
    tools: Toolbox, mail_format: str
) -> tuple[Screen, list[ReceivedMail]]:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=3)
    scenario = parse_scenario(status_scenario(start), source="status scenario")
    home = tools.work / "status"
    (home / "config").mkdir(parents=True)
    config = home / "config" / "watcher.yaml"  # the default path: `status` needs no -c
    env = tools.env(CO_API_KEY=SIM_KEY)
    with smtp_receiver() as smtp:
        mail_url = smtp.url(to="ml-team@example.com", sender="finetune-watcher@example.com")
        dead_url = f"json://127.0.0.1:{free_port()}/hooks/ml-oncall"  # nobody listens
        async with running_simulator(scenario) as sim:

            def write(with_new_model: bool) -> None:
                document = status_config(
                    sim, mail_url, dead_url, with_new_model=with_new_model, fmt=mail_format
                )
                config.write_text(yaml.safe_dump(document, sort_keys=False))

            write(False)
            # Round 1, as 45 minutes ago: every model queued or fine-tuning.
            sim.set_time(3 * 3600 - 45 * 60)
            code = await run_command(tools, ["once"], cwd=home, log=home / "once-1.log", env=env)
            if code != 0:
                raise RuntimeError(f"once (round 1) exited {code}; see {home / 'once-1.log'}")
            # Round 2, now: two models settled, one starts failing, a target is down.
            sim.add_fault({"kind": "http_503", "model": ERROR_ID, "times": None})
            sim.set_time((datetime.now(UTC) - start).total_seconds() - 1)
            code = await run_command(tools, ["once"], cwd=home, log=home / "once-2.log", env=env)
            if code != 0:
                raise RuntimeError(f"once (round 2) exited {code}; see {home / 'once-2.log'}")
            await smtp.wait_for(2, timeout=TIMEOUT)
            mails = sorted(smtp.messages, key=lambda m: m.subject)
        # A model added to the configuration since: not polled yet.
        write(True)
        await anyio.sleep(12)  # so LAST POLL reads like a daemon's, not "just now"
        pane = Pane(tools, "status", cols=160)
        done = await pane.start("finetune-watcher status", "finetune-watcher status", env, home)
        code = await pane.wait_exit(done)
        if code != 0:
            raise RuntimeError(f"status exited {code}:\n{await pane.text()}")
        screen = Screen("finetune-watcher status", await pane.text(colours=True), pane.cols)
        await pane.close()
    return screen, mails


# --- scenario 2: events --follow ------------------------------------------------------


async def capture_events_follow(tools: Toolbox) -> tuple[Screen, Screen]:
    """The model is queued 5 s before ``events --follow`` starts; the script moves it on."""
    queued_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    to_finetuning, to_ready = 192, 192 + 2 * 3600 + 14 * 60 + 5
    scenario = parse_scenario(
        {
            "api_key": SIM_KEY,
            "clock": "manual",
            "start": queued_at.isoformat(),
            "models": [
                {
                    "id": FOLLOW_ID,
                    "name": "support-classifier-v2",
                    "timeline": [
                        [0, "STATUS_QUEUED"],
                        [to_finetuning, "STATUS_FINETUNING"],
                        [to_ready, "STATUS_READY"],
                    ],
                }
            ],
        },
        source="events scenario",
    )
    home = tools.work / "events"
    home.mkdir()  # no config/watcher.yaml here: `events` uses the environment
    async with running_simulator(scenario) as sim:
        env = tools.env(CO_API_KEY=SIM_KEY, CO_API_URL=sim.base_url)
        command = f"finetune-watcher events {FOLLOW_ID} --follow --interval 1"
        pane = Pane(tools, "events", cols=110, rows=12)
        done = await pane.start(command, command, env, home)
        await pane.wait_for("polled")  # the live line: QUEUED for 5s · polled just now
        await anyio.sleep(2.5)
        live = Screen(command, await pane.text(colours=True), pane.cols)
        sim.set_time(to_finetuning)
        await pane.wait_for("FINETUNING")
        await anyio.sleep(2.5)
        sim.set_time(to_ready)
        code = await pane.wait_exit(done)
        if code != 0:
            raise RuntimeError(f"events --follow exited {code}:\n{await pane.text()}")
        final = Screen(command, await pane.text(colours=True), pane.cols)
        await pane.close()
    return live, final


# --- scenario 3: the demo -------------------------------------------------------------


async def capture_demo(tools: Toolbox) -> Screen:
    home = tools.work / "demo"
    home.mkdir()
    pane = Pane(tools, "demo", cols=120, rows=45)
    done = await pane.start("finetune-watcher demo", "finetune-watcher demo", tools.env(), home)
    code = await pane.wait_exit(done)
    if code != 0:
        raise RuntimeError(f"demo exited {code}:\n{await pane.text()}")
    screen = Screen("finetune-watcher demo", await pane.text(colours=True), pane.cols)
    await pane.close()
    return screen


# --- ANSI (SGR) to HTML ---------------------------------------------------------------

_PALETTE = (  # 0-7 normal, 8-15 bright: a dark terminal theme
    "#3b4048", "#f07178", "#8fd16f", "#e6c35c", "#61afef", "#c678dd", "#56b6c2", "#d7dae0",
    "#5c6370", "#ff8a8f", "#a8e08a", "#f2d479", "#82c0ff", "#d99cf0", "#7fd3dd", "#ffffff",
)  # fmt: skip
_SGR = re.compile(r"\x1b\[([0-9;:]*)m")
_OTHER_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-ln-z]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][A-Z0-9])")


def _xterm_colour(index: int) -> str:
    if index < 16:
        return _PALETTE[index]
    if index < 232:
        index -= 16
        levels = [0, 95, 135, 175, 215, 255]
        r, g, b = levels[index // 36], levels[(index // 6) % 6], levels[index % 6]
        return f"#{r:02x}{g:02x}{b:02x}"
    grey = 8 + (index - 232) * 10
    return f"#{grey:02x}{grey:02x}{grey:02x}"


@dataclass
class _Pen:
    fg: str | None = None
    bg: str | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False

    def css(self) -> str:
        rules = []
        if self.fg:
            rules.append(f"color:{self.fg}")
        if self.bg:
            rules.append(f"background:{self.bg}")
        if self.bold:
            rules.append("font-weight:bold")
        if self.dim:
            rules.append("opacity:.6")
        if self.italic:
            rules.append("font-style:italic")
        if self.underline:
            rules.append("text-decoration:underline")
        return ";".join(rules)

    def reset(self) -> None:
        self.fg = self.bg = None
        self.bold = self.dim = self.italic = self.underline = False

    def apply(self, params: str) -> None:
        codes = [int(p) if p.isdigit() else 0 for p in re.split("[;:]", params)] if params else [0]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                self.reset()
            elif code == 1:
                self.bold = True
            elif code == 2:
                self.dim = True
            elif code == 3:
                self.italic = True
            elif code == 4:
                self.underline = True
            elif code == 22:
                self.bold = self.dim = False
            elif code == 23:
                self.italic = False
            elif code == 24:
                self.underline = False
            elif 30 <= code <= 37 or 90 <= code <= 97:
                self.fg = _PALETTE[code - 30 if code < 90 else code - 82]
            elif 40 <= code <= 47 or 100 <= code <= 107:
                self.bg = _PALETTE[code - 40 if code < 100 else code - 92]
            elif code == 39:
                self.fg = None
            elif code == 49:
                self.bg = None
            elif code in (38, 48) and i + 1 < len(codes):
                colour = None
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    colour, i = _xterm_colour(codes[i + 2]), i + 2
                elif codes[i + 1] == 2 and i + 4 < len(codes):
                    r, g, b = codes[i + 2 : i + 5]
                    colour, i = f"#{r:02x}{g:02x}{b:02x}", i + 4
                if code == 38:
                    self.fg = colour
                else:
                    self.bg = colour
            i += 1


def _cell_html(text: str) -> str:
    """Escape text; wide characters (emoji) get two cells, as on the terminal."""
    out = []
    for char in text:
        escaped = html.escape(char)
        if unicodedata.east_asian_width(char) in ("W", "F"):
            out.append(f'<span class="wide">{escaped}</span>')
        else:
            out.append(escaped)
    return "".join(out)


def ansi_to_html(ansi: str) -> str:
    """The captured pane as HTML spans (SGR colours and attributes; other escapes dropped)."""
    lines = ansi.replace("\r", "").split("\n")
    while lines and not _SGR.sub("", lines[-1]).strip():
        lines.pop()
    pen = _Pen()
    out: list[str] = []
    for line in lines:
        line = _OTHER_ESCAPE.sub("", line)
        position = 0
        for match in _SGR.finditer(line):
            out.append(_span(line[position : match.start()], pen))
            pen.apply(match.group(1))
            position = match.end()
        out.append(_span(line[position:], pen))
        out.append("\n")
    return "".join(out).rstrip("\n")


def _span(text: str, pen: _Pen) -> str:
    if not text:
        return ""
    css = pen.css()
    body = _cell_html(text)
    return f'<span style="{css}">{body}</span>' if css else body


# --- pages ----------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>
html, body {{ margin: 0; background: transparent; }}
body {{ padding: 14px; display: inline-block; }}
{css}
</style></head>
<body><div id="shot">{body}</div>
<script>
const r = document.getElementById('shot').getBoundingClientRect();
document.title = Math.ceil(r.right + 14) + 'x' + Math.ceil(r.bottom + 14);
</script></body></html>
"""

_TERMINAL_CSS = """
#shot { display: inline-block; border-radius: 8px; overflow: hidden; background: #1f2329;
        box-shadow: 0 2px 10px rgba(0, 0, 0, .35); }
.bar { background: #30353d; height: 28px; display: flex; align-items: center; padding: 0 12px;
       font: 13px "DejaVu Sans", sans-serif; color: #aab1bb; }
.dot { width: 12px; height: 12px; border-radius: 50%; margin-right: 7px; }
.title { flex: 1; text-align: center; margin-right: 57px; white-space: nowrap; }
pre { margin: 0; padding: 12px 16px 14px; color: #d7dae0;
      font: 14px/1.4 "DejaVu Sans Mono", "Noto Color Emoji", monospace; }
.wide { display: inline-block; width: 2ch; text-align: center; }
"""


def terminal_page(screen: Screen) -> str:
    plain = _SGR.sub("", screen.ansi)
    widest = max((_cells(line) for line in plain.split("\n")), default=0)
    cols = max(72, widest + 1)
    dots = "".join(
        f'<span class="dot" style="background:{c}"></span>'
        for c in ("#ff5f57", "#febc2e", "#28c840")
    )
    body = (
        f'<div class="bar">{dots}<span class="title">{html.escape(screen.title)}</span></div>'
        f'<pre style="width:{cols}ch">{ansi_to_html(screen.ansi)}</pre>'
    )
    return _PAGE.format(css=_TERMINAL_CSS, body=body)


def _cells(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in line)


_MAIL_CSS = """
#shot { width: 840px; background: #ffffff; border: 1px solid #d0d7de; border-radius: 8px;
        box-shadow: 0 2px 10px rgba(0, 0, 0, .12); overflow: hidden;
        font: 15px/1.5 "DejaVu Sans", "Liberation Sans", "Noto Color Emoji", sans-serif;
        color: #1f2328; }
.head { padding: 18px 24px 14px; border-bottom: 1px solid #d8dee4; background: #f6f8fa; }
.subject { font-size: 20px; font-weight: bold; margin-bottom: 10px; }
.meta { display: grid; grid-template-columns: 64px 1fr; row-gap: 2px; font-size: 13.5px;
        color: #59636e; }
.meta b { font-weight: normal; color: #818b98; }
.body { padding: 20px 24px 24px; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font: inherit; }
.body p { margin: 0 0 1em; }
.body > :last-child { margin-bottom: 0; }
a { color: #0969da; }
"""

_URL = re.compile(r"https?://[^\s<>\"]+")


def mail_page(mail: ReceivedMail) -> str:
    """The e-mail as a plain mail reader shows it: headers, then its preferred body part."""
    message: EmailMessage = mail.message
    meta = "".join(
        f"<b>{label}</b><span>{html.escape(str(message[header] or ''))}</span>"
        for label, header in (("From", "From"), ("To", "To"), ("Date", "Date"))
    )
    part = message.get_body(preferencelist=("html", "plain"))
    content = str(part.get_content()) if part is not None else ""
    if part is not None and part.get_content_type() == "text/html":
        inner = re.search(r"<body[^>]*>(.*)</body>", content, re.S | re.I)
        body = inner.group(1) if inner else content
    else:
        # Mail readers turn URLs in plain text into links; so does this frame.
        escaped = html.escape(content.strip("\n"))
        body = (
            '<pre class="text">'
            + _URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)
            + "</pre>"
        )
    page = (
        f'<div class="head"><div class="subject">{html.escape(mail.subject)}</div>'
        f'<div class="meta">{meta}</div></div><div class="body">{body}</div>'
    )
    return _PAGE.format(css=_MAIL_CSS, body=page)


# --- Chromium -------------------------------------------------------------------------


def chromium_args(chromium: str, profile: Path) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no DNS: nothing can leave the machine
        "--default-background-color=00000000",
        f"--user-data-dir={profile}",
    ]


def render_png(tools: Toolbox, page: str, out: Path) -> tuple[int, int]:
    """Screenshot ``page`` at exactly its content's size; returns that size in CSS pixels."""
    source = tools.work / f"{out.stem}.html"
    source.write_text(page, encoding="utf-8")
    url = source.as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-", dir=tools.work) as profile:
        base = chromium_args(tools.chromium, Path(profile))
        measured = subprocess.run(  # noqa: S603 -- our own arguments
            [*base, "--window-size=2400,3000", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        ).stdout
        match = re.search(r"<title>(\d+)x(\d+)</title>", measured)
        if match is None:
            raise RuntimeError(f"could not measure {source}")
        width, height = int(match.group(1)), int(match.group(2))
        subprocess.run(  # noqa: S603 -- our own arguments
            [
                *base,
                f"--force-device-scale-factor={DEVICE_SCALE}",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                url,
            ],
            capture_output=True,
            timeout=TIMEOUT,
            check=True,
        )
    return width, height


# --- main -----------------------------------------------------------------------------


def find_tool(names: Sequence[str], package: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(
        f"make_screenshots: {names[0]} not found; on Debian: apt-get install -y {package}"
    )


async def capture(tools: Toolbox, only: set[str], mail_format: str) -> dict[str, Any]:
    shots: dict[str, Any] = {}
    try:
        if only & {"status", "mail"}:
            note("status and e-mail: two `once` rounds against the simulator, then `status`")
            shots["status"], shots["mails"] = await capture_status_and_mail(tools, mail_format)
        if "events" in only:
            note("events --follow: the model moves QUEUED -> FINETUNING -> READY")
            shots["events-live"], shots["events"] = await capture_events_follow(tools)
        if "demo" in only:
            note("demo")
            shots["demo"] = await capture_demo(tools)
    finally:
        await stop_tmux_server(tools)
    return shots


def render_all(tools: Toolbox, shots: dict[str, Any], only: set[str], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, Callable[[], str]]] = []
    if "status" in only:
        jobs.append(("status", lambda: terminal_page(shots["status"])))
    if "events" in only:
        jobs.append(("events-follow", lambda: terminal_page(shots["events"])))
        jobs.append(("events-follow-live", lambda: terminal_page(shots["events-live"])))
    if "mail" in only:
        by_subject = {m.subject: m for m in shots["mails"]}
        ready = next(m for s, m in by_subject.items() if "ready" in s)
        failed = next(m for s, m in by_subject.items() if "failed" in s)
        jobs.append(("notification-email", lambda: mail_page(ready)))
        jobs.append(("notification-email-failed", lambda: mail_page(failed)))
    if "demo" in only:
        jobs.append(("demo", lambda: terminal_page(shots["demo"])))
    for name, page in jobs:
        target = out_dir / f"{name}.png"
        width, height = render_png(tools, page(), target)
        note(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} "
             f"({width}x{height} CSS px, {target.stat().st_size // 1024} KB)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="default: docs/img")
    parser.add_argument(
        "--only",
        default=",".join(PICTURES),
        help=f"comma-separated subset of {','.join(PICTURES)} (default: all)",
    )
    parser.add_argument(
        "--mail-format",
        choices=("text", "markdown", "html"),
        default="text",
        help="notify.format of the e-mails (default: text, the watcher's default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, pages)")
    args = parser.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := only - set(PICTURES):
        parser.error(f"unknown pictures: {', '.join(sorted(unknown))}")

    tmux = find_tool(["tmux"], "tmux")
    chromium = find_tool(["chromium", "chromium-browser", "google-chrome"], "chromium")
    work = Path(tempfile.mkdtemp(prefix="finetune-watcher-screenshots-"))
    started = time.monotonic()
    try:
        tools = Toolbox(work, tmux, chromium)
        shots = anyio.run(capture, tools, only, args.mail_format)
        render_all(tools, shots, only, args.out.resolve())
    finally:
        if args.keep:
            note(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    note(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
