"""The system at a glance, for operators: each partition's figures (projections.inspection, the
same ones ``clipstream status`` and ``/metrics`` read, so the three never disagree), who holds
each partition's projection and archive lease, the schedules' due index, and the workers.

:func:`read_overview` adds to inspection's figures only what the console shows beside them:
    projector, archiver   the holder of each partition's projection or archive lease, and its
                          time left (none without an archive)
    schedules             enabled schedules in the due index, how many are overdue and by how
                          long: schedulers hold no lease (any number may run, each tick fires
                          once), so a growing overdue time is how a stopped scheduler shows
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.clock import now_ms
from engine.connection import as_str
from engine.runtime import Runtime
from projections import inspection
from projections.inspection import PartitionFigures, WorkerFigures
from projections.namespace import Namespace, current_version


@dataclass(slots=True)
class Partition:
    """One partition: inspection's figures and the console's additions (module docstring)."""

    figures: PartitionFigures
    projector: str | None = None
    projector_ttl_ms: int | None = None
    archiver: str | None = None
    archiver_ttl_ms: int | None = None
    schedules: int = 0
    schedules_overdue: int = 0
    overdue_ms: int = 0


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
    workers: list[WorkerFigures]
    projectors: list[Holder]
    archivers: list[Holder]


def _text(value: Any) -> str | None:
    return None if value is None else as_str(value)


async def read_overview(runtime: Runtime) -> Overview:
    """Every figure of the module docstring, now."""
    store = runtime.store
    redis, keys = store.redis, store.keys
    now = now_ms()
    version = await current_version(redis, keys)
    parts = [Partition(f) for f in await inspection.partitions(runtime)]

    pipe = redis.pipeline(transaction=False)
    for p in store.partitions:
        lease = Namespace(keys, p, version).lease
        pipe.get(lease)
        pipe.pttl(lease)
        pipe.get(keys.archive_lease(p))
        pipe.pttl(keys.archive_lease(p))
        pipe.zcard(keys.schedule_due(p))
        pipe.zrangebyscore(keys.schedule_due(p), "-inf", now, withscores=True)
    replies = await pipe.execute()

    projectors: dict[str, Holder] = {}
    archivers: dict[str, Holder] = {}
    per = 6
    for i, part in enumerate(parts):
        projector, projector_ttl, archiver, archiver_ttl, schedules, due = replies[
            i * per : (i + 1) * per
        ]
        part.projector = _text(projector)
        part.projector_ttl_ms = int(projector_ttl) if projector is not None else None
        part.archiver = _text(archiver)
        part.archiver_ttl_ms = int(archiver_ttl) if archiver is not None else None
        part.schedules = int(schedules)
        part.schedules_overdue = len(due)
        part.overdue_ms = max((now - int(score) for _, score in due), default=0)
        for holder, found in ((part.projector, projectors), (part.archiver, archivers)):
            if holder is not None:
                found.setdefault(holder, Holder(holder)).partitions.append(part.figures.partition)

    return Overview(
        at=now,
        partitions_count=keys.partitions,
        projection_version=version,
        partitions=parts,
        workers=await inspection.workers(runtime, sample=0),
        projectors=sorted(projectors.values(), key=lambda h: h.holder_id),
        archivers=sorted(archivers.values(), key=lambda h: h.holder_id),
    )
