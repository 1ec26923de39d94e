"""engine.run.decide: the events the drive appends, and its rewrites, as plain data."""

from __future__ import annotations

import random

import msgspec
import pytest

from engine.errors import ToolError
from engine.log.codec import stamp
from engine.log.event_log import Move
from engine.log.events import (
    AnyEvent,
    CostCharged,
    CostReleased,
    CostReserved,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    RunItemRecorded,
    Settlement,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepStarted,
)
from engine.money import billing
from engine.run import decide, plan
from engine.tools.retry import NO_RETRY, RetryPolicy
from tests.unit.test_plan import FEE, X, requested, started, state_of, step_done, step_started

NOW = 1_000_000
START = plan.StartStep(0, 1, {"item_id": "itm_x"})


def reserved(index: int = 0, attempt: int = 1, amount: int = 500) -> CostReserved:
    """A reservation as an older log carried it: a CostReserved of its own."""
    return billing.reservation(X, index, attempt, amount)


def released(reason: str, index: int = 0, attempt: int = 1, amount: int = 500) -> CostReleased:
    [release] = billing.releases([reserved(index, attempt, amount)], reason)
    return release


def reserving(index: int = 0, attempt: int = 1, amount: int = 500, epoch: int = 1) -> StepStarted:
    """A StepStarted holding ``amount`` (the shape the worker writes)."""
    started = StepStarted(
        execution_id=X,
        step_index=index,
        attempt=attempt,
        epoch=epoch,
        worker_id="w",
        estimated_cost=amount,
    )
    return billing.reserving(started)


def settlement(
    index: int = 0, attempt: int = 1, released: int = 500, charged: int = 0
) -> Settlement:
    """The settlement an attempt's outcome carries."""
    return Settlement(
        reservation=f"reserve:{X}:{index}:{attempt}",
        release_id=f"release:{X}:{index}:{attempt}",
        released=released,
        charge_id=f"settle:{X}:{index}:{attempt}" if charged else "",
        charged=charged,
    )


def settled(event: StepCompleted | StepFailed, s: Settlement) -> AnyEvent:
    return msgspec.structs.replace(event, settlement=s, schema=2)


# -- the start of an attempt ---------------------------------------------------------------------


def test_a_step_start_holds_its_estimate_on_the_step_started_itself() -> None:
    state = state_of(requested(), started())
    events = decide.step_start(state, START, estimated=500, epoch=3, worker_id="w1")
    assert events == [
        StepStarted(
            execution_id=X,
            schema=2,
            step_index=0,
            attempt=1,
            epoch=3,
            worker_id="w1",
            input=START.input,
            estimated_cost=500,
            reserve_id=f"reserve:{X}:0:1",
        ),
    ]
    assert billing.moves_of(events) == (Move(0, "reserve", f"reserve:{X}:0:1", -500),)


def test_a_step_with_no_estimate_reserves_nothing() -> None:
    state = state_of(requested(), started())
    events = decide.step_start(state, START, estimated=0, epoch=1, worker_id="w1")
    assert [type(e) for e in events] == [StepStarted]
    assert billing.moves_of(events) == ()


def test_a_takeover_first_releases_the_reservation_the_dead_attempt_left_open() -> None:
    state = state_of(requested(), started(), reserving())
    again = plan.StartStep(0, 2, {})
    events = decide.step_start(state, again, estimated=500, epoch=2, worker_id="w2")
    assert events[0] == released("abandoned")
    assert isinstance(events[1], StepStarted)
    assert (events[1].attempt, events[1].epoch, events[1].reserve_id) == (
        2,
        2,
        f"reserve:{X}:0:2",
    )


def test_a_takeover_of_an_older_log_releases_its_cost_reserved() -> None:
    state = state_of(requested(), started(), reserved(), step_started(0))
    events = decide.step_start(state, plan.StartStep(0, 2, {}), estimated=0, epoch=2, worker_id="w")
    assert events[0] == released("abandoned")


# -- a failed attempt ----------------------------------------------------------------------------


