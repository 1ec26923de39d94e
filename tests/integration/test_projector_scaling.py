"""Projectors that scale out, on both backends: N projectors share the partitions evenly, move to
a new split when one joins, leaves or dies, and never apply an event twice (every log entry is
folded by exactly one committed batch), leaving views equal to a full replay."""

from __future__ import annotations

from dataclasses import replace

import anyio
import pytest

from engine.runtime import Runtime
from engine.settings import Settings
from projections import replay
from projections.membership import members_key
from projections.namespace import checkpoints
from projections.projector import Projector
from tests.chaos.test_projector_faults import _fill
from tests.helpers import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Twelve partitions (shares of 6, 4, …), small batches and a short lease (quick takeover)."""
    return replace(settings, partitions=12, batch=5, lease_ms=600)


async def _log_entries(runtime: Runtime) -> int:
    return sum([await runtime.store.log.log_length(p) for p in runtime.store.partitions])


async def _assert_current_and_identical(runtime: Runtime) -> None:
    store = runtime.store
    for p, after in (await checkpoints(runtime.redis, store.keys, store.partitions)).items():
        assert await store.log.read_log(p, after, 1) == [], f"partition {p} behind"
    report = await replay.rebuild(runtime)
    parity = await replay.compare(runtime, 1, report.version)
    assert parity.identical, parity.describe()
    assert parity.count_a == report.executions > 0


def _split(*projectors: Projector) -> list[int]:
    """Sizes of the projectors' holdings, once they are disjoint and cover all 12 partitions."""
    held = [set(p.held) for p in projectors]
    union = set().union(*held)
    if sum(len(h) for h in held) != len(union) or union != set(range(12)):
        return []
    return sorted(len(h) for h in held)


async def test_projectors_share_evenly_and_rebalance_on_join_leave_and_death(
    runtime: Runtime,
) -> None:
    await _fill(runtime, owners=4)
    a, b, c = Projector(runtime), Projector(runtime), Projector(runtime)
    stop_a, stop_b, stop_c = anyio.Event(), anyio.Event(), anyio.Event()

    async def crash_c() -> None:
        # c dies: no lease given back, no goodbye to the members (its announcement runs out).
        async def no_goodbye() -> None:
            c._held = {}

        c._release_all = no_goodbye  # type: ignore[method-assign]
        stop_c.set()

    async def split(*projectors: Projector) -> list[int]:
        return _split(*projectors)

    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run, stop_a)
        await eventually(lambda: split(a), until=lambda s: s == [12])
        tg.start_soon(b.run, stop_b)
        await eventually(lambda: split(a, b), until=lambda s: s == [6, 6])
        await _fill(runtime, owners=2)  # work arriving while they share
        tg.start_soon(c.run, stop_c)
        await eventually(lambda: split(a, b, c), until=lambda s: s == [4, 4, 4])
        await _fill(runtime, owners=2)
        stop_b.set()  # b leaves cleanly
        await eventually(lambda: split(a, c), until=lambda s: s == [6, 6])
        await crash_c()  # c dies: a takes everything once c's leases and announcement expire
        await eventually(lambda: split(a), until=lambda s: s == [12])
        await _fill(runtime, owners=2)

        async def caught_up() -> bool:
            return await a.caught_up()

        await eventually(caught_up)
        stop_a.set()
    folded = a.stats.events + b.stats.events + c.stats.events
    assert folded == await _log_entries(runtime)  # every entry applied once, none twice
    assert a.stats.handed_over > 0
    assert b.stats.handed_over > 0
    assert await runtime.redis.zcard(members_key(runtime.store.keys)) == 0
    await _assert_current_and_identical(runtime)


async def test_three_projectors_draining_together_fold_every_entry_once(runtime: Runtime) -> None:
    await _fill(runtime, owners=6)
    projectors = [Projector(runtime) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for projector in projectors:
            tg.start_soon(projector.run_until_idle)
    assert sum(p.stats.events for p in projectors) == await _log_entries(runtime)
    await _assert_current_and_identical(runtime)
