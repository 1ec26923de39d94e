"""``EventStore.open`` (the partition count is fixed at creation) and blobs, on every backend."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.connection import RedisClient
from engine.errors import ConfigError
from engine.log.events import ExecutionRequested
from engine.log.keys import WORKER_GROUP
from engine.log.store import EventStore
from engine.settings import Settings
from tests.contract.builders import started_execution

pytestmark = pytest.mark.anyio


async def _opened(redis: RedisClient, settings: Settings) -> EventStore:
    store = EventStore(redis, settings)
    await store.open()
    return store


async def test_open_records_the_partition_count_and_creates_the_groups(
    redis: RedisClient, settings: Settings
) -> None:
    store = await _opened(redis, replace(settings, partitions=3))
    assert int(await redis.hget(store.keys.meta, "partitions")) == 3
    assert store.partitions == range(3)
    for p in store.partitions:
        groups = await redis.xinfo_groups(store.keys.work(p))
        assert [g["name"] for g in groups] in ([WORKER_GROUP], [WORKER_GROUP.encode()])
        # The log exists from the start, with no group: nothing reads it through one.
        assert await redis.xinfo_groups(store.keys.log(p)) == []
    assert await redis.exists(store.keys.log(3)) == 0


async def test_open_drops_the_group_older_workers_kept_on_the_logs(
    redis: RedisClient, settings: Settings
) -> None:
    """Its position would otherwise hold the log's trim floor (engine.archive.trim) forever."""
    store = await _opened(redis, replace(settings, partitions=2))
    req = await started_execution(store, partition=1)
    await redis.xgroup_create(store.keys.log(1), WORKER_GROUP, id="0")
    await redis.xreadgroup(WORKER_GROUP, "old-worker", {store.keys.log(1): ">"}, count=10)
    await _opened(redis, replace(settings, partitions=2))
    assert await redis.xinfo_groups(store.keys.log(1)) == []
    [entry] = await store.log.read_log(1, "0-0", 10)
    assert isinstance(entry.event, ExecutionRequested)
    assert entry.event.execution_id == req.execution_id


async def test_an_explicit_other_count_is_refused(redis: RedisClient, settings: Settings) -> None:
    await _opened(redis, replace(settings, partitions=3))
    with pytest.raises(ConfigError, match="3 partitions"):
        await _opened(redis, replace(settings, partitions=5, partitions_explicit=True))
    assert int(await redis.hget(EventStore(redis, settings).keys.meta, "partitions")) == 3


async def test_a_default_count_adopts_the_stored_one(
    redis: RedisClient, settings: Settings
) -> None:
    first = await _opened(redis, replace(settings, partitions=3))
    req = await started_execution(first)
    second = await _opened(redis, replace(settings, partitions=16, partitions_explicit=False))
    assert second.partitions == range(3)
    assert second.keys.partition(req.owner) == first.keys.partition(req.owner)
    assert await second.log.history(req.execution_id) == await first.log.history(req.execution_id)


async def test_reopening_keeps_the_leases(store: EventStore) -> None:
    await started_execution(store, partition=0)
    [lease] = (await store.leases.dispatch({0: 10}, "w1"))[0]
    again = EventStore(store.redis, store.settings)
    await again.open()
    await again.open()
    assert await again.leases.dispatch({0: 10}, "w2") == {}
    assert await again.leases.renew(0, "w1", [lease.entry.entry_id]) == [True]
    later = await started_execution(again, partition=0)
    [fresh] = (await again.leases.dispatch({0: 10}, "w2"))[0]
    assert isinstance(fresh.entry.event, ExecutionRequested)
    assert fresh.entry.event.execution_id == later.execution_id


async def test_prefixes_keep_deployments_apart(redis: RedisClient, settings: Settings) -> None:
    a = await _opened(redis, replace(settings, prefix="a:", partitions=2))
    b = await _opened(redis, replace(settings, prefix="b:", partitions=5, partitions_explicit=True))
    await started_execution(a, partition=1)
    assert b.partitions == range(5)
    assert await b.log.read_log(1, "0-0", 10) == []
    assert await b.leases.dispatch({1: 10}, "w1") == {}


async def test_a_blob_is_stored_once_by_its_hash(store: EventStore) -> None:
    assert await store.blobs.get(0, "ab" * 32) is None
    await store.blobs.put(0, "ab" * 32, b"first")
    await store.blobs.put(0, "ab" * 32, b"second")
    assert await store.blobs.get(0, "ab" * 32) == b"first"
    assert await store.blobs.get(1, "ab" * 32) is None
    big = bytes(range(256)) * 4096
    await store.blobs.put(1, "cd" * 32, big)
    assert await store.blobs.get(1, "cd" * 32) == big
