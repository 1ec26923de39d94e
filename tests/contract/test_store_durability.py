"""Durability on real Redis: the store survives a restart with AOF (events, the worker group and
its pending entries, the leases, come back as they were), and with replicas configured a request
is accepted only once they confirmed it. Real Redis only: these start their own servers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from engine.errors import StoreUnavailable
from engine.log.store import EventStore
from engine.settings import Settings
from tests.contract.builders import FEE, balance, funded, requested, started_execution
from tests.servers import (
    RedisServer,
    redis_replicated,
    redis_server,
    redis_server_available,
    unavailable,
)

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    if not redis_server_available():
        unavailable("redis-server is not on PATH")
    with redis_server(appendonly=True) as server:
        yield server


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill-9"])
async def test_events_group_and_leases_survive_a_restart(
    aof_server: RedisServer, settings: Settings, crash: bool
) -> None:
    client = aioredis.Redis.from_url(aof_server.url)
    store = EventStore(client, settings)
    await store.open()
    req = await started_execution(store, partition=1)
    queued = await started_execution(store, partition=1)
    [leased] = [lease.entry for lease in (await store.leases.dispatch({1: 1}, "w1"))[1]]
    history = await store.log.history(req.execution_id)
    log = await store.log.read_log(1, "0-0", 10)
    await client.aclose()

    if crash:
        aof_server.stop(kill=True)  # appendfsync always: every acknowledged write is on disk
        aof_server.start()
    else:
        aof_server.restart()

    client = aioredis.Redis.from_url(aof_server.url)
    try:
        store = EventStore(client, settings)
        await store.open()
        assert await store.log.history(req.execution_id) == history
        assert await store.log.read_log(1, "0-0", 10) == log
        # The lease is still w1's; the ready list still holds what was not leased.
        assert await store.leases.renew(1, "w1", [leased.entry_id]) == [True]
        [rest] = [lease.entry for lease in (await store.leases.dispatch({1: 10}, "w2"))[1]]
        assert rest.event is not None
        assert rest.event.execution_id == queued.execution_id
        await store.leases.hand_back(1, "w1", [leased.entry_id])
        [claimed] = await store.leases.claim_expired(1, "w3", min_idle_ms=settings.lease_ms)
        assert (claimed.entry_id, claimed.deliveries) == (leased.entry_id, 2)
    finally:
        await client.aclose()


@pytest.fixture
def replicated() -> Iterator[tuple[RedisServer, RedisServer]]:
    if not redis_server_available():
        unavailable("redis-server is not on PATH")
    with redis_replicated() as servers:
        yield servers


async def test_an_accepted_request_is_already_on_the_replica(
    replicated: tuple[RedisServer, RedisServer], settings: Settings
) -> None:
    primary, replica = replicated
    settings = replace(settings, wait_replicas=1, wait_timeout_ms=10_000)
    client = aioredis.Redis.from_url(primary.url)
    replica_client = aioredis.Redis.from_url(replica.url)
    try:
        store = EventStore(client, settings)
        await store.open()
        for _ in range(5):
            req = await started_execution(store)
            # No polling: WAIT returned only once the replica had the write.
            rows = await replica_client.xrange(store.keys.execution(req.execution_id))
            assert rows is not None
            assert len(rows) == 1
    finally:
        await client.aclose()
        await replica_client.aclose()


async def test_a_request_the_replicas_did_not_confirm_is_unavailable(
    replicated: tuple[RedisServer, RedisServer], settings: Settings
) -> None:
    primary, replica = replicated
    replica.stop(kill=True)
    settings = replace(settings, wait_replicas=1, wait_timeout_ms=100)
    client = aioredis.Redis.from_url(primary.url)
    try:
        store = EventStore(client, settings)
        await store.open()
        owner = await funded(store, 2 * FEE)
        req = requested(store, owner)
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas"):
            await store.admission.request(req, idempotency=("k1", "body"))
        # The primary kept the write: a retry with the same key finds it and charges nothing.
        again = await store.admission.request(requested(store, owner), idempotency=("k1", "body"))
        assert again.duplicate
        assert again.execution_id == req.execution_id
        assert await balance(store, owner) == FEE
    finally:
        await client.aclose()
