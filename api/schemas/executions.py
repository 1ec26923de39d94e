"""What clients get back about work that runs asynchronously: executions (the 202 body, lists,
the detail with its steps and items), their raw events, schedule runs, transcripts, and the
execution a realtime feed event carries.

Response Structs describe a body once: ``api.render`` builds them from the read side's views (it
is the only code that does), the handlers encode them (``api.render.respond``) and the OpenAPI
document is built from them. UNSET fields are left out of the body.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from api.openapi import example
from api.schemas import examples as ex
from engine.log.events import BlobRef, RunOutcome, Status, Target, WorkflowSnapshot

# -- executions ----------------------------------------------------------------------------------


class ErrorOut(msgspec.Struct, kw_only=True):
    """Why an execution or a step failed."""

    code: str
    message: str
    http_status: int | None


class ExecutionSummary(msgspec.Struct, kw_only=True):
    """An execution: the 202 body, list entries, and the head of the detail."""

    execution_id: str
    status: Status
    kind: str
    target: Target
    reporter_id: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    fee_coins: float
    cost_coins: float
    error: ErrorOut | None
    cancel_requested: bool
    current_step: int | None
    steps_total: int
    steps_done: int
    # Only on a schedule run and on the executions it started: the schedule and the run.
    schedule_id: str | msgspec.UnsetType = msgspec.UNSET
    run_id: str | msgspec.UnsetType = msgspec.UNSET


@example(ex.EXECUTION_RESPONSE)
class ExecutionResponse(msgspec.Struct, kw_only=True):
    execution: ExecutionSummary


@example(ex.EXECUTION_LIST)
class ExecutionList(msgspec.Struct, kw_only=True):
    executions: list[ExecutionSummary]
    next_cursor: str | None


class StepCut(msgspec.Struct, kw_only=True):
    """Which strings of a step summary were cut to ``limit`` characters (``input.prompt``,
    ``output.text`` …); ``detail`` is where the step is whole."""

    limit: int
    fields: list[str]
    detail: str


class StepSummary(msgspec.Struct, kw_only=True):
    """A step that has started: attempts, input, output (or ``output_ref``), usage, cost.

    ``input`` is what the step was given; for an LLM step (llm_prompt, summary_review,
    extract_claims), what was sent (``prompt``, ``model``, ``max_tokens``, ``prompt_chars``, the
    whole prompt's length, and ``system`` when the tool adds one). ``output`` is what came
    back. Strings longer than the summary's limit are cut to it, and ``cut`` says which (null
    when nothing was); ``GET /v1/executions/{id}/steps/{index}`` returns the step whole.
    """

    step_index: int
    step_id: str
    tool_id: str
    status: Literal["pending", "running", "retrying", "done", "error"]
    attempts: int
    input: dict[str, Any]
    output: dict[str, Any] | None
    output_ref: BlobRef | None
    usage: dict[str, int]
    cost_coins: float
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    retry_at: str | None
    error: ErrorOut | None
    cut: StepCut | None = None


class AttemptError(msgspec.Struct, kw_only=True):
    """One failed attempt of a step."""

    attempt: int
    code: str
    message: str
    retryable: bool


class StepWhole(msgspec.Struct, kw_only=True):
    """One step whole: what it was given (for an LLM step the whole prompt sent), what it
    returned (a large output read from its blob), usage, cost, attempts and every failed
    attempt's error."""

    step_index: int
    step_id: str
    tool_id: str
    status: Literal["pending", "running", "retrying", "done", "error"]
    attempts: int
    input: dict[str, Any]
    output: Any
    output_ref: BlobRef | None
    usage: dict[str, int]
    cost_coins: float
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    retry_at: str | None
    error: ErrorOut | None
    errors: list[AttemptError]


@example(ex.STEP_RESPONSE)
class StepResponse(msgspec.Struct, kw_only=True):
    """``GET /v1/executions/{execution_id}/steps/{step_index}``."""

    step: StepWhole


class StepInputOut(msgspec.Struct, kw_only=True):
    """A step not run yet and the input it will get."""

    step_index: int
    step_id: str
    tool_id: str
    input: dict[str, Any]


class ItemProgress(msgspec.Struct, kw_only=True):
    """One item of a ``process_collection`` execution (a channel of a ``schedule_run``): its
    progress and, once done, its output."""

    item_index: int
    item_id: str | None
    source: str | None
    status: Literal["pending", "running", "done", "error"]
    steps_total: int
    steps_done: int
    steps_skipped: int
    step_indexes: list[int]
    cost_coins: float
    error: ErrorOut | None
    output: dict[str, Any] | None


