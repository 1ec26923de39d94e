"""The scheduler on both backends, on a clock the test moves: each due tick fires exactly once
however many schedulers race on it, a scheduler that was down catches up with one run, disabled
schedules never fire, and a tick that finds the previous run in flight starts nothing."""

from __future__ import annotations

from dataclasses import replace

import anyio
import pytest

from engine.log.events import ExecutionRequested
from engine.resources import schedules
from engine.runtime import Runtime
from engine.schedules.runs import TICK_KEY
from engine.schedules.scheduler import Fired, Scheduler, latest_tick
from engine.settings import Settings
from tests.helpers import eventually
from tests.schedules import HOUR_MS, World, install, settle, world

pytestmark = pytest.mark.anyio


class Clock:
    """A clock the test sets; every scheduler of a test reads the same one."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


async def runs_of(w: World) -> list[ExecutionRequested]:
    """The schedule's runs, oldest first, from the owner's partition log."""
    store = w.runtime.store
    entries = await store.log.read_log(store.keys.partition(w.owner), "0-0", 100_000)
    return [
        e.event
        for e in entries
        if isinstance(e.event, ExecutionRequested)
        and e.event.kind == "schedule_run"
        and e.event.schedule_id == w.schedule_id
    ]


def tick_of(run: ExecutionRequested) -> int:
    key = run.idempotency_key or ""
    assert key.startswith(f"{TICK_KEY}:"), key
    return int(key.rsplit(":", 1)[1])


async def due_at(w: World) -> float | None:
    keys = w.runtime.store.keys
    due_key = keys.schedule_due(keys.partition(w.owner))
    score: float | None = await w.runtime.redis.zscore(
        due_key, schedules.due_member(w.owner, w.schedule_id)
    )
    return score


async def scheduled_world(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, **fields: int
) -> World:
    yt = install(monkeypatch)
    yt.upload("@alpha", "a1000000000", hours_old=0.1)
    return await world(runtime, [["@alpha"]], interval_hours=1, **fields)


def test_latest_tick() -> None:
    assert latest_tick(1_000, 100, 1_000) == 1_000
    assert latest_tick(1_000, 100, 1_099) == 1_000
    assert latest_tick(1_000, 100, 1_100) == 1_100
    assert latest_tick(1_000, 100, 1_555) == 1_500


async def test_two_schedulers_racing_on_the_same_due_ticks_start_one_run_per_tick(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await scheduled_world(runtime, monkeypatch)
    first_due = w.schedule.created_at + HOUR_MS
    assert await due_at(w) == first_due
    clock = Clock(first_due - 1)
    schedulers = [Scheduler(runtime, clock=clock) for _ in range(2)]
    assert [await s.tick() for s in schedulers] == [[], []]  # not due yet

    fired: list[Fired] = []
    for k in range(3):
        clock.now_ms = first_due + k * HOUR_MS + 7
        async with anyio.create_task_group() as tg:
            for s in schedulers:

                async def one(s: Scheduler = s) -> None:
                    fired.extend(await s.tick())

                tg.start_soon(one)
        await settle(runtime)  # the run ends before the next tick
    runs = await runs_of(w)
    assert [tick_of(r) for r in runs] == [first_due + k * HOUR_MS for k in range(3)]
    # Both schedulers saw each tick; whoever lost the race got the winner's run back (or found
    # the tick already advanced).
    for run in runs:
        assert {f.execution_id for f in fired if f.tick_ms == tick_of(run)} == {run.execution_id}
    assert await due_at(w) == first_due + 3 * HOUR_MS
    assert await schedulers[0].tick() == []


async def test_a_scheduler_that_was_down_catches_up_with_one_run(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await scheduled_world(runtime, monkeypatch)
    first_due = w.schedule.created_at + HOUR_MS
    clock = Clock(first_due + 5 * HOUR_MS + HOUR_MS // 2)  # six ticks missed
    [fired] = await Scheduler(runtime, clock=clock).tick()
    assert (fired.outcome, fired.tick_ms) == ("dispatched", first_due + 5 * HOUR_MS)
    assert await Scheduler(runtime, clock=clock).tick() == []
    [run] = await runs_of(w)
    assert tick_of(run) == first_due + 5 * HOUR_MS
    assert await due_at(w) == first_due + 6 * HOUR_MS


async def test_disabled_schedules_never_fire(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await scheduled_world(runtime, monkeypatch, enabled=False)
    assert await due_at(w) is None
    scheduler = Scheduler(runtime, clock=Clock(w.schedule.created_at + 100 * HOUR_MS))
    assert await scheduler.tick() == []

    # Enabled: due one interval after the change. Disabled again: out of the index.
    enabled = await schedules.update_schedule(
        runtime, w.owner, w.reporter_id, w.schedule_id, {"enabled": True}
    )
    assert await due_at(w) == enabled.updated_at + HOUR_MS
    await schedules.update_schedule(
        runtime, w.owner, w.reporter_id, w.schedule_id, {"enabled": False}
    )
    assert await due_at(w) is None
    # An entry left behind for a disabled schedule is taken out, and fires nothing.
    keys = runtime.store.keys
    due_key = keys.schedule_due(keys.partition(w.owner))
    await runtime.redis.zadd(due_key, {schedules.due_member(w.owner, w.schedule_id): 1})
    assert await scheduler.tick() == []
    assert await due_at(w) is None
    assert await runs_of(w) == []


async def test_a_patch_that_repeats_the_cadence_keeps_the_due_time(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends the whole schedule back with every edit must not push its next run
    back an interval each time: only a change of ``enabled`` or ``interval_hours`` re-times it."""
    w = await scheduled_world(runtime, monkeypatch)
    due = await due_at(w)
    assert due is not None
    await schedules.update_schedule(
        runtime,
        w.owner,
        w.reporter_id,
        w.schedule_id,
        {"max_videos_per_channel": 3, "enabled": True, "interval_hours": 1},
    )
    assert await due_at(w) == due
    changed = await schedules.update_schedule(
        runtime, w.owner, w.reporter_id, w.schedule_id, {"interval_hours": 2}
    )
    assert await due_at(w) == changed.updated_at + 2 * HOUR_MS


