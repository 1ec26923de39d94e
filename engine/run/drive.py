"""Driving one execution: fold its history, ask ``plan.next_action``, turn the answer into
expected-seq appends and tool calls, until it ends, its lease is lost, or the worker stops.

Events that belong together go in one append: ExecutionStarted + StepStarted, and StepCompleted +
the next StepStarted or ExecutionCompleted (with the step's blob stored in the same atomic call).
The terminal append also releases the execution's lease (and cap slot), atomically: the
lease ends exactly when the execution does. Appends go through the worker's
:class:`engine.log.batcher.AppendBatcher`, so executions that reach an append together share one
round trip. A drive sees only its :class:`engine.run.job.DriveContext`, never the worker.

Documents (engine.resources.documents): a completed step whose output is a document is published
once its StepCompleted is durable, and always before the terminal append (the last step's
StepCompleted is appended on its own first when it makes a document). Publishing is idempotent, so
a worker that takes an execution over publishes what its predecessor may not have.

A conflict means someone else wrote: reload and re-plan, or drop the job quietly when the lease is
gone.

Provider cost (engine.money.billing): a step's estimated cost is reserved in the append of its
StepStarted (after releasing the reservation of an attempt a dead worker left open); its outcome's
append releases the reservation and, when it completed, charges the actual cost; every terminal
append releases whatever is still held. The money moves in the same script as the events. When the
balance refuses a move, nothing was written and the append is rewritten: a refused reservation
becomes a StepFailed ``insufficient_balance`` in place of the StepStarted (no provider call), a
refused settlement is capped at what the balance holds (the rest recorded as uncovered).
"""

from __future__ import annotations

import hashlib
import logging
import time

import anyio
import msgspec

from engine.clock import now_ms
from engine.errors import BalanceRefused, ConcurrencyConflict, ToolError
from engine.log import codec
from engine.log.event_log import AppendOp
from engine.log.events import (
    AnyEvent,
    BlobRef,
    CostCharged,
    CostReserved,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSpec,
    StepStarted,
    is_terminal,
)
from engine.money import billing
from engine.resources.documents import document_kind, publish_document
from engine.run import plan
from engine.run.job import DriveContext, Job
from engine.run.toolbox import RUNNABLE
from engine.tools import Tool, ToolContext
from engine.tools.retry import is_retryable

log = logging.getLogger("clipstream.worker")

MAX_CONFLICTS = 50  # re-plans after conflicts before a job gives up (its lease then expires)


