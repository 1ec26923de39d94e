"""Shared fixtures: one ``redis`` fixture, two backends (fakeredis and a private real Redis).

Tests marked ``anyio`` run on asyncio. A test that takes ``redis`` (or ``store``/``runtime``) runs
once per backend. The real backend is a redis-server spawned for this test session on a free port
(never the shared 6379); when the binary is missing the real variant is skipped, unless
CLIPSTREAM_REQUIRE_REDIS=1, where it fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from engine.connection import RedisClient, embedded
from engine.log.store import EventStore
from engine.runtime import Runtime
from engine.settings import Rate, RateLimits, Settings
from tests.servers import (
    RedisServer,
    redis_server,
    redis_server_available,
    unavailable,
)

TEST_LIMITS = RateLimits(
    key=Rate(1_000_000, 60), ip=Rate(1_000_000, 60), auth_failures=Rate(100_000, 60)
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def real_redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole test session."""
    if not redis_server_available():
        unavailable("redis-server is not on PATH")
    with redis_server() as server:
        yield server


@pytest.fixture(params=["fake", "real"])
def backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
async def redis(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    """A clean Redis: fakeredis, or the private real server flushed before the test."""
    if backend == "fake":
        client = embedded()
    else:
        server: RedisServer = request.getfixturevalue("real_redis_server")
        client = aioredis.Redis.from_url(server.url)
        await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings() -> Settings:
    """Settings for tests: few partitions, instant simulated providers, short leases, and rate
    limits far above what a test sends (the tests of the limits set their own)."""
    return replace(
        Settings(),
        rate_limits=TEST_LIMITS,
        partitions=4,
        sim_latency_ms=0,
        lease_ms=1_500,
        heartbeat_ms=300,
        claim_interval_ms=200,
        worker_concurrency=16,
    )


@pytest.fixture
async def store(redis: RedisClient, settings: Settings) -> EventStore:
    st = EventStore(redis, settings)
    await st.open()
    return st


@pytest.fixture
async def hour_store(redis: RedisClient, settings: Settings) -> EventStore:
    """A store whose leases last an hour: an entry a test has just touched is never idle long
    enough to be claimed by accident, however slow the machine."""
    st = EventStore(redis, replace(settings, lease_ms=3_600_000))
    await st.open()
    return st


@pytest.fixture
async def runtime(redis: RedisClient, settings: Settings) -> Runtime:
    return await Runtime.open(settings, redis)