def test_a_retryable_failure_schedules_the_next_attempt_after_the_policys_delay() -> None:
    policy = RetryPolicy(max_attempts=3, base_ms=100, jitter="full")
    error = ToolError("provider_unavailable", "down", retryable=True)
    events = decide.failed_attempt(X, START, error, policy, now_ms=NOW, rng=random.Random(7))
    delay = policy.delay_ms(1, random.Random(7))
    assert events == [
        StepFailed(
            execution_id=X,
            step_index=0,
            attempt=1,
            code="provider_unavailable",
            message="down",
            retryable=True,
        ),
        StepRetryScheduled(execution_id=X, step_index=0, next_attempt=2, not_before=NOW + delay),
    ]


def test_a_providers_retry_after_wins_when_longer() -> None:
    policy = RetryPolicy(max_attempts=3, base_ms=100, jitter="none")
    error = ToolError("rate_limited", "slow down", retryable=True, retry_after_ms=5_000)
    events = decide.failed_attempt(X, START, error, policy, now_ms=NOW, rng=random.Random(0))
    assert isinstance(events[-1], StepRetryScheduled)
    assert events[-1].not_before == NOW + 5_000


@pytest.mark.parametrize(
    ("error", "policy", "attempt"),
    [
        (ToolError("invalid_input", "bad", retryable=False), RetryPolicy(), 1),
        (ToolError("not_found", "gone", retryable=True), RetryPolicy(), 1),  # hopeless class
        (ToolError("timeout", "slow", retryable=True), RetryPolicy(max_attempts=3), 3),
        (ToolError("timeout", "slow", retryable=True), NO_RETRY, 1),
        (ToolError("internal", "unknown tool 'x'", retryable=False), None, 1),
    ],
)
def test_a_failure_the_policy_does_not_retry_is_only_a_step_failed(
    error: ToolError, policy: RetryPolicy | None, attempt: int
) -> None:
    action = plan.StartStep(0, attempt, {})
    events = decide.failed_attempt(X, action, error, policy, now_ms=NOW, rng=random.Random(0))
    assert [type(e) for e in events] == [StepFailed]
    assert isinstance(events[0], StepFailed)
    assert (events[0].code, events[0].attempt) == (error.code, attempt)


def test_a_retryable_error_of_a_hopeless_class_is_recorded_as_not_retryable() -> None:
    error = ToolError("invalid_target", "no such video", retryable=True)
    [failed] = decide.failed_attempt(X, START, error, None, now_ms=NOW, rng=random.Random(0))
    assert isinstance(failed, StepFailed)
    assert failed.retryable is False


# -- the end of an attempt -----------------------------------------------------------------------


def test_a_completed_attempt_carries_its_release_and_its_charge() -> None:
    done = step_done(0, cost=320)
    state = state_of(requested(), started(), reserving())
    [closed] = decide.attempt_closed(state, START, [done])
    assert isinstance(done, StepCompleted)
    assert closed == settled(done, settlement(charged=320))
    # Release first, so the freed estimate pays for the charge.
    assert billing.moves_of([closed]) == (
        Move(0, "release", f"release:{X}:0:1", 500),
        Move(0, "settle", f"settle:{X}:0:1", -320),
    )


def test_a_free_completed_attempt_only_releases() -> None:
    done = step_done(0)
    state = state_of(requested(), started(), reserving())
    assert isinstance(done, StepCompleted)
    assert decide.attempt_closed(state, START, [done]) == [settled(done, settlement())]


def test_a_completed_attempt_that_reserved_nothing_is_charged_its_cost() -> None:
    done = step_done(0, cost=40)
    state = state_of(requested(), started(), step_started(0))
    [closed] = decide.attempt_closed(state, START, [done])
    assert isinstance(closed, StepCompleted)
    assert closed.settlement == Settlement(charge_id=f"settle:{X}:0:1", charged=40)


def test_the_tools_own_events_go_first_and_carry_no_money() -> None:
    item = RunItemRecorded(
        execution_id=X, item_id="itm_c", channel_id="c", video_id="v", outcome="processed"
    )
    done = step_done(0, cost=1)
    state = state_of(requested(), started(), reserving())
    events = decide.attempt_closed(state, START, [item, done])
    assert events[0] == item
    assert [m.event_index for m in billing.moves_of(events)] == [1, 1]


