"""End to end: one daemon watching a mixed fleet at all six providers.

``finetune-watcher run`` runs as a subprocess against the simulator (manual clock):
every provider's ``base_url`` points at its simulator prefix
(``RunningSimulator.provider_url``), every key comes from the variable that provider's SDK
reads, ``fireworks.account_id`` and ``azure_openai.base_url`` are set. At each provider one
job succeeds and one fails (with a reason where the provider gives one); one Together job
keeps running. A ``json://`` receiver counts what arrives: exactly one notification per
outcome, none while queued/running, the provider's own status word and the common word in
each, nothing new after a restart, exit 0 on SIGTERM. ``status`` (text and ``--json``) shows
every model's provider.
"""

from __future__ import annotations

import json
import re
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from tests.conftest import SIM_KEY, daemon, run_cli, wait_until, write_config
from tests.receivers import WebhookReceiver, webhook_receiver
from watcher.messages import human_status
from watcher.providers import scheme_for
from watcher.settings import section_name
from watcher.simulator import PROVIDERS, RunningSimulator, Scenario, running_simulator

#: Each provider: its timeline before the outcome, its success and its failure status.
LIFECYCLES: dict[str, tuple[list[str], str, str]] = {
    "cohere": (["STATUS_QUEUED", "STATUS_FINETUNING"], "STATUS_READY", "STATUS_FAILED"),
    "openai": (["validating_files", "queued", "running"], "succeeded", "failed"),
    "azure-openai": (["pending", "running"], "succeeded", "failed"),
    "mistral": (["QUEUED", "VALIDATING", "RUNNING"], "SUCCESS", "FAILED"),
    "together": (["pending", "queued", "running"], "completed", "error"),
    "fireworks": (
        ["JOB_STATE_CREATING", "JOB_STATE_PENDING", "JOB_STATE_RUNNING"],
        "JOB_STATE_COMPLETED",
        "JOB_STATE_FAILED",
    ),
}
#: Providers whose API says why a job failed (Cohere and Mistral do not).
WITH_REASON = frozenset({"openai", "azure-openai", "together", "fireworks"})
KEY_VARIABLES = {
    "cohere": "CO_API_KEY",
    "openai": "OPENAI_API_KEY",
    "azure-openai": "AZURE_OPENAI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "together": "TOGETHER_API_KEY",
    "fireworks": "FIREWORKS_API_KEY",
}
FIREWORKS_ACCOUNT = "sim-account"
OUTCOME_AT = 10  # sim second of every outcome
RUNNING_ID = "e2e-together-still-running"
MODEL_NAME = re.compile(r"e2e-[a-z-]+-(?:ready|failed|still-running)")


def job_id(provider: str, outcome: str) -> str:
    return f"e2e-{provider}-{outcome}"


def provider_of(model_id: str) -> str:
    """``e2e-azure-openai-ready`` -> ``azure-openai``."""
    return "together" if model_id == RUNNING_ID else model_id[4:].rsplit("-", 1)[0]


def reason(provider: str) -> str:
    return f"{provider} says: line 7 of the training file is not JSON"


def outcome_timeline(
    provider: str, outcome: str | None, at: int = OUTCOME_AT
) -> list[tuple[int, str]]:
    """``provider``'s statuses one per second, then ``outcome`` (ready/failed) at ``at``."""
    before, ready, failed = LIFECYCLES[provider]
    timeline = [(second, status) for second, status in enumerate(before)]
    if outcome is not None:
        timeline.append((max(at, len(before)), ready if outcome == "ready" else failed))
    return timeline


def model_spec(provider: str, outcome: str, at: int = OUTCOME_AT, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": job_id(provider, outcome),
        "provider": provider,
        "timeline": [list(step) for step in outcome_timeline(provider, outcome, at)],
        **extra,
    }
    if outcome == "failed" and provider in WITH_REASON:
        spec["error"] = {"code": "invalid_training_file", "message": reason(provider)}
    return spec


def fleet_scenario() -> Scenario:
    models = [model_spec(p, outcome) for p in PROVIDERS for outcome in ("ready", "failed")]
    models.append(
        {
            "id": RUNNING_ID,
            "provider": "together",
            "timeline": [list(step) for step in outcome_timeline("together", None)],
        }
    )
    return Scenario.model_validate(
        {
            "api_key": SIM_KEY,
            "clock": "manual",
            "page_size_cap": 1,
            "fireworks_account": FIREWORKS_ACCOUNT,
            "models": models,
        }
    )


