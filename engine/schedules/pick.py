"""``schedule_pick``: the second step of each channel of a schedule run (engine.schedules.runs).

Input: the channel item and the run's rules (``schedule_id``, ``workflow_id``, ``max_age_hours``,
``max_videos_per_channel``, ``as_of``), and under ``previous`` the ``channel_sync`` step before it,
whose blob is the listing. It decides each video (engine.schedules.rules.decide), starts one
execution of the schedule's workflow per video it picks (:func:`pick_videos`), and returns one
``RunItemRecorded`` per video, appended with its StepCompleted. Output: the channel and the count
of each outcome.

Nothing starts twice: a video's execution is requested with the idempotency key ``run:video``
and recorded in the schedule's seen hash (with its publication time, by which the hash forgets
videos older than the age window) atomically with its ExecutionRequested
(engine.log.admission, ``request_once``), so a pick that runs again after a crash (a worker died
mid-step) finds the executions it already started instead of starting new ones.

Internal (engine.run.toolbox.INTERNAL): only schedule runs use it, so the tool catalogue does not
list it and a workflow step cannot name it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from engine.connection import as_str
from engine.errors import EngineError, NotFound, StoreError, ToolError
from engine.log.admission import Refused
from engine.log.events import RunItemRecorded, StepSpec, WorkflowSnapshot
from engine.log.ids import new_execution_id
from engine.requests import idempotency, process_request, snapshot
from engine.resources import items, reporters
from engine.runtime import Runtime
from engine.schedules.rules import (
    Decision,
    Listing,
    PickRules,
    Video,
    decide,
    forgettable,
    published_ms,
    seen_parts,
    seen_value,
)
from engine.tools.base import StepResult, Tool, ToolContext
from engine.tools.retry import RetryPolicy


class SchedulePick(Tool):
    tool_id = "schedule_pick"
    description = "A schedule run's pick of a channel's new videos (internal)."
    provider_kind = "youtube"
    retry = RetryPolicy(max_attempts=5, base_ms=250, max_ms=10_000)
    timeout_s = 120.0

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        return 0  # the executions it starts pay their own way

    async def run(self, ctx: ToolContext) -> StepResult:
        if ctx.runtime is None:
            raise ToolError("internal", "schedule_pick runs inside a worker", retryable=False)
        try:
            rules = msgspec.convert(ctx.input, PickRules)
        except msgspec.ValidationError as exc:
            raise ToolError("invalid_input", f"schedule_pick: {exc}", retryable=False) from None
        try:
            listing = msgspec.json.decode(await _listing_blob(ctx), type=Listing)
        except msgspec.DecodeError as exc:
            message = f"unreadable channel listing: {exc}"
            raise ToolError("internal", message, retryable=False) from None
        try:
            decisions = await pick_videos(
                ctx.runtime, ctx.owner, run=ctx.execution_id, rules=rules, listing=listing
            )
        except NotFound as exc:  # the workflow went with its reporter meanwhile
            raise ToolError("invalid_target", str(exc), retryable=False) from None
        except StoreError as exc:
            raise ToolError("store_unavailable", str(exc), retryable=True) from None
        events = tuple(
            RunItemRecorded(
                execution_id=ctx.execution_id,
                item_id=rules.item_id,
                collection_id=rules.collection_id,
                channel_id=listing.channel_id,
                video_id=d.video.video_id,
                title=d.video.title,
                published_at=d.video.published_at,
                outcome=d.outcome,
                child_execution_id=d.execution_id,
                reason=d.reason,
            )
            for d in decisions
        )
        counts: dict[str, int] = Counter(d.outcome for d in decisions)
        output = {"kind": "schedule_picks", "channel_id": listing.channel_id, **counts}
        return StepResult(output=output, events=events)


async def _listing_blob(ctx: ToolContext) -> bytes:
    """The blob of the ``channel_sync`` step before this one."""
    previous = ctx.input.get("previous")
    ref = previous.get("output_ref") if isinstance(previous, dict) else None
    if not isinstance(ref, dict) or not isinstance(ref.get("sha256"), str):
        raise ToolError("invalid_input", "no channel listing before this step", retryable=False)
    blob = await ctx.load_blob(ref["sha256"])
    if blob is None:
        raise ToolError("internal", f"blob {ref['sha256']} is missing", retryable=False)
    return blob


async def pick_videos(
    runtime: Runtime, owner: str, *, run: str, rules: PickRules, listing: Listing
) -> list[Decision]:
    """Decide every video of ``listing`` for run ``run``, then start the picked ones. A video
    whose request the engine refuses is ``failed`` with the reason; Redis failing raises (the
    step is retried, and finds what it started through the seen hash)."""
    seen_key = runtime.store.keys.schedule_seen(owner, rules.schedule_id)
    await _forget_old(runtime, seen_key, rules)
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


async def _forget_old(runtime: Runtime, seen_key: str, rules: PickRules) -> None:
    """Drop from the schedule's seen hash the videos older than its age window: no run can pick
    them again, so the hash holds one window of videos, not every video ever processed."""
    seen = {as_str(k): as_str(v) for k, v in (await runtime.redis.hgetall(seen_key)).items()}
    old = forgettable(seen, as_of_ms=rules.as_of, max_age_hours=rules.max_age_hours)
    if old:
        await runtime.redis.hdel(seen_key, *old)


def watch_url(video_id: str) -> str:
    """The YouTube watch URL of a video: the source of the item it is processed on."""
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
    result = await store.admission.request_once(
        event,
        idempotency=idempotency(key, f"schedule-video {schedule_id}", {"run": run}),
        seen_key=store.keys.schedule_seen(owner, schedule_id),
        seen_field=video.video_id,
        seen_value=seen_value(run, event.execution_id, published_ms(video.published_at)),
    )
    if not isinstance(result, Refused):
        return Decision(video, "processed", result.execution_id)
    by, execution_id = seen_parts(result.holder)
    return Decision(video, "processed" if by == run else "skipped_seen", execution_id)
