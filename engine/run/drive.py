"""Driving one execution: fold its history, ask ``plan.next_action``, turn the answer into
expected-seq appends and tool calls, until it ends, its lease is lost, or the worker stops.

The I/O shell of one execution. Which events an action takes, and how the pending events are
rewritten when the store answers, is decided in engine.run.decide; one attempt's tool call is
engine.run.call. A drive sees only its :class:`engine.run.job.DriveContext`, never the worker.

Events that belong together go in one append: ExecutionStarted + StepStarted, and StepCompleted +
the next StepStarted or ExecutionCompleted (with the step's blob stored in the same atomic call).
The terminal append also releases the execution's lease (and cap slot), atomically: the
lease ends exactly when the execution does. Appends go through the worker's
:class:`engine.log.batcher.AppendBatcher`, so executions that reach an append together share one
round trip.

Documents (engine.resources.documents): a completed step whose output is a document is published
by the append that writes its StepCompleted (the record, written only if absent, in the same
script), so a durable step never lacks its document, a terminal execution never lacks one of its
documents, and a retried or taken-over append never makes two. A worker that takes an execution
over also publishes, idempotently, what an older worker may have appended without its document.

A conflict means someone else wrote: reload and re-plan, or drop the job quietly when the lease is
gone.

Provider cost (engine.money.billing): a step's estimated cost is reserved by its StepStarted
(after releasing the reservation of an attempt a dead worker left open); its outcome (StepCompleted
or StepFailed) carries the settlement that releases the reservation and, when it completed,
charges the actual cost; every terminal append releases whatever is still held. The money moves in
the same script as the events. When the balance refuses a move, nothing was written and the append
is rewritten: a refused reservation becomes a StepFailed ``insufficient_balance`` in place of the
StepStarted (no provider call), a refused settlement is capped at what the balance holds (the rest
recorded as uncovered).
"""

from __future__ import annotations

import anyio

from engine import meters
from engine.clock import now_ms
from engine.errors import BalanceRefused, ConcurrencyConflict
from engine.log import codec
from engine.log.event_log import AppendOp, Record
from engine.log.events import AnyEvent, ExecutionStarted, StepCompleted
from engine.money import billing
from engine.resources.documents import document_kind, document_record, publish_document
from engine.run import call, decide, plan
from engine.run.job import DriveContext, Job
from engine.run.toolbox import RUNNABLE


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
        # Blobs this drive's steps made, by sha256: the next step reads its predecessor's output
        # from here instead of Redis (a drive that took over reads what it did not make).
        self.made: dict[str, bytes] = {}
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
                case plan.Complete() | plan.Fail() | plan.Cancel():
                    for event in decide.closing(self.state, action):
                        self._buffer(event)
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
                self.pending = decide.with_total(self.pending, self.state)
            records, blobs = self._documents()
            op = AppendOp(
                self.xid,
                self.durable,
                tuple(self.pending),
                expire_ms=self.ctx.settings.unfolded_stream_retention_ms if terminal else 0,
                blobs=blobs,
                ack=self.job.entry_id if terminal else None,
                owner=self.job.owner,
                moves=billing.moves_of(self.pending),
                records=records,
            )
            try:
                written = await self.ctx.batcher.append(op)
            except ConcurrencyConflict:
                await self._reload_after_conflict()
                return False
            except BalanceRefused as refused:
                rewritten = decide.after_refusal(
                    self.pending, refused.event_index, refused.available, now_ms=now_ms()
                )
                self._rebuild(rewritten.pending)
                if rewritten.again:
                    continue
                return False
            self.durable = self.job.known_seq = written[-1].seq
            self.base = self.state
            if self.state.requested is not None:
                meters.appended(self.state.requested.kind, self.pending)
            self.pending.clear()
            self.blobs.clear()
        return True

    def _documents(self) -> tuple[tuple[Record, ...], tuple[tuple[str, bytes], ...]]:
        """The document records the pending events publish, and the blobs of the append (the
        pending events' own, then the inline documents' contents, stored first)."""
        req = self.state.requested
        records: list[Record] = []
        blobs = list(self.blobs)
        if req is not None:
            for event in self.pending:
                if isinstance(event, StepCompleted) and document_kind(event):
                    made = document_record(self.ctx.runtime, req, event)
                    if made is not None:
                        records.append(made[0])
                        if made[1] is not None:
                            blobs.append(made[1])
        return tuple(records), tuple(blobs)

    async def _reload_after_conflict(self) -> None:
        self.conflicts += 1
        if self.conflicts > decide.MAX_CONFLICTS:
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

        A pending StepCompleted that makes a document publishes it in this same append, so a
        terminal execution never lacks one of its documents."""
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
        """Append StepStarted holding the step's estimated cost (with what was pending), run the
        tool, buffer the outcome carrying its settlement."""
        req = self.state.requested
        assert req is not None
        spec = req.workflow.steps[action.index]
        tool = RUNNABLE.get(spec.tool_id)
        estimated = tool.estimate_cost(action.input, spec) if tool else 0
        epoch, worker_id = self.job.epoch, self.ctx.worker_id
        starting = decide.step_start(
            self.state, action, estimated=estimated, epoch=epoch, worker_id=worker_id
        )
        for event in starting:
            self._buffer(event)
        if not await self._flush():
            return False
        outcome = await call.attempt(self.ctx, self.job, tool, spec, action, self._load_blob)
        if outcome is None:  # cancelled mid-call: the log says what happens next
            await self._reload_after_conflict()
            return True
        if outcome.blob is not None:
            self.blobs.append(outcome.blob)
            self.made[outcome.blob[0]] = outcome.blob[1]
        for event in decide.attempt_closed(self.state, action, outcome.events):
            self._buffer(event)
        return True

    async def _publish(self, completed: list[StepCompleted]) -> None:
        """Publish the documents of durable StepCompleted events (idempotent): after a takeover,
        for steps an older worker appended without their documents."""
        req = self.state.requested
        if req is None:
            return
        for event in completed:
            if document_kind(event):
                await publish_document(self.ctx.runtime, req, event)

    async def _load_blob(self, sha256: str) -> bytes | None:
        made = self.made.get(sha256)
        if made is not None:
            return made
        return await self.store.blobs.get(self.job.partition, sha256)