async def test_a_deleted_schedules_leftover_entry_is_dropped(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await scheduled_world(runtime, monkeypatch)
    await schedules.delete_schedule(runtime, w.owner, w.reporter_id, w.schedule_id)
    keys = runtime.store.keys
    due_key = keys.schedule_due(keys.partition(w.owner))
    await runtime.redis.zadd(due_key, {schedules.due_member(w.owner, w.schedule_id): 1})
    assert await Scheduler(runtime, clock=Clock(w.schedule.created_at + 9 * HOUR_MS)).tick() == []
    assert await runtime.redis.zcard(due_key) == 0


async def test_a_tick_while_the_previous_run_is_in_flight_starts_nothing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await scheduled_world(runtime, monkeypatch)
    first_due = w.schedule.created_at + HOUR_MS
    clock = Clock(first_due)
    scheduler = Scheduler(runtime, clock=clock)
    [first] = await scheduler.tick()
    assert first.outcome == "dispatched"
    clock.now_ms += HOUR_MS  # no worker ran: the first run is still pending
    [second] = await scheduler.tick()
    assert (second.outcome, second.execution_id) == ("already_running", first.execution_id)
    assert len(await runs_of(w)) == 1
    assert await due_at(w) == first_due + 2 * HOUR_MS  # that tick is passed over
    await settle(runtime)
    clock.now_ms += HOUR_MS
    [third] = await scheduler.tick()
    assert third.outcome == "dispatched"
    assert len(await runs_of(w)) == 2


async def test_a_tick_that_cannot_start_a_run_is_passed_over(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await scheduled_world(runtime, monkeypatch, coins_micro=0)
    clock = Clock(w.schedule.created_at + HOUR_MS)
    [fired] = await Scheduler(runtime, clock=clock).tick()
    assert fired.outcome == "refused"
    assert "balance" in fired.reason
    assert await runs_of(w) == []
    assert await due_at(w) == w.schedule.created_at + 2 * HOUR_MS


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, scheduler_interval_ms=50)


async def test_the_scheduler_role_fires_on_its_own(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await scheduled_world(runtime, monkeypatch)
    scheduler = Scheduler(runtime, clock=Clock(w.schedule.created_at + HOUR_MS))
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run, stop)
        await eventually(lambda: runs_of(w), until=lambda runs: len(runs) == 1)
        stop.set()
