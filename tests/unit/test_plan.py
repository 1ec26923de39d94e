"""engine.run.plan: the fold and every branch of next_action, as plain data."""

from __future__ import annotations

from typing import Any

import pytest

from engine.log.events import (
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
    Target,
    WorkflowSnapshot,
)
from engine.money import billing
from engine.run import plan

X = "exc_p1_00000000000000000000"
FEE = 10_000


def requested(n_steps: int = 2, inputs: list[dict[str, Any]] | None = None) -> AnyEvent:
    steps = [StepSpec(step_id=f"s{i}", tool_id="llm_prompt") for i in range(n_steps)]
    if steps:
        steps[0] = StepSpec(step_id="s0", tool_id="transcribe")
    return ExecutionRequested(
        execution_id=X,
        owner="acc_x",
        kind="process",
        target=Target(kind="youtube_video", item_id="itm_x"),
        workflow=WorkflowSnapshot(workflow_id="wf_x", name="w", target_kind="t", steps=steps),
        step_inputs=inputs if inputs is not None else [{"item_id": "itm_x"}],
        fee=FEE,
        request_id="req_x",
    )


def seqd(*events: AnyEvent) -> list[AnyEvent]:
    """Give events consecutive seqs from 1, as the store would."""
    from engine.log.codec import stamp

    return [stamp(e, i, at=0) for i, e in enumerate(events, 1)]


def started(epoch: int = 1) -> AnyEvent:
    return ExecutionStarted(execution_id=X, worker_id="w", epoch=epoch)


def step_started(index: int, attempt: int = 1, epoch: int = 1) -> AnyEvent:
    return StepStarted(
        execution_id=X, step_index=index, attempt=attempt, epoch=epoch, worker_id="w"
    )


def step_done(index: int, attempt: int = 1, cost: int = 0, **kw: Any) -> AnyEvent:
    return StepCompleted(execution_id=X, step_index=index, attempt=attempt, cost=cost, **kw)


def step_failed(index: int, attempt: int, code: str = "provider_unavailable") -> AnyEvent:
    return StepFailed(
        execution_id=X, step_index=index, attempt=attempt, code=code, message="m", retryable=True
    )


def state_of(*events: AnyEvent) -> plan.ExecState:
    return plan.fold(seqd(*events))


def test_unknown_execution_needs_nothing() -> None:
    assert plan.next_action(plan.ExecState(), 0) == plan.Nothing()


def test_fresh_execution_starts() -> None:
    state = state_of(requested())
    assert state.status == "pending"
    assert plan.next_action(state, 0) == plan.StartExecution()


def test_started_execution_starts_its_first_step_with_its_input() -> None:
    action = plan.next_action(state_of(requested(), started()), 0)
    assert action == plan.StartStep(0, 1, {"item_id": "itm_x"})


def test_second_step_reads_the_first_steps_output() -> None:
    ref = BlobRef(sha256="ab" * 32, size=99)
    state = state_of(
        requested(), started(), step_started(0), step_done(0, output={"chars": 5}, output_ref=ref)
    )
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.StartStep)
    assert (action.index, action.attempt) == (1, 1)
    assert action.input["previous"] == {
        "step_index": 0,
        "tool_id": "transcribe",
        "output": {"chars": 5},
        "output_ref": {"sha256": "ab" * 32, "size": 99},
    }


def test_step_without_an_outcome_is_restarted_as_the_next_attempt() -> None:
    # Its worker died mid-call: the takeover runs it again.
    state = state_of(requested(), started(), step_started(0, attempt=1))
    assert state.in_flight is not None
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.StartStep)
    assert (action.index, action.attempt) == (0, 2)


def test_completed_steps_are_never_started_again() -> None:
    state = state_of(
        requested(3), started(), step_started(0), step_done(0), step_started(1), step_done(1)
    )
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.StartStep)
    assert action.index == 2
    assert state.current_step == 2


def test_all_steps_done_completes_with_the_fee_and_step_costs() -> None:
    state = state_of(
        requested(2), started(), step_started(0), step_done(0, cost=7), step_started(1),
        step_done(1, cost=5),
    )  # fmt: skip
    assert plan.next_action(state, 0) == plan.Complete(cost=FEE + 12)


def test_completion_cost_counts_what_was_charged_not_what_was_reported() -> None:
    # Step 0's actual cost (9) was capped at what the balance held (4); step 1 was charged 5.
    capped = billing.capped(billing.settlement(X, 0, 1, 9), 4)
    state = state_of(
        requested(2), started(), step_started(0), step_done(0, cost=9), capped,
        step_started(1), step_done(1, cost=5), billing.settlement(X, 1, 1, 5),
    )  # fmt: skip
    assert plan.next_action(state, 0) == plan.Complete(cost=FEE + 4 + 5)


