"""The system at a glance, for operators: each partition's queues, lag and checkpoint, the roles
alive with the leases they hold, and the schedules' due index.

:func:`read_overview` reads it all from Redis (a few pipelined round trips, whatever the load:
nothing here scans a log). The operator console's ``GET /admin/overview`` serves it; it is meant
to be what ``clipstream status`` prints too, so the two can never disagree.

What each figure is:
    log                entries the partition log holds (the archive may have trimmed older ones)
    queued             executions waiting for a lease (every owner's ready list)
    oldest_queued_ms   age of the oldest of them (an execution id carries its creation time)
    leased             executions leased to a worker right now
    dead               entries in the partition's dead letters
    checkpoint         the last log entry the live projection version folded
    lag_entries        log entries past the checkpoint (counted up to ``LAG_CAP``, then "more")
    lag_ms             time between the checkpoint and the newest log entry (0 when caught up)
    workers            consumers of the group ``workers``: leases held in each partition, and how
                       long since each last read (``idle_ms``); ``live`` when it read within a
                       lease's time (a dead worker's consumer stays listed until it is deleted)
    projectors         the holder of each partition's projection lease and its time left
    archivers          the same for the archive lease (none without an archive)
    schedules          enabled schedules in the due index, how many are overdue and by how long:
                       schedulers hold no lease (any number may run, each tick fires once), so a
                       growing overdue time is how a stopped scheduler shows
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.clock import now_ms
from engine.connection import as_str
from engine.log.ids import id_time_ms
from engine.log.keys import WORKER_GROUP
from engine.log.store import EventStore
from projections.namespace import DEFAULT_VERSION, VERSION_FIELD, Namespace

LAG_CAP = 1_000  # log entries past a checkpoint counted exactly (each read whole); beyond, "more"


@dataclass(slots=True)
class Partition:
    """One partition's figures (see the module docstring)."""

    partition: int
    log: int = 0
    last_entry: str | None = None
    queued: int = 0
    oldest_queued_ms: int | None = None
    leased: int = 0
    dead: int = 0
    checkpoint: str | None = None
    lag_entries: int = 0
    lag_capped: bool = False
    lag_ms: int = 0
    projector: str | None = None
    projector_ttl_ms: int | None = None
    archiver: str | None = None
    archiver_ttl_ms: int | None = None
    schedules: int = 0
    schedules_overdue: int = 0
    overdue_ms: int = 0


@dataclass(slots=True)
class Worker:
    """A consumer of the group ``workers``: leases it holds by partition, idle time."""

    worker_id: str
    leases: dict[int, int] = field(default_factory=dict)
    idle_ms: int = 0
    live: bool = False

    @property
    def held(self) -> int:
        return sum(self.leases.values())


@dataclass(slots=True)
class Holder:
    """A projector or an archiver: the partitions whose lease it holds."""

    holder_id: str
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Overview:
    """What :func:`read_overview` returns."""

    at: int
    partitions_count: int
    projection_version: int
    partitions: list[Partition]
    workers: list[Worker]
    projectors: list[Holder]
    archivers: list[Holder]


def _ms_of(stream_id: str | None) -> int | None:
    if not stream_id:
        return None
    head = stream_id.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _text(value: Any) -> str | None:
    return None if value is None else as_str(value)