class Drive:
    """Drives one execution: plan, append, run tools, until terminal, lost or stopping."""

    def __init__(self, ctx: DriveContext, job: Job) -> None:
        self.ctx = ctx
        self.job = job
        self.store = ctx.store
        self.xid = job.execution_id
        self.state = plan.ExecState()
        self.base = self.state  # the state at ``durable``, before the pending events
        self.durable = 0  # the seq the store has confirmed
        self.pending: list[AnyEvent] = []
        self.blobs: list[tuple[str, bytes]] = []  # (sha256, data) named by the pending events
        self.conflicts = 0

    async def run(self) -> None:
        """Drive the execution until it ends, the lease is lost, or the worker stops."""
        history = self.job.history
        self.job.history = None
        if history is None:
            history = await self.store.log.history(self.xid)
        if not self._adopt(history):
            return
        if self.job.epoch > 1:
            # Taken over: the previous holder may have died between a StepCompleted and its
            # document.
            await self._publish(list(self.state.completed.values()))
        while True:
            action = plan.next_action(self.state, now_ms())
            match action:
                case plan.Nothing():
                    self._finish(acked=False)
                    return
                case plan.StartExecution():
                    worker_id, epoch = self.ctx.worker_id, self.job.epoch
                    self._buffer(
                        ExecutionStarted(execution_id=self.xid, worker_id=worker_id, epoch=epoch)
                    )
                case plan.StartStep():
                    if self.ctx.stopping():
                        await self._flush()  # keep what is done; the next worker goes on
                        return
                    if not await self._start_step(action) and self.job.lost:
                        return
                case plan.WaitUntil(at_ms=at_ms):
                    if not await self._flush():
                        if self.job.lost:
                            return
                        continue
                    if self.ctx.stopping():
                        return
                    await self._wait(at_ms)
                case plan.Complete(cost=cost):
                    self._release_held("ended")
                    self._buffer(ExecutionCompleted(execution_id=self.xid, cost=cost))
                    if await self._end():
                        return
                case plan.Fail(code=code, message=message, http_status=status):
                    self._release_held("ended")
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
                    self._release_held("cancelled")
                    self._buffer(ExecutionCancelled(execution_id=self.xid, step_index=index))
                    if await self._end():
                        return
            if self.job.lost:
                return

    # -- state ------------------------------------------------------------------------------------
    def _adopt(self, history: list[AnyEvent]) -> bool:
        """Take ``history`` as the truth; False when a newer lease holder has written."""
        self.state = self.base = plan.fold(history)
        self.durable = self.job.known_seq = self.state.seq
        self.pending.clear()
        self.blobs.clear()
        if self.state.last_epoch > self.job.epoch:
            self.job.lost = True
            return False
        return True

    def _buffer(self, event: AnyEvent) -> None:
        """Queue ``event`` for the next append and fold it into the planned state now."""
        stamped = codec.stamp(event, self.state.seq + 1)
        self.pending.append(stamped)
        self.state = plan.apply(self.state, stamped)

    def _rebuild(self, pending: list[AnyEvent]) -> None:
        """Replace the pending events (stamped from ``durable + 1`` on) and re-plan on them."""
        self.pending = pending
        self.state = plan.fold(pending, self.base)

    def _release_held(self, reason: str) -> None:
        """Buffer the release of every reservation still held."""
        for release in billing.releases(self.state.held.values(), reason):
            self._buffer(release)

    def _finish(self, *, acked: bool) -> None:
        if not acked:
            self.ctx.ack(self.job)
        self.job.finished = True

    async def _flush(self, *, terminal: bool = False) -> bool:
        """Append the pending events (the terminal ones with the ack of the execution's entry);
        False after a conflict (state reloaded, or job lost) or a refused reservation (the
        pending events now fail the step instead)."""
        while self.pending:
            if terminal:
                self._state_the_total()
            op = AppendOp(
                self.xid,
                self.durable,
                tuple(self.pending),
                expire_ms=self.ctx.settings.retention_ms if terminal else 0,
                blobs=tuple(self.blobs),
                ack=self.job.entry_id if terminal else None,
                owner=self.job.owner,
                moves=billing.moves_of(self.pending),
            )
            try:
                written = await self.ctx.batcher.append(op)
            except ConcurrencyConflict:
                await self._reload_after_conflict()
                return False
            except BalanceRefused as refused:
                if self._refused(refused):
                    continue
                return False
            self.durable = self.job.known_seq = written[-1].seq
            self.base = self.state
            flushed = [e for e in self.pending if isinstance(e, StepCompleted)]
            self.pending.clear()
            self.blobs.clear()
            if flushed:
                await self._publish(flushed)
        return True

    def _state_the_total(self) -> None:
        """Set the pending ExecutionCompleted's cost from the state as it now is: it was planned
        before its last settlement was appended, and the balance may have capped that one."""
        assert self.state.requested is not None
        paid = self.state.requested.fee + self.state.steps_cost
        self.pending = [
            msgspec.structs.replace(e, cost=paid) if isinstance(e, ExecutionCompleted) else e
            for e in self.pending
        ]

    def _refused(self, refused: BalanceRefused) -> bool:
        """Rewrite the pending events after the balance refused one of their money moves; True
        when they are worth appending again at once (a settlement capped at the balance), False
        when the step the refused reservation paid for now fails instead of starting."""
        event = self.pending[refused.event_index]
        if isinstance(event, CostCharged):
            pending = list(self.pending)
            pending[refused.event_index] = codec.stamp(
                billing.capped(event, refused.available), event.seq
            )
            self._rebuild(pending)
            return True
        assert isinstance(event, CostReserved), event
        self._rebuild(self.pending[: refused.event_index])
        self._buffer(
            StepFailed(
                execution_id=self.xid,
                step_index=event.step_index,
                attempt=event.attempt,
                code="insufficient_balance",
                message=f"the balance ({refused.available} micro-coins) cannot cover the "
                f"step's estimated cost ({event.amount})",
                retryable=False,
            )
        )
        return False

    async def _reload_after_conflict(self) -> None:
        self.conflicts += 1
        if self.conflicts > MAX_CONFLICTS:
            raise RuntimeError(f"{self.xid}: {self.conflicts} conflicts in a row")
        history = await self.store.log.history(self.xid)
        if not self._adopt(history):
            return
        # Someone else wrote: a cancel request, or a worker that took our lease over.
        still = await self.store.leases.renew(
            self.job.partition, self.ctx.worker_id, [self.job.entry_id]
        )
        if still != [True] and not self.state.terminal:
            self.job.lost = True

    async def _end(self) -> bool:
        """Append the terminal events with the ack; False when a conflict needs a re-plan.

        A pending StepCompleted that makes a document is appended (and its document published)
        first, so a terminal execution never lacks one of its documents."""
        head = [e for e in self.pending if not is_terminal(e)]
        if any(isinstance(e, StepCompleted) and document_kind(e) for e in head):
            tail = self.pending[len(head) :]
            del self.pending[len(head) :]
            if not await self._flush():
                return self.job.lost
            self.pending.extend(tail)
        if await self._flush(terminal=True):
            self._finish(acked=True)
            return True
        return self.job.lost

    async def _wait(self, at_ms: int) -> None:
        """Sleep until a scheduled retry, interruptible by a cancel request."""
        with anyio.CancelScope() as scope:
            self.job.call_scope = scope
            try:
                if self.job.cancel_seen:
                    scope.cancel()
                await anyio.sleep(max(0, at_ms - now_ms()) / 1000)
            finally:
                self.job.call_scope = None
        if self.job.cancel_seen:
            await self._reload_after_conflict()

    # -- steps ------------------------------------------------------------------------------------
    async def _start_step(self, action: plan.StartStep) -> bool:
        """Reserve the step's estimated cost and append StepStarted (with what was pending), run
        the tool, buffer the outcome with its money events."""
        req = self.state.requested
        assert req is not None
        spec = req.workflow.steps[action.index]
        tool = RUNNABLE.get(spec.tool_id)
        estimated = tool.estimate_cost(action.input, spec) if tool else 0
        # Still held here: the reservation of an attempt whose worker died (or lost its lease)
        # mid-call. This attempt replaces it.
        self._release_held("abandoned")
        if estimated > 0:
            self._buffer(billing.reservation(self.xid, action.index, action.attempt, estimated))
        self._buffer(
            StepStarted(
                execution_id=self.xid,
                step_index=action.index,
                attempt=action.attempt,
                epoch=self.job.epoch,
                worker_id=self.ctx.worker_id,
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
        done = outcome[-1]  # the StepCompleted comes after the events a tool returned
        self._release_held("settled" if isinstance(done, StepCompleted) else "failed")
        if isinstance(done, StepCompleted) and done.cost > 0:
            self._buffer(billing.settlement(self.xid, action.index, action.attempt, done.cost))
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
                settings=self.ctx.settings,
                load_blob=self._load_blob,
                runtime=self.ctx.runtime,
            )
            timeout = tool.timeout_for(spec)
            # One scope for both ends of a call: its deadline is the tool's timeout, and a cancel
            # request cancels it (cheaper than a fail_after inside a second scope).
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                self.job.call_scope = scope
                try:
                    if self.job.cancel_seen:
                        scope.cancel()
                    result = await tool.run(ctx)
                except ToolError as exc:
                    error = exc
                except Exception as exc:
                    # A tool's bug never escapes the loop: it becomes a typed StepFailed.
                    log.exception("tool %s failed on %s", spec.tool_id, self.xid)
                    error = ToolError("internal", f"{type(exc).__name__}: {exc}", retryable=False)
                finally:
                    self.job.call_scope = None
            if result is None and error is None:
                if self.job.cancel_seen:
                    return None
                error = ToolError("timeout", f"no answer within {timeout:g}s", retryable=True)
        duration_ms = int((time.monotonic() - started) * 1000)
        if result is not None:
            ref = None
            if result.blob is not None:
                digest = hashlib.sha256(result.blob).hexdigest()
                # Stored by the same atomic append as the StepCompleted that names it.
                self.blobs.append((digest, result.blob))
                ref = BlobRef(sha256=digest, size=len(result.blob))
            return [
                *result.events,
                StepCompleted(
                    execution_id=self.xid,
                    step_index=action.index,
                    attempt=action.attempt,
                    output=result.output,
                    output_ref=ref,
                    usage=result.usage,
                    cost=result.cost,
                    duration_ms=duration_ms,
                ),
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
                action.attempt, self.ctx.rng, retry_after_ms=error.retry_after_ms
            )
            events.append(
                StepRetryScheduled(
                    execution_id=self.xid,
                    step_index=action.index,
                    next_attempt=action.attempt + 1,
                    not_before=now_ms() + delay,
                )
            )
        return events

    async def _publish(self, completed: list[StepCompleted]) -> None:
        """Publish the documents of durable StepCompleted events (idempotent)."""
        req = self.state.requested
        if req is None:
            return
        for event in completed:
            if document_kind(event):
                await publish_document(self.ctx.runtime, req, event)

    async def _load_blob(self, sha256: str) -> bytes | None:
        return await self.store.blobs.get(self.job.partition, sha256)