def provider_sections(sim: RunningSimulator) -> dict[str, Any]:
    """Every provider's section, its base URL at the simulator."""
    sections: dict[str, Any] = {}
    for provider in PROVIDERS:
        section: dict[str, Any] = {"base_url": sim.provider_url(provider), "timeout": 5}
        if provider == "fireworks":
            section["account_id"] = FIREWORKS_ACCOUNT
        sections[section_name(provider)] = section
    return sections


def fleet_config(
    sim: RunningSimulator,
    tmp_path: Path,
    models: list[dict[str, Any]],
    urls: list[str],
    **poll: Any,
) -> dict[str, Any]:
    return {
        **provider_sections(sim),
        "poll": {
            "interval": 0.2,
            "settled_interval": 0.5,
            "jitter": 0.0,
            "concurrency": 8,
            "max_requests_per_minute": 60_000,
            **poll,
        },
        "state": {"path": str(tmp_path / "state" / "watcher.db")},
        "notify": {"urls": urls, "timeout": 5},
        "models": models,
    }


def key_environ() -> dict[str, str]:
    """Every provider's key in the variable its SDK reads."""
    return dict.fromkeys(KEY_VARIABLES.values(), SIM_KEY)


def polls_of(sim: RunningSimulator, model_id: str) -> int:
    return int(sim.stats().get("by_model", {}).get(model_id, 0))


def text_of(message: dict[str, Any]) -> str:
    return f"{message['title']}\n{message['message']}"


def by_model(hook: WebhookReceiver) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for message in hook.messages:
        match = MODEL_NAME.search(text_of(message))
        assert match is not None, message
        found.setdefault(match.group(0), []).append(message)
    return found


class TestMixedFleet:
    async def test_six_providers_in_one_daemon(self, tmp_path: Path) -> None:
        """Twelve outcomes at six providers: each announced exactly once with the provider's
        own status word and the common word, none while queued/running, none again after a
        restart; `status` and `status --json` name each model's provider; SIGTERM exits 0."""
        ids = [job_id(p, o) for p in PROVIDERS for o in ("ready", "failed")] + [RUNNING_ID]
        async with running_simulator(fleet_scenario()) as sim, webhook_receiver() as hook:
            config = write_config(
                tmp_path / "watcher.yaml",
                fleet_config(
                    sim,
                    tmp_path,
                    [{"id": i, "provider": provider_of(i)} for i in ids],
                    [hook.url],
                ),
            )
            async with daemon(config, env=key_environ()) as proc:
                # Walk every job through its queued/running statuses, one per second,
                # each seen by at least one poll: nothing may be announced.
                for _ in range(4):
                    seen = {i: polls_of(sim, i) for i in ids}

                    def polled_twice(seen: dict[str, int] = seen) -> bool:
                        return all(polls_of(sim, i) >= seen[i] + 2 for i in ids)

                    await wait_until(polled_twice, what="every job polled")
                    sim.advance(1)
                await wait_until(
                    lambda: all(polls_of(sim, i) >= 2 for i in ids), what="polls while running"
                )
                assert hook.messages == [], hook.messages
                sim.advance(OUTCOME_AT)
                await hook.wait_for(12, timeout=20)
                # The running job keeps being polled; nothing more arrives.
                before = polls_of(sim, RUNNING_ID)
                await wait_until(lambda: polls_of(sim, RUNNING_ID) >= before + 5, what="more polls")
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit(5) == 0, proc.log()
            log = proc.log()
            assert SIM_KEY not in log

            found = by_model(hook)
            assert len(hook.messages) == 12, [m["title"] for m in hook.messages]
            assert RUNNING_ID not in found
            missing_reasons: list[str] = []
            for provider in PROVIDERS:
                scheme = scheme_for(provider)
                _, ready, failed = LIFECYCLES[provider]
                for outcome, status, kind in (
                    ("ready", ready, "success"),
                    ("failed", failed, "failure"),
                ):
                    messages = found.get(job_id(provider, outcome), [])
                    assert len(messages) == 1, (provider, outcome, messages)
                    message = messages[0]
                    text = text_of(message)
                    assert message["type"] == kind, (provider, message)
                    assert outcome in message["title"], (provider, message["title"])
                    own = human_status(status, scheme)  # the provider's word, as people read it
                    assert own in text, (provider, own, text)
                    if (
                        outcome == "failed"
                        and provider in WITH_REASON
                        and reason(provider) not in text
                    ):
                        missing_reasons.append(provider)

            # Restart on the same state: nothing new.
            async with daemon(config, env=key_environ()) as proc:
                start = {i: polls_of(sim, i) for i in ids}
                await wait_until(
                    lambda: all(polls_of(sim, i) >= start[i] + 2 for i in ids),
                    what="polls after restart",
                )
                proc.send(signal.SIGTERM)
                assert await proc.wait_exit(5) == 0, proc.log()
            assert len(hook.messages) == 12, [m["title"] for m in hook.messages]

            # `status` shows the provider column; `--json` the provider field.
            result = await anyio.to_thread.run_sync(
                lambda: run_cli("status", "-c", str(config), env=key_environ())
            )
            assert result.returncode == 0, result.stderr
            header, *rows = result.stdout.splitlines()
            assert "PROVIDER" in header
            for model_id in ids:
                row = next(r for r in rows if model_id in r)
                shown = provider_of(model_id)
                assert re.search(rf"(^|\s){re.escape(shown)}\s", row), (shown, row)
            result = await anyio.to_thread.run_sync(
                lambda: run_cli("status", "-c", str(config), "--json", env=key_environ())
            )
            assert result.returncode == 0, result.stderr
            document = json.loads(result.stdout)
            providers = {m["id"]: m["provider"] for m in document["models"]}
            assert providers == {i: provider_of(i) for i in ids}

        # The provider's own reason is in its failure notification (issue 10, item 4).
        assert not missing_reasons, missing_reasons


