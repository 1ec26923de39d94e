"""The projector keeps the running executions' views it committed (projections.view_cache) and
writes a view's indexes and transcript pointers only when they change: what it stores is still
exactly what a replay builds, on both backends, and it reads a partition's views back whenever
another projector may have written them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine import meters
from engine.log.events import AnyEvent, ExecutionRequested
from engine.money import billing
from engine.runtime import Runtime
from projections import replay
from projections.namespace import Namespace
from projections.projector import Projector
from projections.views import decode_view
from tests.golden import scenarios
from tests.integration.test_projector import Made, make

pytestmark = pytest.mark.anyio

OWNER = "acc_memory000000000000001"


async def _begun(runtime: Runtime, upto: int) -> Made:
    """A three-step execution of which the first ``upto`` events are in the store; ``events``
    holds them all."""
    made = await make(runtime.store, OWNER, scenarios.three_steps, upto=upto)
    return replace(made, events=scenarios.three_steps(made.execution_id, OWNER))


async def _requested_and_folded(runtime: Runtime) -> tuple[Made, Projector]:
    """A three-step execution's request, folded by a projector that goes on holding its
    partition (and what it committed)."""
    made = await _begun(runtime, 1)
    projector = Projector(runtime)
    await projector.pass_once(acquire=True)
    return made, projector


async def _append(runtime: Runtime, made: Made, start: int, stop: int) -> None:
    """Append events ``start`` up to ``stop`` (0-based, the first is the request) of ``made``."""
    events: list[AnyEvent] = made.events[start:stop]
    await runtime.store.log.append(
        made.execution_id, start, events, owner=made.owner, moves=billing.moves_of(events)
    )


async def _indexed(runtime: Runtime, made: Made) -> dict[str, bool]:
    ns = Namespace(runtime.store.keys, runtime.store.keys.partition(made.owner), 1)
    xid, redis = made.execution_id, runtime.redis
    return {
        "all": await redis.zscore(ns.all, xid) is not None,
        "owned": await redis.zscore(ns.owned(made.owner), xid) is not None,
        "active": await redis.zscore(ns.active(made.owner), xid) is not None,
    }


async def _stored_status(runtime: Runtime, made: Made) -> str:
    ns = Namespace(runtime.store.keys, runtime.store.keys.partition(made.owner), 1)
    raw = await runtime.redis.get(ns.view(made.execution_id))
    assert raw is not None
    return decode_view(raw).status


def _views_counted() -> dict[str, float]:
    """The projector's view counter of this process, by source."""
    sample = "clipstream_projector_views_total"
    return {
        source: meters.REGISTRY.get_sample_value(sample, {"source": source}) or 0.0
        for source in ("memory", "redis")
    }


async def _equal_to_replay(runtime: Runtime) -> None:
    report = await replay.rebuild(runtime)
    parity = await replay.compare(runtime, 1, report.version)
    assert parity.identical, parity.describe()


async def test_a_running_execution_is_folded_from_memory_with_its_indexes_right(
    runtime: Runtime,
) -> None:
    before = _views_counted()
    made, projector = await _requested_and_folded(runtime)
    assert projector.stats.views_read == 1  # the request: nothing stored yet
    assert await _indexed(runtime, made) == {"all": True, "owned": True, "active": True}

    seen = [await _stored_status(runtime, made)]
    for start, stop in ((1, 4), (4, 6), (6, len(made.events))):
        await _append(runtime, made, start, stop)
        await projector.pass_once()
        seen.append(await _stored_status(runtime, made))
        ended = stop == len(made.events)
        assert await _indexed(runtime, made) == {"all": True, "owned": True, "active": not ended}
    assert seen == ["pending", "running", "running", "done"]
    assert projector.stats.views_remembered == 3  # every batch after the first
    assert projector.stats.views_read == 1
    # What operators see of it (clipstream_projector_views_total by source).
    assert _views_counted() == {"memory": before["memory"] + 3, "redis": before["redis"] + 1}
    await _equal_to_replay(runtime)


async def test_a_capacity_of_zero_reads_every_view_back(runtime: Runtime) -> None:
    runtime = replace(runtime, settings=replace(runtime.settings, projector_views=0))
    made, projector = await _requested_and_folded(runtime)
    await _append(runtime, made, 1, 4)
    await projector.pass_once()
    assert (projector.stats.views_remembered, projector.stats.views_read) == (0, 2)
    await _equal_to_replay(runtime)


async def test_a_partition_another_projector_folded_meanwhile_is_read_back(
    runtime: Runtime,
) -> None:
    made = await _begun(runtime, 4)
    p = runtime.store.keys.partition(OWNER)
    first = Projector(runtime, partitions=[p])
    await first.pass_once(acquire=True)  # the view, running, is in its memory now

    # Its lease runs out (a pause); another projector folds the next events and stops.
    ns = first.ns(p)
    await runtime.redis.delete(ns.lease)
    await _append(runtime, made, 4, 6)
    other = Projector(runtime, partitions=[p])
    await other.run_until_idle()

    # The first goes on: it finds its lease gone, takes it again and reads the view back.
    await _append(runtime, made, 6, len(made.events))
    first._leases_checked = 0.0
    await first.pass_once()
    assert first.held == [p]
    assert (first.stats.views_remembered, first.stats.views_read) == (0, 2)
    assert first.stats.conflicts == 0
    assert await _stored_status(runtime, made) == "done"
    assert await _indexed(runtime, made) == {"all": True, "owned": True, "active": False}
    await _equal_to_replay(runtime)


async def test_a_commit_conflict_forgets_the_partition(runtime: Runtime) -> None:
    made = await _begun(runtime, 4)
    p = runtime.store.keys.partition(OWNER)
    first = Projector(runtime, partitions=[p])
    await first.pass_once(acquire=True)

    # Another projector moves the checkpoint while the first still believes it holds the lease.
    await _append(runtime, made, 4, 6)
    other = Projector(runtime, partitions=[p])
    await runtime.redis.delete(first.ns(p).lease)
    await other.run_until_idle()
    await runtime.redis.set(first.ns(p).lease, first.projector_id)

    await _append(runtime, made, 6, len(made.events))
    await first.pass_once()  # folds from its old checkpoint, finds it moved
    assert first.stats.conflicts == 1
    await first.pass_once()
    assert first.stats.views_read == 2  # read back after the conflict, not taken from memory
    await _equal_to_replay(runtime)


async def test_a_transcript_pointer_is_written_with_its_step_not_with_every_later_batch(
    runtime: Runtime,
) -> None:
    made, projector = await _requested_and_folded(runtime)
    await _append(runtime, made, 1, 4)  # the transcribe step completes
    await projector.pass_once()
    ns = Namespace(runtime.store.keys, runtime.store.keys.partition(OWNER), 1)
    requested = made.events[0]
    assert isinstance(requested, ExecutionRequested)
    pointer = ns.transcript(OWNER, requested.target.item_id or "", "pt")
    written = await runtime.redis.get(pointer)
    assert written is not None
    await runtime.redis.set(pointer, b"untouched")
    for start, stop in ((4, 6), (6, len(made.events))):
        await _append(runtime, made, start, stop)
        await projector.pass_once()
    assert await runtime.redis.get(pointer) == b"untouched"
    await runtime.redis.set(pointer, written)
    await _equal_to_replay(runtime)
