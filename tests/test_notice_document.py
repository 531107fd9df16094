"""Machine-readable notices (issue 13, item 6): the JSON document ``webhooks:`` targets get.

The document is built by a pure function (``watcher.notice_doc.notice_document``), tested
by a table; the README's schema table and example are checked against it; the webhook
target POSTs exactly the document (a real receiver on loopback); and a daemon against the
simulator's OpenAI delivers exactly the documented document for a READY and for a FAILED
with the provider's error message.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import daemon, wait_until, write_config
from tests.receivers import refused_url, webhook_receiver
from watcher.daemon import Watcher, open_watcher
from watcher.errors import ConfigError
from watcher.lifecycle import Notice
from watcher.messages import Message
from watcher.notice_doc import (
    NOTICE_DOCUMENT_FIELDS,
    NOTICE_DOCUMENT_KIND,
    NOTICE_DOCUMENT_VERSION,
    notice_document,
    notice_json,
)
from watcher.notify import Notifier, make_target, make_webhook_target
from watcher.providers import scheme_for
from watcher.providers.base import JobDetails
from watcher.redact import ERROR_LIMIT, SECRETS
from watcher.settings import Settings, load_settings, resolve_api_keys
from watcher.simulator import Scenario, running_simulator

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
KEY = "sim-openai-key-0123456789"
MESSAGE = "The job failed due to an invalid training file. Line 1 is not a dictionary."


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


# --- The pure function, by a table ------------------------------------------------------

COHERE_READY = Notice(
    model_id="m-1",
    status="STATUS_READY",
    previous_status="STATUS_FINETUNING",
    event_at=at(3600),
    previous_since=at(60),
    started_at=at(0),
    provider="cohere",
)
OPENAI_FAILED = Notice(
    model_id="ftjob-bad",
    status="failed",
    previous_status="running",
    event_at=at(90.5),
    previous_since=at(30),
    started_at=at(0),
    provider="openai",
)
FIRST_SIGHT = Notice(
    model_id="ftjob-old",
    status="cancelled",
    previous_status=None,
    event_at=at(10),
    previous_since=None,
    started_at=None,
    first_observation=True,
    provider="openai",
)

TABLE: list[tuple[str, Notice, dict[str, Any], dict[str, Any]]] = [
    (
        "cohere ready with details",
        COHERE_READY,
        {
            "name": "support-classifier",
            "dashboard_url": "https://dashboard.cohere.com/fine-tuning/{model_id}",
            "details": JobDetails(id="m-1", base_model="command-r-08-2024"),
        },
        {
            "provider": "cohere",
            "model_id": "m-1",
            "model_name": "support-classifier",
            "status": "ready",
            "provider_status": "STATUS_READY",
            "previous_status": "running",
            "previous_provider_status": "STATUS_FINETUNING",
            "at": "2026-11-30T09:00:00Z",
            "duration_seconds": 3600.0,
            "fine_tuned_model": None,
            "base_model": "command-r-08-2024",
            "error_message": None,
            "dashboard_url": "https://dashboard.cohere.com/fine-tuning/m-1",
            "first_observation": False,
        },
    ),
    (
        "openai failed with the provider's error message",
        OPENAI_FAILED,
        {
            "name": None,
            "dashboard_url": "https://platform.openai.com/finetune/ftjob-bad",
            "details": JobDetails(
                id="ftjob-bad", base_model="gpt-4o-mini-2024-07-18", error_message=MESSAGE
            ),
        },
        {
            "provider": "openai",
            "model_id": "ftjob-bad",
            "model_name": None,
            "status": "failed",
            "provider_status": "failed",
            "previous_status": "running",
            "previous_provider_status": "running",
            "at": "2026-11-30T08:01:30Z",
            "duration_seconds": 90.5,
            "fine_tuned_model": None,
            "base_model": "gpt-4o-mini-2024-07-18",
            "error_message": MESSAGE,
            "dashboard_url": "https://platform.openai.com/finetune/ftjob-bad",
            "first_observation": False,
        },
    ),
    (
        "first sight, nothing known before, no details",
        FIRST_SIGHT,
        {"name": "", "dashboard_url": "https://x.example/{model_id}", "details": None},
        {
            "provider": "openai",
            "model_id": "ftjob-old",
            "model_name": None,
            "status": "cancelled",
            "provider_status": "cancelled",
            "previous_status": None,
            "previous_provider_status": None,
            "at": "2026-11-30T08:00:10Z",
            "duration_seconds": None,
            "fine_tuned_model": None,
            "base_model": None,
            "error_message": None,
            "dashboard_url": "https://x.example/ftjob-old",
            "first_observation": True,
        },
    ),
    (
        "an unknown provider status is 'other', kept as the provider spells it",
        Notice("ftjob-x", "paused_by_admin", "running", at(5), at(1), at(0), provider="openai"),
        {"name": "n", "dashboard_url": "https://x.example/{model_id}",
         "details": JobDetails(id="ftjob-x", fine_tuned_model="ft:gpt-4o:org:n:abc")},
        {
            "provider": "openai",
            "model_id": "ftjob-x",
            "model_name": "n",
            "status": "other",
            "provider_status": "paused_by_admin",
            "previous_status": "running",
            "previous_provider_status": "running",
            "at": "2026-11-30T08:00:05Z",
            "duration_seconds": 5.0,
            "fine_tuned_model": "ft:gpt-4o:org:n:abc",
            "base_model": None,
            "error_message": None,
            "dashboard_url": "https://x.example/ftjob-x",
            "first_observation": False,
        },
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "notice", "context", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_document_table(
    case: str, notice: Notice, context: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Each notice becomes exactly its document, fields in the documented order."""
    document = notice_document(notice, scheme=scheme_for(notice.provider), **context)
    assert document == {"version": 1, "kind": "finetune-watcher.notice", **expected}
    assert tuple(document) == NOTICE_DOCUMENT_FIELDS
    assert json.loads(notice_json(document)) == document
    assert list(json.loads(notice_json(document))) == list(NOTICE_DOCUMENT_FIELDS)


