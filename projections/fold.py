"""The pure fold: ``apply(view, event) -> view``. No I/O, no clock; the same events always give
the same view, which is what lets any view be deleted and rebuilt from the log.

Strictness (an execution's events carry seq 1, 2, 3 … with no gaps):
    event.seq <= view.seq     a duplicate delivery: the view is returned unchanged
    event.seq == view.seq + 1 applied
    event.seq >  view.seq + 1 :class:`FoldGap` (the caller must find the missing events)

Status mapping (the four client statuses):
    ExecutionRequested                     pending
    ExecutionStarted / StepStarted         running
    ExecutionCompleted                     done
    ExecutionFailed                        error, error.code = the event's code
    ExecutionCancelled                     error, error.code = "cancelled"
    ExecutionRetried                       pending again (queued for a worker)
A per-item execution (``process_collection``, ``schedule_run``) goes on after a step fails for
good: a step left ``retrying`` with no retry scheduled is ``error`` once another step starts (its
item failed). A schedule run's ``RunItemRecorded`` events are listed under ``run_items``.
A terminal status is final: a late event (a cost recorded after cancellation) updates the
numbers, never the status. The one exception is an operator's retry of a dead letter
(``ExecutionRetried``): the execution leaves ``error``, its error and end are cleared, and the
steps its dead letter cut short (ended with the execution's error, or closed as abandoned) are
``pending`` again; ``retries`` counts the retries.

Costs: a step's cost is what was charged for it when any charge names it (each charge id counted
once): the charge of its ``StepCompleted``'s settlement, or a ``CostCharged`` naming it (logs
written before settlements travelled on the step's events); otherwise what its ``StepCompleted``
reported (logs written before provider cost was charged). The execution's cost is its fee plus its
steps' costs plus charges that name no step: what the owner's balance actually paid, since the
worker settles every completed step with a charge (engine.money.billing). It is derived rather
than copied from ``ExecutionCompleted.cost``, so it is right while the execution runs and when it
is cancelled. Reservations (a ``StepStarted``'s ``reserve_id``, ``CostReserved``) and releases
(a settlement's release, ``CostReleased``) hold and give back an estimate while a step runs: they
are not cost, and change nothing in the view.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.log.events import (
    DEAD_LETTER_ABANDONED,
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
    Status,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepStarted,
)
from projections.views import ErrorView, ExecutionView, RunItemView, StepView

_replace = msgspec.structs.replace


class FoldGap(Exception):
    """An event arrived whose predecessors were never applied."""

    def __init__(self, execution_id: str, expected: int, got: int) -> None:
        super().__init__(f"{execution_id}: expected seq {expected}, got {got}")
        self.execution_id = execution_id
        self.expected = expected
        self.got = got


def fold(events: Iterable[AnyEvent], view: ExecutionView | None = None) -> ExecutionView:
    """Apply ``events`` in order, starting from ``view`` (none: a new execution)."""
    for event in events:
        view = apply(view, event)
    if view is None:
        raise ValueError("no events to fold")
    return view


def apply(view: ExecutionView | None, event: AnyEvent) -> ExecutionView:
    """The view after ``event``; a duplicate returns ``view`` itself, a gap raises FoldGap."""
    if view is None:
        if not isinstance(event, ExecutionRequested) or event.seq != 1:
            raise FoldGap(event.execution_id, 1, event.seq)
        return _requested(event)
    if event.execution_id != view.execution_id:
        raise ValueError(f"event of {event.execution_id} applied to {view.execution_id}")
    if event.seq <= view.seq:
        return view
    if event.seq != view.seq + 1:
        raise FoldGap(view.execution_id, view.seq + 1, event.seq)
    return _finish(_apply(view, event), event)


def _apply(view: ExecutionView, event: AnyEvent) -> ExecutionView:
    match event:
        case ExecutionRequested():
            # Only ever seq 1; a second one for the same execution cannot be written by the
            # store, and a view never starts from anything else.
            raise FoldGap(view.execution_id, view.seq + 1, event.seq)
        case ExecutionStarted():
            return _running(view, event.at)
        case StepStarted():
            return _step_started(view, event)
        case StepCompleted():
            view = _step_completed(view, event)
            charge = event.settlement
            if charge is None or not charge.charge_id:
                return view
            return _charged(view, event.step_index, charge.charge_id, charge.charged)
        case StepFailed():
            return _step_failed(view, event)
        case StepRetryScheduled():
            step = _step(view, event.step_index)
            step = _replace(step, status="retrying", retry_at=event.not_before)
            return _with_step(view, step)
        case CostCharged():
            return _charged(view, event.step_index, event.charge_id, event.amount)
        case CostReserved() | CostReleased():
            return view
        case ExecutionCompleted():
            if view.kind in PER_ITEM_KINDS:  # the last item may have failed for good just now
                view = _settle_failures(view, -1, event.at)
            return _terminal(view, "done", None, event.at)
        case ExecutionFailed():
            error = ErrorView(code=event.code, message=event.message, http_status=event.http_status)
            return _terminal(view, "error", error, event.at)
        case ExecutionCancelRequested():
            return _replace(view, cancel_requested=True)
        case ExecutionCancelled():
            error = ErrorView(code="cancelled", message="the execution was cancelled")
            return _terminal(view, "error", error, event.at)
        case RunItemRecorded():
            return _replace(view, run_items=[*view.run_items, _run_item(event)])
        case ExecutionRetried():
            return _retried(view)


def _retried(view: ExecutionView) -> ExecutionView:
    """A dead-lettered execution retried: see the module docstring."""
    if view.status != "error":
        return _replace(view, retries=view.retries + 1)
    ended = view.error
    steps = [
        _replace(s, status="pending", error=None, finished_at=None, retry_at=None)
        if s.status == "error"
        and s.error is not None
        and (s.error == ended or s.error.message == DEAD_LETTER_ABANDONED)
        else s
        for s in view.steps
    ]
    return _replace(
        view, status="pending", error=None, finished_at=None, steps=steps, retries=view.retries + 1
    )


def _step_started(view: ExecutionView, event: StepStarted) -> ExecutionView:
    if view.kind in PER_ITEM_KINDS:
        view = _settle_failures(view, event.step_index, event.at)
    step = _step(view, event.step_index)
    step = _replace(
        step,
        status="running",
        attempts=max(step.attempts, event.attempt),
        input=event.input or step.input,
        started_at=step.started_at if step.started_at is not None else event.at,
        retry_at=None,
    )
    return _with_step(_running(view, event.at), step)


def _step_completed(view: ExecutionView, event: StepCompleted) -> ExecutionView:
    step = _step(view, event.step_index)
    started = step.started_at
    duration = event.duration_ms or (event.at - started if started is not None else None)
    step = _replace(
        step,
        status="done",
        attempts=max(step.attempts, event.attempt),
        output=event.output,
        output_ref=event.output_ref,
        usage=event.usage,
        reported=event.cost,
        finished_at=event.at,
        duration_ms=duration,
        error=None,
        retry_at=None,
    )
    return _with_step(view, step)


def _step_failed(view: ExecutionView, event: StepFailed) -> ExecutionView:
    step = _step(view, event.step_index)
    step = _replace(
        step,
        status="retrying" if event.retryable else "error",
        attempts=max(step.attempts, event.attempt),
        error=ErrorView(code=event.code, message=event.message),
        finished_at=None if event.retryable else event.at,
    )
    return _with_step(view, step)


def _requested(event: ExecutionRequested) -> ExecutionView:
    steps = [
        StepView(
            step_index=i,
            step_id=spec.step_id,
            tool_id=spec.tool_id,
            input=event.step_inputs[i] if i < len(event.step_inputs) else {},
        )
        for i, spec in enumerate(event.workflow.steps)
    ]
    return ExecutionView(
        execution_id=event.execution_id,
        owner=event.owner,
        kind=event.kind,
        target=event.target,
        reporter_id=event.reporter_id or event.workflow.reporter_id,
        status="pending",
        created_at=event.at,
        updated_at=event.at,
        fee=event.fee,
        cost=event.fee,
        workflow=event.workflow,
        steps=steps,
        step_inputs=event.step_inputs,
        seq=event.seq,
        current_step=0 if steps else None,
        schedule_id=event.schedule_id,
        run_execution_id=event.run_execution_id,
    )


def _run_item(event: RunItemRecorded) -> RunItemView:
    """The view of a run's decision: the event's own fields (``at`` included), by name."""
    return RunItemView(**{f: getattr(event, f) for f in RunItemView.__struct_fields__})


def _finish(view: ExecutionView, event: AnyEvent) -> ExecutionView:
    """What every applied event updates: seq, updated_at, cost and the current step."""
    # Plain loops: this runs for every event folded, and a generator per call costs more than
    # the sum itself (replay profile, bench/results/profile-replay-*.txt).
    cost = view.fee + view.other_charges
    current = None
    for s in view.steps:
        cost += s.cost
        if current is None and s.status != "done":
            current = s.step_index
    return _replace(
        view,
        seq=event.seq,
        updated_at=max(view.updated_at, event.at),
        cost=cost,
        current_step=current,
    )


def _is_terminal(view: ExecutionView) -> bool:
    return view.status in ("done", "error")


def _running(view: ExecutionView, at: int) -> ExecutionView:
    if _is_terminal(view):
        return view
    started = view.started_at if view.started_at is not None else at
    return _replace(view, status="running", started_at=started)


def _terminal(
    view: ExecutionView, status: Status, error: ErrorView | None, at: int
) -> ExecutionView:
    if _is_terminal(view):
        return view
    steps = view.steps
    if error is not None:
        # A step cut short by the execution's end (timeout, cancellation) ends with it.
        steps = [
            _replace(s, status="error", error=error, finished_at=at, retry_at=None)
            if s.status in ("running", "retrying")
            else s
            for s in steps
        ]
    return _replace(view, status=status, error=error, finished_at=at, steps=steps)


def _settle_failures(view: ExecutionView, starting: int, at: int) -> ExecutionView:
    """A per-item execution moves on to step ``starting`` (-1: it ends): a step still ``retrying``
    with no retry scheduled failed for good (its item is skipped; see engine.run.plan)."""
    if not any(s.status == "retrying" and s.retry_at is None for s in view.steps):
        return view
    steps = [
        _replace(s, status="error", finished_at=at)
        if s.status == "retrying" and s.retry_at is None and s.step_index != starting
        else s
        for s in view.steps
    ]
    return _replace(view, steps=steps)


def _charged(view: ExecutionView, index: int | None, charge_id: str, amount: int) -> ExecutionView:
    """``amount`` charged under ``charge_id`` for step ``index`` (None: the execution itself),
    counted once however often the log carries it."""
    if index is None:
        if charge_id in view.other_charge_ids:
            return view
        return _replace(
            view,
            other_charges=view.other_charges + amount,
            other_charge_ids=[*view.other_charge_ids, charge_id],
        )
    step = _step(view, index)
    if charge_id in step.charge_ids:
        return view
    step = _replace(step, charged=step.charged + amount, charge_ids=[*step.charge_ids, charge_id])
    return _with_step(view, step)


def _step(view: ExecutionView, index: int) -> StepView:
    if 0 <= index < len(view.steps):
        return view.steps[index]
    # A step the snapshot does not name (a writer that plans steps dynamically): shown as is.
    return StepView(step_index=index, step_id="", tool_id="")


def _with_step(view: ExecutionView, step: StepView) -> ExecutionView:
    if step.step_index < 0:
        return view  # no such step: nothing to show
    step = _replace(step, cost=step.charged if step.charge_ids else step.reported)
    steps = list(view.steps)
    while len(steps) < step.step_index:
        steps.append(StepView(step_index=len(steps), step_id="", tool_id=""))
    if step.step_index < len(steps):
        steps[step.step_index] = step
    else:
        steps.append(step)
    return _replace(view, steps=steps)
