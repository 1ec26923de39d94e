"""Pure planning: fold an execution's history into :class:`ExecState` and decide what happens next.

No Redis, no clock: the worker passes ``now_ms`` in and turns the :data:`Action` it gets back into
appends and tool calls. Deciding here and doing I/O in ``worker.py`` keeps every branch of the
execution semantics testable as plain data.

Rules (DESIGN §5):
    * A step with a ``StepCompleted`` is never started again (durable steps); the current step is
      the first one without it.
    * A ``StepStarted`` with no outcome after it means the worker running it died or lost its
      lease: the step is started again as the next attempt.
    * A ``StepFailed`` followed by ``StepRetryScheduled`` waits until ``not_before``, then starts
      the scheduled attempt. A ``StepFailed`` without one ends the execution.
    * A cancel request wins over everything but a terminal event.
    * Terminal executions (and unknown ones) need nothing, until an operator retries a dead
      letter (``ExecutionRetried``): the execution then goes on from its first step without a
      ``StepCompleted``, the last attempt's failure forgotten.
    * Money (engine.money.billing): the state lists the reservations still ``held`` (a reserving
      StepStarted, or an older log's CostReserved, not released yet by a settlement or a
      CostReleased); the worker releases them when their attempt ends, when a takeover starts the
      step again, and before any terminal event. A ``StepFailed`` with code
      ``insufficient_balance`` (a reservation the balance refused: the step never started) ends
      the execution with 402.

Per-item executions (``process_collection``; ``schedule_run``, whose items are its channels): the
snapshot's steps are the workflow's steps repeated once per item, and each ``step_inputs[i]`` names
its ``item_index`` (see ``engine.commands`` and ``engine.schedules.runs``). A step that fails for
good fails *its item* only: the item's remaining steps are skipped and the next item goes on. The
execution ends ``done`` when at least one item finished every step (the failed items are listed in
the execution detail), and ``error`` only when every item failed, with the code of the last
failure. An ``insufficient_balance`` failure still ends the whole execution: no other item could be
paid for either. Which items failed is folded from the log (a ``StepFailed`` not followed by its
``StepRetryScheduled``, which the worker always appends in the same call), so a worker that takes
over sees exactly what the first one decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec.structs import replace

from engine.log.events import (
    PER_ITEM_KINDS,
    AnyEvent,
    CostCharged,
    CostReleased,
    CostReserved,
    ExecutionCancelled,
    ExecutionCancelRequested,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionRetried,
    ExecutionStarted,
    RunItemRecorded,
    Settlement,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepStarted,
    previous_input,
)


class ExecState(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker needs to know about one execution, folded from its history.

    A msgspec Struct rather than a dataclass: ``msgspec.structs.replace`` is about twenty times
    cheaper than ``dataclasses.replace``, and the worker folds every event it writes.
    """

    execution_id: str = ""
    seq: int = 0
    requested: ExecutionRequested | None = None
    status: str = "pending"  # pending | running | done | error
    started: bool = False
    current_step: int = 0  # first step without a StepCompleted
    attempts: dict[int, int] = msgspec.field(default_factory=dict)  # highest attempt per step
    completed: dict[int, StepCompleted] = msgspec.field(default_factory=dict)
    in_flight: StepStarted | None = None  # started, no outcome yet
    last_failure: StepFailed | None = None  # of the current step
    retry: StepRetryScheduled | None = None  # pending retry of the current step
    cancel_requested: bool = False
    last_epoch: int = 0
    charged: int = 0  # provider cost charged through CostCharged events
    step_charges: dict[int, int] = msgspec.field(default_factory=dict)  # of those, by step
    held: dict[str, CostReserved] = msgspec.field(default_factory=dict)  # open, by charge id
    # Per-item executions: the final failure of each failed item, by item index.
    failed_items: dict[int, StepFailed] = msgspec.field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in ("done", "error")

    @property
    def step_count(self) -> int:
        return len(self.requested.workflow.steps) if self.requested else 0

    @property
    def per_item(self) -> bool:
        """True when the steps are grouped by item (see the module docstring)."""
        return self.requested is not None and self.requested.kind in PER_ITEM_KINDS

    @property
    def steps_cost(self) -> int:
        """Provider cost in micro-coins: every CostCharged, plus what a completed step that no
        charge names reported (a log written before provider cost was charged). The same rule
        as projections.fold."""
        reported = sum(c.cost for i, c in self.completed.items() if i not in self.step_charges)
        return self.charged + reported


