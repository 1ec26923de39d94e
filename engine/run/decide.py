"""Pure decisions of the shell: the events the drive (and the worker's dead-letter path) append.

engine.run.plan says *what* happens next; this module says *which events* that takes, and how the
pending events are rewritten when the store answers. No Redis, no clock of its own: ``now_ms`` and
the ``random.Random`` come in as arguments, and events come back unstamped (the shell stamps them
with their seq as it buffers them) unless a rewrite must keep the seq they already have.

    start of an attempt    release of a reservation an abandoned attempt left open, StepStarted
                           holding the estimate (when there is one)
    end of an attempt      StepFailed and, when the tool's policy allows, StepRetryScheduled
                           (:func:`failed_attempt`); the outcome then carries its settlement: the
                           reservation released and, for a StepCompleted with a cost, that cost
                           charged (:func:`attempt_closed`)
    end of an execution    :func:`closing`: complete, fail, cancel, dead-letter, all in one place
    balance refused        :func:`after_refusal`: a settlement capped at the balance, or a
                           StepFailed ``insufficient_balance`` in place of the StepStarted
    terminal append        :func:`with_total` restates the total of a pending ExecutionCompleted
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgspec

from engine.errors import ToolError
from engine.log import codec
from engine.log.events import (
    DEAD_LETTER_ABANDONED,
    AnyEvent,
    CostCharged,
    CostReserved,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepStarted,
)
from engine.money import billing
from engine.run import plan
from engine.run.plan import ExecState
from engine.settings import coins_text
from engine.tools.retry import RetryPolicy, is_retryable

MAX_CONFLICTS = 50  # re-plans after conflicts before a job gives up (its lease then expires)


def step_start(
    state: ExecState, action: plan.StartStep, *, estimated: int, epoch: int, worker_id: str
) -> list[AnyEvent]:
    """The events that start ``action``'s attempt, appended together: the release of every
    reservation still held (an attempt whose worker died or lost its lease mid-call; this attempt
    replaces it), then the StepStarted, holding the ``estimated`` cost when there is one."""
    started = StepStarted(
        execution_id=state.execution_id,
        step_index=action.index,
        attempt=action.attempt,
        epoch=epoch,
        worker_id=worker_id,
        input=action.input,
        estimated_cost=estimated,
    )
    if estimated > 0:
        started = billing.reserving(started)
    return [*billing.releases(state.held.values(), "abandoned"), started]


def failed_attempt(
    execution_id: str,
    action: plan.StartStep,
    error: ToolError,
    policy: RetryPolicy | None,
    *,
    now_ms: int,
    rng: random.Random,
) -> list[AnyEvent]:
    """The outcome of ``action``'s attempt failing with ``error``: its StepFailed and, when the
    tool's retry ``policy`` allows another attempt, the StepRetryScheduled of the next one, not
    before ``now_ms`` plus the policy's delay (``policy`` None: an unknown tool, never retried)."""
    events: list[AnyEvent] = [
        StepFailed(
            execution_id=execution_id,
            step_index=action.index,
            attempt=action.attempt,
            code=error.code,
            message=error.message,
            retryable=is_retryable(error),
        )
    ]
    if policy is not None and policy.should_retry(error, action.attempt):
        delay = policy.delay_ms(action.attempt, rng, retry_after_ms=error.retry_after_ms)
        events.append(
            StepRetryScheduled(
                execution_id=execution_id,
                step_index=action.index,
                next_attempt=action.attempt + 1,
                not_before=now_ms + delay,
            )
        )
    return events


def attempt_closed(
    state: ExecState, action: plan.StartStep, outcome: list[AnyEvent]
) -> list[AnyEvent]:
    """``outcome`` (the attempt's events, not folded into ``state`` yet) with its StepCompleted or
    StepFailed carrying the attempt's settlement: the release of the attempt's reservation and,
    when it completed with a cost, the charge of that cost (after the release, so the freed
    estimate pays for it). Any other reservation still held (none, unless a log is odd) is
    released by a CostReleased of its own after the outcome."""
    own = billing.charge_id(billing.RESERVE, state.execution_id, action.index, action.attempt)
    held = state.held.get(own)
    others = [r for cid, r in state.held.items() if cid != own]
    events: list[AnyEvent] = []
    completed = False
    for event in outcome:
        if isinstance(event, StepCompleted | StepFailed) and event.step_index == action.index:
            completed = isinstance(event, StepCompleted)
            event = billing.settled(event, held)
        events.append(event)
    return events + billing.releases(others, "settled" if completed else "failed")


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """The execution was delivered too often (engine.run.claims): it ends in ``internal`` error
    with ``reason``, the step in flight (if any) closed as abandoned."""

    reason: str


