"""Cluster fixtures: the store contract suite on a local 3-master Redis Cluster.

A session-wide cluster (``tests.servers.redis_cluster``) on free ports; ``redis`` gives a
``redis.asyncio.cluster.RedisCluster`` client with every primary flushed, and ``backend`` is
``"cluster"``, so the shared ``store`` and ``runtime`` fixtures of tests/conftest.py run on the
cluster unchanged. Skipped when redis-server (or redis-cli, which assigns the slots) is missing,
unless CLIPSTREAM_REQUIRE_REDIS=1, where that is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from engine.connection import RedisClient
from tests.servers import (
    RedisServer,
    redis_cluster,
    redis_cluster_available,
    unavailable,
)


@pytest.fixture(scope="session")
def cluster_nodes() -> Iterator[list[RedisServer]]:
    """Three masters owning all 16384 slots, for the whole session."""
    if not redis_cluster_available():
        unavailable("redis-server or redis-cli is not on PATH")
    with redis_cluster(masters=3) as nodes:
        yield nodes


@pytest.fixture
def backend() -> str:
    return "cluster"


@pytest.fixture
async def redis(cluster_nodes: list[RedisServer]) -> AsyncIterator[RedisClient]:
    """A cluster client on an empty cluster (every primary flushed before the test)."""
    client = RedisCluster(host="127.0.0.1", port=cluster_nodes[0].port)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        await client.aclose()
