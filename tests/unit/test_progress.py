"""Views derived on read (projections.progress): a per-item execution's items as they move from
pending to done or error, and a schedule run's outcome counts and the order of its events."""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.log import codec
from engine.log.events import (
    AnyEvent,
    ExecutionStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from projections import progress
from projections.fold import fold
from tests.golden import scenarios

XID = "exc_p1_00000000000000000009"
OWNER = "acc_00000000000000000009"
GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def two_items() -> list[AnyEvent]:
    """A process_collection over two items of two steps each: the first done, the second's first
    step failed for good (its second never ran)."""
    req = scenarios.requested(XID, OWNER, ["llm_prompt"] * 4, kind="process_collection")
    inputs = [{"item_index": i // 2, "item_id": f"itm_{i // 2}", "source": "s"} for i in range(4)]
    req = msgspec.structs.replace(req, step_inputs=inputs)
    started = [
        StepStarted(execution_id=XID, step_index=i, attempt=1, epoch=1, worker_id="w")
        for i in range(3)
    ]
    return scenarios.stamp(
        [
            req,
            ExecutionStarted(execution_id=XID, worker_id="w", epoch=1),
            started[0],
            StepCompleted(execution_id=XID, step_index=0, attempt=1, output={"a": 1}, cost=5),
            started[1],
            StepCompleted(execution_id=XID, step_index=1, attempt=1, output={"b": 2}, cost=7),
            started[2],
            StepFailed(
                execution_id=XID,
                step_index=2,
                attempt=1,
                code="provider_rejected",
                message="no",
                retryable=False,
            ),
        ]
    )


def test_items_are_pending_then_running_then_done_or_error() -> None:
    events = two_items()
    assert [i.status for i in progress.items(fold(events[:2]))] == ["pending", "pending"]
    assert [i.status for i in progress.items(fold(events[:3]))] == ["running", "pending"]
    done, failed = progress.items(fold(events))
    assert (done.item_index, done.item_id, done.status) == (0, "itm_0", "done")
    assert (done.steps_done, done.steps_total, done.steps_skipped) == (2, 2, 0)
    assert (done.cost, done.output, done.error) == (12, {"b": 2}, None)
    assert done.step_indexes == [0, 1]
    assert (failed.status, failed.steps_done, failed.steps_skipped) == ("error", 0, 1)
    assert failed.error is not None
    assert failed.error.code == "provider_rejected"
    assert failed.output is None


def test_an_execution_that_is_not_per_item_has_no_items() -> None:
    assert progress.items(fold(scenarios.three_steps(XID, OWNER))) == []


def test_a_runs_counts_and_events_in_the_order_they_happened() -> None:
    log = (GOLDEN / "schedule_run.jsonl").read_bytes()
    view = fold(codec.decode(line) for line in log.splitlines() if line.strip())
    run = progress.run(view)
    assert run.execution is view
    assert [c.status for c in run.channels] == ["done", "error"]
    assert run.counts == {
        "processed": 1,
        "skipped_seen": 1,
        "skipped_too_old": 1,
        "capped": 1,
        "failed": 1,  # the channel whose sync failed
    }
    detail = progress.run_detail(view)
    assert (detail.channels, detail.counts) == (run.channels, run.counts)
    times = [e.at for e in detail.entries]
    assert times == sorted(t or 0 for t in times)
    assert detail.entries[-1].outcome == "failed"
    assert detail.entries[-1].video_id is None
