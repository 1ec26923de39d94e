"""One attempt of a step: call its tool under the tool's timeout, interruptible by a cancel
request, and turn the answer into the attempt's outcome events.

A tool reports failure with a ToolError. Redis failing under a tool (a blob it reads, during a
failover or a restart) is a retryable ``unavailable``: the attempt may succeed once Redis is back.
Anything else it raises is a bug: logged, and recorded as a StepFailed ``internal``, so it never
escapes the worker's loop. No answer within the timeout is a retryable ``timeout``. Whether a failed
attempt is retried, and when, is decided by engine.run.decide.failed_attempt.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from redis.exceptions import RedisClusterException, RedisError

from engine import meters
from engine.clock import now_ms
from engine.errors import StoreError, ToolError
from engine.log.events import AnyEvent, BlobRef, StepCompleted, StepSpec
from engine.run import decide, plan
from engine.run.job import DriveContext, Job
from engine.tools import Tool, ToolContext
from engine.tools.base import StepResult

log = logging.getLogger("clipstream.worker")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt ended with: the events to append (the tool's own events then its
    StepCompleted, or its StepFailed and maybe a StepRetryScheduled) and the blob
    ``(sha256, data)`` the StepCompleted names, stored by the same atomic append."""

    events: list[AnyEvent]
    blob: tuple[str, bytes] | None = None


async def attempt(
    ctx: DriveContext,
    job: Job,
    tool: Tool | None,
    spec: StepSpec,
    action: plan.StartStep,
    load_blob: Callable[[str], Awaitable[bytes | None]],
) -> Outcome | None:
    """Run ``action``'s attempt of ``spec`` with ``tool`` (None: an unknown tool, which fails at
    once): its outcome, or None when a cancel request interrupted it (the log then says what
    happens next). ``load_blob`` is how the tool reads a previous step's blob."""
    started = time.monotonic()
    result: StepResult | None = None
    error: ToolError | None = None
    if tool is None:
        error = ToolError("internal", f"unknown tool {spec.tool_id!r}", retryable=False)
    else:
        tool_ctx = _tool_context(ctx, job, spec, action, load_blob)
        timeout = tool.timeout_for(spec)
        # One scope for both ends of a call: its deadline is the tool's timeout, and a cancel
        # request cancels it (cheaper than a fail_after inside a second scope).
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
            job.call_scope = scope
            try:
                if job.cancel_seen:
                    scope.cancel()
                result = await tool.run(tool_ctx)
            except ToolError as exc:
                error = exc
            except (StoreError, RedisError, RedisClusterException, OSError) as exc:
                log.warning(
                    "tool %s on %s met Redis failing: %r", spec.tool_id, job.execution_id, exc
                )
                error = ToolError("unavailable", f"the store failed: {exc}", retryable=True)
            except Exception as exc:
                # A tool's bug never escapes the loop: it becomes a typed StepFailed.
                log.exception("tool %s failed on %s", spec.tool_id, job.execution_id)
                error = ToolError("internal", f"{type(exc).__name__}: {exc}", retryable=False)
            finally:
                job.call_scope = None
        if result is None and error is None:
            if job.cancel_seen:
                return None
            error = ToolError("timeout", f"no answer within {timeout:g}s", retryable=True)
    seconds = time.monotonic() - started
    if result is not None:
        meters.STEP_SECONDS.labels(spec.tool_id, "completed").observe(seconds)
        meters.STEP_COST.labels(spec.tool_id).inc(meters.coins(result.cost))
        return _completed(job.execution_id, action, result, int(seconds * 1000))
    assert error is not None
    meters.STEP_SECONDS.labels(spec.tool_id, error.code).observe(seconds)
    policy = None if tool is None else tool.retry
    failed = decide.failed_attempt(
        job.execution_id, action, error, policy, now_ms=now_ms(), rng=ctx.rng
    )
    return Outcome(failed)


def _tool_context(
    ctx: DriveContext,
    job: Job,
    spec: StepSpec,
    action: plan.StartStep,
    load_blob: Callable[[str], Awaitable[bytes | None]],
) -> ToolContext:
    return ToolContext(
        execution_id=job.execution_id,
        owner=job.owner,
        step_index=action.index,
        attempt=action.attempt,
        spec=spec,
        input=action.input,
        settings=ctx.settings,
        load_blob=load_blob,
        runtime=ctx.runtime,
    )


def _completed(
    execution_id: str, action: plan.StartStep, result: StepResult, duration_ms: int
) -> Outcome:
    """The outcome of a successful attempt: the tool's own events, then its StepCompleted."""
    blob = ref = None
    if result.blob is not None:
        digest = result.blob_sha256 or hashlib.sha256(result.blob).hexdigest()
        blob = (digest, result.blob)
        ref = BlobRef(sha256=digest, size=len(result.blob))
    completed = StepCompleted(
        execution_id=execution_id,
        step_index=action.index,
        attempt=action.attempt,
        output=result.output,
        output_ref=ref,
        usage=result.usage,
        cost=result.cost,
        duration_ms=duration_ms,
    )
    return Outcome([*result.events, completed], blob)
