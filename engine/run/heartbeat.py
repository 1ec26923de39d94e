"""Keeping the leases a worker holds: the heartbeat renews them all (every partition in one
round trip), and a lease lost to a takeover stops its job at once; the cancel check interrupts the
jobs waiting on a provider or a retry whose execution has a cancel request. The worker never reads
the partition logs: the cancel check asks the partitions' cancel sets (engine.log.leases.cancelled),
one round trip for every job waiting, within about a second of the request.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from engine.log.store import EventStore
from engine.run.job import Job

log = logging.getLogger("clipstream.worker")


def held_by_partition(jobs: Iterable[Job]) -> dict[int, list[Job]]:
    """The jobs whose lease is still ours to renew (neither lost nor finished), by partition."""
    held: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        if not (job.lost or job.finished):
            held[job.partition].append(job)
    return held


async def renew(store: EventStore, worker_id: str, jobs: dict[str, Job]) -> None:
    """Renew the lease of every job in ``jobs`` (the worker's, by execution id); a job whose
    lease another worker took over is stopped, and forgotten at once if it was still queued."""
    by_partition = held_by_partition(list(jobs.values()))
    answers = await store.leases.renew_many(
        {p: [j.entry_id for j in held] for p, held in by_partition.items()}, worker_id
    )
    for p, held in by_partition.items():
        for job, ok in zip(held, answers[p], strict=True):
            if not ok and not job.finished:
                log.info("worker %s lost the lease of %s", worker_id, job.execution_id)
                lose(jobs, job)


def lose(jobs: dict[str, Job], job: Job) -> None:
    """Stop ``job``, whose lease another worker took over; drop it from ``jobs`` when it was only
    queued (the queue skips it: no lane ever drives it)."""
    job.lose()
    if jobs.get(job.execution_id) is job and job.scope is None:
        del jobs[job.execution_id]


async def check_cancels(store: EventStore, jobs: Iterable[Job]) -> None:
    """Interrupt the jobs waiting on a provider call or a retry whose execution has a cancel
    request (its partition's cancel set says so)."""
    waiting = [j for j in jobs if j.call_scope is not None and not j.cancel_seen]
    if not waiting:
        return
    asked: dict[int, list[str]] = defaultdict(list)
    for job in waiting:
        asked[job.partition].append(job.execution_id)
    cancelled = await store.leases.cancelled(asked)
    for job in waiting:
        if job.execution_id in cancelled:
            job.interrupt()