def test_outside_values_are_scrubbed_and_capped_but_not_escaped() -> None:
    """A secret an API echoed is masked; a long error is capped; markup stays as written."""
    secret = "sk-proj-notice-document-secret-0123456789"  # noqa: S105 -- a test value
    SECRETS.add(secret)
    details = JobDetails(
        id="j", error_message=f"bad key {secret}\nsecond line " + "x" * 5000, base_model="<b>&"
    )
    document = notice_document(
        OPENAI_FAILED, scheme=scheme_for("openai"), name="a*b_[c]", dashboard_url="https://x/",
        details=details,
    )  # fmt: skip
    text = notice_json(document)
    assert secret not in text
    assert "\n" not in document["error_message"]
    assert len(document["error_message"]) == ERROR_LIMIT
    assert document["base_model"] == "<b>&"
    assert document["model_name"] == "a*b_[c]"


def test_version_and_kind_constants() -> None:
    assert NOTICE_DOCUMENT_VERSION == 1
    assert NOTICE_DOCUMENT_KIND == "finetune-watcher.notice"


# --- The README documents exactly this schema -------------------------------------------


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Machine-readable notices")
    end = text.index("\n## ", start)
    return text[start:end]


def test_readme_table_lists_every_field_in_order() -> None:
    """The README's schema table names every field, in the document's order."""
    rows = re.findall(r"^\| `([a-z_]+)` \|", _readme_section(), flags=re.MULTILINE)
    assert tuple(rows) == NOTICE_DOCUMENT_FIELDS


def test_readme_example_is_a_document() -> None:
    """The README's example parses and has exactly the documented fields and version."""
    block = re.search(r"```json\n(.*?)\n```", _readme_section(), flags=re.DOTALL)
    assert block is not None
    example = json.loads(block.group(1))
    assert tuple(example) == NOTICE_DOCUMENT_FIELDS
    assert example["version"] == NOTICE_DOCUMENT_VERSION
    assert example["kind"] == NOTICE_DOCUMENT_KIND


