"""The pure fold: every event type, duplicates, gaps, status mapping and costs."""

from __future__ import annotations

import msgspec
import pytest

from engine.log import codec
from engine.log.events import (
    CostCharged,
    ExecutionCancelRequested,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from projections.fold import FoldGap, apply, fold
from projections.namespace import transcripts_of
from projections.views import is_active
from tests.golden import scenarios
from tests.rendered import execution_body, summary_body

XID = "exc_p1_00000000000000000009"
OWNER = "acc_00000000000000000009"


def test_requested_is_pending_with_every_step_waiting() -> None:
    events = scenarios.three_steps(XID, OWNER)
    view = fold(events[:1])
    assert view.status == "pending"
    assert view.seq == 1
    assert view.owner == OWNER
    assert view.cost == view.fee == 10_000
    assert view.current_step == 0
    assert [s.status for s in view.steps] == ["pending"] * 3
    body = execution_body(view)
    assert body["steps"] == []
    assert [s["tool_id"] for s in body["step_inputs"]] == ["transcribe", "llm_prompt", "llm_prompt"]
    assert body["step_inputs"][0]["input"] == {"item_id": "itm_00000000000000000001", "lang": "en"}
    assert is_active(view)


def test_started_and_step_started_are_running() -> None:
    events = scenarios.three_steps(XID, OWNER)
    assert fold(events[:2]).status == "running"
    view = fold(events[:3])
    assert view.status == "running"
    assert view.started_at == events[1].at
    assert view.steps[0].status == "running"
    assert view.steps[0].attempts == 1
    assert view.steps[0].started_at == events[2].at


def test_step_started_without_execution_started_is_running_too() -> None:
    events = scenarios.three_steps(XID, OWNER)
    step = codec.stamp(
        StepStarted(execution_id=XID, step_index=0, attempt=1, epoch=1, worker_id="w"), 2, 5
    )
    view = apply(fold(events[:1]), step)
    assert view.status == "running"
    assert view.started_at == 5


def test_three_steps_complete_in_order_with_costs_and_current_step() -> None:
    events = scenarios.three_steps(XID, OWNER)
    after_first = fold(events[:4])
    assert after_first.steps[0].status == "done"
    assert after_first.current_step == 1
    assert after_first.cost == 10_000 + 1_000
    view = fold(events)
    assert view.status == "done"
    assert view.current_step is None
    assert [s.status for s in view.steps] == ["done"] * 3
    assert [s.cost for s in view.steps] == [1_000, 400, 600]
    assert view.cost == 12_000
    assert view.finished_at == events[-1].at
    assert view.steps[2].input == {"previous": "claims"}  # the input the worker actually used
    summary = summary_body(view)
    assert summary["steps_done"] == summary["steps_total"] == 3
    assert summary["cost_coins"] == 0.012
    assert summary["fee_coins"] == 0.01
    assert not is_active(view)


def test_retry_goes_through_retrying_and_counts_attempts() -> None:
    events = scenarios.retried_then_done(XID, OWNER)
    failed = fold(events[:4])
    assert failed.steps[0].status == "retrying"
    assert failed.steps[0].error is not None
    assert failed.steps[0].error.code == "provider_failed"
    assert failed.status == "running"
    scheduled = fold(events[:5])
    assert scheduled.steps[0].retry_at == scenarios.T0 + 2_000  # the event's not_before
    again = fold(events[:6])
    assert again.steps[0].status == "running"
    assert again.steps[0].attempts == 2
    done = fold(events)
    assert done.status == "done"
    assert done.steps[0].status == "done"
    assert done.steps[0].attempts == 2
    assert done.steps[0].error is None
    assert done.reporter_id == "rep_00000000000000000001"


def test_non_retryable_failure_ends_in_error_provider_failed() -> None:
    view = fold(scenarios.provider_failed(XID, OWNER))
    assert view.status == "error"
    assert view.error is not None
    assert view.error.code == "provider_failed"
    assert view.steps[0].status == "error"
    assert view.steps[1].status == "pending"
    body = execution_body(view)
    assert [s["step_index"] for s in body["steps"]] == [0]
    assert [s["step_index"] for s in body["step_inputs"]] == [1]


def test_cancel_requested_keeps_status_and_cancelled_is_error_cancelled() -> None:
    events = scenarios.cancelled(XID, OWNER)
    asked = fold(events[:4])
    assert asked.status == "running"
    assert asked.cancel_requested
    view = fold(events)
    assert view.status == "error"
    assert view.error is not None
    assert view.error.code == "cancelled"
    assert view.steps[0].status == "error"  # the running step ended with the execution
    assert view.steps[0].cost == 700  # partial provider cost
    assert view.cost == 10_700


def test_insufficient_balance_carries_http_402() -> None:
    view = fold(scenarios.insufficient_balance(XID, OWNER))
    assert view.status == "error"
    assert view.error is not None
    assert (view.error.code, view.error.http_status) == ("insufficient_balance", 402)
    assert summary_body(view)["error"]["http_status"] == 402


def test_terminal_status_is_final() -> None:
    events = scenarios.insufficient_balance(XID, OWNER)
    late = codec.stamp(
        StepStarted(execution_id=XID, step_index=0, attempt=1, epoch=1, worker_id="w"), 4, 1
    )
    view = apply(fold(events), late)
    assert view.status == "error"
    assert view.seq == 4


def test_duplicate_is_a_no_op() -> None:
    events = scenarios.three_steps(XID, OWNER)
    view = fold(events[:5])
    for old in events[:5]:
        assert apply(view, old) is view


def test_gap_raises() -> None:
    events = scenarios.three_steps(XID, OWNER)
    with pytest.raises(FoldGap) as info:
        apply(fold(events[:2]), events[3])
    assert (info.value.expected, info.value.got) == (3, 4)


def test_first_event_must_be_the_request() -> None:
    events = scenarios.three_steps(XID, OWNER)
    with pytest.raises(FoldGap):
        apply(None, events[1])


def test_event_of_another_execution_is_refused() -> None:
    view = fold(scenarios.three_steps(XID, OWNER)[:1])
    other = codec.stamp(
        ExecutionStarted(execution_id="exc_p1_00000000000000000008", worker_id="w", epoch=1), 2
    )
    with pytest.raises(ValueError, match="applied to"):
        apply(view, other)


def test_a_charge_is_counted_once_and_replaces_the_reported_step_cost() -> None:
    events = scenarios.three_steps(XID, OWNER)[:4]  # step 0 done, reported cost 1_000
    charge = CostCharged(execution_id=XID, charge_id="c1", amount=1_200, step_index=0)
    again = CostCharged(execution_id=XID, charge_id="c1", amount=1_200, step_index=0)
    other = CostCharged(execution_id=XID, charge_id="c2", amount=50)
    view = fold([*events, codec.stamp(charge, 5), codec.stamp(again, 6), codec.stamp(other, 7)])
    assert view.steps[0].cost == 1_200
    assert view.cost == 10_000 + 1_200 + 50
    assert view.seq == 7


def test_execution_failed_timeout_ends_the_running_step() -> None:
    events = scenarios.three_steps(XID, OWNER)[:3]
    timeout = ExecutionFailed(execution_id=XID, code="timeout", message="step timed out")
    view = fold([*events, codec.stamp(timeout, 4, 99)])
    assert view.status == "error"
    assert view.steps[0].status == "error"
    assert view.steps[0].error is not None
    assert view.steps[0].error.code == "timeout"
    assert view.finished_at == 99


def test_transcript_pointer_comes_from_the_completed_transcribe_step() -> None:
    view = fold(scenarios.transcript_done(XID, OWNER))
    [pointer] = transcripts_of(view)
    assert (pointer.item_id, pointer.lang, pointer.sha256) == (
        "itm_00000000000000000001",
        "en",
        "a" * 64,
    )
    assert pointer.execution_id == XID
    assert transcripts_of(fold(scenarios.retried_then_done(XID, OWNER))) == []


def test_apply_does_not_mutate_its_input() -> None:
    events = scenarios.three_steps(XID, OWNER)
    view = fold(events[:3])
    before = execution_body(view)
    completed = events[3]
    assert isinstance(completed, StepCompleted)
    apply(view, completed)
    apply(view, codec.stamp(ExecutionCancelRequested(execution_id=XID, requested_by=OWNER), 4))
    apply(view, codec.stamp(ExecutionCompleted(execution_id=XID), 4))
    assert execution_body(view) == before


def test_a_per_item_executions_last_item_whose_retries_ran_out_ends_in_error() -> None:
    """The worker moves past a retryable failure with no retry left without another StepStarted
    when the item was the last one: ExecutionCompleted settles it, as engine.run.plan does."""
    req = scenarios.requested(XID, OWNER, ["llm_prompt", "llm_prompt"], kind="process_collection")
    req = msgspec.structs.replace(
        req, step_inputs=[{"item_index": i, "item_step": 0} for i in range(2)]
    )
    events = scenarios.stamp(
        [
            req,
            ExecutionStarted(execution_id=XID, worker_id="w1", epoch=1),
            StepStarted(execution_id=XID, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            StepCompleted(execution_id=XID, step_index=0, attempt=1, output={"text": "a"}),
            StepStarted(execution_id=XID, step_index=1, attempt=1, epoch=1, worker_id="w1"),
            StepFailed(
                execution_id=XID,
                step_index=1,
                attempt=1,
                code="timeout",
                message="no answer",
                retryable=True,
            ),
            ExecutionCompleted(execution_id=XID, cost=10_000),
        ]
    )
    view = fold(events)
    assert view.status == "done"
    assert [s.status for s in view.steps] == ["done", "error"]
    assert [i["status"] for i in execution_body(view)["items"]] == ["done", "error"]