def test_reservations_are_held_until_released() -> None:
    held = billing.reservation(X, 0, 1, 700)
    state = state_of(requested(2), started(), held, step_started(0))
    assert list(state.held) == [held.charge_id]
    # A takeover restarts the step: the held reservation is what the new attempt releases.
    assert plan.next_action(state, 0) == plan.StartStep(0, 2, {"item_id": "itm_x"})
    [release] = billing.releases(state.held.values(), "abandoned")
    assert (release.charge_id, release.reservation, release.amount) == (
        f"release:{X}:0:1",
        held.charge_id,
        700,
    )
    assert state_of(requested(2), started(), held, step_started(0), release).held == {}


def test_a_reserving_step_start_holds_its_estimate_until_its_outcome_settles_it() -> None:
    held = billing.reserving(
        StepStarted(
            execution_id=X, step_index=0, attempt=1, epoch=1, worker_id="w", estimated_cost=700
        )
    )
    state = state_of(requested(2), started(), held)
    assert list(state.held) == [f"reserve:{X}:0:1"]
    assert state.held[f"reserve:{X}:0:1"].amount == 700
    done = billing.settled(
        StepCompleted(execution_id=X, step_index=0, attempt=1, cost=650),
        state.held[f"reserve:{X}:0:1"],
    )
    after = state_of(requested(2), started(), held, done)
    assert after.held == {}
    assert (after.charged, after.step_charges) == (650, {0: 650})


def test_a_settled_charge_capped_by_the_balance_counts_what_was_taken() -> None:
    done = billing.settled(StepCompleted(execution_id=X, step_index=0, attempt=1, cost=9), None)
    capped = billing.capped(done, 4)
    assert capped.settlement is not None
    assert (capped.settlement.charged, capped.settlement.uncovered) == (4, 5)
    state = state_of(requested(1), started(), step_started(0), capped)
    assert plan.next_action(state, 0) == plan.Complete(cost=FEE + 4)


def test_a_refused_reservation_fails_the_execution_with_402() -> None:
    refused = StepFailed(
        execution_id=X,
        step_index=1,
        attempt=1,
        code="insufficient_balance",
        message="m",
        retryable=False,
    )
    state = state_of(requested(2), started(), step_started(0), step_done(0), refused)
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.Fail)
    assert (action.code, action.http_status) == ("insufficient_balance", 402)


def test_workflow_without_steps_completes_once_started() -> None:
    state = state_of(requested(0, inputs=[]), started())
    assert plan.next_action(state, 0) == plan.Complete(cost=FEE)


def test_scheduled_retry_waits_then_starts_the_next_attempt() -> None:
    retry = StepRetryScheduled(execution_id=X, step_index=0, next_attempt=2, not_before=1_000)
    state = state_of(requested(), started(), step_started(0), step_failed(0, 1), retry)
    assert plan.next_action(state, 999) == plan.WaitUntil(1_000)
    action = plan.next_action(state, 1_000)
    assert isinstance(action, plan.StartStep)
    assert (action.index, action.attempt) == (0, 2)


def test_failure_without_a_retry_fails_with_provider_failed() -> None:
    state = state_of(requested(), started(), step_started(0), step_failed(0, 3))
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.Fail)
    assert action.code == "provider_failed"
    assert "after 3 attempt(s)" in action.message


@pytest.mark.parametrize(
    ("code", "expected", "status"),
    [
        ("timeout", "timeout", None),
        ("internal", "internal", None),
        ("insufficient_balance", "insufficient_balance", 402),
        ("provider_rejected", "provider_failed", None),
    ],
)
def test_failure_codes_map_to_execution_codes(code: str, expected: str, status: int | None) -> None:
    state = state_of(requested(), started(), step_started(0), step_failed(0, 1, code))
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.Fail)
    assert (action.code, action.http_status) == (expected, status)


def test_cancel_before_start_cancels_without_a_step() -> None:
    cancel = ExecutionCancelRequested(execution_id=X, requested_by="acc_x")
    assert plan.next_action(state_of(requested(), cancel), 0) == plan.Cancel()


def test_cancel_mid_step_names_the_step_in_flight() -> None:
    cancel = ExecutionCancelRequested(execution_id=X, requested_by="acc_x")
    state = state_of(requested(), started(), step_started(0, attempt=2), cancel)
    assert plan.next_action(state, 0) == plan.Cancel(step_index=0, attempt=2)


def test_cancel_between_steps_names_no_attempt() -> None:
    cancel = ExecutionCancelRequested(execution_id=X, requested_by="acc_x")
    state = state_of(requested(), started(), step_started(0), step_done(0), cancel)
    assert plan.next_action(state, 0) == plan.Cancel(step_index=1)


@pytest.mark.parametrize(
    "terminal",
    [
        ExecutionCompleted(execution_id=X, cost=1),
        ExecutionFailed(execution_id=X, code="internal", message="m"),
        ExecutionCancelled(execution_id=X),
    ],
)
def test_terminal_executions_need_nothing_even_when_cancelled_later(terminal: AnyEvent) -> None:
    cancel = ExecutionCancelRequested(execution_id=X, requested_by="acc_x")
    state = state_of(requested(), started(), terminal, cancel)
    assert state.terminal
    assert plan.next_action(state, 0) == plan.Nothing()


