"""The worker: the consumer loop that drives executions to their end.

Shape (docs/architecture.md, docs/decisions/0001 and 0002):
    dispatch   executions are leased from Redis (``store.leases.dispatch``), never read ahead: each
               partition keeps a ready list per owner and a ring of owners, and every lease goes
               to the next owner in the ring, skipping owners at the global cap
               (``owner_concurrency``: leases of one owner across all workers). How deep one
               owner's backlog is, or how many workers read it, does not change when another
               owner's execution starts: at the next lease any worker takes in that partition.
    jobs       up to ``worker_concurrency`` executions driven at once, by as many long-lived
               lanes (no task per execution). The worker leases at most twice that many, so a
               lane that ends a job starts the next without a round trip; the queued ones are
               served round-robin by owner too.
    no reader the worker never reads the partition logs (only the projectors do): what it
               writes it knows, and the one thing others write that it must act on, a cancel
               request, reaches it through the partition's cancel set (below).
    heartbeat  every ``heartbeat_ms``: renew every lease held (queued jobs too), every partition
               in one round trip. A lost lease cancels that job: another worker owns it now.
    cancels    every ``min(heartbeat_ms, 500)`` ms: the jobs inside a provider call or a retry
               wait are looked up in their partitions' cancel sets (one round trip; the append of
               an ExecutionCancelRequested adds the execution, its end removes it), and a
               cancelled one aborts its call (DESIGN: within ~1 s). A job between calls finds the
               request at its next append, which conflicts with it.
    claims     every ``claim_interval_ms``: take over leases idle longer than ``lease_ms``
               (epoch = delivery count); too many deliveries -> dead letter and ExecutionFailed.
               A lease taken over keeps its owner's cap slot, so a crash neither leaks a slot nor
               lets the owner exceed the cap.

Where each part lives: the jobs and lanes in engine.run.lanes, the heartbeat and the cancels in
engine.run.heartbeat, what becomes of a claimed lease (dead letters included) in engine.run.claims;
this module is the loop that runs them all, with the dispatch and the shutdown.

A job is driven by engine.run.drive (plan, append, run tools), which sees only the
:class:`engine.run.job.DriveContext` the worker gives it; its appends go through one
:class:`engine.log.batcher.AppendBatcher`, so the executions that reach an append together share one
pipelined round trip, and its terminal append releases its lease (and cap slot) atomically.

Throughput (DESIGN §12): one pipelined round trip leases executions in every partition, and a
fresh lease needs no history read (dispatch returns the history with the lease); nothing reads
the logs back; the appends of all executions at the same point travel in one pipeline, and so do
the renewals, the cancel checks and the releases of every partition.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.abc

from engine import meters
from engine.log.batcher import AppendBatcher
from engine.log.entries import Entry
from engine.log.events import AnyEvent, ExecutionRequested
from engine.run import claims, heartbeat, presence
from engine.run.job import DriveContext, Job
from engine.run.lanes import Lanes
from engine.runtime import Runtime

log = logging.getLogger("clipstream.worker")

_IDLE_MIN_S = 0.002
_IDLE_MAX_S = 0.05

# Append pipelines in flight at once. Each holds at most its share of the lanes, so while Redis
# works through one, the lanes another answered run their next step: with one pipeline able to
# hold every lane, the worker sat idle for that pipeline's whole round trip (about 40 % of a
# one-step drain). Four pipelines of a quarter of the lanes each: +7 to +11 % end to end there.
_APPENDS_IN_FLIGHT = 4


def _default_worker_id() -> str:
    return f"w-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class _Backoff:
    """The loop's idle sleep: a few ms, doubling to ~50 ms while nothing is leased."""

    def __init__(self) -> None:
        self.delay = _IDLE_MIN_S

    def reset(self) -> None:
        self.delay = _IDLE_MIN_S

    def next(self) -> float:
        current = self.delay
        self.delay = min(self.delay * 2, _IDLE_MAX_S)
        return current


