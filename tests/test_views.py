"""The pure status view: rows merged from the store and the configuration, the JSON document,
a model's timeline. No database, no clock: records and ``now`` are built here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watcher.lifecycle import Event, ModelKey, ModelState
from watcher.providers.cohere import COHERE_SCHEME, FINETUNING, QUEUED, READY
from watcher.store.base import ModelRecord, OutboxCounts
from watcher.views import (
    Stage,
    short_status,
    stages,
    stages_from_seen,
    status_document,
    status_rows,
    status_text,
    time_ago,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def record(
    model_id: str,
    *,
    provider: str = "cohere",
    name: str | None = None,
    status: str | None = READY,
    polled: bool = True,
) -> ModelRecord:
    since = NOW - timedelta(hours=3) if status else None
    return ModelRecord(
        state=ModelState(model_id, status=status, status_since=since, provider=provider),
        name=name,
        discovered=False,
        last_poll_at=NOW - timedelta(seconds=12) if polled else None,
        last_success_at=NOW - timedelta(seconds=12) if status else None,
        last_error=None if status else "HTTP 404",
        failures=0 if status else 2,
        pending_notifications=1,
    )


class TestStatusRows:
    def test_same_id_at_two_providers_is_two_rows(self) -> None:
        """A model is its (provider, id): one id at two providers gives two rows."""
        rows = status_rows(
            [record("job-1"), record("job-1", provider="openai")],
            {ModelKey("cohere", "job-1"): None},
        )
        assert [row.key for row in rows] == [
            ModelKey("cohere", "job-1"),
            ModelKey("openai", "job-1"),
        ]
        assert [row.configured for row in rows] == [True, False]

    def test_configured_name_wins_and_unpolled_models_are_listed(self) -> None:
        """The configured name replaces the stored one; a configured model not stored yet is a
        row that says so."""
        rows = status_rows(
            [record("b-id", name="stored name")],
            {ModelKey("cohere", "b-id"): "configured", ModelKey("cohere", "a-id"): None},
        )
        by_id = {row.model_id: row for row in rows}
        assert by_id["b-id"].name == "configured"
        assert not by_id["a-id"].polled
        assert status_text(by_id["a-id"], COHERE_SCHEME) == "not polled yet"
        assert status_text(by_id["b-id"], COHERE_SCHEME) == "READY"
        assert [row.label for row in rows] == ["a-id", "configured"]  # by label

    def test_status_text_says_why_there_is_no_status(self) -> None:
        """Only failed polls: unknown (the error says why); no scheme: the status as stored."""
        (failed,) = status_rows([record("x", status=None)], {})
        assert status_text(failed, COHERE_SCHEME) == "unknown"
        (other,) = status_rows([record("y", provider="gone", status="running")], {})
        assert status_text(other, None) == "running"


class TestStatusDocument:
    def test_document_shape_with_provider(self) -> None:
        """Every model object carries its provider; times are ISO-8601 UTC with a Z."""
        rows = status_rows([record("job-1", name="n")], {})
        document = status_document(
            rows, OutboxCounts(1, 14, 0), now=NOW, state_location="/var/lib/x/watcher.db"
        )
        assert document["generated_at"] == "2024-05-01T12:00:00Z"
        assert document["state_path"] == "/var/lib/x/watcher.db"
        (model,) = document["models"]
        assert model["id"] == "job-1"
        assert model["provider"] == "cohere"
        assert model["status"] == READY
        assert model["status_since"] == "2024-05-01T09:00:00Z"
        assert document["outbox"] == {"pending": 1, "done": 14, "given_up": 0}


class TestTimeline:
    def test_repeated_statuses_merge_and_ties_follow_the_scheme(self) -> None:
        """Same-status rows are one stage; a tie on time is ordered by the scheme's ranks."""
        t0 = NOW - timedelta(hours=1)
        events = [
            Event(FINETUNING, t0),
            Event(QUEUED, t0),  # same instant: QUEUED ranks first
            Event(FINETUNING, t0 + timedelta(minutes=5)),
            Event(READY, t0 + timedelta(minutes=50)),
        ]
        assert stages(events, scheme=COHERE_SCHEME) == [
            Stage(QUEUED, t0, t0),
            Stage(FINETUNING, t0, t0 + timedelta(minutes=50)),
            Stage(READY, t0 + timedelta(minutes=50), None),
        ]

    def test_the_page_timeline_is_built_from_what_the_state_has_seen(self) -> None:
        """The status page's timeline comes from the state's seen identities (nothing is kept
        per model for it): the same stages as the events they came from, ties included."""
        t0 = NOW - timedelta(hours=1)
        events = [
            Event(FINETUNING, t0),
            Event(QUEUED, t0),
            Event(FINETUNING, t0 + timedelta(minutes=5)),
            Event(READY, t0 + timedelta(minutes=50)),
        ]
        state = ModelState(
            model_id="m", status=READY, status_since=t0 + timedelta(minutes=50),
            seen={e.identity for e in events}, started_at=t0,
        )  # fmt: skip
        assert stages_from_seen(state.seen, scheme=COHERE_SCHEME) == stages(
            events, scheme=COHERE_SCHEME
        )
        assert stages_from_seen((), scheme=COHERE_SCHEME) == []

    def test_words(self) -> None:
        """Short statuses drop the scheme's prefix; ages read as people say them."""
        assert short_status(FINETUNING, COHERE_SCHEME) == "FINETUNING"
        assert short_status(None, COHERE_SCHEME) == "-"
        assert time_ago(None, NOW) == "never"
        assert time_ago(NOW, NOW) == "just now"
        assert time_ago(NOW - timedelta(hours=2, minutes=14, seconds=5), NOW) == "2h 14m ago"
