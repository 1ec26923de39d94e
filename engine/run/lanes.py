"""The worker's lanes: ``worker_concurrency`` long-lived tasks that drive jobs one after another
(no task is started per execution, and each job is driven by an engine.run.drive.Drive), and the
queue of leased jobs waiting for a lane, served round-robin by owner (the owner cap was applied
when the jobs were leased).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable

import anyio
import anyio.abc

from engine.run.drive import Drive
from engine.run.job import DriveContext, Job

log = logging.getLogger("clipstream.worker")


class OwnerQueue:
    """Jobs waiting for a lane, taken round-robin by owner: one owner's deep backlog does not
    delay another owner's job by more than one turn. Plain data: no I/O, no clock."""

    __slots__ = ("_owners", "_waiting")

    def __init__(self) -> None:
        self._waiting: dict[str, deque[Job]] = {}  # owner -> jobs waiting for a lane
        self._owners: deque[str] = deque()  # round-robin order of owners with waiting jobs

    def put(self, job: Job) -> None:
        """Queue ``job`` behind its owner's other waiting jobs."""
        queue = self._waiting.get(job.owner)
        if queue is None:
            queue = self._waiting[job.owner] = deque()
            self._owners.append(job.owner)
        queue.append(job)

    def take(self) -> Job | None:
        """The next waiting job, the owners taken in turn; None when none is waiting. A job
        whose lease was lost while it waited is dropped."""
        while self._owners:
            owner = self._owners.popleft()
            queue = self._waiting[owner]
            job = queue.popleft()
            if queue:
                self._owners.append(owner)
            else:
                del self._waiting[owner]
            if not job.lost:
                return job
        return None

    def clear(self) -> None:
        """Forget every waiting job (shutdown: their leases are handed back)."""
        self._waiting.clear()
        self._owners.clear()


class _Lane:
    """One lane: the job handed to it, and the event it waits on when it has none."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.wake = anyio.Event()


class Lanes:
    """The lanes and their queue. ``held`` is the worker's map of the jobs it holds, by execution
    id: a job that ends, or is lost, leaves it. ``stopping()`` is True once shutdown began: no
    lane takes a new job then."""

    def __init__(self, held: dict[str, Job], stopping: Callable[[], bool]) -> None:
        self.queue = OwnerQueue()
        self.running = 0  # jobs handed to a lane and not ended yet
        self._held = held
        self._stopping = stopping
        self._idle: list[_Lane] = []  # lanes waiting for a job
        self._ended: anyio.Event | None = None  # set when a job ends, while shutdown waits
        self._room = anyio.Event()  # set when a job ends: the reader may have room again

    def start(self, tg: anyio.abc.TaskGroup, count: int, ctx: DriveContext) -> None:
        """Start ``count`` lanes in ``tg``; their drives see ``ctx``."""
        self._idle = []
        for _ in range(count):
            tg.start_soon(self._lane, ctx)

    def add(self, jobs: Iterable[Job]) -> None:
        """Queue ``jobs`` and hand what waits to the idle lanes."""
        for job in jobs:
            self.queue.put(job)
        while self._idle and not self._stopping():
            waiting = self._next()
            if waiting is None:
                return
            lane = self._idle.pop()
            lane.job = waiting
            lane.wake.set()

    async def room(self) -> None:
        """Return once a job ends (its lease, and maybe its owner's cap slot, is free again)."""
        self._room = anyio.Event()
        await self._room.wait()

    async def settled(self) -> None:
        """Return once no job is being driven."""
        while self.running:
            self._ended = anyio.Event()
            await self._ended.wait()

    def _next(self) -> Job | None:
        """The next queued job, which counts as running from now on (None when none is)."""
        job = self.queue.take()
        if job is not None:
            self.running += 1
        return job

    async def _lane(self, ctx: DriveContext) -> None:
        lane = _Lane()
        while True:
            job, lane.job = lane.job, None
            if job is None:
                job = None if self._stopping() else self._next()
                if job is None:
                    lane.wake = anyio.Event()
                    self._idle.append(lane)
                    await lane.wake.wait()
                    continue
            await self._drive(job, ctx)

    async def _drive(self, job: Job, ctx: DriveContext) -> None:
        """Drive ``job`` until it ends, is lost, or shutdown cancels it."""
        try:
            if self._stopping():
                return  # handed over just as shutdown began: its lease is handed back
            with anyio.CancelScope() as scope:
                job.scope = scope
                if not job.lost:
                    await Drive(ctx, job).run()
        except Exception:
            # A bug or Redis failing: stop renewing, so the lease expires and a claim retries it
            # (and dead-letters it after max_deliveries): nothing loops forever.
            log.exception("worker %s: execution %s failed", ctx.worker_id, job.execution_id)
            job.finished = True
        finally:
            self.running -= 1
            if self._ended is not None:
                self._ended.set()
            self._room.set()
            if (job.finished or job.lost) and self._held.get(job.execution_id) is job:
                del self._held[job.execution_id]
