"""``finetune-watcher demo``: the real daemon against the bundled simulator.

A mixed fleet of three fine-tunes at three providers races through its lifecycle
in seconds (``scenarios/demo-mixed.yaml``): Cohere's becomes ready, OpenAI's
fails (the simulator gives OpenAI's ``error.message``), Together's keeps training. The progress
line and the change lines say which provider each model is at. Notifications go
to a ``console://`` apprise target that prints them; the demo stops once both
have been delivered. No key, no network, no configuration file: everything lives
in a temporary folder (each provider's key is the simulator's, given as the
variable that provider's SDK reads).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import yaml

from watcher.lifecycle import Phase
from watcher.messages import format_duration, human_status
from watcher.providers import scheme_for

if TYPE_CHECKING:
    from watcher.daemon import Watcher
    from watcher.fleet import WatchedModel
    from watcher.simulator import Scenario

DEMO_TIMEOUT = 60.0
PROGRESS_EVERY = 0.2
CLEAR_LINE = "\r\033[K"
_OUT: list[TextIO] = [sys.stdout]
#: The bundled scenario the demo runs (``watcher/simulator/scenarios/demo-mixed.yaml``).
DEMO_SCENARIO = "demo-mixed"
#: Fireworks' account in the simulator's scenarios that do not name one.
_FIREWORKS_ACCOUNT = "sim-account"


def demo_scenario() -> Scenario:
    """The mixed fleet the demo watches."""
    from watcher.simulator import bundled_scenario_path, load_scenario

    return load_scenario(bundled_scenario_path(DEMO_SCENARIO))


def provider_title(provider: str) -> str:
    """How people spell a provider (``OpenAI``, ``Azure OpenAI``); its name if unknown."""
    from watcher.providers import PROVIDERS

    entry = PROVIDERS.get(provider)
    return entry.title if entry is not None else provider


def where(model: WatchedModel) -> str:
    """``support-classifier (Cohere)``: the model's label and the provider it is at."""
    return f"{model.label} ({provider_title(model.key.provider)})"


def progress_line(watcher: Watcher, now: datetime) -> str:
    """One compact line: each model, its status and for how long."""
    parts = []
    for model in watcher.models.values():
        state = model.state
        scheme = scheme_for(model.key.provider)
        status = human_status(state.status, scheme) if state and state.status else "waiting"
        since = ""
        if state is not None and state.status_since is not None:
            since = " " + format_duration((now - state.status_since).total_seconds())
        icon = {Phase.READY: "✅", Phase.FAILED: "❌"}.get(scheme.phase(model.status), "⏳")
        parts.append(f"{icon} {where(model)}: {status}{since}")
    return " │ ".join(parts)


