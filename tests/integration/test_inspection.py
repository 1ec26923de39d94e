"""projections.inspection (what ``status`` and ``/metrics`` read from the store) and the meters the
worker counts, on fakeredis and on a private real Redis. Driven with ``run_until_idle``: no sleep
decides a verdict."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine import meters
from engine.log.ids import new_id
from engine.run import presence
from engine.run.worker import Worker
from engine.runtime import Runtime
from projections import inspection
from projections.projector import Projector
from tests.helpers import eventually
from tests.integration.test_worker import request, transcribe

pytestmark = pytest.mark.anyio


def sample(name: str, **labels: str) -> float:
    return meters.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_queued_leased_pending_age_and_projection_lag(runtime: Runtime) -> None:
    store = runtime.store
    first = await request(store, [transcribe()])
    await request(store, [transcribe()], owner=first.owner)
    p = store.keys.partition(first.owner)

    figures = {f.partition: f for f in await inspection.partitions(runtime)}
    assert figures[p].queued == 2
    assert figures[p].leased == 0
    oldest = figures[p].oldest_pending_ms
    assert oldest is not None
    assert oldest >= 0
    assert figures[p].projection_lag_entries == 2  # two ExecutionRequested not folded
    assert figures[p].checkpoint == "0-0"
    others = [f for q, f in figures.items() if q != p]
    assert all(f.queued == 0 and f.oldest_pending_ms is None for f in others)

    # A worker (alive: it beat) leases the oldest one.
    await presence.beat(store, "w-inspected")
    leased = await store.leases.dispatch({p: 1}, "w-inspected", 0)
    assert len(leased[p]) == 1
    figures = {f.partition: f for f in await inspection.partitions(runtime)}
    assert (figures[p].queued, figures[p].leased) == (1, 1)
    [worker] = [w for w in await inspection.workers(runtime) if w.worker_id == "w-inspected"]
    assert worker.leases == {p: 1}
    assert worker.executions == [first.execution_id]

    await Projector(runtime).run_until_idle()
    figures = {f.partition: f for f in await inspection.partitions(runtime)}
    assert figures[p].projection_lag_entries == 0
    assert figures[p].projection_lag_ms == 0
    assert figures[p].checkpoint != "0-0"


async def test_live_workers_are_those_that_beat_within_the_lease_time(runtime: Runtime) -> None:
    store = runtime.store
    assert await inspection.workers(runtime) == []
    await presence.beat(store, "w-beating")
    assert [w.worker_id for w in await inspection.workers(runtime)] == ["w-beating"]
    # Past the lease time it is not live any more (a dead worker's last beat).
    strict = replace(runtime, settings=replace(runtime.settings, lease_ms=-1))
    assert await inspection.workers(strict) == []
    # A beat older than FORGET_MS is removed.
    await store.redis.hset(store.keys.workers, "w-long-gone", 1)
    await inspection.workers(runtime)
    assert await store.redis.hkeys(store.keys.workers) == [b"w-beating"]
    await presence.leave(store, "w-beating")
    assert await inspection.workers(runtime) == []


async def test_a_worker_says_it_is_live_while_it_runs(runtime: Runtime) -> None:
    import anyio

    stop = anyio.Event()
    worker = Worker(runtime, worker_id="w-running")

    async def live() -> list[str]:
        return [w.worker_id for w in await inspection.workers(runtime)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run, stop)
        await eventually(live, until=lambda ids: ids == ["w-running"])
        stop.set()
    assert await live() == []  # it said it left


async def test_the_worker_counts_steps_ends_and_provider_charges(runtime: Runtime) -> None:
    ended = {"kind": "transcript", "status": "done", "code": "none"}
    steps = {"tool": "transcribe", "outcome": "completed"}

    def figures() -> tuple[float, float, float]:
        return (
            sample("clipstream_executions_ended_total", **ended),
            sample("clipstream_step_duration_seconds_count", **steps),
            sample("clipstream_coins_charged_total", charge="provider"),
        )

    before = figures()
    for _ in range(3):
        await request(runtime.store, [transcribe()])
    await Worker(runtime).run_until_idle()
    after = figures()
    assert after[0] - before[0] == 3
    assert after[1] - before[1] == 3
    assert after[2] > before[2]  # the simulated transcriber costs something


async def test_a_failing_step_is_timed_under_its_error_code(runtime: Runtime) -> None:
    failed = {"tool": "transcribe", "outcome": "provider_rejected"}
    ended = {"kind": "transcript", "status": "error", "code": "provider_failed"}

    def figures() -> tuple[float, float]:
        return (
            sample("clipstream_step_duration_seconds_count", **failed),
            sample("clipstream_executions_ended_total", **ended),
        )

    before = figures()
    inputs = [{"item_id": new_id("itm"), "source": "s", "sim": {"fail": "fatal"}}]
    await request(runtime.store, [transcribe()], inputs)
    await Worker(runtime).run_until_idle()
    after = figures()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
