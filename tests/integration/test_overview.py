"""projections.overview: what the console reads (inspection's figures, the lease holders, the
schedules), on fakeredis and a real Redis."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.run import presence
from engine.runtime import Runtime
from projections.overview import read_overview
from tests.integration.test_worker import request, transcribe

pytestmark = pytest.mark.anyio


async def test_queues_leases_and_workers_as_dispatch_leaves_them(runtime: Runtime) -> None:
    store = runtime.store
    first = await request(store, [transcribe()])
    await request(store, [transcribe()], owner=first.owner)
    p = store.keys.partition(first.owner)

    found = await read_overview(runtime)
    part = found.partitions[p].figures
    assert (part.queued, part.leased) == (2, 0)
    assert part.oldest_pending_ms is not None
    assert part.log_entries == 2
    assert part.projection_lag_entries == 2  # no projector yet
    assert part.checkpoint == "0-0"
    assert found.workers == []

    # A worker that never beat holds a lease: listed (its lease waits for a takeover), not live.
    await store.leases.dispatch({p: 1}, "ghost")
    found = await read_overview(runtime)
    part = found.partitions[p].figures
    assert (part.queued, part.leased) == (1, 1)
    [ghost] = [w for w in found.workers if w.worker_id == "ghost"]
    assert ghost.leases == {p: 1}
    assert (ghost.live, ghost.beat_ms) == (False, None)

    # Once it beats it is live; past the lease time it is not, though it still holds the lease.
    await presence.beat(store, "ghost")
    [ghost] = (await read_overview(runtime)).workers
    assert (ghost.live, ghost.leases) == (True, {p: 1})
    strict = replace(runtime, settings=replace(runtime.settings, lease_ms=-1))
    [ghost] = (await read_overview(strict)).workers
    assert (ghost.live, ghost.leases) == (False, {p: 1})