# --- Configuration ------------------------------------------------------------------------


def _config(tmp_path: Path, notify: dict[str, Any], **model: Any) -> Path:
    return write_config(
        tmp_path / "watcher.yaml",
        {"state": {"path": str(tmp_path / "w.db")}, "notify": notify,
         "models": [{"id": "m-1", **model}]},
    )  # fmt: skip


def test_webhooks_accept_http_and_https_everywhere(tmp_path: Path) -> None:
    settings = load_settings(
        _config(
            tmp_path,
            {"webhooks": ["https://ci.example.com/hooks/model?token=abc"],
             "routes": [{"on": ["ready"], "webhooks": ["http://127.0.0.1:9/ready"]}]},
            webhooks=["https://deploy.example.com/in"],
        )
    )  # fmt: skip
    assert [u.get_secret_value() for u in settings.notify.webhooks] == [
        "https://ci.example.com/hooks/model?token=abc"
    ]
    assert settings.models[0].webhooks[0].get_secret_value() == "https://deploy.example.com/in"
    assert settings.notify.routes[0].webhooks[0].get_secret_value() == "http://127.0.0.1:9/ready"


@pytest.mark.parametrize(
    "url", ["json://127.0.0.1/x", "ftp://host/x", "https://", "not a url", "http://h:99999/"]
)
def test_a_webhook_must_be_an_http_url_and_the_error_keeps_its_secret(
    tmp_path: Path, url: str
) -> None:
    secret = "tok-very-secret-4242"  # noqa: S105 -- a test value
    with pytest.raises(ConfigError) as info:
        load_settings(_config(tmp_path, {"webhooks": [f"{url}?token={secret}"]}))
    text = str(info.value)
    assert "notify.webhooks.0" in text
    assert "http:// or https://" in text
    assert secret not in text


# --- The webhook target -------------------------------------------------------------------


DOCUMENT = notice_document(
    COHERE_READY, scheme=scheme_for("cohere"), name="n", dashboard_url="https://d/{model_id}"
)


async def test_a_webhook_target_gets_the_document_as_the_body() -> None:
    """POST, ``application/json``, the body exactly the document; an apprise target of the
    same message still gets the words."""
    message = Message("t", "b", "success", document=notice_json(DOCUMENT))
    notifier = Notifier(timeout=5)
    try:
        async with webhook_receiver() as hook, webhook_receiver() as words:
            results = await notifier.send(
                message, [make_webhook_target(hook.http_url), make_target(words.url)]
            )
            assert all(r.ok for r in results), results
            (request,) = hook.requests
            assert request.headers["Content-Type"] == "application/json"
            assert json.loads(request.body) == DOCUMENT
            assert hook.messages == [DOCUMENT]
            (apprise_payload,) = words.messages
            assert apprise_payload["title"] == "t"
            assert apprise_payload["message"] == "b"
    finally:
        await notifier.aclose()


async def test_webhook_failures_are_reported_without_the_url() -> None:
    """An HTTP error and a refused connection fail with a reason that keeps the URL's
    secrets; a message that is no notice is not sent to a webhook."""
    notifier = Notifier(timeout=2)
    message = Message("t", "b", "info", document=notice_json(DOCUMENT))
    try:
        async with webhook_receiver() as hook:
            hook.fail_with(503)
            target = make_webhook_target(hook.http_url + "?token=hook-secret-1")
            (result,) = await notifier.send(message, [target])
            assert (result.ok, result.error) == (False, "HTTP 503")
            hook.recover()
            (result,) = await notifier.send(Message("ops", "b", "warning"), [target])
            assert not result.ok
            assert "no JSON document" in (result.error or "")
        down = make_webhook_target(refused_url().replace("json://", "http://"))
        (result,) = await notifier.send(message, [down])
        assert (result.ok, result.error) == (False, "connection failed")
        assert "hook-secret-1" not in target.label
    finally:
        await notifier.aclose()


