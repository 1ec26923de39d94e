"""Opening a Redis client: a real server, a cluster, or the embedded in-memory store."""

from __future__ import annotations

from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from engine.settings import Settings

# A redis.asyncio.Redis or a RedisCluster. Typed as Any on purpose: redis-py annotates many async
# commands with their sync return types, so every caller converts replies explicitly instead.
RedisClient: TypeAlias = Any


def connect(settings: Settings) -> RedisClient:
    """A client for the configured Redis, or a fresh embedded in-memory store when none is.

    Blocking reads are never longer than a second here, well under redis-py's socket timeout.
    """
    if settings.redis_url is None:
        return embedded()
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url)
    return aioredis.Redis.from_url(settings.redis_url, health_check_interval=30)


def embedded() -> aioredis.Redis:
    """An in-process Redis (fakeredis with Lua): the data lives in this process's memory only."""
    import fakeredis

    client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return client