def apply(state: ExecState, event: AnyEvent) -> ExecState:
    """The state after ``event``. An event at or below ``state.seq`` is a no-op (a duplicate); a
    gap raises ValueError, since planning on a partial history would be wrong."""
    if event.seq and event.seq <= state.seq:
        return state
    if event.seq and event.seq != state.seq + 1:
        raise ValueError(f"{event.execution_id}: gap before seq {event.seq} (at {state.seq})")
    seq = event.seq or state.seq + 1
    s = state
    match event:
        case ExecutionRequested():
            return replace(s, seq=seq, execution_id=event.execution_id, requested=event)
        case ExecutionStarted():
            epoch = max(s.last_epoch, event.epoch)
            return replace(s, seq=seq, started=True, status="running", last_epoch=epoch)
        case StepStarted():
            attempts = {**s.attempts, event.step_index: event.attempt}
            s = _settle_item_failure(s)
            held = s.held
            if event.reserve_id is not None:
                held = {**held, event.reserve_id: _hold(event)}
            return replace(
                s,
                seq=seq,
                started=True,
                status="running",
                attempts=attempts,
                in_flight=event,
                retry=None,
                last_epoch=max(s.last_epoch, event.epoch),
                held=held,
            )
        case StepCompleted():
            completed = {**s.completed, event.step_index: event}
            current = s.current_step
            while current in completed:
                current += 1
            s = _settle(s, event.settlement, event.step_index)
            return replace(
                s,
                seq=seq,
                completed=completed,
                current_step=current,
                in_flight=None,
                last_failure=None,
                retry=None,
            )
        case StepFailed():
            s = _settle(s, event.settlement, event.step_index)
            return replace(s, seq=seq, in_flight=None, last_failure=event, retry=None)
        case StepRetryScheduled():
            return replace(s, seq=seq, retry=event)
        case ExecutionCompleted() if s.per_item:
            return replace(_settle_item_failure(s), seq=seq, status="done", in_flight=None)
        case CostCharged() | CostReserved() | CostReleased():
            return _apply_money(s, event, seq)
        case ExecutionCompleted():
            return replace(s, seq=seq, status="done", in_flight=None)
        case ExecutionFailed() | ExecutionCancelled():
            return replace(s, seq=seq, status="error", in_flight=None)
        case ExecutionCancelRequested():
            return replace(s, seq=seq, cancel_requested=True)
        case RunItemRecorded():
            return replace(s, seq=seq)  # a record for the run's view; planning needs nothing
        case ExecutionRetried():
            # A dead letter retried: not terminal any more; the attempt its dead letter closed
            # (a StepFailed ``internal``) is no failure of the step, so the step starts again as
            # the next attempt. The lease that drives it now is a new work-stream entry whose
            # deliveries count from 1: the epochs start over.
            return replace(
                s,
                seq=seq,
                status="pending",
                in_flight=None,
                last_failure=None,
                retry=None,
                last_epoch=0,
            )
    return replace(s, seq=seq)  # pragma: no cover - the match is exhaustive over AnyEvent


def _apply_money(
    s: ExecState, event: CostCharged | CostReserved | CostReleased, seq: int
) -> ExecState:
    """The state after a money event (engine.money.billing): what was charged, and by which
    step; the reservations still held."""
    match event:
        case CostCharged():
            step_charges = s.step_charges
            if event.step_index is not None:
                spent = step_charges.get(event.step_index, 0) + event.amount
                step_charges = {**step_charges, event.step_index: spent}
            return replace(s, seq=seq, charged=s.charged + event.amount, step_charges=step_charges)
        case CostReserved():
            return replace(s, seq=seq, held={**s.held, event.charge_id: event})
        case CostReleased():
            held = {k: v for k, v in s.held.items() if k != event.reservation}
            return replace(s, seq=seq, held=held)


def _hold(started: StepStarted) -> CostReserved:
    """The reservation a reserving StepStarted holds, in the shape ``held`` lists."""
    assert started.reserve_id is not None
    return CostReserved(
        execution_id=started.execution_id,
        seq=started.seq,
        at=started.at,
        charge_id=started.reserve_id,
        amount=started.estimated_cost,
        step_index=started.step_index,
        attempt=started.attempt,
    )


def _settle(s: ExecState, settlement: Settlement | None, step_index: int) -> ExecState:
    """The state after an outcome's settlement: its reservation no longer held, its charge
    counted for its step."""
    if settlement is None:
        return s
    if settlement.reservation:
        s = replace(s, held={k: v for k, v in s.held.items() if k != settlement.reservation})
    if settlement.charge_id:
        spent = s.step_charges.get(step_index, 0) + settlement.charged
        s = replace(
            s,
            charged=s.charged + settlement.charged,
            step_charges={**s.step_charges, step_index: spent},
        )
    return s


def _settle_item_failure(s: ExecState) -> ExecState:
    """A per-item execution moving on past a failure with no retry scheduled: that failure is
    final, and it is its item's."""
    failure = s.last_failure
    if not s.per_item or failure is None or s.retry is not None:
        return s
    item = item_index(s, failure.step_index)
    return replace(s, last_failure=None, failed_items={**s.failed_items, item: failure})


def item_index(state: ExecState, index: int) -> int:
    """The item step ``index`` belongs to (0 for an execution that is not per item)."""
    req = state.requested
    if req is None or not state.per_item or index >= len(req.step_inputs):
        return 0
    value = req.step_inputs[index].get("item_index", 0)
    return value if isinstance(value, int) else 0


def fold(events: list[AnyEvent], state: ExecState | None = None) -> ExecState:
    """Fold ``events`` (in seq order) into ``state`` (default: a fresh one)."""
    s = ExecState() if state is None else state
    for event in events:
        s = apply(s, event)
    return s


