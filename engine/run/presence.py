"""A worker says it is alive: one ``HSET`` of ``{prefix}workers`` (worker id -> ms) per heartbeat,
removed when it stops. ``clipstream status``, ``/metrics`` (``clipstream_workers_live``) and
alerts count as live the workers whose beat is younger than the lease time
(docs/decisions/0004): a consumer group's idle time cannot tell, as on Redis 7.0 a read that
finds nothing does not reset it."""

from __future__ import annotations

from engine.clock import now_ms
from engine.log.store import EventStore


async def beat(store: EventStore, worker_id: str) -> None:
    """Record that ``worker_id`` is alive now."""
    await store.redis.hset(store.keys.workers, worker_id, now_ms())


async def leave(store: EventStore, worker_id: str) -> None:
    """Record that ``worker_id`` stopped."""
    await store.redis.hdel(store.keys.workers, worker_id)
