"""engine.run.decide: the events the drive appends, and its rewrites, as plain data."""

from __future__ import annotations

import random

import pytest

from engine.errors import ToolError
from engine.log.codec import stamp
from engine.log.events import (
    AnyEvent,
    CostCharged,
    CostReleased,
    CostReserved,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    RunItemRecorded,
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
    return billing.reservation(X, index, attempt, amount)


def released(reason: str, index: int = 0, attempt: int = 1, amount: int = 500) -> CostReleased:
    [release] = billing.releases([reserved(index, attempt, amount)], reason)
    return release


# -- the start of an attempt ---------------------------------------------------------------------


def test_a_step_start_reserves_its_estimate_then_starts() -> None:
    state = state_of(requested(), started())
    events = decide.step_start(state, START, estimated=500, epoch=3, worker_id="w1")
    assert events == [
        reserved(),
        StepStarted(
            execution_id=X,
            step_index=0,
            attempt=1,
            epoch=3,
            worker_id="w1",
            input=START.input,
            estimated_cost=500,
        ),
    ]


def test_a_step_with_no_estimate_reserves_nothing() -> None:
    state = state_of(requested(), started())
    events = decide.step_start(state, START, estimated=0, epoch=1, worker_id="w1")
    assert [type(e) for e in events] == [StepStarted]


def test_a_takeover_first_releases_the_reservation_the_dead_attempt_left_open() -> None:
    state = state_of(requested(), started(), reserved(), step_started(0))
    again = plan.StartStep(0, 2, {})
    events = decide.step_start(state, again, estimated=500, epoch=2, worker_id="w2")
    assert events[:2] == [released("abandoned"), reserved(attempt=2)]
    assert isinstance(events[2], StepStarted)
    assert (events[2].attempt, events[2].epoch) == (2, 2)


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


def test_a_completed_attempt_releases_then_settles_its_actual_cost() -> None:
    done = step_done(0, cost=320)
    state = state_of(requested(), started(), reserved(), step_started(0), done)
    assert decide.attempt_closed(state, START, done) == [
        released("settled"),
        billing.settlement(X, 0, 1, 320),
    ]


def test_a_free_completed_attempt_only_releases() -> None:
    done = step_done(0)
    state = state_of(requested(), started(), reserved(), step_started(0), done)
    assert decide.attempt_closed(state, START, done) == [released("settled")]


def test_a_failed_attempt_releases_and_is_charged_nothing() -> None:
    failed = StepFailed(
        execution_id=X, step_index=0, attempt=1, code="timeout", message="m", retryable=True
    )
    retry = StepRetryScheduled(execution_id=X, step_index=0, next_attempt=2, not_before=NOW)
    state = state_of(requested(), started(), reserved(), step_started(0), failed, retry)
    assert decide.attempt_closed(state, START, retry) == [released("failed")]


def test_an_attempt_with_nothing_held_and_no_cost_closes_with_nothing() -> None:
    done = step_done(0)
    state = state_of(requested(), started(), step_started(0), done)
    assert decide.attempt_closed(state, START, done) == []


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
    state = state_of(requested(), started(), reserved(), step_started(0))
    assert decide.closing(state, plan.Cancel(step_index=0, attempt=1)) == [
        StepFailed(
            execution_id=X,
            step_index=0,
            attempt=1,
            code="cancelled",
            message="cancelled on request",
            retryable=False,
        ),
        released("cancelled"),
        ExecutionCancelled(execution_id=X, step_index=0),
    ]


def test_a_cancel_before_any_step_only_cancels() -> None:
    state = state_of(requested())
    assert decide.closing(state, plan.Cancel()) == [ExecutionCancelled(execution_id=X)]


def test_a_dead_letter_abandons_the_step_in_flight_and_fails_as_internal() -> None:
    state = state_of(requested(), started(), reserved(), step_started(0))
    assert decide.closing(state, decide.DeadLettered("delivered 6 times")) == [
        StepFailed(
            execution_id=X,
            step_index=0,
            attempt=1,
            code="internal",
            message="abandoned: the execution was dead-lettered",
            retryable=False,
        ),
        released("ended"),
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
    base = state_of(requested(), started(), reserved(), step_started(0))
    done = step_done(0, cost=800)
    pending = pending_after(base, done, released("settled"), billing.settlement(X, 0, 1, 800))
    rewritten = decide.after_refusal(pending, 2, 650, now_ms=NOW)
    assert rewritten.again is True
    assert rewritten.pending[:2] == pending[:2]
    capped = rewritten.pending[2]
    assert isinstance(capped, CostCharged)
    assert (capped.amount, capped.uncovered) == (650, 150)
    assert (capped.seq, capped.at) == (pending[2].seq, NOW)


def test_a_refused_reservation_fails_the_step_in_place_of_its_start() -> None:
    base = state_of(requested(), started())
    pending = pending_after(base, reserved(amount=900), step_started(0))
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
    assert failed.message == (
        "the balance (0.00004 coins) cannot cover the step's estimated cost (0.0009 coins)"
    )
    # The plan then ends the execution with 402.
    action = plan.next_action(plan.fold(rewritten.pending, base), NOW)
    assert isinstance(action, plan.Fail)
    assert (action.code, action.http_status) == ("insufficient_balance", 402)


def test_a_refused_reservation_keeps_what_came_before_it() -> None:
    base = state_of(requested(), started(), reserved(), step_started(0))
    done = step_done(0)
    pending = pending_after(base, done, released("settled"), reserved(1), step_started(1))
    rewritten = decide.after_refusal(pending, 2, 0, now_ms=NOW)
    assert rewritten.pending[:2] == pending[:2]
    assert [type(e) for e in rewritten.pending] == [StepCompleted, CostReleased, StepFailed]


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


def test_a_step_that_makes_a_document_is_appended_before_the_terminal_events() -> None:
    summary = step_done(1, output={"kind": "summary"})
    completed = ExecutionCompleted(execution_id=X, cost=FEE)
    assert decide.documents_first([summary, released("settled"), completed]) == 2


@pytest.mark.parametrize(
    "output", [{"kind": "transcript"}, {"kind": 3}, {}], ids=["not-a-document", "odd", "none"]
)
def test_a_step_that_makes_no_document_goes_with_the_terminal_append(
    output: dict[str, object],
) -> None:
    done = step_done(1, output=output)
    assert decide.documents_first([done, ExecutionCompleted(execution_id=X, cost=FEE)]) == 0


def test_a_terminal_append_without_a_step_is_one_append() -> None:
    assert decide.documents_first([ExecutionCancelled(execution_id=X)]) == 0