def _columns(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _fit(line: str, width: int) -> str:
    """``line`` cut to ``width`` terminal columns (emoji take two)."""
    if sum(_columns(c) for c in line) <= width:
        return line
    used, kept = 0, []
    for char in line:
        used += _columns(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


async def show_progress(watcher: Watcher, out: TextIO) -> None:
    """Live on a terminal (one line, redrawn); plain lines on a change otherwise."""
    tty = out.isatty()
    last: dict[str, str | None] = {}
    while True:
        if tty:
            # Wider than the terminal would wrap, and \r would then redraw a new row.
            width = shutil.get_terminal_size().columns - 1
            out.write(CLEAR_LINE + _fit(progress_line(watcher, datetime.now(UTC)), width))
            out.flush()
        else:
            for model in watcher.models.values():
                status = model.status
                if status is not None and last.get(str(model.key)) != status:
                    shown = human_status(status, scheme_for(model.key.provider))
                    print(f"demo: {where(model)} is {shown}", file=out, flush=True)
                last[str(model.key)] = status
        await anyio.sleep(PROGRESS_EVERY)


def _register_console_target() -> None:
    """Register apprise's ``console://`` schema (a global registration, done once)."""
    import apprise.decorators

    @apprise.decorators.notify(on="console", name="Console (finetune-watcher demo)")  # type: ignore[untyped-decorator,no-untyped-call]
    def _print_notification(body: str, title: str, notify_type: str, **_: Any) -> bool:
        out = _OUT[0]
        width = min(shutil.get_terminal_size().columns, 100)
        rule = "─" * min(60, width)
        wrapped = "\n".join(
            textwrap.fill(line, width) if line else "" for line in body.splitlines()
        )
        clear = CLEAR_LINE if out.isatty() else ""
        print(f"{clear}{rule}\n🔔 {title}\n{rule}\n{wrapped}\n{rule}\n", file=out, flush=True)
        return True


def demo_environ(scenario: Scenario) -> dict[str, str]:
    """Each provider's key variable set to the simulator's key (every provider in the fleet)."""
    from watcher.settings import ProviderSettings, Settings, section_name

    key = scenario.api_key or "demo"
    environ: dict[str, str] = {}
    for model in scenario.models:
        section = Settings.model_fields[section_name(model.provider)].annotation
        if isinstance(section, type) and issubclass(section, ProviderSettings):
            environ[section.key_variables[0]] = key
    return environ


def demo_config(
    provider_urls: Mapping[str, str], state_dir: Path, scenario: Scenario | None = None
) -> dict[str, Any]:
    """The watcher configuration the demo runs with.

    ``provider_urls`` is each provider's base URL at the simulator
    (``RunningSimulator.provider_url``); every provider of the fleet gets its section.
    """
    from watcher.settings import section_name

    scenario = scenario or demo_scenario()
    sections: dict[str, Any] = {}
    for provider in dict.fromkeys(m.provider for m in scenario.models):
        section: dict[str, Any] = {"base_url": provider_urls[provider], "timeout": 5}
        if provider == "fireworks":
            section["account_id"] = scenario.fireworks_account or _FIREWORKS_ACCOUNT
        sections[section_name(provider)] = section
    return {
        **sections,
        "poll": {
            "interval": 0.5,
            "settled_interval": 30,
            "concurrency": 4,
            "jitter": 0.1,
            "max_requests_per_minute": 1200,
        },
        "state": {"path": str(state_dir / "demo.db")},
        "notify": {"urls": ["console://"], "on": [Phase.READY.value, Phase.FAILED.value]},
        "models": [{"id": m.id, "name": m.name, "provider": m.provider} for m in scenario.models],
    }


async def run_demo(out: TextIO | None = None) -> int:
    """Run the demo; 0 once the READY and FAILED notifications were delivered."""
    from watcher.daemon import serve
    from watcher.settings import load_settings, register_secrets, resolve_api_keys
    from watcher.simulator import running_simulator

    _OUT[0] = out or sys.stdout
    _register_console_target()
    scenario = demo_scenario()
    titles = list(dict.fromkeys(provider_title(m.provider) for m in scenario.models))
    print(
        f"finetune-watcher demo: watching {len(scenario.models)} simulated fine-tunes at"
        f" {', '.join(titles[:-1])} and {titles[-1]}\n"
        "(one will be ready, one will fail, one keeps training)…",
        file=_OUT[0],
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="finetune-watcher-demo-") as tmp:
        async with running_simulator(scenario) as sim:
            config = Path(tmp) / "demo.yaml"
            urls: dict[str, str] = {
                m.provider: sim.provider_url(m.provider) for m in scenario.models
            }
            config.write_text(yaml.safe_dump(demo_config(urls, Path(tmp), scenario)))
            environ = demo_environ(scenario)
            settings = load_settings(config, environ=environ)
            api_keys = resolve_api_keys(settings, environ)
            register_secrets(settings, api_keys)
            outcome: list[int] = []

            async def stop_when_notified(watcher: Watcher) -> None:
                # Runs beside the watcher inside ``serve``; a signal cancels it.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(show_progress, watcher, _OUT[0])
                    with anyio.move_on_after(DEMO_TIMEOUT) as scope:
                        while watcher.progress.delivered < 2:
                            await watcher.progress.changed.wait()
                    tg.cancel_scope.cancel()
                if _OUT[0].isatty():
                    width = shutil.get_terminal_size().columns - 1
                    line = _fit(progress_line(watcher, datetime.now(UTC)), width)
                    _OUT[0].write(CLEAR_LINE + line + "\n")
                outcome.append(1 if scope.cancelled_caught else 0)
                watcher.stop()

            code = await serve(settings, api_keys, on_started=stop_when_notified)
            if code:
                return code
            if outcome and outcome[0]:
                print("demo: timed out waiting for the notifications", file=sys.stderr)
                return 1
            print(
                "demo: done. Both outcomes were announced; the third model is still training.",
                file=_OUT[0],
                flush=True,
            )
            return 0
