"""The schedule plans a successful poll's next one from its due time (docs/benchmarks.md, P12)."""

from __future__ import annotations

import anyio

from watcher.fleet import WatchedModel
from watcher.lifecycle import ModelKey
from watcher.policy import KeyEvidence, judge_success
from watcher.schedule import Schedule


def one_model() -> tuple[WatchedModel, Schedule]:
    key = ModelKey("cohere", "m")
    model = WatchedModel(key, name=None, targets=(), state=None)
    return model, Schedule({key: model})


class TestAfterDue:
    async def test_the_next_poll_is_planned_from_the_due_time_not_the_end(self) -> None:
        model, schedule = one_model()
        due = anyio.current_time() - 0.5  # taken late (the poll itself ran meanwhile)
        schedule.at(model, due)
        assert await schedule.next_due() is model
        schedule.after_due(model, 2.0)
        assert model.due == due + 2.0  # not now + 2 s: no poll lost to lateness

    async def test_a_poll_later_than_its_interval_is_made_up_at_once_once(self) -> None:
        model, schedule = one_model()
        schedule.at(model, anyio.current_time() - 10.0)  # a process paused for 10 s
        assert await schedule.next_due() is model
        before = anyio.current_time()
        schedule.after_due(model, 2.0)
        after = anyio.current_time()
        assert before <= model.due <= after  # now: one catch-up, not five back to back

    async def test_a_model_polled_without_being_taken_plans_from_now(self) -> None:
        model, schedule = one_model()  # never scheduled (``once``, a direct poll): due 0
        before = anyio.current_time()
        schedule.after_due(model, 2.0)
        assert model.due >= before + 2.0


def test_a_working_keys_evidence_is_shared_not_rebuilt() -> None:
    first, _ = judge_success(KeyEvidence(rejections=2))
    second, _ = judge_success(first)
    assert first == KeyEvidence()
    assert second is first
