"""Issue 11, finding 9 (the command line): hostile API text is shown safely.

The simulator scripts a model whose status is a terminal escape, a forged line and
10 kB of text. After ``once`` stored it, ``status`` and ``events`` (text and JSON, as real
subprocesses) must print no control character, no line the API forged and no value
longer than the documented caps (names and statuses 200 characters, errors 1,000).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import anyio

from tests.conftest import SIM_KEY, base_config, run_cli, write_config
from watcher.lifecycle import Event, ModelState
from watcher.providers.cohere import COHERE_SCHEME, QUEUED
from watcher.settings import load_settings
from watcher.simulator import Scenario, running_simulator
from watcher.store import open_store
from watcher.store.base import ModelRecord
from watcher.views import stages, status_rows

MODEL_ID = "hostile-status-model"
FORGED = "FORGED: every model is READY"
HOSTILE_STATUS = "\x1b[2J\x1b]0;owned\x07\x1b[31mPWNED\n" + FORGED + "\r\n" + "A" * 10_000
HOSTILE_NAME = "[click](http://evil.example)\x1b[5m\n" + FORGED + "N" * 10_000
HOSTILE_ERROR = "HTTP 502: \x1b[2J\n" + FORGED + "E" * 10_000
NAME_LIMIT = 200


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` other than the line ends of its own lines."""
    return sorted({c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F})


def hostile_scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "api_key": SIM_KEY,
            "models": [
                {
                    "id": MODEL_ID,
                    "allow_unknown_statuses": True,
                    "timeline": [[0, QUEUED], [0.001, HOSTILE_STATUS]],
                }
            ],
        }
    )


async def cli(*args: str) -> tuple[int, str]:
    result = await anyio.to_thread.run_sync(lambda: run_cli(*args, env={"NO_COLOR": ""}))
    return result.returncode, result.stdout + result.stderr


async def store_hostile_model(config: Path) -> None:
    """A state database as a daemon leaves it after polling a hostile API: a discovered
    model whose name, status and last error are what the API said."""
    settings = load_settings(config)
    now = datetime.now(UTC)
    state = ModelState(MODEL_ID, HOSTILE_STATUS, now, now, frozenset(), None)
    async with open_store(settings.state) as store:
        await store.record_observation(state, [], polled_at=now, name=HOSTILE_NAME, discovered=True)
        await store.record_poll_failure(state.key, polled_at=now, error=HOSTILE_ERROR, failures=1)


class TestCommandsShowHostileStatusesSafely:
    async def test_status_and_events_print_one_clean_bounded_line_per_value(
        self, tmp_path: Path
    ) -> None:
        async with running_simulator(hostile_scenario()) as sim:
            config = base_config(sim.base_url, tmp_path, [MODEL_ID], [])
            path = write_config(tmp_path / "watcher.yaml", config)
            await store_hostile_model(path)
            outputs = {}
            for args in (
                ("status",),
                ("status", "--json"),
                ("events", MODEL_ID),
                ("events", MODEL_ID, "--json"),
            ):
                code, output = await cli(*args, "-c", str(path))
                assert code == 0, output
                outputs[" ".join(args)] = output

        # The status got through (else this proves nothing) ...
        assert all("PWNED" in text for text in outputs.values()), outputs
        for name, text in outputs.items():
            # ... with no terminal escape, no forged line, no 10 kB line.
            assert control_characters(text) == [], name
            assert not any(line.startswith(FORGED) for line in text.splitlines()), name
            assert max(len(line) for line in text.splitlines()) < 1100, name

        [model] = json.loads(outputs["status --json"])["models"]
        for field, limit in (("status", NAME_LIMIT), ("name", NAME_LIMIT), ("last_error", 1000)):
            assert len(model[field]) <= limit, model
            assert model[field].endswith("…"), model
            assert control_characters(model[field]) == [], model
        events = outputs[f"events {MODEL_ID} --json"].splitlines()
        statuses = [json.loads(line)["status"] for line in events]
        assert [len(s) <= NAME_LIMIT for s in statuses] == [True, True], statuses


class TestViewsCleanOutsideText:
    """The pure view layer (also the web page's): rows and stages carry clean, capped text."""

    def test_rows_and_stages(self) -> None:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        record = ModelRecord(
            state=ModelState("job\x1b[31m\nx", HOSTILE_STATUS, now, now, frozenset(), None),
            name="[click](http://evil.example)\n\x1b[5mbig" + "N" * 500,
            discovered=True,
            last_poll_at=now,
            last_success_at=now,
            last_error="HTTP 502:\x1b[2J\n" + FORGED + "E" * 5000,
            failures=1,
            pending_notifications=0,
        )
        [row] = status_rows([record], {})
        for value, limit in ((row.status, 200), (row.name, 200), (row.last_error, 1000)):
            assert value is not None
            assert len(value) <= limit
            assert control_characters(value) == []
            assert "\n" not in value
        assert control_characters(row.model_id) == []
        [_, stage] = stages(
            [Event(QUEUED, now, None), Event(HOSTILE_STATUS, now.replace(hour=1), None)],
            scheme=COHERE_SCHEME,
        )
        assert len(stage.status) <= 200
        assert "\n" not in stage.status
        assert control_characters(stage.status) == []
