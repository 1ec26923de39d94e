"""``schedule_pick``: the second step of each channel of a schedule run (engine.schedules.runs).

Input: the channel item and the run's rules (``schedule_id``, ``workflow_id``, ``max_age_hours``,
``max_videos_per_channel``, ``as_of``), and under ``previous`` the ``channel_sync`` step before it,
whose blob is the listing. It decides each video, starts one execution of the schedule's workflow
per video it picks (engine.schedules.runs.pick), and returns one ``RunItemRecorded`` per video,
appended with its StepCompleted. Output: the channel and the count of each outcome.

Running it again (a worker died mid-step) is safe: the executions it already started are found
through the schedule's seen hash and their idempotency keys, never started twice.

Internal (engine.run.toolbox.INTERNAL): only schedule runs use it, so the tool catalogue does not
list it and a workflow step cannot name it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from engine.errors import NotFound, StoreError, ToolError
from engine.log.events import RunItemRecorded, StepSpec
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
        # Imported here, not above: engine.schedules.runs needs engine.commands, whose resources
        # import the tool catalogue, which imports this registry.
        from engine.schedules.runs import Listing, PickRules, pick

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
            decisions = await pick(
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
