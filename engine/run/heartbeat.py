"""Keeping the leases a worker holds: the heartbeat renews them all, and a lease lost to a
takeover stops its job at once; the cancel check interrupts the jobs waiting on a provider or a
retry whose execution has a cancel request (the reader sees most of them first, but a cancel
appended while the reader is behind must still stop a call within about a second).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from engine.log.events import ExecutionCancelRequested
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
    for p, held in held_by_partition(list(jobs.values())).items():
        still = await store.leases.renew(p, worker_id, [j.entry_id for j in held])
        for job, ok in zip(held, still, strict=True):
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
    request in its log."""
    waiting = [j for j in jobs if j.call_scope is not None and not j.cancel_seen]
    if not waiting:
        return
    histories = await store.log.histories([j.execution_id for j in waiting])
    for job in waiting:
        events = histories.get(job.execution_id, [])
        if any(isinstance(e, ExecutionCancelRequested) for e in events):
            job.interrupt()
