"""What the read side shows: the execution view, its steps, and their public JSON shapes.

Views are frozen ``msgspec.Struct``s built only by :mod:`projections.fold`; the projector stores
them as JSON (``encode_view`` / ``decode_view``) and the API serves :func:`execution_json`.

Money inside a view is integer micro-coins; the JSON shows coins (``*_coins``) through
``engine.settings.micro_to_coins``. Times inside are ms since the epoch (the writers' clocks,
for display only); the JSON shows them as ISO-8601 UTC strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from engine.log.events import (
    PER_ITEM_KINDS,
    BlobRef,
    RunOutcome,
    Status,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import run_id
from engine.settings import micro_to_coins

StepStatus = Literal["pending", "running", "retrying", "done", "error"]
EXECUTION_STATUSES: tuple[Status, ...] = ("pending", "running", "done", "error")
ACTIVE_STATUSES: tuple[Status, ...] = ("pending", "running")


class ErrorView(msgspec.Struct, frozen=True, kw_only=True):
    """Why an execution or a step ended in ``error``."""

    code: str
    message: str
    http_status: int | None = None


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    """One step of an execution as the log tells it so far."""

    step_index: int
    step_id: str
    tool_id: str
    status: StepStatus = "pending"
    attempts: int = 0
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    output: dict[str, Any] | None = None
    output_ref: BlobRef | None = None
    usage: dict[str, int] = msgspec.field(default_factory=dict)
    cost: int = 0  # micro-coins: ``charged`` when CostCharged named this step, else ``reported``
    reported: int = 0  # the cost StepCompleted reported
    started_at: int | None = None
    finished_at: int | None = None
    duration_ms: int | None = None
    error: ErrorView | None = None
    retry_at: int | None = None  # when a scheduled retry may start (ms)
    # Provider cost charged through CostCharged for this step, and the charge ids already counted
    # (a charge is counted once even if the log carried it twice under different seqs).
    charged: int = 0
    charge_ids: list[str] = msgspec.field(default_factory=list)


class RunItemView(msgspec.Struct, frozen=True, kw_only=True):
    """One decision of a schedule run about one video (a ``RunItemRecorded`` event)."""

    item_id: str
    channel_id: str
    video_id: str
    outcome: RunOutcome
    collection_id: str | None = None
    title: str = ""
    published_at: str | None = None
    child_execution_id: str | None = None
    reason: str = ""
    at: int = 0


class ExecutionView(msgspec.Struct, frozen=True, kw_only=True):
    """An execution folded from its events; ``seq`` is the last event applied."""

    execution_id: str
    owner: str
    kind: str
    target: Target
    reporter_id: str | None
    status: Status
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int
    fee: int  # micro-coins
    cost: int  # micro-coins: fee + provider costs
    error: ErrorView | None = None
    workflow: WorkflowSnapshot
    steps: list[StepView]
    step_inputs: list[dict[str, Any]]
    seq: int
    current_step: int | None = None
    cancel_requested: bool = False
    # CostCharged entries with no step (execution-level charges), counted once per charge id.
    other_charges: int = 0
    other_charge_ids: list[str] = msgspec.field(default_factory=list)
    # Schedules: a run names its schedule and records its decisions; an execution a run started
    # for a video names the schedule and the run's execution id.
    schedule_id: str | None = None
    run_execution_id: str | None = None
    run_items: list[RunItemView] = msgspec.field(default_factory=list)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExecutionView)


def encode_view(view: ExecutionView) -> bytes:
    """The stored form of a view (JSON)."""
    return _encoder.encode(view)


def decode_view(data: bytes | str) -> ExecutionView:
    """A stored view back; msgspec.DecodeError/ValidationError when it is not one."""
    return _decoder.decode(data)


def is_active(view: ExecutionView) -> bool:
    """Pending or running: what ``GET /v1/executions/me?active=1`` lists."""
    return view.status in ACTIVE_STATUSES


def iso_ms(ms: int | None) -> str | None:
    """ms since the epoch as ISO-8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _error_json(error: ErrorView | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"code": error.code, "message": error.message, "http_status": error.http_status}