Ending = plan.Complete | plan.Fail | plan.Cancel | DeadLettered


def closing(state: ExecState, ending: Ending) -> list[AnyEvent]:
    """The events that end the execution, appended together with the ack of its entry: the
    attempt in flight closed (on a cancel or a dead letter: its StepFailed releases its
    reservation), every other reservation still held released, then the terminal event."""
    xid = state.execution_id
    events: list[AnyEvent] = []
    match ending:
        case plan.Complete(cost=cost):
            events += billing.releases(state.held.values(), "ended")
            events.append(ExecutionCompleted(execution_id=xid, cost=cost))
        case plan.Fail(code=code, message=message, http_status=status):
            events += billing.releases(state.held.values(), "ended")
            events.append(
                ExecutionFailed(execution_id=xid, code=code, message=message, http_status=status)
            )
        case plan.Cancel(step_index=index, attempt=attempt):
            held = state.held
            if index is not None and attempt is not None:
                closed = _closed(state, index, attempt, "cancelled", "cancelled on request")
                events.append(closed)
                held = _unsettled(state, closed)
            events += billing.releases(held.values(), "cancelled")
            events.append(ExecutionCancelled(execution_id=xid, step_index=index))
        case DeadLettered(reason=reason):
            held = state.held
            if (flight := state.in_flight) is not None:
                closed = _closed(
                    state, flight.step_index, flight.attempt, "internal", DEAD_LETTER_ABANDONED
                )
                events.append(closed)
                held = _unsettled(state, closed)
            events += billing.releases(held.values(), "ended")
            events.append(ExecutionFailed(execution_id=xid, code="internal", message=reason))
    return events


def _closed(state: ExecState, index: int, attempt: int, code: str, message: str) -> StepFailed:
    """The StepFailed that closes the attempt in flight when the execution ends around it,
    releasing the attempt's reservation."""
    failed = StepFailed(
        execution_id=state.execution_id,
        step_index=index,
        attempt=attempt,
        code=code,
        message=message,
        retryable=False,
    )
    own = billing.charge_id(billing.RESERVE, state.execution_id, index, attempt)
    return billing.settled(failed, state.held.get(own))


def _unsettled(state: ExecState, closed: StepFailed) -> dict[str, CostReserved]:
    """The reservations still held once ``closed`` has released its own."""
    gone = closed.settlement.reservation if closed.settlement else ""
    return {cid: r for cid, r in state.held.items() if cid != gone}


@dataclass(frozen=True, slots=True)
class Rewritten:
    """The pending events after a refusal (stamped, from the first pending seq on), and whether
    they are worth appending again at once (``again``)."""

    pending: list[AnyEvent]
    again: bool


def after_refusal(pending: list[AnyEvent], index: int, available: int, *, now_ms: int) -> Rewritten:
    """Rewrite the (stamped) ``pending`` events after the balance refused a money move of
    ``pending[index]`` with ``available`` micro-coins left.

    A refused settlement (a StepCompleted's charge, or an older shape's CostCharged): the step did
    run, so the charge is capped at the balance (the rest recorded as uncovered) and the events go
    again at once. A refused reservation (a reserving StepStarted, or a CostReserved): the step
    must not start, so a StepFailed ``insufficient_balance`` takes the place of the reservation
    and of everything after it; the plan then fails the execution with 402.
    Rewritten events keep the seq of the event they replace and are stamped at ``now_ms``."""
    event = pending[index]
    if isinstance(event, CostCharged | StepCompleted):
        rewritten = list(pending)
        rewritten[index] = codec.stamp(billing.capped(event, available), event.seq, now_ms)
        return Rewritten(rewritten, again=True)
    assert isinstance(event, CostReserved | StepStarted), event
    amount = event.amount if isinstance(event, CostReserved) else event.estimated_cost
    failed = StepFailed(
        execution_id=event.execution_id,
        step_index=event.step_index,
        attempt=event.attempt,
        code="insufficient_balance",
        message=f"the balance ({coins_text(available)} coins) cannot cover the "
        f"step's estimated cost ({coins_text(amount)} coins)",
        retryable=False,
    )
    return Rewritten([*pending[:index], codec.stamp(failed, event.seq, now_ms)], again=False)


def with_total(pending: list[AnyEvent], state: ExecState) -> list[AnyEvent]:
    """``pending`` with the cost of its ExecutionCompleted (if any) restated from ``state``: the
    completion was planned before its last settlement was appended, and the balance may have
    capped that one, so the total paid is known only now."""
    assert state.requested is not None
    paid = state.requested.fee + state.steps_cost
    return [
        msgspec.structs.replace(e, cost=paid) if isinstance(e, ExecutionCompleted) else e
        for e in pending
    ]