async def read_overview(store: EventStore, lease_ms: int) -> Overview:
    """Every figure of the module docstring, now."""
    redis, keys = store.redis, store.keys
    now = now_ms()
    version = int(await redis.hget(keys.meta, VERSION_FIELD) or DEFAULT_VERSION)
    parts = [Partition(partition=p) for p in store.partitions]
    namespaces = [Namespace(keys, p, version) for p in store.partitions]

    pipe = redis.pipeline(transaction=False)
    for p, ns in zip(store.partitions, namespaces, strict=True):
        pipe.xlen(keys.log(p))
        pipe.xrevrange(keys.log(p), "+", "-", count=1)
        pipe.xlen(keys.dead(p))
        pipe.get(ns.ckpt)
        pipe.get(ns.lease)
        pipe.pttl(ns.lease)
        pipe.get(keys.archive_lease(p))
        pipe.pttl(keys.archive_lease(p))
        pipe.lrange(keys.ring(p), 0, -1)
        pipe.hgetall(keys.running(p))
        pipe.zcard(keys.schedule_due(p))
        pipe.zrangebyscore(keys.schedule_due(p), "-inf", now, withscores=True)
        pipe.xinfo_consumers(keys.work(p), WORKER_GROUP)
        pipe.xinfo_consumers(keys.log(p), WORKER_GROUP)
    replies = await pipe.execute()

    workers: dict[str, Worker] = {}
    projectors: dict[str, Holder] = {}
    archivers: dict[str, Holder] = {}
    rings: dict[int, list[str]] = {}
    per = 14
    for i, part in enumerate(parts):
        (
            length,
            last,
            dead,
            ckpt,
            projector,
            projector_ttl,
            archiver,
            archiver_ttl,
            ring,
            running,
            schedules,
            due,
            work_consumers,
            log_consumers,
        ) = replies[i * per : (i + 1) * per]
        p = part.partition
        part.log = int(length)
        part.last_entry = as_str(last[0][0]) if last else None
        part.dead = int(dead)
        part.checkpoint = _text(ckpt)
        part.projector = _text(projector)
        part.projector_ttl_ms = int(projector_ttl) if projector is not None else None
        part.archiver = _text(archiver)
        part.archiver_ttl_ms = int(archiver_ttl) if archiver is not None else None
        part.leased = sum(int(n) for n in running.values())
        part.schedules = int(schedules)
        part.schedules_overdue = len(due)
        part.overdue_ms = max((now - int(score) for _, score in due), default=0)
        rings[p] = [as_str(owner) for owner in ring]
        for holder, found in ((part.projector, projectors), (part.archiver, archivers)):
            if holder is not None:
                found.setdefault(holder, Holder(holder)).partitions.append(p)
        for consumer in [*work_consumers, *log_consumers]:
            name = as_str(consumer["name"])
            worker = workers.setdefault(name, Worker(name, idle_ms=int(consumer["idle"])))
            worker.idle_ms = min(worker.idle_ms, int(consumer["idle"]))
        for consumer in work_consumers:
            if int(consumer["pending"]):
                workers[as_str(consumer["name"])].leases[p] = int(consumer["pending"])

    await _queues(store, parts, rings, now)
    await _lag(store, parts)
    for worker in workers.values():
        worker.live = worker.idle_ms < lease_ms
    return Overview(
        at=now,
        partitions_count=keys.partitions,
        projection_version=version,
        partitions=parts,
        workers=sorted(workers.values(), key=lambda w: (not w.live, w.worker_id)),
        projectors=sorted(projectors.values(), key=lambda h: h.holder_id),
        archivers=sorted(archivers.values(), key=lambda h: h.holder_id),
    )


async def _queues(
    store: EventStore, parts: list[Partition], rings: dict[int, list[str]], now: int
) -> None:
    """Queued executions and the oldest one's age: each ring's owners' ready lists."""
    owners = [(p, owner) for p, ring in rings.items() for owner in ring]
    if not owners:
        return
    pipe = store.redis.pipeline(transaction=False)
    for _, owner in owners:
        pipe.llen(store.keys.ready(owner))
        pipe.lindex(store.keys.ready(owner), 0)
    replies = await pipe.execute()
    by_partition = {part.partition: part for part in parts}
    for n, (p, _) in enumerate(owners):
        length, head = replies[2 * n], replies[2 * n + 1]
        part = by_partition[p]
        part.queued += int(length)
        created = id_time_ms(as_str(head)) if head is not None else None
        if created is not None:
            age = max(0, now - created)
            part.oldest_queued_ms = max(part.oldest_queued_ms or 0, age)


async def _lag(store: EventStore, parts: list[Partition]) -> None:
    """Entries past each checkpoint (capped) and the time between it and the newest entry."""
    behind = [p for p in parts if p.last_entry and p.checkpoint != p.last_entry]
    if not behind:
        return
    pipe = store.redis.pipeline(transaction=False)
    for part in behind:
        start = f"({part.checkpoint}" if part.checkpoint else "-"
        pipe.xrange(store.keys.log(part.partition), start, "+", count=LAG_CAP + 1)
    for part, rows in zip(behind, await pipe.execute(), strict=True):
        part.lag_entries = min(len(rows), LAG_CAP)
        part.lag_capped = len(rows) > LAG_CAP
        newest = _ms_of(part.last_entry)
        # Never folded: the lag runs from the oldest entry the log still holds.
        oldest = _ms_of(part.checkpoint) or (_ms_of(as_str(rows[0][0])) if rows else None)
        if newest is not None and oldest is not None and part.lag_entries:
            part.lag_ms = max(0, newest - oldest)
