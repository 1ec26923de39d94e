"""Schedule runs: requesting one, and what its steps decide and start (docs/decisions/0003).

A run IS an execution of kind ``schedule_run``; its public ``run_id`` is ``run_`` + the body of
its execution id (engine.log.ids.run_id; the owner's partition gives the rest back). Its steps
come in pairs, one pair per channel item of the schedule's collections (each pair is one *item*
of a per-item execution, see engine.run.plan, so a channel that fails does not stop the others):

    channel_sync   the channel's newest uploads (a blob)
    schedule_pick  the rules below over that listing; one execution of the schedule's workflow
                   per picked video; a RunItemRecorded event per video, with its StepCompleted

Rules, per channel, newest first: a video a run of this schedule processed before is
``skipped_seen``; one published more than ``max_age_hours`` before the run was requested is
``skipped_too_old``; of the rest, the first ``max_videos_per_channel`` are ``processed`` and the
others ``capped``. A video whose request fails is ``failed`` with the reason.

One run at a time: the schedule's run marker names its latest run, and a new run is appended
only while that run is terminal (engine.log.store.request_run: the marker moves atomically with the
new run's ExecutionRequested). The marker never needs clearing: the run's terminal event is what
ends it, whoever writes it (a worker, a cancel, the dead-letter path).

Nothing starts twice: a video's execution is requested with the idempotency key ``run + video``
and recorded in the schedule's seen hash atomically with its ExecutionRequested
(engine.log.store.request_once), so a pick step that runs again after a crash finds the executions
it already started instead of starting new ones.

Fees: the run pays the ``schedule_run`` flat fee once, when it is dispatched; the executions it
starts pay no flat fee (their provider cost passes through to the owner as for any execution).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import EngineError, InvalidRequest, NotFound, StoreError
from engine.log.events import (
    ExecutionRequested,
    RunOutcome,
    StepSpec,
    Target,
    WorkflowSnapshot,
    is_terminal,
)
from engine.log.ids import new_execution_id, run_id
from engine.log.store import Refused
from engine.requests import idempotency, item_input, process_request, snapshot
from engine.resources import collections, items, reporters, schedules
from engine.resources.items import Item
from engine.resources.records import Schedule
from engine.resources.store import MAX_RETRIES, Contended
from engine.runtime import Runtime

MAX_CHANNELS = 100  # channel items one run syncs, at most (the first ones, in collection order)
SYNC_TOOL = "channel_sync"
PICK_TOOL = "schedule_pick"
TICK_KEY = "schedule-tick"  # idempotency keys of scheduled runs: f"{TICK_KEY}:{schedule}:{tick}"
_HOUR_MS = 3_600_000
_MAX_LISTING = 500  # channel_sync's own limit


# -- requesting a run ----------------------------------------------------------------------------


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
        result = await store.request_run(
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
    """True while the execution exists and has not ended (any terminal event in its history, so
    a late event after the terminal one cannot fool it)."""
    history = await runtime.store.history(execution_id)
    return bool(history) and not any(is_terminal(e) for e in history)


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


# -- what a pick decides -------------------------------------------------------------------------


class Video(msgspec.Struct, frozen=True, kw_only=True):
    """One upload in a channel listing (the ``channel_sync`` blob's ``videos``)."""

    video_id: str
    title: str = ""
    published_at: str | None = None


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a ``channel_sync`` blob a pick reads."""

    channel_id: str
    videos: list[Video]


class PickRules(msgspec.Struct, frozen=True, kw_only=True):
    """A pick step's input as :func:`build_run` writes it (the channel and the run's rules)."""

    item_id: str
    collection_id: str | None = None
    schedule_id: str
    workflow_id: str
    reporter_id: str
    max_age_hours: int
    max_videos_per_channel: int
    as_of: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What a run does with one video. ``processed`` without ``execution_id`` is still to be
    started; with one, it was (by this run, before a crash), or, for ``skipped_seen``, by the
    earlier run that processed it."""

    video: Video
    outcome: RunOutcome
    execution_id: str | None = None
    reason: str = ""


def seen_value(run: str, execution_id: str) -> str:
    """What the seen hash records for a processed video: the run and the video's execution."""
    return f"{run} {execution_id}"


def _seen_parts(value: str) -> tuple[str, str]:
    run, _, execution_id = value.partition(" ")
    return run, execution_id


