"""Views derived from an execution view on read: the per-item progress of a per-item execution,
and a schedule run with its outcome counts and per-item events. Pure: no I/O, no clock.

A per-item execution (``engine.log.events.PER_ITEM_KINDS``) runs each item's steps in turn; its
steps carry ``item_index`` (and ``item_id``, ``source``) in their input. A schedule run is one
whose items are the channels of the schedule's collections, and whose pick steps record a
``RunItemRecorded`` per video.
"""

from __future__ import annotations

from engine.log.events import RunOutcome
from projections.views import (
    ExecutionView,
    ItemStatus,
    ItemView,
    RunDetailView,
    RunEntryView,
    RunItemView,
    RunView,
    StepView,
    step_ran,
    steps_done,
)

RUN_OUTCOMES: tuple[RunOutcome, ...] = (
    "processed",
    "skipped_seen",
    "skipped_too_old",
    "capped",
    "failed",
)


def items(view: ExecutionView) -> list[ItemView]:
    """Each item of a per-item execution, in run order (its steps grouped by ``item_index``)."""
    groups: dict[int, list[StepView]] = {}
    for step in view.steps:
        index = step.input.get("item_index")
        if isinstance(index, int):
            groups.setdefault(index, []).append(step)
    return [_item(index, groups[index]) for index in sorted(groups)]


def _item(index: int, steps: list[StepView]) -> ItemView:
    status = _item_status(steps)
    failed = next((s for s in steps if s.status == "error"), None)
    last = steps[-1]
    return ItemView(
        item_index=index,
        item_id=last.input.get("item_id"),
        source=last.input.get("source"),
        status=status,
        steps_total=len(steps),
        steps_done=steps_done(steps),
        steps_skipped=sum(1 for s in steps if not step_ran(s)) if status == "error" else 0,
        step_indexes=[s.step_index for s in steps],
        cost=sum(s.cost for s in steps),
        error=failed.error if failed else None,
        output=last.output if status == "done" else None,
    )


def _item_status(steps: list[StepView]) -> ItemStatus:
    if any(s.status == "error" for s in steps):
        return "error"
    if all(s.status == "done" for s in steps):
        return "done"
    if any(step_ran(s) for s in steps):
        return "running"
    return "pending"


def run(view: ExecutionView) -> RunView:
    """A schedule run (an execution of kind ``schedule_run``): its channels and the count of each
    outcome, a channel that failed for good counted under ``failed``."""
    channels = items(view)
    counts = dict.fromkeys(RUN_OUTCOMES, 0)
    for item in view.run_items:
        counts[item.outcome] += 1
    counts["failed"] += sum(1 for c in channels if c.status == "error")
    return RunView(execution=view, channels=channels, counts=counts)


def run_detail(view: ExecutionView) -> RunDetailView:
    """A schedule run with its per-item events in the order they happened: a decision per video
    of each channel, and a ``failed`` entry per channel whose sync or pick failed for good."""
    summary = run(view)
    entries = [(item.at, _decision(item)) for item in view.run_items]
    for channel in summary.channels:
        if channel.status == "error":
            step = next(s for s in view.steps if s.step_index in channel.step_indexes and s.error)
            entries.append((step.finished_at or view.updated_at, _failed_channel(step)))
    entries.sort(key=lambda entry: entry[0])  # stable: one pick's decisions keep their order
    return RunDetailView(
        execution=view,
        channels=summary.channels,
        counts=summary.counts,
        entries=[entry for _, entry in entries],
    )


def _decision(item: RunItemView) -> RunEntryView:
    return RunEntryView(
        outcome=item.outcome,
        item_id=item.item_id,
        collection_id=item.collection_id,
        channel_id=item.channel_id,
        video_id=item.video_id,
        title=item.title,
        published_at=item.published_at,
        execution_id=item.child_execution_id,
        reason=item.reason,
        at=item.at,
    )


def _failed_channel(step: StepView) -> RunEntryView:
    """A channel whose ``step`` (its sync or its pick) failed for good, as a run entry."""
    reason = f"{step.tool_id}: {step.error.message}" if step.error else step.tool_id
    return RunEntryView(
        outcome="failed",
        item_id=step.input.get("item_id"),
        collection_id=step.input.get("collection_id"),
        channel_id=None,
        video_id=None,
        title="",
        published_at=None,
        execution_id=None,
        reason=reason,
        at=step.finished_at,
    )