def test_fold_ignores_duplicates_and_refuses_gaps() -> None:
    events = seqd(requested(), started())
    state = plan.fold(events)
    assert plan.fold(events, state) == state  # the same events again: no-op
    from engine.log.codec import stamp

    with pytest.raises(ValueError, match="gap"):
        plan.apply(state, stamp(step_started(0), 5, at=0))


def test_fold_tracks_epochs_and_attempts() -> None:
    state = state_of(
        requested(), started(epoch=1), step_started(0, 1, epoch=1), step_started(0, 2, epoch=3)
    )
    assert state.last_epoch == 3
    assert state.attempts == {0: 2}
    assert state.status == "running"


# -- per-item executions (process_collection) ----------------------------------------------------


def collection(items: int = 3, per_item: int = 2) -> AnyEvent:
    """A process_collection request: ``per_item`` steps repeated for each of ``items`` items."""
    steps: list[StepSpec] = []
    inputs: list[dict[str, Any]] = []
    for i in range(items):
        for k in range(per_item):
            steps.append(
                StepSpec(step_id=f"s{k}", tool_id="transcribe" if k == 0 else "llm_prompt")
            )
            inputs.append({"item_id": f"itm_{i}", "item_index": i, "item_step": k})
    return ExecutionRequested(
        execution_id=X,
        owner="acc_x",
        kind="process_collection",
        target=Target(kind="collection", collection_id="col_x"),
        workflow=WorkflowSnapshot(
            workflow_id="wf_x", name="w", target_kind="collection", steps=steps
        ),
        step_inputs=inputs,
        fee=FEE,
        request_id="req_x",
    )


def fatal(index: int, attempt: int = 1, code: str = "provider_rejected") -> AnyEvent:
    return StepFailed(
        execution_id=X, step_index=index, attempt=attempt, code=code, message="m", retryable=False
    )


def test_a_failed_item_skips_its_remaining_steps_and_the_next_item_goes_on() -> None:
    state = state_of(collection(), started(), step_started(0), fatal(0))
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.StartStep)
    assert (action.index, action.attempt) == (2, 1)  # item 1's first step; item 0's step 1 skipped
    assert action.input["item_id"] == "itm_1"
    assert "previous" not in action.input  # an item's first step starts from its item
    # Once the next step starts, the failure is folded as item 0's.
    moved = plan.apply(state, codec_stamp(step_started(2), state.seq + 1))
    assert set(moved.failed_items) == {0}
    assert moved.last_failure is None


def codec_stamp(event: AnyEvent, seq: int) -> AnyEvent:
    from engine.log.codec import stamp

    return stamp(event, seq, at=0)


def test_the_previous_output_only_flows_within_an_item() -> None:
    state = state_of(collection(), started(), step_started(0), step_done(0))
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.StartStep)
    assert action.index == 1
    assert action.input["previous"]["step_index"] == 0


def test_collection_is_done_when_some_items_failed_and_error_when_all_did() -> None:
    some = state_of(
        collection(items=2, per_item=1), started(), step_started(0), fatal(0), step_started(1),
        step_done(1, cost=3),
    )  # fmt: skip
    assert plan.next_action(some, 0) == plan.Complete(cost=FEE + 3)
    every = state_of(
        collection(items=2, per_item=1), started(), step_started(0), fatal(0), step_started(1),
        fatal(1),
    )  # fmt: skip
    action = plan.next_action(every, 0)
    assert isinstance(action, plan.Fail)
    assert action.code == "provider_failed"
    assert action.message.startswith("every item failed")


def test_an_exhausted_retryable_failure_fails_the_item_too() -> None:
    # StepFailed(retryable) with no StepRetryScheduled after it: the policy gave up.
    state = state_of(collection(items=2, per_item=1), started(), step_started(0), step_failed(0, 1))
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.StartStep)
    assert action.index == 1


def test_a_retry_in_a_collection_waits_then_reruns_the_same_step() -> None:
    retry = StepRetryScheduled(execution_id=X, step_index=2, next_attempt=2, not_before=500)
    state = state_of(
        collection(), started(), step_started(0), step_done(0), step_started(1), step_done(1),
        step_started(2), step_failed(2, 1), retry,
    )  # fmt: skip
    assert plan.next_action(state, 100) == plan.WaitUntil(500)
    action = plan.next_action(state, 600)
    assert isinstance(action, plan.StartStep)
    assert (action.index, action.attempt) == (2, 2)
    assert state.failed_items == {}


def test_a_step_in_flight_after_a_crash_is_rerun_in_a_collection() -> None:
    state = state_of(collection(), started(), step_started(0), step_done(0), step_started(1))
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.StartStep)
    assert (action.index, action.attempt) == (1, 2)


def test_insufficient_balance_ends_the_whole_collection() -> None:
    state = state_of(
        collection(), started(), step_started(0), fatal(0, code="insufficient_balance")
    )
    action = plan.next_action(state, 0)
    assert isinstance(action, plan.Fail)
    assert (action.code, action.http_status) == ("insufficient_balance", 402)
