"""projections.overview: what the console (and status) read, on fakeredis and a real Redis."""

from __future__ import annotations

import pytest

from engine.runtime import Runtime
from projections.overview import read_overview
from tests.helpers import eventually
from tests.integration.test_worker import request, transcribe

pytestmark = pytest.mark.anyio


async def test_queues_leases_and_workers_as_dispatch_leaves_them(runtime: Runtime) -> None:
    store = runtime.store
    first = await request(store, [transcribe()])
    await request(store, [transcribe()], owner=first.owner)
    p = store.keys.partition(first.owner)

    found = await read_overview(store, lease_ms=3_600_000)
    part = found.partitions[p]
    assert (part.queued, part.leased) == (2, 0)
    assert part.oldest_queued_ms is not None
    assert part.log == 2
    assert part.lag_entries == 2  # no projector yet
    assert part.checkpoint is None

    await store.leases.dispatch({p: 1}, "ghost")
    found = await read_overview(store, lease_ms=3_600_000)
    part = found.partitions[p]
    assert (part.queued, part.leased) == (1, 1)
    [ghost] = [w for w in found.workers if w.worker_id == "ghost"]
    assert ghost.leases == {p: 1}
    assert ghost.live  # it read within the hour

    # A consumer silent for longer than a lease is not live, though it holds a lease (it is
    # first seen on the work stream, where its idle time counts too).
    async def ghost_live() -> bool:
        found = await read_overview(store, lease_ms=5)
        return next(w for w in found.workers if w.worker_id == "ghost").live

    assert await eventually(ghost_live, until=lambda live: not live, deadline_s=10) is False
