"""The schedule plans a successful poll's next one from its due time (docs/benchmarks.md, P12)."""

from __future__ import annotations

import anyio

from watcher.fleet import WatchedModel
from watcher.lifecycle import ModelKey
from watcher.pacing import RequestPacer
from watcher.policy import KeyEvidence, judge_success
from watcher.schedule import PaceThenPick, Schedule


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


def models_of(count: int) -> tuple[list[WatchedModel], Schedule]:
    keys = [ModelKey("cohere", f"m{i}") for i in range(count)]
    models = {key: WatchedModel(key, name=None, targets=(), state=None) for key in keys}
    return list(models.values()), Schedule(models)


class TestWait:
    """``next_due`` waits on one loop future and a timer (P16)."""

    async def test_it_sleeps_until_the_earliest_due_time(self) -> None:
        (model,), schedule = models_of(1)
        schedule.at(model, anyio.current_time() + 0.05)
        before = anyio.current_time()
        assert await schedule.next_due() is model
        assert anyio.current_time() - before >= 0.049

    async def test_an_earlier_plan_wakes_the_waiting_worker(self) -> None:
        (late, soon), schedule = models_of(2)
        schedule.at(late, anyio.current_time() + 30.0)
        picked: list[WatchedModel] = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def pick() -> None:
                    picked.append(await schedule.next_due())

                tg.start_soon(pick)
                await anyio.wait_all_tasks_blocked()
                schedule.soon(soon)  # due now: the sleeping worker must see it
        assert picked == [soon]

    async def test_a_cancelled_wait_leaves_nothing_behind(self) -> None:
        (model,), schedule = models_of(1)
        schedule.at(model, anyio.current_time() + 30.0)
        with anyio.move_on_after(0.01):
            await schedule.next_due()
        assert schedule._waiters == []
        schedule.soon(model)
        with anyio.fail_after(5):
            assert await schedule.next_due() is model

    async def test_it_refreshes_the_heartbeat_while_nothing_is_due(self) -> None:
        beats: list[float] = []
        schedule = Schedule({}, heartbeat=lambda: beats.append(anyio.current_time()))
        with anyio.move_on_after(2.5):
            await schedule.next_due()
        assert len(beats) >= 3, beats  # at once, then every HEARTBEAT


class TestPaceThenPickTurns:
    """One picker at a time, by a flag and a queue of turns (P15)."""

    async def test_workers_take_turns_and_each_gets_its_own_model(self) -> None:
        models, schedule = models_of(4)
        now = anyio.current_time()
        for index, model in enumerate(models):
            schedule.at(model, now + 0.01 * index)
        policy = PaceThenPick()
        pacer = RequestPacer(1_000_000_000)
        picked: list[WatchedModel] = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(4):

                    async def worker() -> None:
                        picked.append(await policy.pick(schedule, lambda m: pacer))

                    tg.start_soon(worker)
        assert picked == models  # in due order, each once
        assert all(model.in_flight for model in models)
        assert not policy._busy
        assert not policy._queue

    async def test_workers_cancelled_while_queued_or_picking_leave_the_turn_free(self) -> None:
        models, schedule = models_of(2)
        for model in models:
            schedule.at(model, anyio.current_time() + 30.0)
        policy = PaceThenPick()
        pacer = RequestPacer(1_000_000_000)
        with anyio.move_on_after(0.05):  # one picking, three queued: all cancelled at once
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(policy.pick, schedule, lambda m: pacer)
        assert not policy._busy
        assert not policy._queue
        schedule.soon(models[1])
        with anyio.fail_after(5):
            assert await policy.pick(schedule, lambda m: pacer) is models[1]

    async def test_it_waits_for_the_pacer_before_taking(self) -> None:
        (model,), schedule = models_of(1)
        schedule.soon(model)
        pacer = RequestPacer(600)  # a slot every 0.1 s
        pacer.reserve()
        pacer.reserve()  # the next free slot is 0.2 s away; the pick wakes one spacing early
        before = anyio.current_time()
        with anyio.fail_after(5):
            assert await PaceThenPick().pick(schedule, lambda m: pacer) is model
        assert anyio.current_time() - before >= 0.09
        assert model.in_flight


class TestOneEntryPerModel:
    """Re-planned models leave stale entries; the heap is compacted past 1.25 x the models
    (+ 64) (M4)."""

    async def test_replanning_does_not_grow_the_heap_without_bound(self) -> None:
        models, schedule = models_of(10)
        now = anyio.current_time()
        for round_ in range(100):
            for model in models:
                schedule.at(model, now + 60.0 + round_)
        assert len(schedule) <= len(models) + len(models) // 4 + 64 + 1
        for model in models:  # the live plans survived the compactions
            assert model.due == now + 60.0 + 99
        schedule.at(models[3], now - 1.0)
        assert await schedule.next_due() is models[3]