@example(ex.EXECUTION_DETAIL)
class ExecutionDetail(msgspec.Struct, kw_only=True):
    """``GET /v1/executions/{execution_id}``; ``items`` only for the executions that run per
    item: ``process_collection`` and ``schedule_run`` (whose items are its channels)."""

    execution: ExecutionSummary
    workflow: WorkflowSnapshot
    steps: list[StepSummary]
    step_inputs: list[StepInputOut]
    items: list[ItemProgress] | msgspec.UnsetType = msgspec.UNSET


class EventList(msgspec.Struct, kw_only=True):
    """A page of the raw events of an execution, oldest first (each tagged by ``type``);
    ``next_cursor`` (the ``seq`` of the page's last event) fetches the next page, null on the
    last."""

    events: list[dict[str, Any]]
    next_cursor: str | None


# -- transcripts ---------------------------------------------------------------------------------


class SegmentOut(msgspec.Struct, kw_only=True):
    """A timed piece of a transcript; ``start`` and ``end`` in seconds from the start of the
    video, as the platform's transcripts give them."""

    start: float
    end: float
    text: str


class EmbeddingOut(msgspec.Struct, kw_only=True):
    """The embedding the transcript's request asked for (``embed: true``): its step's status, and
    once done the model, the vectors' dimensions and count, and the blob holding them."""

    status: Literal["pending", "running", "done", "error"]
    model: str | None = None
    dims: int | None = None
    count: int | None = None
    sha256: str | None = None
    error: ErrorOut | None = None


class TranscriptOut(msgspec.Struct, kw_only=True):
    item_id: str
    lang: str
    text: str
    segments: list[SegmentOut]
    embedding: EmbeddingOut | None
    execution_id: str | None
    created_at: str | None


@example(ex.TRANSCRIPT_RESPONSE)
class TranscriptResponse(msgspec.Struct, kw_only=True):
    transcript: TranscriptOut


# -- schedule runs -------------------------------------------------------------------------------


class RunTriggeredOut(msgspec.Struct, kw_only=True):
    """``dispatched``: a run started (or the one this Idempotency-Key started); its fee was
    charged once. ``already_running``: a run of the schedule is in flight (``run_id``); nothing
    started, nothing charged."""

    status: Literal["dispatched", "already_running"]
    schedule_id: str
    run_id: str


class RunCounts(msgspec.Struct, kw_only=True):
    """How many videos (and, under ``failed``, channels) ended each way."""

    processed: int
    skipped_seen: int
    skipped_too_old: int
    capped: int
    failed: int


class RunSummaryOut(msgspec.Struct, kw_only=True):
    """A schedule run: timing, status, channels and outcome counts. ``execution_id`` is the
    execution the run is (``GET /v1/executions/{execution_id}`` has its steps)."""

    run_id: str
    execution_id: str
    schedule_id: str | None
    reporter_id: str | None
    status: Status
    error: ErrorOut | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    fee_coins: float
    channels_total: int
    channels_done: int
    channels_failed: int
    counts: RunCounts


class RunItemOut(msgspec.Struct, kw_only=True):
    """One per-item event of a run: a decision about a video (``execution_id``: the execution
    started for it, or for ``skipped_seen`` the one an earlier run started), or a channel that
    failed (no ``video_id``; ``reason`` says why)."""

    outcome: RunOutcome
    item_id: str | None
    collection_id: str | None
    channel_id: str | None
    video_id: str | None
    title: str
    published_at: str | None
    execution_id: str | None
    reason: str
    at: str | None


class RunDetailOut(RunSummaryOut, kw_only=True):
    items: list[RunItemOut]


class RunList(msgspec.Struct, kw_only=True):
    runs: list[RunSummaryOut]
    next_cursor: str | None


class RunResponse(msgspec.Struct, kw_only=True):
    run: RunDetailOut


# -- the realtime feed (api.realtime.endpoints; not in the OpenAPI document: bodies are streamed) --


class FeedError(msgspec.Struct, kw_only=True):
    """Why an execution in a feed event failed."""

    code: str
    message: str


class FeedExecution(msgspec.Struct, kw_only=True):
    """The compact execution a feed ``event`` carries: enough for a live list and a progress
    bar."""

    execution_id: str
    kind: str
    status: Status
    current_step: int | None
    steps_done: int
    steps_total: int
    cost_coins: float
    error: FeedError | None
    cancel_requested: bool
    created_at: str
    updated_at: str
    finished_at: str | None