def test_a_failed_attempt_releases_and_is_charged_nothing() -> None:
    failed = StepFailed(
        execution_id=X, step_index=0, attempt=1, code="timeout", message="m", retryable=True
    )
    retry = StepRetryScheduled(execution_id=X, step_index=0, next_attempt=2, not_before=NOW)
    state = state_of(requested(), started(), reserving())
    assert decide.attempt_closed(state, START, [failed, retry]) == [
        settled(failed, settlement()),
        retry,
    ]


def test_an_attempt_with_nothing_held_and_no_cost_closes_with_nothing() -> None:
    done = step_done(0)
    state = state_of(requested(), started(), step_started(0))
    assert decide.attempt_closed(state, START, [done]) == [done]


def test_an_odd_second_reservation_is_released_after_the_outcome() -> None:
    # An older log's CostReserved of another step, never released: released after the outcome.
    done = step_done(0)
    state = state_of(requested(), started(), reserved(index=1), reserving())
    assert isinstance(done, StepCompleted)
    assert decide.attempt_closed(state, START, [done]) == [
        settled(done, settlement()),
        released("settled", index=1),
    ]


# -- the end of an execution ---------------------------------------------------------------------


def test_completing_releases_what_is_held_then_completes() -> None:
    state = state_of(requested(1), started(), reserved(), step_started(0), step_done(0))
    assert decide.closing(state, plan.Complete(cost=FEE + 7)) == [
        released("ended"),
        ExecutionCompleted(execution_id=X, cost=FEE + 7),
    ]


def test_failing_carries_the_plans_code_and_status() -> None:
    state = state_of(requested(), started())
    fail = plan.Fail("insufficient_balance", "no money", 402)
    assert decide.closing(state, fail) == [
        ExecutionFailed(
            execution_id=X, code="insufficient_balance", message="no money", http_status=402
        )
    ]


def test_a_cancel_mid_step_closes_the_attempt_and_releases_its_reservation() -> None:
    state = state_of(requested(), started(), reserving())
    closed = StepFailed(
        execution_id=X,
        step_index=0,
        attempt=1,
        code="cancelled",
        message="cancelled on request",
        retryable=False,
    )
    assert decide.closing(state, plan.Cancel(step_index=0, attempt=1)) == [
        settled(closed, settlement()),
        ExecutionCancelled(execution_id=X, step_index=0),
    ]


def test_a_cancel_mid_step_of_an_older_log_releases_its_cost_reserved() -> None:
    # The CostReserved of an older log is the attempt's own: the closing StepFailed releases it.
    state = state_of(requested(), started(), reserved(), step_started(0))
    events = decide.closing(state, plan.Cancel(step_index=0, attempt=1))
    assert [type(e) for e in events] == [StepFailed, ExecutionCancelled]
    assert billing.moves_of(events) == (Move(0, "release", f"release:{X}:0:1", 500),)


def test_a_cancel_before_any_step_only_cancels() -> None:
    state = state_of(requested())
    assert decide.closing(state, plan.Cancel()) == [ExecutionCancelled(execution_id=X)]


def test_a_dead_letter_abandons_the_step_in_flight_and_fails_as_internal() -> None:
    state = state_of(requested(), started(), reserving())
    closed = StepFailed(
        execution_id=X,
        step_index=0,
        attempt=1,
        code="internal",
        message="abandoned: the execution was dead-lettered",
        retryable=False,
    )
    assert decide.closing(state, decide.DeadLettered("delivered 6 times")) == [
        settled(closed, settlement()),
        ExecutionFailed(execution_id=X, code="internal", message="delivered 6 times"),
    ]


def test_a_dead_letter_between_steps_only_fails() -> None:
    state = state_of(requested(), started(), step_started(0), step_done(0))
    assert decide.closing(state, decide.DeadLettered("r")) == [
        ExecutionFailed(execution_id=X, code="internal", message="r")
    ]


