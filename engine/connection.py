"""Opening a Redis client: a real server, a cluster, or the embedded in-memory store."""

from __future__ import annotations

import threading
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from engine.settings import Settings

# A redis.asyncio.Redis or a RedisCluster. Typed as Any on purpose: redis-py annotates many async
# commands with their sync return types, so every caller converts replies explicitly instead.
RedisClient: TypeAlias = Any

# Connections per process (per node on a cluster). Workers drive many executions at once and the
# serve role shares one client between API, worker and projector.
MAX_CONNECTIONS = 256


def connect(settings: Settings) -> RedisClient:
    """A client for the configured Redis, or a fresh embedded in-memory store when none is.

    Blocking reads are never longer than a second here, well under redis-py's socket timeout.
    """
    if settings.redis_url is None:
        return embedded()
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, max_connections=MAX_CONNECTIONS)
    # A blocking pool: past its size a command waits for a free connection instead of failing
    # with "Too many connections" (redis-py's default pool refuses beyond its maximum).
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=MAX_CONNECTIONS, timeout=30, health_check_interval=30
    )
    return aioredis.Redis.from_pool(pool)  # from_pool: closing the client closes the pool


def embedded() -> aioredis.Redis:
    """An in-process Redis (fakeredis with Lua): the data lives in this process's memory only.

    Its pool blocks like a real server's: fakeredis's default pool refuses a command past 100
    connections in use, so a burst of requests to ``serve`` got 503s a real Redis would not give.
    """
    import fakeredis

    client: aioredis.Redis = fakeredis.FakeAsyncRedis(
        server=fakeredis.FakeServer(),
        connection_pool_class=aioredis.BlockingConnectionPool,
        max_connections=MAX_CONNECTIONS,
        timeout=30,
    )
    return client


class ExposedStore:
    """The embedded store served over TCP (the Redis protocol, fakeredis's TcpFakeServer) on a
    local port, so other processes (the operator commands) can use it as they would a Redis.
    Commands from the port and from this process run under the store's one lock."""

    def __init__(self, client: aioredis.Redis, host: str, port: int) -> None:
        import fakeredis

        server = client.connection_pool.connection_kwargs.get("server")
        if not isinstance(server, fakeredis.FakeServer):
            raise TypeError("only the embedded store can be exposed")
        self._tcp = fakeredis.TcpFakeServer((host, port))
        self._tcp.fake_server = server  # the embedded store itself, not a fresh one
        self.host, self.port = host, int(self._tcp.server_address[1])
        self._thread = threading.Thread(
            target=self._tcp.serve_forever, name="embedded-store-tcp", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def close(self) -> None:
        """Stop serving: open connections are closed, the port is freed."""
        self._tcp.shutdown()
        self._tcp.server_close()
        self._thread.join(timeout=5)


def as_str(value: bytes | str, *, errors: str = "strict") -> str:
    """A Redis reply as ``str``: the client answers bytes (``decode_responses`` is off, so that
    event payloads stay bytes); ``errors="replace"`` shows bytes that are not UTF-8 as U+FFFD."""
    return value.decode(errors=errors) if isinstance(value, bytes) else value
