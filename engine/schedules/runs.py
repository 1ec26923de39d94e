"""Schedule runs: requesting one (docs/decisions/0003).

A run IS an execution of kind ``schedule_run``; its public ``run_id`` is ``run_`` + the body of
its execution id (engine.log.ids.run_id; the owner's partition gives the rest back). Its steps
come in pairs, one pair per channel item of the schedule's collections (each pair is one *item*
of a per-item execution, see engine.run.plan, so a channel that fails does not stop the others):

    channel_sync   the channel's newest uploads (a blob)
    schedule_pick  the rules (engine.schedules.rules) over that listing; one execution of the
                   schedule's workflow per picked video (engine.schedules.pick); a RunItemRecorded
                   event per video, with its StepCompleted

One run at a time: the schedule's run marker names its latest run, and a new run is appended
only while that run is terminal (engine.log.admission, ``request_run``: the marker moves atomically
with the new run's ExecutionRequested). The marker never needs clearing: the run's terminal event
is what ends it, whoever writes it (a worker, a cancel, the dead-letter path).

Fees: the run pays the ``schedule_run`` flat fee once, when it is dispatched; the executions it
starts pay no flat fee (their provider cost passes through to the owner as for any execution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import InvalidRequest, NotFound
from engine.log.admission import Refused
from engine.log.events import (
    ExecutionRequested,
    StepSpec,
    Target,
    WorkflowSnapshot,
    has_ended,
)
from engine.log.ids import new_execution_id, run_id
from engine.requests import idempotency, item_input
from engine.resources import collections, reporters, schedules
from engine.resources.items import Item
from engine.resources.records import Schedule
from engine.resources.store import MAX_RETRIES, Contended
from engine.runtime import Runtime

MAX_CHANNELS = 100  # channel items one run syncs, at most (the first ones, in collection order)
SYNC_TOOL = "channel_sync"
PICK_TOOL = "schedule_pick"
TICK_KEY = "schedule-tick"  # idempotency keys of scheduled runs: f"{TICK_KEY}:{schedule}:{tick}"
_MAX_LISTING = 500  # channel_sync's own limit


@dataclass(frozen=True, slots=True)
class RunTriggered:
    """The answer to a trigger: ``dispatched`` (a new run, or the one an Idempotency-Key already
    started) or ``already_running`` (nothing started, nothing charged)."""

    status: Literal["dispatched", "already_running"]
    schedule_id: str
    execution_id: str

    @property
    def run_id(self) -> str:
        return run_id(self.execution_id)


async def trigger_run(
    runtime: Runtime,
    owner: str,
    schedule_id: str,
    *,
    reporter_id: str | None,
    request_id: str,
    idempotency_key: str | None = None,
    tick_ms: int | None = None,
) -> RunTriggered:
    """Start a run of the owner's schedule unless one is in flight.

    ``reporter_id`` (the route's) must be the schedule's; None for the scheduler. ``tick_ms``: the
    due tick the scheduler fires, whose key makes it fire once however many schedulers race.
    NotFound for another owner's or a missing schedule; InvalidRequest when the schedule's
    workflow does not run on videos or its collections hold no channel; InsufficientBalance when
    the fee cannot be covered (nothing appended).
    """
    if tick_ms is not None:
        idempotency_key = f"{TICK_KEY}:{schedule_id}:{tick_ms}"
    idem = idempotency(idempotency_key, f"schedule-run {schedule_id}", {"tick": tick_ms})
    store = runtime.store
    for _ in range(MAX_RETRIES):
        schedule, raw = await schedules.load_schedule(runtime, owner, schedule_id)
        if reporter_id is not None and schedule.reporter_id != reporter_id:
            raise NotFound("no such schedule")
        current = await _run_marker(runtime, owner, schedule_id)
        live = current is not None and await in_flight(runtime, current)
        if live and not await _key_used(runtime, owner, idem):
            # Nothing to build: a run is in flight and no earlier request answers this one.
            assert current is not None
            return RunTriggered("already_running", schedule_id, current)
        event = await build_run(
            runtime, schedule, request_id=request_id, idempotency_key=idempotency_key
        )
        result = await store.admission.request_run(
            event,
            idempotency=idem,
            schedule_key=schedules.schedule_key(runtime, owner, schedule_id),
            schedule_raw=raw,
            current_run=current,
            live=live,
        )
        if not isinstance(result, Refused):
            return RunTriggered("dispatched", schedule_id, result.execution_id)
        if result.reason == "running":
            return RunTriggered("already_running", schedule_id, result.holder)
        # "moved": the schedule or its marker changed since we read them; read again.
    raise Contended("the schedule kept changing under this trigger; try again")


async def _run_marker(runtime: Runtime, owner: str, schedule_id: str) -> str | None:
    raw = await runtime.redis.get(runtime.store.keys.schedule_run(owner, schedule_id))
    return None if raw is None else as_str(raw)


async def _key_used(runtime: Runtime, owner: str, idem: tuple[str, str] | None) -> bool:
    """Whether the Idempotency-Key of this trigger already names a request."""
    if idem is None:
        return False
    return bool(await runtime.redis.exists(runtime.store.keys.idempotency(owner, idem[0])))


async def in_flight(runtime: Runtime, execution_id: str) -> bool:
    """True while the execution exists and has not ended (a terminal event in its history that no
    retry of its dead letter followed, so a late event after the terminal one cannot fool it)."""
    history = await runtime.store.log.history(execution_id)
    return bool(history) and not has_ended(history)


async def build_run(
    runtime: Runtime, schedule: Schedule, *, request_id: str, idempotency_key: str | None
) -> ExecutionRequested:
    """The ExecutionRequested of a run of ``schedule``: a sync and a pick step per channel."""
    owner = schedule.owner
    workflow = await reporters.reporter_workflow(
        runtime, owner, schedule.reporter_id, schedule.workflow_id
    )
    if workflow.target_kind != "youtube_video":
        raise InvalidRequest(
            f"workflow_id: a schedule runs its workflow on each new video; workflow "
            f"{workflow.workflow_id} runs on {workflow.target_kind}"
        )
    channels = await _channels(runtime, schedule)
    if not channels:
        raise InvalidRequest("collection_ids: the schedule's collections hold no YouTube channel")
    listing = min(_MAX_LISTING, max(50, 2 * schedule.max_videos_per_channel))
    rules = {
        "schedule_id": schedule.schedule_id,
        "reporter_id": schedule.reporter_id,
        "workflow_id": schedule.workflow_id,
        "max_age_hours": schedule.max_age_hours,
        "max_videos_per_channel": schedule.max_videos_per_channel,
        "as_of": now_ms(),
    }
    steps: list[StepSpec] = []
    inputs: list[dict[str, Any]] = []
    for index, (collection_id, channel) in enumerate(channels):
        base = {**item_input(channel), "collection_id": collection_id, "item_index": index}
        steps.append(
            StepSpec(step_id=f"sync_{index}", tool_id=SYNC_TOOL, params={"max_videos": listing})
        )
        inputs.append({**base, "item_step": 0})
        steps.append(StepSpec(step_id=f"pick_{index}", tool_id=PICK_TOOL))
        inputs.append({**base, "item_step": 1, **rules})
    store = runtime.store
    return ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="schedule_run",
        target=Target(kind="schedule"),
        workflow=WorkflowSnapshot(
            workflow_id=schedule.workflow_id,
            name=f"schedule run: {workflow.name}",
            target_kind="schedule",
            steps=steps,
            reporter_id=schedule.reporter_id,
        ),
        step_inputs=inputs,
        fee=runtime.settings.fees.schedule_run,
        request_id=request_id,
        idempotency_key=idempotency_key,
        reporter_id=schedule.reporter_id,
        schedule_id=schedule.schedule_id,
    )


async def _channels(runtime: Runtime, schedule: Schedule) -> list[tuple[str, Item]]:
    """(collection, channel item) of the schedule's collections, each channel once, in order."""
    found: dict[str, tuple[str, Item]] = {}
    for collection_id in schedule.collection_ids:
        try:
            found_items = await collections.collection_items(
                runtime, schedule.owner, collection_id, "youtube_channel", MAX_CHANNELS
            )
        except NotFound:
            continue  # deleted since the schedule was read: it is detached by now
        for item in found_items:
            found.setdefault(item.item_id, (collection_id, item))
    return list(found.values())[:MAX_CHANNELS]