class Worker:
    """Drives executions from the partition logs to their terminal event."""

    def __init__(self, runtime: Runtime, *, worker_id: str | None = None) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.settings = runtime.settings
        self.worker_id = worker_id or _default_worker_id()
        self.rng = random.Random()
        lanes = self.settings.worker_concurrency
        self.batcher = AppendBatcher(
            self.store.log,
            max_batch=min(self.settings.batch, -(-lanes // _APPENDS_IN_FLIGHT)),
            max_in_flight=_APPENDS_IN_FLIGHT,
        )
        self._jobs: dict[str, Job] = {}  # every lease held, by execution id
        self._lanes = Lanes(self._jobs, lambda: self._stopping)
        self._releases: dict[int, list[str]] = defaultdict(list)  # leases of finished jobs
        self._stop: anyio.Event | None = None
        self._stop_requested = False
        self._stopping = False

    # -- public -----------------------------------------------------------------------------------
    async def run(self, stop: anyio.Event | None = None) -> None:
        """Work until ``stop`` is set (or :meth:`request_stop`), then shut down gracefully:
        finish running steps within a short grace period and hand back every unfinished lease."""
        self._stop = stop or anyio.Event()
        if self._stop_requested:
            self._stop.set()
        self._stopping = False
        await self._guarded(self._heartbeat)  # live from the start, not a heartbeat later
        async with anyio.create_task_group() as tg:
            self._start_lanes(tg)
            tg.start_soon(self._every, self.settings.heartbeat_ms, self._heartbeat)
            tg.start_soon(self._every, self._cancel_check_ms, self._check_cancels)
            tg.start_soon(self._every, self.settings.claim_interval_ms, self._claim_pass)
            backoff = _Backoff()
            while not self._stop.is_set():
                leased = await self._guarded(self._dispatch_pass)
                await self._guarded(self._flush_releases)
                if leased:
                    backoff.reset()
                    continue
                with anyio.move_on_after(_IDLE_MAX_S if self._full else backoff.next()):
                    if self._full:
                        # Backpressure: lease again as soon as a job ends, not after a backoff.
                        await self._lanes.room()
                    else:
                        await self._stop.wait()
            await self._shutdown()
            tg.cancel_scope.cancel()
        # Gone from the live workers; after the heartbeat task has stopped, so no late beat
        # brings it back.
        await self._guarded(functools.partial(presence.leave, self.store, self.worker_id))

    async def run_until_idle(self) -> None:
        """Process until nothing is new to read, nothing is in flight and nothing is claimable
        now (tests and ``bench``). Errors of the loop itself propagate."""
        self._stopping = False
        async with anyio.create_task_group() as tg:
            self._start_lanes(tg)
            tg.start_soon(self._every, self.settings.heartbeat_ms, self._heartbeat)
            tg.start_soon(self._every, self._cancel_check_ms, self._check_cancels)
            backoff = _Backoff()
            while not self._stop_requested:
                # Idle means a whole pass that began with no job found nothing: a job that ends
                # during a pass may free an owner's cap slot after the dispatch found it full.
                had_jobs = bool(self._jobs)
                claimed = await self._claim_pass()
                leased = await self._dispatch_pass()
                await self._flush_releases()
                if not (had_jobs or claimed or leased or self._jobs):
                    break
                if leased or claimed:
                    backoff.reset()
                else:
                    await anyio.sleep(backoff.next())
            tg.cancel_scope.cancel()
        await self._flush_releases()

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down gracefully (what the CLI's SIGTERM handler does)."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    @property
    def in_flight(self) -> int:
        """Executions this worker holds a lease on right now."""
        return len(self._jobs)

    @property
    def stopping(self) -> bool:
        """True once shutdown began: jobs keep what is done and start no new step."""
        return self._stopping

    def ack(self, job: Job) -> None:
        """Release ``job``'s lease (its execution needs nothing more) with the next batch."""
        self._releases[job.partition].append(job.entry_id)

    # -- loops ------------------------------------------------------------------------------------
    @property
    def _cancel_check_ms(self) -> int:
        return min(self.settings.heartbeat_ms, 500)

    async def _every(self, interval_ms: int, fn: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await anyio.sleep(interval_ms / 1000)
            await self._guarded(fn)

    async def _guarded(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one pass of a loop; its failure is logged, never fatal to the worker."""
        try:
            return await fn()
        except Exception:
            log.exception("worker %s: %s failed", self.worker_id, getattr(fn, "__name__", fn))
            return False

    @property
    def _room_left(self) -> int:
        # Up to twice the lanes: a lane that ends a job finds the next one here, while the leases
        # held stay few enough that other workers (and owners) are not kept waiting behind them.
        return 2 * self.settings.worker_concurrency - len(self._jobs)

    @property
    def _full(self) -> bool:
        return self._room_left <= 0 and not self._stopping

    async def _dispatch_pass(self) -> bool:
        """Lease executions for the room there is, across partitions; True when any were.

        The room is shared out evenly; partitions that filled their share are asked again for
        what the others left, so one busy partition can fill the room in a few round trips.
        """
        room = self._room_left
        if room <= 0 or self._stopping:
            return False
        partitions = list(self.store.partitions)
        leased_any = False
        while room > 0 and partitions:
            share = -(-room // len(partitions))
            leased = await self.store.leases.dispatch(
                {p: share for p in partitions}, self.worker_id, self.settings.owner_concurrency
            )
            fresh = [
                self._job(p, lease.entry, lease.history)
                for p, leases in leased.items()
                for lease in leases
            ]
            await self._admit(job for job in fresh if job is not None)
            room -= len(fresh)
            leased_any = leased_any or bool(fresh)
            partitions = [p for p in partitions if len(leased.get(p, ())) == share]
        return leased_any

    def _job(self, partition: int, entry: Entry, history: list[AnyEvent] | None) -> Job | None:
        """The job of a lease, or None when we hold that execution already (the lease came back
        to us: the job goes on, at the new epoch). ``history`` None: read in :meth:`_admit`."""
        event = entry.event
        assert isinstance(event, ExecutionRequested)
        known = self._jobs.get(event.execution_id)
        if known is not None:
            known.epoch = max(known.epoch, entry.deliveries)
            return None
        return Job(
            execution_id=event.execution_id,
            owner=event.owner,
            partition=partition,
            entry_id=entry.entry_id,
            epoch=entry.deliveries,
            history=history,
        )

    def _start_lanes(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the batcher and the lanes, with the context their drives see."""
        ctx = DriveContext(
            runtime=self.runtime,
            settings=self.settings,
            store=self.store,
            batcher=self.batcher,
            worker_id=self.worker_id,
            rng=self.rng,
            stopping=lambda: self._stopping,
            ack=self.ack,
        )
        tg.start_soon(self.batcher.run)
        self._lanes.start(tg, self.settings.worker_concurrency, ctx)

    async def _admit(self, new: Iterable[Job]) -> None:
        """Load the histories the new jobs need in one round trip, then queue them."""
        jobs = list(new)
        if not jobs:
            return
        unknown = [j.execution_id for j in jobs if j.history is None]
        histories = await self.store.log.histories(unknown) if unknown else {}
        for job in jobs:
            if job.history is None:
                job.history = histories.get(job.execution_id, [])
            self._jobs[job.execution_id] = job
        self._lanes.add(jobs)

    async def _flush_releases(self) -> None:
        """Release the leases of finished jobs (those that ended without a terminal append of
        their own), every partition in one round trip."""
        if any(self._releases.values()):
            releases, self._releases = dict(self._releases), defaultdict(list)
            await self.store.leases.release_many(releases)

    # -- heartbeat, cancels, claims ---------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Say we are alive; renew every lease held (a lease lost to a takeover stops its job)."""
        await presence.beat(self.store, self.worker_id)
        await heartbeat.renew(self.store, self.worker_id, self._jobs)

    async def _check_cancels(self) -> None:
        """Jobs waiting on a provider or a retry: has a cancel been requested meanwhile?"""
        await heartbeat.check_cancels(self.store, list(self._jobs.values()))

    async def _claim_pass(self) -> bool:
        """Take over expired leases on every partition; True when anything was claimed."""
        if self._stopping:
            return False
        claimed_any = False
        fresh: list[Job] = []
        lease_ms = self.settings.lease_ms
        expired = await self.store.leases.claim_expired_many(
            self.store.partitions, self.worker_id, min_idle_ms=lease_ms
        )
        for p, entries in expired.items():
            for entry in entries:
                claimed_any = True
                if await claims.triage(self.store, self.settings, self.worker_id, p, entry) is None:
                    continue
                if (job := self._job(p, entry, None)) is not None:
                    meters.TAKEOVERS.inc()
                    log.info(
                        "worker %s took over %s (epoch %d)",
                        self.worker_id,
                        job.execution_id,
                        job.epoch,
                    )
                    fresh.append(job)
        await self._admit(fresh)
        await self._flush_releases()
        return claimed_any

    # -- shutdown ---------------------------------------------------------------------------------
    @property
    def _grace_s(self) -> float:
        return min(5.0, self.settings.lease_ms / 2000)

    async def _shutdown(self) -> None:
        """Stop taking work, let running steps finish briefly, hand back what is unfinished."""
        self._stopping = True
        with anyio.move_on_after(self._grace_s):
            await self._lanes.settled()
        for job in list(self._jobs.values()):
            if job.scope is not None:
                job.scope.cancel()
        await self._lanes.settled()
        unfinished: dict[int, list[str]] = defaultdict(list)
        for job in self._jobs.values():
            if not (job.finished or job.lost):
                unfinished[job.partition].append(job.entry_id)
        for p, ids in unfinished.items():
            try:
                await self.store.leases.hand_back(p, self.worker_id, ids)
            except Exception:
                # The leases then simply expire: slower takeover, nothing lost.
                log.exception("worker %s: hand back failed on partition %d", self.worker_id, p)
        self._jobs.clear()
        self._lanes.queue.clear()
        await self._guarded(self._flush_releases)
        log.info(
            "worker %s stopped; handed back %d", self.worker_id, sum(map(len, unfinished.values()))
        )
