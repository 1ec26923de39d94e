"""The store contract suite, run on a 3-master Redis Cluster.

The test functions are the contract modules' own, re-collected here, where tests/cluster's
fixtures give them a cluster client: one suite, three backends, no copies. Anything of the store
that would need keys of two slots in one command or script fails here with CROSSSLOT.
The AOF restart test stays out: it is about one server's persistence, not routing.
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType

import pytest

from engine.connection import RedisClient
from engine.errors import StoreUnavailable
from engine.log.store import EventStore
from engine.settings import Settings
from tests.contract import (
    test_store_append,
    test_store_basics,
    test_store_dispatch,
    test_store_group,
    test_store_guarded_requests,
    test_store_money,
    test_store_open,
    test_store_requests,
)
from tests.contract.builders import FEE, funded, requested, started_execution

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

CONTRACT_MODULES: tuple[ModuleType, ...] = (
    test_store_basics,
    test_store_requests,
    test_store_append,
    test_store_group,
    test_store_dispatch,
    test_store_open,
    test_store_guarded_requests,
    test_store_money,
)

for _module in CONTRACT_MODULES:
    for _name, _value in vars(_module).items():
        if _name.startswith("test_") and callable(_value):
            assert _name not in globals(), f"two contract tests are called {_name}"
            globals()[_name] = _value


async def test_partitions_really_span_several_nodes(store: EventStore) -> None:
    """Guards the suite itself: with the test partition count, the partitions' slots must sit on
    more than one master, or the cross-partition pipelines above would prove nothing."""
    nodes = {store.redis.get_node_from_key(store.keys.log(p)).name for p in store.partitions}
    assert len(nodes) >= 2, nodes


async def test_one_execution_keeps_to_one_slot(store: EventStore) -> None:
    """Every key a request or a money move touches (stream, log, balance, ledger, idempotency,
    applied charges, ready list and ring) or its lease does (work stream, running counts) shares a
    slot."""
    req = await started_execution(store)
    keys = [
        store.keys.execution(req.execution_id),
        store.keys.log(store.keys.partition(req.owner)),
        store.keys.balance(req.owner),
        store.keys.ledger(req.owner),
        store.keys.idempotency(req.owner, "k"),
        store.keys.dead(store.keys.partition(req.owner)),
        store.keys.charges(store.keys.partition(req.owner)),
        store.keys.ready(req.owner),
        store.keys.ring(store.keys.partition(req.owner)),
        store.keys.work(store.keys.partition(req.owner)),
        store.keys.running(store.keys.partition(req.owner)),
    ]
    slots = {store.redis.keyslot(k) for k in keys}
    assert len(slots) == 1, slots


async def test_wait_for_replicas_asks_the_node_that_took_the_write(
    redis: RedisClient, settings: Settings
) -> None:
    """The durable path runs on a cluster: script and WAIT share one pipeline, WAIT pinned to the
    primary that owns the slot (a keyless command would otherwise make the cluster pipeline
    refuse it, or RedisCluster fan it out to every primary). No replicas here: 0 of 1, while the
    write itself stays on the primary."""
    store = EventStore(redis, replace(settings, wait_replicas=1, wait_timeout_ms=50))
    await store.open()
    owner = await funded(store, FEE)
    req = requested(store, owner)
    with pytest.raises(StoreUnavailable, match="0 of 1 replicas"):
        await store.admission.request(req)
    assert [e.seq for e in await store.log.history(req.execution_id)] == [1]