def test_webhook_and_apprise_targets_of_one_text_are_different_targets() -> None:
    assert make_webhook_target("http://h/x").key != make_target("json://h/x").key
    assert make_webhook_target("http://h/x").key == make_webhook_target(" http://h/x ").key


# --- A daemon against the simulator's OpenAI -------------------------------------------------

OK_JOB, BAD_JOB = "ftjob-docready0001", "ftjob-docfailed001"


def openai_scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "api_key": KEY,
            "clock": "manual",
            "start": START.isoformat(),
            "models": [
                {"id": OK_JOB, "provider": "openai", "name": "support-bot",
                 "base_model": "gpt-4o-mini-2024-07-18",
                 "timeline": [[0, "validating_files"], [1, "queued"], [2, "running"],
                              [60, "succeeded"]]},
                {"id": BAD_JOB, "provider": "openai", "name": "intent-router",
                 "base_model": "gpt-4o-mini-2024-07-18", "error": {"message": MESSAGE},
                 "timeline": [[0, "validating_files"], [2, "running"], [40, "failed"]]},
            ],
        }
    )  # fmt: skip


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.at = moment

    def __call__(self) -> datetime:
        return self.at


@asynccontextmanager
async def openai_watcher(settings: Settings) -> AsyncIterator[Watcher]:
    keys = resolve_api_keys(settings, {"OPENAI_API_KEY": KEY})
    async with open_watcher(settings, keys, now=Clock(START), rand=lambda: 0.5) as watcher:
        yield watcher


async def test_a_daemon_delivers_exactly_the_documented_documents(tmp_path: Path) -> None:
    """READY and FAILED (with OpenAI's error message) arrive as the documented document;
    the words still go to notify.urls."""
    async with (
        running_simulator(openai_scenario()) as sim,
        webhook_receiver("/hooks/finetune") as hook,
        webhook_receiver() as words,
    ):
        config = write_config(
            tmp_path / "watcher.yaml",
            {
                "openai": {"base_url": sim.provider_url("openai"), "timeout": 5},
                "state": {"path": str(tmp_path / "state.db")},
                "notify": {"urls": [words.url], "webhooks": [hook.http_url], "timeout": 5},
                "models": [
                    {"id": OK_JOB, "provider": "openai", "name": "Support bot"},
                    {"id": BAD_JOB, "provider": "openai"},
                ],
            },
        )
        async with openai_watcher(load_settings(config)) as watcher:
            sim.advance(10)
            for model in list(watcher.models.values()):
                await watcher.poll_model(model)
            sim.advance(60)
            for model in list(watcher.models.values()):
                await watcher.poll_model(model)
            await watcher.deliver_once()
        documents = {d["model_id"]: d for d in hook.messages}
        assert len(hook.messages) == 2, hook.messages
        assert len(words.messages) == 2
        assert all(r.path == "/hooks/finetune" for r in hook.requests)
    ready, failed = documents[OK_JOB], documents[BAD_JOB]
    assert tuple(ready) == NOTICE_DOCUMENT_FIELDS
    assert ready == {
        "version": 1,
        "kind": "finetune-watcher.notice",
        "provider": "openai",
        "model_id": OK_JOB,
        "model_name": "Support bot",
        "status": "ready",
        "provider_status": "succeeded",
        "previous_status": "running",
        "previous_provider_status": "running",
        "at": "2026-11-30T08:01:00Z",
        "duration_seconds": 58.0,  # from its first event (running, at 2 s) to succeeded
        "fine_tuned_model": ready["fine_tuned_model"],
        "base_model": "gpt-4o-mini-2024-07-18",
        "error_message": None,
        "dashboard_url": f"https://platform.openai.com/finetune/{OK_JOB}",
        "first_observation": False,
    }
    assert re.fullmatch(r"ft:gpt-4o-mini-2024-07-18:[^:]+:support-bot:[0-9a-f]{8}",
                        ready["fine_tuned_model"])  # fmt: skip
    assert failed == {
        "version": 1,
        "kind": "finetune-watcher.notice",
        "provider": "openai",
        "model_id": BAD_JOB,
        "model_name": "intent-router",
        "status": "failed",
        "provider_status": "failed",
        "previous_status": "running",
        "previous_provider_status": "running",
        "at": "2026-11-30T08:00:40Z",
        "duration_seconds": 38.0,
        "fine_tuned_model": None,
        "base_model": "gpt-4o-mini-2024-07-18",
        "error_message": f"{MESSAGE} (invalid_training_file)",  # OpenAI's message and code
        "dashboard_url": f"https://platform.openai.com/finetune/{BAD_JOB}",
        "first_observation": False,
    }