class TestDemoFleet:
    """`demo` watches a mixed fleet and says where each model is (its run: tests/test_e2e.py)."""

    def test_the_demo_fleet_spans_providers_and_outcomes(self, tmp_path: Path) -> None:
        """Cohere ready, OpenAI failed with its error message, a third provider still running;
        the demo's configuration gives every provider its section and key variable."""
        from watcher.demo import demo_config, demo_environ, demo_scenario
        from watcher.settings import load_settings, resolve_api_keys

        scenario = demo_scenario()
        last = {m.provider: m.timeline[-1][1] for m in scenario.models}
        assert last["cohere"] == "STATUS_READY"
        assert last["openai"] == "failed"
        failed = next(m for m in scenario.models if m.provider == "openai")
        assert failed.error is not None
        assert failed.error.message
        assert len(last) >= 3
        assert sum(scheme_for(p).phase(s).value not in ("ready", "failed") for p, s in last.items())

        urls: dict[str, str] = {p: f"http://127.0.0.1:9/{p}" for p in last}
        document = demo_config(urls, tmp_path, scenario)
        document["notify"]["urls"] = []  # console:// exists once the demo registered it
        config = write_config(tmp_path / "demo.yaml", document)
        environ = demo_environ(scenario)
        settings = load_settings(config, environ=environ)
        assert set(resolve_api_keys(settings, environ)) == set(last)
        assert {(m.id, m.provider) for m in settings.models} == {
            (m.id, m.provider) for m in scenario.models
        }

    async def test_progress_names_each_models_provider(self) -> None:
        """The live line and the plain change lines say which provider each model is at."""
        from io import StringIO
        from types import SimpleNamespace
        from typing import cast

        from watcher.daemon import Watcher
        from watcher.demo import progress_line, show_progress
        from watcher.fleet import WatchedModel
        from watcher.lifecycle import Event, ModelKey, observe

        models = {}
        for provider, job, status in [
            ("cohere", "c-1", "STATUS_READY"),
            ("openai", "ftjob-1", "failed"),
            ("together", "ft-1", "running"),
        ]:
            events = [Event(status, datetime(2026, 1, 1, tzinfo=UTC))]
            state = observe(None, job, events, scheme=scheme_for(provider)).state
            key = ModelKey(provider, job)
            models[key] = WatchedModel(key, f"model-{provider}", (), state)
        watcher = cast(Watcher, SimpleNamespace(models=models))

        line = progress_line(watcher, datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
        assert "✅ model-cohere (Cohere): ready 1m" in line
        assert "❌ model-openai (OpenAI): failed" in line
        assert "⏳ model-together (Together AI): running" in line

        out = StringIO()
        with anyio.move_on_after(0.1):
            await show_progress(watcher, out)
        assert out.getvalue().splitlines() == [
            "demo: model-cohere (Cohere) is ready",
            "demo: model-openai (OpenAI) is failed",
            "demo: model-together (Together AI) is running",
        ]
