"""The worker: the consumer loop that drives executions to their end.

Shape (docs/architecture.md, docs/decisions/0001):
    reader     read_group on every partition log (non-blocking, batched). ExecutionRequested
               entries become jobs; every other entry is acknowledged in batches (it only informs
               projections), except that a cancel request for a job we drive interrupts it now.
    jobs       up to ``worker_concurrency`` executions driven at once, one anyio task each; the
               rest wait in a local queue served round-robin by owner, so one owner's flood
               cannot starve another owner's single execution.
    heartbeat  every ``heartbeat_ms``: renew every lease held (queued jobs too). A lost lease
               cancels that job: another worker owns the execution now.
    cancels    every ``min(heartbeat_ms, 500)`` ms: jobs inside a provider call or a retry wait
               look for an ExecutionCancelRequested and abort the call (DESIGN: within ~1 s).
    claims     every ``claim_interval_ms``: take over leases idle longer than ``lease_ms``
               (epoch = delivery count); too many deliveries -> dead letter and ExecutionFailed.

A job folds the execution's history (engine.plan), asks ``next_action`` and turns it into
expected-seq appends and tool calls. Events that belong together go in one append
(ExecutionStarted + StepStarted, StepCompleted + the next StepStarted or ExecutionCompleted).
A conflict means someone else wrote: reload and re-plan, or drop the job quietly when the lease
is gone. The ExecutionRequested entry is acknowledged only after the terminal append.

Provider cost is recorded on StepCompleted (cost, usage) but NOT charged to the owner yet: that
is the billing issue (see the comment in ``_Drive._start_step``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import socket
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from engine import codec, plan
from engine.errors import ConcurrencyConflict, ToolError
from engine.events import (
    AnyEvent,
    BlobRef,
    ExecutionCancelled,
    ExecutionCancelRequested,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSpec,
    StepStarted,
)
from engine.retry import is_retryable
from engine.runtime import Runtime
from engine.store import Entry
from engine.tools import TOOLS, Tool, ToolContext

log = logging.getLogger("clipstream.worker")

_MAX_CONFLICTS = 50  # re-plans after conflicts before a job gives up (its lease then expires)
_IDLE_MIN_S = 0.002
_IDLE_MAX_S = 0.05


def _now_ms() -> int:
    return int(time.time() * 1000)


def _default_worker_id() -> str:
    return f"w-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(eq=False, slots=True)
class _Job:
    """One execution this worker holds the lease of (queued or running)."""

    execution_id: str
    owner: str
    partition: int
    entry_id: str
    epoch: int
    history: list[AnyEvent] | None = None  # preloaded in a batch; consumed by the first plan
    scope: anyio.CancelScope | None = None  # the whole job (lease lost, shutdown)
    call_scope: anyio.CancelScope | None = None  # the provider call or retry wait in progress
    known_seq: int = 0
    cancel_seen: bool = False
    lost: bool = False
    finished: bool = False  # terminal appended (or found), or abandoned: never hand back


class _Backoff:
    """The reader's idle sleep: a few ms, doubling to ~50 ms while everything stays empty."""

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
        self._jobs: dict[str, _Job] = {}  # every lease held, by execution id
        self._waiting: dict[str, deque[_Job]] = {}  # owner -> jobs waiting for a slot
        self._owners: deque[str] = deque()  # round-robin order of owners with waiting jobs
        self._running = 0
        self._acks: dict[int, list[str]] = defaultdict(list)
        self._tg: anyio.abc.TaskGroup | None = None
        self._stop: anyio.Event | None = None
        self._stop_requested = False
        self._stopping = False
        self._job_ended: anyio.Event | None = None

    # -- public ----------------------------------------------------------------------------------
    async def run(self, stop: anyio.Event | None = None) -> None:
        """Work until ``stop`` is set (or :meth:`request_stop`), then shut down gracefully:
        finish running steps within a short grace period and hand back every unfinished lease."""
        self._stop = stop or anyio.Event()
        if self._stop_requested:
            self._stop.set()
        self._stopping = False
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._every, self.settings.heartbeat_ms, self._heartbeat)
            tg.start_soon(self._every, self._cancel_check_ms, self._check_cancels)
            tg.start_soon(self._every, self.settings.claim_interval_ms, self._claim_pass)
            backoff = _Backoff()
            while not self._stop.is_set():
                got = await self._guarded(self._read_pass)
                await self._guarded(self._flush_acks)
                if got:
                    backoff.reset()
                    continue
                with anyio.move_on_after(backoff.next()):
                    await self._stop.wait()
            await self._shutdown()
            tg.cancel_scope.cancel()

    async def run_until_idle(self) -> None:
        """Process until nothing is new to read, nothing is in flight and nothing is claimable
        now (tests and ``bench``). Errors of the loop itself propagate."""
        self._stopping = False
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._every, self.settings.heartbeat_ms, self._heartbeat)
            tg.start_soon(self._every, self._cancel_check_ms, self._check_cancels)
            backoff = _Backoff()
            while not self._stop_requested:
                claimed = await self._claim_pass()
                got = await self._read_pass()
                await self._flush_acks()
                if not (claimed or got or self._jobs):
                    break
                if got or claimed:
                    backoff.reset()
                else:
                    await anyio.sleep(backoff.next())
            tg.cancel_scope.cancel()
        await self._flush_acks()

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down gracefully (what the CLI's SIGTERM handler does)."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    @property
    def in_flight(self) -> int:
        """Executions this worker holds a lease on right now."""
        return len(self._jobs)

    # -- loops -------------------------------------------------------------------------------
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

    async def _read_pass(self) -> bool:
        """Read new entries from every partition; True when there were any."""
        # The local queue holds up to a batch of leases (at least twice the concurrency): enough
        # to see past one owner's flood and serve owners in turn, without hoarding the work
        # other workers could take.
        room = max(2 * self.settings.worker_concurrency, self.settings.batch) - len(self._jobs)
        if room <= 0 or self._stopping:
            return False  # backpressure: the leases we hold already fill the queue
        count = max(1, min(self.settings.batch, room))
        batches = await self.store.read_group(self.store.partitions, self.worker_id, count)
        fresh: list[_Job] = []
        for p, entries in batches.items():
            for entry in entries:
                job = await self._route(p, entry)
                if job is not None:
                    fresh.append(job)
        await self._admit(fresh)
        return bool(batches)

    async def _route(self, partition: int, entry: Entry) -> _Job | None:
        """Decide what one delivered entry means: a job to drive, or an ack."""
        event = entry.event
        if event is None:
            await self.store.dead_letter(partition, entry, "undecodable entry")
            return None
        if isinstance(event, ExecutionRequested):
            known = self._jobs.get(event.execution_id)
            if known is not None:
                known.epoch = max(known.epoch, entry.deliveries)
                return None
            return _Job(
                execution_id=event.execution_id,
                owner=event.owner,
                partition=partition,
                entry_id=entry.entry_id,
                epoch=entry.deliveries,
            )
        if isinstance(event, ExecutionCancelRequested):
            job = self._jobs.get(event.execution_id)
            if job is not None:
                self._interrupt(job)
        self._acks[partition].append(entry.entry_id)
        return None

    async def _admit(self, jobs: list[_Job]) -> None:
        """Preload the new jobs' histories in one round trip, then queue them."""
        if not jobs:
            return
        histories = await self.store.histories([j.execution_id for j in jobs])
        for job in jobs:
            job.history = histories.get(job.execution_id, [])
            self._jobs[job.execution_id] = job
            queue = self._waiting.get(job.owner)
            if queue is None:
                queue = self._waiting[job.owner] = deque()
                self._owners.append(job.owner)
            queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        """Start waiting jobs while there are free slots, taking owners in turn."""
        while (
            self._running < self.settings.worker_concurrency
            and self._owners
            and not self._stopping
            and self._tg is not None
        ):
            owner = self._owners.popleft()
            queue = self._waiting[owner]
            job = queue.popleft()
            if queue:
                self._owners.append(owner)
            else:
                del self._waiting[owner]
            if job.lost:
                continue
            self._running += 1
            self._tg.start_soon(self._job_task, job)

    async def _job_task(self, job: _Job) -> None:
        try:
            with anyio.CancelScope() as scope:
                job.scope = scope
                if not job.lost:
                    await _Drive(self, job).run()
        except Exception:
            # A bug or Redis failing: stop renewing, so the lease expires and a claim retries it
            # (and dead-letters it after max_deliveries): nothing loops forever.
            log.exception("worker %s: execution %s failed", self.worker_id, job.execution_id)
            job.finished = True
        finally:
            self._running -= 1
            if self._job_ended is not None:
                self._job_ended.set()
            if (job.finished or job.lost) and self._jobs.get(job.execution_id) is job:
                del self._jobs[job.execution_id]
            self._dispatch()

    def _ack(self, job: _Job) -> None:
        self._acks[job.partition].append(job.entry_id)

    async def _flush_acks(self) -> None:
        if not any(self._acks.values()):
            return
        acks, self._acks = dict(self._acks), defaultdict(list)
        await self.store.ack_many(acks)

    def _interrupt(self, job: _Job) -> None:
        """A cancel was requested: abort the provider call (or retry wait) in progress."""
        job.cancel_seen = True
        if job.call_scope is not None:
            job.call_scope.cancel()

    def _lose(self, job: _Job) -> None:
        """Another worker took the lease over: stop at once, write nothing more."""
        job.lost = True
        if job.scope is not None:
            job.scope.cancel()
        if self._jobs.get(job.execution_id) is job and job.scope is None:
            del self._jobs[job.execution_id]  # still queued: _dispatch skips it

    # -- heartbeat, cancels, claims ---------------------------------------------------------
    def _held_by_partition(self) -> dict[int, list[_Job]]:
        held: dict[int, list[_Job]] = defaultdict(list)
        for job in list(self._jobs.values()):
            if not (job.lost or job.finished):
                held[job.partition].append(job)
        return held

    async def _heartbeat(self) -> None:
        """Renew every lease held; a lease lost to a takeover stops its job."""
        for p, jobs in self._held_by_partition().items():
            still = await self.store.renew(p, self.worker_id, [j.entry_id for j in jobs])
            for job, ok in zip(jobs, still, strict=True):
                if not ok and not job.finished:
                    log.info("worker %s lost the lease of %s", self.worker_id, job.execution_id)
                    self._lose(job)

    async def _check_cancels(self) -> None:
        """Jobs waiting on a provider or a retry: has a cancel been requested meanwhile?"""
        waiting = [
            j for j in list(self._jobs.values()) if j.call_scope is not None and not j.cancel_seen
        ]
        if not waiting:
            return
        histories = await self.store.histories([j.execution_id for j in waiting])
        for job in waiting:
            events = histories.get(job.execution_id, [])
            if any(isinstance(e, ExecutionCancelRequested) for e in events):
                self._interrupt(job)

    async def _claim_pass(self) -> bool:
        """Take over expired leases on every partition; True when anything was claimed."""
        if self._stopping:
            return False
        claimed_any = False
        fresh: list[_Job] = []
        for p in self.store.partitions:
            entries = await self.store.claim_expired(
                p, self.worker_id, min_idle_ms=self.settings.lease_ms
            )
            for entry in entries:
                claimed_any = True
                event = entry.event
                if (
                    isinstance(event, ExecutionRequested)
                    and entry.deliveries > self.settings.max_deliveries
                ):
                    await self._dead_letter_execution(p, entry, event)
                    continue
                job = await self._route(p, entry)
                if job is not None:
                    log.info(
                        "worker %s took over %s (epoch %d)",
                        self.worker_id,
                        job.execution_id,
                        job.epoch,
                    )
                    fresh.append(job)
        await self._admit(fresh)
        await self._flush_acks()
        return claimed_any

    async def _dead_letter_execution(
        self, partition: int, entry: Entry, event: ExecutionRequested
    ) -> None:
        """Poison work: end the execution in error first, then move the entry to the dead
        letters (a crash in between redelivers it and this runs again, idempotently)."""
        reason = (
            f"delivered {entry.deliveries} times (max {self.settings.max_deliveries}): "
            f"dead-lettered as entry {entry.entry_id} of partition {partition}"
        )
        xid = event.execution_id
        for _ in range(_MAX_CONFLICTS):
            state = plan.fold(await self.store.history(xid))
            if state.requested is None or state.terminal:
                break
            closing: list[AnyEvent] = []
            if state.in_flight is not None:
                closing.append(
                    StepFailed(
                        execution_id=xid,
                        step_index=state.in_flight.step_index,
                        attempt=state.in_flight.attempt,
                        code="internal",
                        message="abandoned: the execution was dead-lettered",
                        retryable=False,
                    )
                )
            closing.append(ExecutionFailed(execution_id=xid, code="internal", message=reason))
            try:
                await self.store.append(
                    xid, state.seq, closing, expire_ms=self.settings.retention_ms
                )
                break
            except ConcurrencyConflict:
                continue
        await self.store.dead_letter(partition, entry, reason)
        log.warning("worker %s: %s %s", self.worker_id, xid, reason)

    # -- shutdown --------------------------------------------------------------------------------
    async def _jobs_settled(self) -> None:
        """Return once no job task is running."""
        while self._running:
            self._job_ended = anyio.Event()
            await self._job_ended.wait()

    @property
    def _grace_s(self) -> float:
        return min(5.0, self.settings.lease_ms / 2000)

    async def _shutdown(self) -> None:
        """Stop taking work, let running steps finish briefly, hand back what is unfinished."""
        self._stopping = True
        with anyio.move_on_after(self._grace_s):
            await self._jobs_settled()
        for job in list(self._jobs.values()):
            if job.scope is not None:
                job.scope.cancel()
        await self._jobs_settled()
        unfinished: dict[int, list[str]] = defaultdict(list)
        for job in self._jobs.values():
            if not (job.finished or job.lost):
                unfinished[job.partition].append(job.entry_id)
        for p, ids in unfinished.items():
            try:
                await self.store.hand_back(p, self.worker_id, ids)
            except Exception:
                # The leases then simply expire: slower takeover, nothing lost.
                log.exception("worker %s: hand back failed on partition %d", self.worker_id, p)
        self._jobs.clear()
        self._waiting.clear()
        self._owners.clear()
        await self._guarded(self._flush_acks)
        log.info(
            "worker %s stopped; handed back %d", self.worker_id, sum(map(len, unfinished.values()))
        )


class _Drive:
    """Drives one execution: plan, append, run tools, until terminal, lost or stopping."""

    def __init__(self, worker: Worker, job: _Job) -> None:
        self.w = worker
        self.job = job
        self.store = worker.store
        self.xid = job.execution_id
        self.state = plan.ExecState()
        self.durable = 0  # the seq the store has confirmed
        self.pending: list[AnyEvent] = []
        self.conflicts = 0

    async def run(self) -> None:
        history = self.job.history
        self.job.history = None
        if history is None:
            history = await self.store.history(self.xid)
        if not self._adopt(history):
            return
        while True:
            action = plan.next_action(self.state, _now_ms())
            match action:
                case plan.Nothing():
                    self._finish()
                    return
                case plan.StartExecution():
                    self._buffer(
                        ExecutionStarted(
                            execution_id=self.xid, worker_id=self.w.worker_id, epoch=self.job.epoch
                        )
                    )
                case plan.StartStep():
                    if self.w._stopping:
                        await self._flush()  # keep what is done; the next worker goes on
                        return
                    if not await self._start_step(action) and self.job.lost:
                        return
                case plan.WaitUntil(at_ms=at_ms):
                    if not await self._flush():
                        if self.job.lost:
                            return
                        continue
                    if self.w._stopping:
                        return
                    await self._wait(at_ms)
                case plan.Complete(cost=cost):
                    self._buffer(ExecutionCompleted(execution_id=self.xid, cost=cost))
                    if await self._end():
                        return
                case plan.Fail(code=code, message=message, http_status=status):
                    self._buffer(
                        ExecutionFailed(
                            execution_id=self.xid, code=code, message=message, http_status=status
                        )
                    )
                    if await self._end():
                        return
                case plan.Cancel(step_index=index, attempt=attempt):
                    if index is not None and attempt is not None:
                        self._buffer(
                            StepFailed(
                                execution_id=self.xid,
                                step_index=index,
                                attempt=attempt,
                                code="cancelled",
                                message="cancelled on request",
                                retryable=False,
                            )
                        )
                    self._buffer(ExecutionCancelled(execution_id=self.xid, step_index=index))
                    if await self._end():
                        return
            if self.job.lost:
                return

    # -- state -----------------------------------------------------------------------------------
    def _adopt(self, history: list[AnyEvent]) -> bool:
        """Take ``history`` as the truth; False when a newer lease holder has written."""
        self.state = plan.fold(history)
        self.durable = self.job.known_seq = self.state.seq
        self.pending.clear()
        if self.state.last_epoch > self.job.epoch:
            self.job.lost = True
            return False
        return True

    def _buffer(self, event: AnyEvent) -> None:
        """Queue ``event`` for the next append and fold it into the planned state now."""
        stamped = codec.stamp(event, self.state.seq + 1)
        self.pending.append(stamped)
        self.state = plan.apply(self.state, stamped)

    def _finish(self) -> None:
        self.w._ack(self.job)
        self.job.finished = True

    async def _flush(self, *, terminal: bool = False) -> bool:
        """Append the pending events; False after a conflict (state reloaded, or job lost)."""
        if not self.pending:
            return True
        expire = self.w.settings.retention_ms if terminal else 0
        try:
            written = await self.store.append(
                self.xid, self.durable, self.pending, expire_ms=expire
            )
        except ConcurrencyConflict:
            await self._reload_after_conflict()
            return False
        self.durable = self.job.known_seq = written[-1].seq
        self.pending.clear()
        return True

    async def _reload_after_conflict(self) -> None:
        self.conflicts += 1
        if self.conflicts > _MAX_CONFLICTS:
            raise RuntimeError(f"{self.xid}: {self.conflicts} conflicts in a row")
        history = await self.store.history(self.xid)
        if not self._adopt(history):
            return
        # Someone else wrote: a cancel request, or a worker that took our lease over.
        still = await self.store.renew(self.job.partition, self.w.worker_id, [self.job.entry_id])
        if still != [True] and not self.state.terminal:
            self.job.lost = True

    async def _end(self) -> bool:
        """Append the terminal events and acknowledge; False when a conflict needs a re-plan."""
        if await self._flush(terminal=True):
            self._finish()
            return True
        return self.job.lost

    async def _wait(self, at_ms: int) -> None:
        """Sleep until a scheduled retry, interruptible by a cancel request."""
        with anyio.CancelScope() as scope:
            self.job.call_scope = scope
            try:
                if self.job.cancel_seen:
                    scope.cancel()
                await anyio.sleep(max(0, at_ms - _now_ms()) / 1000)
            finally:
                self.job.call_scope = None
        if self.job.cancel_seen:
            await self._reload_after_conflict()

    # -- steps -----------------------------------------------------------------------------------
    async def _start_step(self, action: plan.StartStep) -> bool:
        """Append StepStarted (with what was pending), run the tool, buffer the outcome."""
        req = self.state.requested
        assert req is not None
        spec = req.workflow.steps[action.index]
        tool = TOOLS.get(spec.tool_id)
        estimated = tool.estimate_cost(action.input) if tool else 0
        # Billing (DESIGN §6) goes here: refuse the step with insufficient_balance when the
        # owner's balance cannot cover ``estimated``, and settle the actual cost on completion.
        # Provider cost is only recorded for now, not charged.
        self._buffer(
            StepStarted(
                execution_id=self.xid,
                step_index=action.index,
                attempt=action.attempt,
                epoch=self.job.epoch,
                worker_id=self.w.worker_id,
                input=action.input,
                estimated_cost=estimated,
            )
        )
        if not await self._flush():
            return False
        outcome = await self._call(tool, spec, action)
        if outcome is None:  # cancelled mid-call: the log says what happens next
            await self._reload_after_conflict()
            return True
        for event in outcome:
            self._buffer(event)
        return True

    async def _call(
        self, tool: Tool | None, spec: StepSpec, action: plan.StartStep
    ) -> list[AnyEvent] | None:
        """One attempt: the outcome events, or None when a cancel request interrupted it."""
        started = time.monotonic()
        result = None
        error: ToolError | None = None
        if tool is None:
            error = ToolError("internal", f"unknown tool {spec.tool_id!r}", retryable=False)
        else:
            ctx = ToolContext(
                execution_id=self.xid,
                owner=self.job.owner,
                step_index=action.index,
                attempt=action.attempt,
                spec=spec,
                input=action.input,
                settings=self.w.settings,
                load_blob=self._load_blob,
            )
            timeout = tool.timeout_for(spec)
            with anyio.CancelScope() as scope:
                self.job.call_scope = scope
                try:
                    if self.job.cancel_seen:
                        scope.cancel()
                    with anyio.fail_after(timeout):
                        result = await tool.run(ctx)
                except TimeoutError:
                    error = ToolError("timeout", f"no answer within {timeout:g}s", retryable=True)
                except ToolError as exc:
                    error = exc
                except Exception as exc:
                    # A tool's bug never escapes the loop: it becomes a typed StepFailed.
                    log.exception("tool %s failed on %s", spec.tool_id, self.xid)
                    error = ToolError("internal", f"{type(exc).__name__}: {exc}", retryable=False)
                finally:
                    self.job.call_scope = None
            if result is None and error is None:
                return None
        duration_ms = int((time.monotonic() - started) * 1000)
        if result is not None:
            ref = None
            if result.blob is not None:
                digest = hashlib.sha256(result.blob).hexdigest()
                # The blob goes first: a StepCompleted never names a blob that is not stored.
                await self.store.put_blob(self.job.partition, digest, result.blob)
                ref = BlobRef(sha256=digest, size=len(result.blob))
            return [
                StepCompleted(
                    execution_id=self.xid,
                    step_index=action.index,
                    attempt=action.attempt,
                    output=result.output,
                    output_ref=ref,
                    usage=result.usage,
                    cost=result.cost,
                    duration_ms=duration_ms,
                )
            ]
        assert error is not None
        return self._failure(tool, action, error)

    def _failure(
        self, tool: Tool | None, action: plan.StartStep, error: ToolError
    ) -> list[AnyEvent]:
        retryable = is_retryable(error)
        events: list[AnyEvent] = [
            StepFailed(
                execution_id=self.xid,
                step_index=action.index,
                attempt=action.attempt,
                code=error.code,
                message=error.message,
                retryable=retryable,
            )
        ]
        if tool is not None and tool.retry.should_retry(error, action.attempt):
            delay = tool.retry.delay_ms(
                action.attempt, self.w.rng, retry_after_ms=error.retry_after_ms
            )
            events.append(
                StepRetryScheduled(
                    execution_id=self.xid,
                    step_index=action.index,
                    next_attempt=action.attempt + 1,
                    not_before=_now_ms() + delay,
                )
            )
        return events

    async def _load_blob(self, sha256: str) -> bytes | None:
        return await self.store.get_blob(self.job.partition, sha256)
