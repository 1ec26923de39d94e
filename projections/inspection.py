"""What the store holds right now, as operators look at it: per partition the queues, leases,
dead letters and projection lag; the live workers and what they hold; Redis memory.

Read on demand, never on a hot path: ``clipstream status`` draws it, and every metrics endpoint
turns it into gauges when it is scraped (api.metrics). Each partition's figures take a few
pipelined round trips on that partition's slot, so the same code runs on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError, ResponseError

from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import StoreError, StoreUnavailable
from engine.log import codec
from engine.log.events import ExecutionRequested
from engine.log.ids import id_time_ms
from engine.log.keys import WORKER_GROUP
from engine.runtime import Runtime
from projections.namespace import Namespace, current_version

# Projection lag in entries is counted inside Redis (nothing is sent back but the count), up to
# this many: past it the gauge says "at least" and the lag in seconds is the figure to read.
LAG_COUNT_CAP = 10_000

# A heartbeat this old belongs to a worker that died without saying so: forgotten.
FORGET_MS = 3_600_000

# KEYS[1] log; ARGV[1] checkpoint ("0-0": none), ARGV[2] cap -> {entries after it, first id after}
_PROJECTION_LAG = """
local start = '-'
if ARGV[1] ~= '0-0' then start = '(' .. ARGV[1] end
local rows = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', tonumber(ARGV[2]))
if #rows == 0 then return {0, ''} end
return {#rows, rows[1][1]}
"""


@dataclass(frozen=True, slots=True)
class PartitionFigures:
    """One partition as it is now."""

    partition: int
    log_entries: int  # in Redis (the archive holds what was trimmed)
    queued: int  # executions waiting for a lease
    leased: int  # executions leased by a worker
    oldest_pending_ms: int | None  # age of the oldest execution waiting for a lease
    dead_letters: int
    checkpoint: str  # the live projection's position ("0-0": nothing folded yet)
    projection_lag_entries: int  # log entries past the checkpoint (capped: LAG_COUNT_CAP)
    projection_lag_ms: int  # age of the oldest entry past the checkpoint (0: caught up)


@dataclass(slots=True)
class WorkerFigures:
    """A worker that is live (its heartbeat younger than the lease time) or holds leases (a dead
    worker's leases stay its own until another worker claims them), and what it holds."""

    worker_id: str
    beat_ms: int | None  # since its last heartbeat (None: none on record)
    live: bool
    leases: dict[int, int] = field(default_factory=dict)  # partition -> executions held
    executions: list[str] = field(default_factory=list)  # a few of them, by id

    @property
    def held(self) -> int:
        return sum(self.leases.values())


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """INFO memory, summed over the nodes of a cluster (max 0: no limit)."""

    used_bytes: int
    peak_bytes: int
    max_bytes: int


async def partitions(runtime: Runtime) -> list[PartitionFigures]:
    """Every partition's figures."""
    store = runtime.store
    redis, keys = store.redis, store.keys
    lag_script = redis.register_script(_PROJECTION_LAG)
    now = now_ms()
    out = []
    try:
        version = await current_version(redis, keys)
        for p in store.partitions:
            pipe = redis.pipeline(transaction=False)
            pipe.xlen(keys.log(p))
            pipe.lrange(keys.ring(p), 0, -1)
            pipe.hvals(keys.running(p))
            pipe.xlen(keys.dead(p))
            pipe.get(Namespace(keys, p, version).ckpt)
            length, ring, running, dead, ckpt_raw = await pipe.execute()
            checkpoint = as_str(ckpt_raw) if ckpt_raw else "0-0"
            queued, oldest = await _queue(runtime, ring)
            count, first = await lag_script(keys=[keys.log(p)], args=[checkpoint, LAG_COUNT_CAP])
            first_ms = int(as_str(first).split("-")[0]) if int(count) else now
            out.append(
                PartitionFigures(
                    partition=p,
                    log_entries=int(length),
                    queued=queued,
                    leased=sum(int(n) for n in running),
                    oldest_pending_ms=None if oldest is None else max(0, now - oldest),
                    dead_letters=int(dead),
                    checkpoint=checkpoint,
                    projection_lag_entries=int(count),
                    projection_lag_ms=max(0, now - first_ms),
                )
            )
    except RedisError as exc:
        raise StoreUnavailable(f"cannot read the partitions: {exc}") from exc
    return out


async def _queue(runtime: Runtime, ring: list[Any]) -> tuple[int, int | None]:
    """Executions waiting in the ready lists of ``ring``'s owners, and when the oldest of them
    was created (its id carries the time)."""
    if not ring:
        return 0, None
    redis, keys = runtime.store.redis, runtime.store.keys
    pipe = redis.pipeline(transaction=False)
    for owner in ring:
        pipe.llen(keys.ready(as_str(owner)))
        pipe.lindex(keys.ready(as_str(owner)), 0)
    replies = await pipe.execute()
    queued = sum(int(n) for n in replies[0::2])
    times = [id_time_ms(as_str(x)) for x in replies[1::2] if x is not None]
    known = [t for t in times if t is not None]
    return queued, min(known) if known else None


async def workers(runtime: Runtime, *, sample: int = 20) -> list[WorkerFigures]:
    """The live workers and every worker holding a lease, live first and busiest first, with the
    leases each holds per partition and up to ``sample`` of its executions. Heartbeats older than
    :data:`FORGET_MS` (workers that died without saying so) are removed on the way."""
    store = runtime.store
    redis, keys = store.redis, store.keys
    now = now_ms()
    lease_ms = runtime.settings.lease_ms
    found: dict[str, WorkerFigures] = {}
    try:
        stale = []
        for name, beat in (await redis.hgetall(keys.workers)).items():
            age = max(0, now - int(beat))
            if age <= lease_ms:
                found[as_str(name)] = WorkerFigures(as_str(name), age, live=True)
            elif age > FORGET_MS:
                stale.append(name)
            else:
                found[as_str(name)] = WorkerFigures(as_str(name), age, live=False)
        if stale:
            await redis.hdel(keys.workers, *stale)
        for p in store.partitions:
            for row in await _consumers(runtime, keys.work(p)):
                if not int(row["pending"]):
                    continue
                name = as_str(row["name"])
                worker = found.setdefault(name, WorkerFigures(name, None, live=False))
                worker.leases[p] = int(row["pending"])
                room = sample - len(worker.executions)
                if room > 0:
                    worker.executions += await _held(runtime, p, worker.worker_id, room)
    except RedisError as exc:
        raise StoreUnavailable(f"cannot read the workers: {exc}") from exc
    held = [w for w in found.values() if w.live or w.held]
    return sorted(held, key=lambda w: (not w.live, -w.held, w.worker_id))


async def _consumers(runtime: Runtime, stream: str) -> list[dict[Any, Any]]:
    try:
        rows: list[dict[Any, Any]] = await runtime.store.redis.xinfo_consumers(stream, WORKER_GROUP)
    except ResponseError:  # no such stream or group yet
        return []
    return rows


async def _held(runtime: Runtime, partition: int, consumer: str, count: int) -> list[str]:
    """The execution ids of up to ``count`` leases ``consumer`` holds in ``partition``."""
    redis, work = runtime.store.redis, runtime.store.keys.work(partition)
    pending = await redis.xpending_range(work, WORKER_GROUP, "-", "+", count, consumername=consumer)
    out = []
    for row in pending:
        entries = await redis.xrange(work, row["message_id"], row["message_id"])
        for _, fields in entries:
            try:
                event = codec.decode(fields[b"e"])
            except StoreError:  # an undecodable lease: the claims dead-letter it
                continue
            if isinstance(event, ExecutionRequested):
                out.append(event.execution_id)
    return out


async def archivers(runtime: Runtime) -> list[str]:
    """The archivers holding a partition's archive lease now (whatever archive they write to:
    ``serve``'s is in its own memory, out of reach of another process)."""
    store = runtime.store
    pipe = store.redis.pipeline(transaction=False)
    for p in store.partitions:
        pipe.get(store.keys.archive_lease(p))
    try:
        holders = await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(f"cannot read the archive leases: {exc}") from exc
    return sorted({as_str(h) for h in holders if h is not None})


async def redis_memory(runtime: Runtime) -> RedisMemory | None:
    """Redis memory in use, its peak and its limit (a cluster's nodes summed); None from a
    server without INFO (the embedded store, in ``serve`` or over its port)."""
    try:
        info: dict[str, Any] = await runtime.store.redis.info("memory")
    except ResponseError:  # "unknown command": fakeredis has no INFO
        return None
    except RedisError as exc:
        raise StoreUnavailable(f"cannot read Redis memory: {exc}") from exc
    nodes = [info] if "used_memory" in info else [v for v in info.values() if isinstance(v, dict)]
    return RedisMemory(
        used_bytes=sum(int(n.get("used_memory", 0)) for n in nodes),
        peak_bytes=sum(int(n.get("used_memory_peak", 0)) for n in nodes),
        max_bytes=sum(int(n.get("maxmemory", 0)) for n in nodes),
    )
