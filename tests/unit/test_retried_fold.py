"""ExecutionRetried in the pure folds: the worker's plan resumes the dead-lettered execution from
its first step without a StepCompleted, and the view leaves ``error`` (engine.run.plan,
projections.fold)."""

from __future__ import annotations

from engine.log.events import ExecutionRetried
from engine.run import plan
from projections.fold import fold
from tests.golden.scenarios import GOLDEN_OWNER, golden_id, with_dead_letter_retried


def test_the_plan_resumes_the_step_the_dead_letter_cut_short() -> None:
    events = with_dead_letter_retried(golden_id(1), GOLDEN_OWNER)
    cut = next(i for i, e in enumerate(events) if isinstance(e, ExecutionRetried))
    dead = plan.fold(events[:cut])
    assert dead.terminal
    assert isinstance(plan.next_action(dead, 0), plan.Nothing)
    retried = plan.fold(events[: cut + 1])
    assert not retried.terminal
    assert retried.last_epoch == 0  # the new lease's deliveries count from 1
    action = plan.next_action(retried, 0)
    assert isinstance(action, plan.StartStep)
    assert (action.index, action.attempt) == (1, 2)


def test_the_view_is_pending_again_and_counts_the_retry() -> None:
    events = with_dead_letter_retried(golden_id(1), GOLDEN_OWNER)
    cut = next(i for i, e in enumerate(events) if isinstance(e, ExecutionRetried))
    dead = fold(events[:cut])
    assert dead.status == "error"
    view = fold(events[: cut + 1])
    assert view.status == "pending"
    assert view.error is None
    assert view.finished_at is None
    assert view.retries == 1
    assert [s.status for s in view.steps] == ["done", "pending"]
    assert view.current_step == 1
    done = fold(events)
    assert done.status == "done"
    assert done.retries == 1
