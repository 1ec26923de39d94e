"""What ``status`` and ``/metrics`` read, on a 3-master Redis Cluster: every partition's figures
on its own slot, the live workers, Redis memory summed over the nodes."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import metrics
from engine.run import presence
from engine.runtime import Runtime
from projections import inspection
from projections.projector import Projector
from tests.integration.test_worker import request, transcribe

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def test_figures_on_the_cluster(runtime: Runtime) -> None:
    store = runtime.store
    first = await request(store, [transcribe()])
    p = store.keys.partition(first.owner)
    await presence.beat(store, "w-cluster")
    await store.leases.dispatch({p: 1}, "w-cluster", 0)

    figures = {f.partition: f for f in await inspection.partitions(runtime)}
    assert figures[p].leased == 1
    assert figures[p].projection_lag_entries == 1
    [worker] = await inspection.workers(runtime)
    assert (worker.worker_id, worker.leases, worker.executions) == (
        "w-cluster",
        {p: 1},
        [first.execution_id],
    )
    memory = await inspection.redis_memory(runtime)
    assert memory is not None
    assert memory.used_bytes > 0

    await Projector(runtime).run_until_idle()
    text = (await metrics.render(runtime)).decode()
    found = {f.name: f.samples for f in text_string_to_metric_families(text)}
    [ok] = found["clipstream_scrape_store_ok"]
    assert ok.value == 1
    lag = {s.labels["partition"]: s.value for s in found["clipstream_projection_lag_entries"]}
    assert lag[str(p)] == 0