def published_ms(published_at: str | None) -> int | None:
    """An ISO 8601 time (``2026-11-29T09:00:00Z``) in ms; None when absent or unreadable."""
    if not published_at:
        return None
    try:
        stamp = dt.datetime.fromisoformat(published_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


def decide(
    videos: list[Video],
    seen: dict[str, str],
    *,
    run: str,
    as_of_ms: int,
    max_age_hours: int,
    cap: int,
) -> list[Decision]:
    """The rules of the module docstring over one channel's ``videos``, newest first.

    ``seen`` holds the seen-hash entries of these videos. Videos this run ``run`` already
    processed (a pick that runs again) keep their execution and use their share of ``cap`` first,
    so a pick run twice picks the same videos even if the listing changed in between.
    """
    oldest = as_of_ms - max_age_hours * _HOUR_MS
    unique = list({v.video_id: v for v in videos}.values())
    unique.sort(key=lambda v: published_ms(v.published_at) or 0, reverse=True)
    taken = sum(1 for v in unique if v.video_id in seen and _seen_parts(seen[v.video_id])[0] == run)
    out: list[Decision] = []
    for video in unique:
        recorded = seen.get(video.video_id)
        published = published_ms(video.published_at)
        if recorded is not None:
            by, execution_id = _seen_parts(recorded)
            outcome: RunOutcome = "processed" if by == run else "skipped_seen"
            out.append(Decision(video, outcome, execution_id))
        elif published is None:
            out.append(Decision(video, "failed", reason="no publication date in the listing"))
        elif published < oldest:
            out.append(Decision(video, "skipped_too_old"))
        elif taken < cap:
            taken += 1
            out.append(Decision(video, "processed"))
        else:
            out.append(Decision(video, "capped"))
    return out


# -- starting a video's execution ----------------------------------------------------------------


def watch_url(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


async def start_video(
    runtime: Runtime,
    owner: str,
    *,
    run: str,
    schedule_id: str,
    workflow: WorkflowSnapshot,
    video: Video,
    request_id: str,
) -> Decision:
    """Request the execution of ``workflow`` (the schedule's) over ``video`` for run ``run``,
    once: ``processed`` with its execution id (new, or the one this run started before), or
    ``skipped_seen`` when another run of the schedule processed the video meanwhile."""
    store = runtime.store
    # The video as one of the owner's items (the one it has, or a new one), so its transcript and
    # documents land on an item like those of any process request.
    item = await items.resolve_source(runtime, owner, watch_url(video.video_id))
    key = f"{run}:{video.video_id}"
    event = process_request(
        new_execution_id(store.keys.partition(owner)),
        owner,
        item,
        workflow,
        fee=0,
        request_id=request_id,
        idempotency_key=key,
        reporter_id=workflow.reporter_id,
        schedule_id=schedule_id,
        run_execution_id=run,
    )
    result = await store.request_once(
        event,
        idempotency=idempotency(key, f"schedule-video {schedule_id}", {"run": run}),
        seen_key=store.keys.schedule_seen(owner, schedule_id),
        seen_field=video.video_id,
        seen_value=seen_value(run, event.execution_id),
    )
    if not isinstance(result, Refused):
        return Decision(video, "processed", result.execution_id)
    by, execution_id = _seen_parts(result.holder)
    return Decision(video, "processed" if by == run else "skipped_seen", execution_id)


async def pick(
    runtime: Runtime, owner: str, *, run: str, rules: PickRules, listing: Listing
) -> list[Decision]:
    """Decide every video of ``listing`` for run ``run``, then start the picked ones. A video
    whose request the engine refuses is ``failed`` with the reason; Redis failing raises (the
    step is retried, and finds what it started through the seen hash)."""
    seen_key = runtime.store.keys.schedule_seen(owner, rules.schedule_id)
    ids = [v.video_id for v in listing.videos]
    values = await runtime.redis.hmget(seen_key, ids) if ids else []
    seen = {vid: as_str(raw) for vid, raw in zip(ids, values, strict=True) if raw is not None}
    decisions = decide(
        listing.videos,
        seen,
        run=run,
        as_of_ms=rules.as_of,
        max_age_hours=rules.max_age_hours,
        cap=rules.max_videos_per_channel,
    )
    if not any(d.outcome == "processed" and d.execution_id is None for d in decisions):
        return decisions
    workflow = snapshot(
        await reporters.reporter_workflow(runtime, owner, rules.reporter_id, rules.workflow_id)
    )
    out: list[Decision] = []
    for decision in decisions:
        if decision.outcome == "processed" and decision.execution_id is None:
            try:
                decision = await start_video(
                    runtime,
                    owner,
                    run=run,
                    schedule_id=rules.schedule_id,
                    workflow=workflow,
                    video=decision.video,
                    request_id=run,
                )
            except StoreError:
                raise
            except EngineError as exc:
                decision = Decision(decision.video, "failed", reason=str(exc))
        out.append(decision)
    return out