def step_ran(step: StepView) -> bool:
    """A step that has started at least once (it appears under ``steps``, not ``step_inputs``)."""
    return step.status != "pending" or step.attempts > 0


def execution_summary(view: ExecutionView) -> dict[str, Any]:
    """The ``execution`` object of ``GET /v1/executions/{id}``, lists and the 202 body; a schedule
    run and the executions it started also name the schedule and the run."""
    summary = _summary(view)
    if view.schedule_id is not None:
        summary["schedule_id"] = view.schedule_id
        summary["run_id"] = run_id(view.run_execution_id or view.execution_id)
    return summary


def _summary(view: ExecutionView) -> dict[str, Any]:
    return {
        "execution_id": view.execution_id,
        "status": view.status,
        "kind": view.kind,
        "target": msgspec.to_builtins(view.target),
        "reporter_id": view.reporter_id,
        "created_at": iso_ms(view.created_at),
        "started_at": iso_ms(view.started_at),
        "finished_at": iso_ms(view.finished_at),
        "updated_at": iso_ms(view.updated_at),
        "fee_coins": micro_to_coins(view.fee),
        "cost_coins": micro_to_coins(view.cost),
        "error": _error_json(view.error),
        "cancel_requested": view.cancel_requested,
        "current_step": view.current_step,
        "steps_total": len(view.steps),
        "steps_done": sum(1 for s in view.steps if s.status == "done"),
    }


def step_json(step: StepView) -> dict[str, Any]:
    """One step summary under ``steps``."""
    return {
        "step_index": step.step_index,
        "step_id": step.step_id,
        "tool_id": step.tool_id,
        "status": step.status,
        "attempts": step.attempts,
        "input": step.input,
        "output": step.output,
        "output_ref": msgspec.to_builtins(step.output_ref) if step.output_ref else None,
        "usage": step.usage,
        "cost_coins": micro_to_coins(step.cost),
        "started_at": iso_ms(step.started_at),
        "finished_at": iso_ms(step.finished_at),
        "duration_ms": step.duration_ms,
        "retry_at": iso_ms(step.retry_at),
        "error": _error_json(step.error),
    }


def _item_status(steps: list[StepView]) -> StepStatus:
    if any(s.status == "error" for s in steps):
        return "error"
    if all(s.status == "done" for s in steps):
        return "done"
    if any(step_ran(s) for s in steps):
        return "running"
    return "pending"


def items_json(view: ExecutionView) -> list[dict[str, Any]]:
    """Per-item progress of a per-item execution (``process_collection``; ``schedule_run``, whose
    items are its channels): for each item (in run order) its
    status, steps done, cost, error, and the output of its last step once it is done. A failed
    item's steps that never ran are counted in ``steps_skipped``."""
    groups: dict[int, list[StepView]] = {}
    for step in view.steps:
        index = step.input.get("item_index")
        if isinstance(index, int):
            groups.setdefault(index, []).append(step)
    out: list[dict[str, Any]] = []
    for index in sorted(groups):
        steps = groups[index]
        status = _item_status(steps)
        failed = next((s for s in steps if s.status == "error"), None)
        last = steps[-1]
        out.append(
            {
                "item_index": index,
                "item_id": last.input.get("item_id"),
                "source": last.input.get("source"),
                "status": status,
                "steps_total": len(steps),
                "steps_done": sum(1 for s in steps if s.status == "done"),
                "steps_skipped": sum(1 for s in steps if not step_ran(s))
                if status == "error"
                else 0,
                "step_indexes": [s.step_index for s in steps],
                "cost_coins": micro_to_coins(sum(s.cost for s in steps)),
                "error": _error_json(failed.error if failed else None),
                "output": last.output if status == "done" else None,
            }
        )
    return out