async def test_the_run_command_posts_the_documents(tmp_path: Path) -> None:
    """``finetune-watcher run`` as a process: a route's webhook gets the FAILED document
    with OpenAI's error message, notify.webhooks both; no secret of the URL in the log."""
    async with (
        running_simulator(openai_scenario()) as sim,
        webhook_receiver() as every,
        webhook_receiver() as failures,
    ):
        config = write_config(
            tmp_path / "watcher.yaml",
            {
                "openai": {"base_url": sim.provider_url("openai"), "timeout": 5},
                "poll": {"interval": 0.2, "settled_interval": 0.5, "jitter": 0.0},
                "state": {"path": str(tmp_path / "state.db")},
                "notify": {
                    "webhooks": [every.http_url + "?token=run-hook-secret-31"],
                    "routes": [{"on": ["failed"], "webhooks": [failures.http_url]}],
                    "timeout": 5,
                },
                "models": [{"id": OK_JOB, "provider": "openai"},
                           {"id": BAD_JOB, "provider": "openai"}],
            },
        )  # fmt: skip
        async with daemon(config, env={"OPENAI_API_KEY": KEY}) as proc:
            await wait_until(
                lambda: all(sim.stats().get("by_model", {}).get(m, 0) >= 2
                            for m in (OK_JOB, BAD_JOB)),
                what="first polls",
            )  # fmt: skip
            sim.advance(70)
            await every.wait_for(2, timeout=15)
            await failures.wait_for(1, timeout=15)
            proc.send(signal.SIGTERM)
            assert await proc.wait_exit(5) == 0, proc.log()
        log = proc.log()
    assert sorted(d["status"] for d in every.messages) == ["failed", "ready"]
    (failed,) = failures.messages
    assert tuple(failed) == NOTICE_DOCUMENT_FIELDS
    assert failed["model_id"] == BAD_JOB
    assert failed["error_message"] == f"{MESSAGE} (invalid_training_file)"
    assert failed == next(d for d in every.messages if d["status"] == "failed")
    assert "run-hook-secret-31" not in log
    assert KEY not in log


async def test_delivery_waits_while_the_model_is_being_enriched(tmp_path: Path) -> None:
    """A notice recorded while its details are still being fetched is not sent with stale
    details by a pass another model started: it waits (no attempt counted) until then."""
    async with running_simulator(openai_scenario()) as sim, webhook_receiver() as hook:
        config = write_config(
            tmp_path / "watcher.yaml",
            {
                "openai": {"base_url": sim.provider_url("openai"), "timeout": 5},
                "state": {"path": str(tmp_path / "state.db")},
                "notify": {"webhooks": [hook.http_url], "timeout": 5},
                "models": [{"id": BAD_JOB, "provider": "openai"}],
            },
        )
        async with openai_watcher(load_settings(config)) as watcher:
            sim.advance(10)
            (model,) = watcher.models.values()
            await watcher.poll_model(model)
            sim.advance(60)
            await watcher.poll_model(model)
            model.enriching = True
            held = await watcher.deliver_once()
            assert (held.delivered, held.failed) == (0, 0)
            assert hook.requests == []
            model.enriching = False
            sent = await watcher.deliver_once()
            assert sent.delivered == 1
    (document,) = hook.messages
    assert document["error_message"] == f"{MESSAGE} (invalid_training_file)"