# -- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartExecution:
    """Append ExecutionStarted; the first step follows."""


@dataclass(frozen=True, slots=True)
class StartStep:
    """Append StepStarted for ``attempt`` of step ``index`` and run its tool on ``input``."""

    index: int
    attempt: int
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """A retry is scheduled: nothing to do before ``at_ms``."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class Complete:
    """Every step completed: append ExecutionCompleted with the total ``cost``."""

    cost: int


@dataclass(frozen=True, slots=True)
class Fail:
    """End the execution in ``error`` with ``code``."""

    code: str
    message: str
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel was requested: close the step in flight (if any), then ExecutionCancelled."""

    step_index: int | None = None
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Nothing:
    """Terminal (or unknown) execution: nothing to do."""


Action = StartExecution | StartStep | WaitUntil | Complete | Fail | Cancel | Nothing

# What ExecutionFailed says for the last failure's code; anything else is a provider failure.
_FAILURE_CODES: dict[str, tuple[str, int | None]] = {
    "timeout": ("timeout", None),
    "internal": ("internal", None),
    "invalid_target": ("invalid_target", 422),
    "insufficient_balance": ("insufficient_balance", 402),
}


def next_action(state: ExecState, now_ms: int) -> Action:
    """What the worker driving this execution does next."""
    req = state.requested
    if req is None or state.terminal:
        return Nothing()
    if state.cancel_requested:
        flight = state.in_flight
        if flight is None:
            return Cancel(step_index=state.current_step if state.started else None)
        return Cancel(step_index=flight.step_index, attempt=flight.attempt)
    if not state.started:
        return StartExecution()
    if state.per_item:
        return _next_per_item(state, now_ms)
    index = state.current_step
    if index >= state.step_count:
        return Complete(cost=req.fee + state.steps_cost)
    if state.in_flight is not None:
        # Its worker died or lost the lease mid-call: run the step again as the next attempt.
        return StartStep(index, state.in_flight.attempt + 1, step_input(state, index))
    if state.retry is not None:
        if now_ms < state.retry.not_before:
            return WaitUntil(state.retry.not_before)
        return StartStep(index, state.retry.next_attempt, step_input(state, index))
    failure = state.last_failure
    if failure is not None:
        return _fail(state, failure)
    return StartStep(index, state.attempts.get(index, 0) + 1, step_input(state, index))


def _next_per_item(state: ExecState, now_ms: int) -> Action:
    """next_action for an execution whose steps are grouped by item (see the module docstring)."""
    req = state.requested
    assert req is not None
    if state.in_flight is not None:
        flight = state.in_flight
        return StartStep(
            flight.step_index, flight.attempt + 1, step_input(state, flight.step_index)
        )
    if state.retry is not None:
        if now_ms < state.retry.not_before:
            return WaitUntil(state.retry.not_before)
        retried = state.retry.step_index
        return StartStep(retried, state.retry.next_attempt, step_input(state, retried))
    failed = dict(state.failed_items)
    failure = state.last_failure
    if failure is not None:
        if failure.code == "insufficient_balance":
            return _fail(state, failure)
        failed[item_index(state, failure.step_index)] = failure
    index = next(
        (
            i
            for i in range(state.current_step, state.step_count)
            if i not in state.completed and item_index(state, i) not in failed
        ),
        None,
    )
    if index is not None:
        return StartStep(index, state.attempts.get(index, 0) + 1, step_input(state, index))
    items = {item_index(state, i) for i in range(state.step_count)}
    if failed and items <= failed.keys():
        fail = _fail(state, max(failed.values(), key=lambda f: f.seq))
        return Fail(fail.code, f"every item failed; the last: {fail.message}", fail.http_status)
    return Complete(cost=req.fee + state.steps_cost)


def _fail(state: ExecState, failure: StepFailed) -> Fail:
    req = state.requested
    assert req is not None
    code, status = _FAILURE_CODES.get(failure.code, ("provider_failed", None))
    tool_id = req.workflow.steps[failure.step_index].tool_id
    message = f"step {failure.step_index} ({tool_id}) failed after {failure.attempt} attempt(s): "
    return Fail(code, message + failure.message, status)


def step_input(state: ExecState, index: int) -> dict[str, Any]:
    """The input of step ``index``: what the API put in ``step_inputs[index]``, plus, from the
    second step on, the previous step's output under ``"previous"`` (a small preview and the
    reference of its blob, which a tool that needs the full text loads)."""
    req = state.requested
    assert req is not None
    base: dict[str, Any] = dict(req.step_inputs[index]) if index < len(req.step_inputs) else {}
    prev = state.completed.get(index - 1)
    if prev is not None and item_index(state, index - 1) != item_index(state, index):
        prev = None  # the first step of an item starts from its item, not the last item's output
    if prev is not None and "previous" not in base:
        tool_id = req.workflow.steps[index - 1].tool_id
        base["previous"] = previous_input(index - 1, tool_id, prev.output, prev.output_ref)
    return base