def execution_json(view: ExecutionView) -> dict[str, Any]:
    """The body of ``GET /v1/executions/{id}``: execution, workflow, steps that ran, and the
    inputs of the steps not run yet; a per-item execution adds ``items`` (:func:`items_json`)."""
    body = _execution_json(view)
    if view.kind in PER_ITEM_KINDS:
        body["items"] = items_json(view)
    return body


def _execution_json(view: ExecutionView) -> dict[str, Any]:
    return {
        "execution": execution_summary(view),
        "workflow": msgspec.to_builtins(view.workflow),
        "steps": [step_json(s) for s in view.steps if step_ran(s)],
        "step_inputs": [
            {
                "step_index": s.step_index,
                "step_id": s.step_id,
                "tool_id": s.tool_id,
                "input": s.input,
            }
            for s in view.steps
            if not step_ran(s)
        ],
    }


# -- schedule runs -------------------------------------------------------------------------------

RUN_OUTCOMES: tuple[RunOutcome, ...] = (
    "processed",
    "skipped_seen",
    "skipped_too_old",
    "capped",
    "failed",
)


def run_summary(view: ExecutionView) -> dict[str, Any]:
    """A schedule run (an execution of kind ``schedule_run``) as ``GET …/schedule/runs`` lists
    it: its timing, status, channels and the count of each outcome."""
    channels = items_json(view)
    counts = dict.fromkeys(RUN_OUTCOMES, 0)
    for item in view.run_items:
        counts[item.outcome] += 1
    failed = [c for c in channels if c["status"] == "error"]
    counts["failed"] += len(failed)
    return {
        "run_id": run_id(view.execution_id),
        "execution_id": view.execution_id,
        "schedule_id": view.schedule_id,
        "reporter_id": view.reporter_id,
        "status": view.status,
        "error": _error_json(view.error),
        "created_at": iso_ms(view.created_at),
        "started_at": iso_ms(view.started_at),
        "finished_at": iso_ms(view.finished_at),
        "fee_coins": micro_to_coins(view.fee),
        "channels_total": len(channels),
        "channels_done": sum(1 for c in channels if c["status"] == "done"),
        "channels_failed": len(failed),
        "counts": counts,
    }


def run_json(view: ExecutionView) -> dict[str, Any]:
    """One schedule run with its per-item events, in the order they happened: a decision per
    video of each channel (:class:`RunItemView`), and a ``failed`` entry per channel whose sync or
    pick failed for good, with the reason."""
    entries = [(item.at, _run_item_json(item)) for item in view.run_items]
    for channel in items_json(view):
        if channel["status"] == "error":
            step = next(
                s for s in view.steps if s.step_index in channel["step_indexes"] and s.error
            )
            entries.append((step.finished_at or view.updated_at, _failed_channel_json(step)))
    entries.sort(key=lambda entry: entry[0])  # stable: one pick's decisions keep their order
    return {**run_summary(view), "items": [entry for _, entry in entries]}


def _failed_channel_json(step: StepView) -> dict[str, Any]:
    """A channel whose ``step`` (its sync or its pick) failed for good, as a run item."""
    reason = f"{step.tool_id}: {step.error.message}" if step.error else step.tool_id
    return {
        "outcome": "failed",
        "item_id": step.input.get("item_id"),
        "collection_id": step.input.get("collection_id"),
        "channel_id": None,
        "video_id": None,
        "title": "",
        "published_at": None,
        "execution_id": None,
        "reason": reason,
        "at": iso_ms(step.finished_at),
    }


def _run_item_json(item: RunItemView) -> dict[str, Any]:
    return {
        "outcome": item.outcome,
        "item_id": item.item_id,
        "collection_id": item.collection_id,
        "channel_id": item.channel_id,
        "video_id": item.video_id,
        "title": item.title,
        "published_at": item.published_at,
        "execution_id": item.child_execution_id,
        "reason": item.reason,
        "at": iso_ms(item.at),
    }