# -- rewrites after the balance refused a move ---------------------------------------------------


def pending_after(base: plan.ExecState, *events: AnyEvent) -> list[AnyEvent]:
    """``events`` stamped as the drive buffers them after ``base`` (at time 1)."""
    return [stamp(e, base.seq + i, at=1) for i, e in enumerate(events, 1)]


def test_a_refused_settlement_is_capped_at_the_balance_and_goes_again() -> None:
    base = state_of(requested(), started(), reserving())
    done = step_done(0, cost=800)
    assert isinstance(done, StepCompleted)
    item = RunItemRecorded(
        execution_id=X, item_id="itm_c", channel_id="c", video_id="v", outcome="processed"
    )
    pending = pending_after(base, item, settled(done, settlement(charged=800)))
    rewritten = decide.after_refusal(pending, 1, 650, now_ms=NOW)
    assert rewritten.again is True
    assert rewritten.pending[0] == pending[0]
    capped = rewritten.pending[1]
    assert isinstance(capped, StepCompleted)
    assert capped.settlement is not None
    assert (capped.settlement.charged, capped.settlement.uncovered) == (650, 150)
    assert capped.settlement.released == 500  # the release is untouched
    assert (capped.seq, capped.at) == (pending[1].seq, NOW)


def test_a_refused_settlement_of_an_older_shape_is_capped_too() -> None:
    base = state_of(requested(), started(), reserved(), step_started(0))
    done = step_done(0, cost=800)
    pending = pending_after(base, done, released("settled"), billing.settlement(X, 0, 1, 800))
    rewritten = decide.after_refusal(pending, 2, 650, now_ms=NOW)
    capped = rewritten.pending[2]
    assert isinstance(capped, CostCharged)
    assert (capped.amount, capped.uncovered) == (650, 150)


def test_a_refused_reservation_fails_the_step_in_place_of_its_start() -> None:
    base = state_of(requested(), started())
    pending = pending_after(base, reserving(amount=900))
    rewritten = decide.after_refusal(pending, 0, 40, now_ms=NOW)
    assert rewritten.again is False
    [failed] = rewritten.pending
    assert isinstance(failed, StepFailed)
    assert (failed.code, failed.retryable, failed.seq, failed.at) == (
        "insufficient_balance",
        False,
        pending[0].seq,
        NOW,
    )
    assert failed.settlement is None  # nothing was reserved, nothing to release
    assert failed.message == (
        "the balance (0.00004 coins) cannot cover the step's estimated cost (0.0009 coins)"
    )
    # The plan then ends the execution with 402.
    action = plan.next_action(plan.fold(rewritten.pending, base), NOW)
    assert isinstance(action, plan.Fail)
    assert (action.code, action.http_status) == ("insufficient_balance", 402)


def test_a_refused_reservation_keeps_what_came_before_it() -> None:
    base = state_of(requested(), started(), reserving())
    done = step_done(0)
    assert isinstance(done, StepCompleted)
    pending = pending_after(base, settled(done, settlement()), reserving(1))
    rewritten = decide.after_refusal(pending, 1, 0, now_ms=NOW)
    assert rewritten.pending[:1] == pending[:1]
    assert [type(e) for e in rewritten.pending] == [StepCompleted, StepFailed]


# -- the terminal append -------------------------------------------------------------------------


def test_the_pending_completion_states_the_total_paid_as_the_state_now_has_it() -> None:
    # Planned at the estimate's worth, but the settlement was capped at 650.
    capped = billing.capped(billing.settlement(X, 0, 1, 800), 650)
    state = state_of(requested(1), started(), step_started(0), step_done(0, cost=800), capped)
    completed = ExecutionCompleted(execution_id=X, cost=FEE + 800)
    other = RunItemRecorded(
        execution_id=X, item_id="itm_c", channel_id="c", video_id="v", outcome="processed"
    )
    assert decide.with_total([other, completed], state) == [
        other,
        ExecutionCompleted(execution_id=X, cost=FEE + 650),
    ]
