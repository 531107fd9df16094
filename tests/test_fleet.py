"""Fleet: what it keeps per watched model (memory per model, issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from watcher.fleet import Fleet, WatchedModel
from watcher.lifecycle import EventId, ModelKey, ModelState
from watcher.settings import Settings, load_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stored(model_id: str) -> ModelState:
    """A state as a store decodes it: its id an equal string, not the configuration's."""
    own_copy = "".join(list(model_id))
    return ModelState(own_copy, "STATUS_QUEUED", T0, T0, seen=(EventId(T0, "STATUS_QUEUED"),))


def load_settings_models(tmp_path: Path, models: str) -> Settings:
    path = tmp_path / "watcher.yaml"
    path.write_text(f"models: [{models}]\n", encoding="utf-8")
    return load_settings(path, environ={})


def never_settled(key: ModelKey, status: str | None) -> bool:
    return False


class TestOneIdString:
    def test_load_shares_the_configured_id(self, tmp_path: Path) -> None:
        settings = load_settings_models(tmp_path, "m-1, m-2")
        state = stored("m-1")
        assert state.model_id is not settings.models[0].id

        fleet = Fleet()
        fleet.load(settings, {state.key: state}, (), {}, is_settled=never_settled)

        watched = fleet.models[ModelKey("cohere", "m-1")]
        assert watched.state == state
        assert watched.state is not None
        assert watched.state.model_id is watched.key.id
        assert fleet.models[ModelKey("cohere", "m-2")].state is None

    def test_a_reload_adds_with_the_configured_id(self, tmp_path: Path) -> None:
        fleet = Fleet()
        fleet.load(load_settings_models(tmp_path, "m-1"), {}, (), {}, is_settled=never_settled)
        state = stored("m-2")

        added, removed = fleet.apply(load_settings_models(tmp_path, "m-1, m-2"), {state.key: state})

        assert removed == []
        assert [m.key.id for m in added] == ["m-2"]
        assert added[0].state == state
        assert added[0].state is not None
        assert added[0].state.model_id is added[0].key.id


class TestRareFields:
    """``WatchedModel``'s rarely set fields live in one optional side object."""

    def model(self) -> WatchedModel:
        return WatchedModel(ModelKey("cohere", "m-1"), None, (), None)

    def test_defaults_without_a_side_object(self) -> None:
        model = self.model()
        assert (model.not_found_reported, model.metrics, model.stuck_warnings) == (False, None, 0)
        assert (model.rejected_since, model.rejection_reported) == (None, False)
        assert (model.webhooks, model.routes) == ((), ())
        # What every successful poll writes (poller._succeeded) makes none either.
        model.not_found_reported = False
        model.accepted, model.rejected_since, model.rejection_reported = True, None, False
        model.stuck_warnings = 0
        assert model._rare is None

    def test_a_write_keeps_its_value(self) -> None:
        model = self.model()
        model.stuck_warnings = 2
        model.metrics = {"loss": 0.5}
        assert model._rare is not None
        assert (model.stuck_warnings, model.metrics) == (2, {"loss": 0.5})
        model.stuck_warnings = 0
        assert model.stuck_warnings == 0
        assert model.rejection_reported is False
        assert not hasattr(model, "__dict__")


class TestRounds:
    """``mark_polled``: a round is every model watched when it began."""

    def fleet(self, tmp_path: Path, models: str) -> Fleet:
        fleet = Fleet()
        fleet.load(load_settings_models(tmp_path, models), {}, (), {}, is_settled=never_settled)
        return fleet

    def test_a_round_completes_once_every_model_was_attempted(self, tmp_path: Path) -> None:
        fleet = self.fleet(tmp_path, "a, b")
        a, b = ModelKey("cohere", "a"), ModelKey("cohere", "b")

        assert fleet.mark_polled(a) is False
        assert fleet.mark_polled(a) is False  # twice in a round counts once
        assert fleet.mark_polled(b) is True
        assert fleet.mark_polled(b) is False  # the next round has begun
        assert fleet.mark_polled(ModelKey("cohere", "unknown")) is False
        assert fleet.mark_polled(a) is True

    def test_added_models_count_from_the_next_round(self, tmp_path: Path) -> None:
        fleet = self.fleet(tmp_path, "a")
        a, c = ModelKey("cohere", "a"), ModelKey("cohere", "c")
        fleet.apply(load_settings_models(tmp_path, "a, c"), {})

        assert fleet.mark_polled(c) is False
        assert fleet.mark_polled(a) is True
        assert fleet.mark_polled(a) is False
        assert fleet.mark_polled(c) is True

    def test_removed_models_leave_the_round(self, tmp_path: Path) -> None:
        fleet = self.fleet(tmp_path, "a, b, c")
        a, b, c = (ModelKey("cohere", x) for x in "abc")
        assert fleet.mark_polled(a) is False

        fleet.apply(load_settings_models(tmp_path, "a, c"), {})

        assert fleet.mark_polled(b) is False
        assert fleet.mark_polled(c) is True

    def test_removing_the_last_unpolled_models_starts_the_next_round(self, tmp_path: Path) -> None:
        fleet = self.fleet(tmp_path, "a, b")
        a = ModelKey("cohere", "a")
        assert fleet.mark_polled(a) is False

        fleet.apply(load_settings_models(tmp_path, "a"), {})

        assert fleet.mark_polled(a) is True
