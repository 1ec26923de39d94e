"""What the read side knows, as data: the execution view the fold builds and the views derived
from it on read (an item's progress, a schedule run, a transcript, a page of views, the feed's
summary).

Views are frozen ``msgspec.Struct``s of plain data. Money inside is integer micro-coins and times
are ms since the epoch (the writers' clocks, for display only). How a client sees a view (coins,
ISO-8601 strings, which fields, null or absent) is written once, in ``api.render``: the read side
never shapes a response.

:class:`ExecutionView` is built only by :mod:`projections.fold` and stored as JSON
(:func:`encode_view` / :func:`decode_view`); :mod:`projections.progress` derives the per-item and
schedule-run views from it, :mod:`projections.feed` the feed's summary, and
:mod:`projections.queries` hands all of them to the API.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

import msgspec
import zstandard

from engine.log.events import (
    BlobRef,
    RunOutcome,
    Status,
    Target,
    WorkflowSnapshot,
    previous_input,
)

StepStatus = Literal["pending", "running", "retrying", "done", "error"]
ItemStatus = Literal["pending", "running", "done", "error"]
EXECUTION_STATUSES: tuple[Status, ...] = ("pending", "running", "done", "error")
ACTIVE_STATUSES: tuple[Status, ...] = ("pending", "running")
V = TypeVar("V")


class ErrorView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why an execution or a step ended in ``error``."""

    code: str
    message: str
    http_status: int | None = None


class StepView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
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
    cost: int = 0  # micro-coins: ``charged`` when a charge named this step, else ``reported``
    reported: int = 0  # the cost StepCompleted reported
    started_at: int | None = None
    finished_at: int | None = None
    duration_ms: int | None = None
    error: ErrorView | None = None
    retry_at: int | None = None  # when a scheduled retry may start (ms)
    # Provider cost charged for this step (a StepCompleted's settlement, or an older log's
    # CostCharged), and the charge ids already counted (a charge is counted once even if the log
    # carried it twice under different seqs).
    charged: int = 0
    charge_ids: list[str] = msgspec.field(default_factory=list)
    # Stored form only (encode_view): the input's ``previous`` was left out because it is exactly
    # what the step before it output (engine.run.plan.step_input); decode_view puts it back, so
    # a view read is never without it and this is never True in one.
    input_previous_shared: bool = False


class RunItemView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
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


class ExecutionView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
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
    # How many times an operator retried it after a dead letter (ExecutionRetried).
    retries: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExecutionView)


# A finished view at rest (projections.retention packs it once its hot window has passed) is one
# zstd frame of its JSON: what a finished execution keeps in Redis is then about 0.6 KB, not 1.5.
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def encode_view(view: ExecutionView) -> bytes:
    """The stored form of a view (JSON). Fields at their default are left out (``omit_defaults``)
    and read back as it: a finished execution keeps only its view in Redis once its hot window
    has passed (engine.archive), so every byte of it counts.

    A step's input that ends with the ``previous`` the worker added (engine.run.plan.step_input:
    the step before's output, preview and blob reference) is stored without it when it is,
    byte for byte, what :func:`decode_view` makes again from the step before
    (``input_previous_shared``): a document step's previous output holds what its LLM was sent,
    and the projector writes an execution's view again at every batch that touches it."""
    steps: list[StepView] | None = None
    for i in range(1, len(view.steps)):
        step = view.steps[i]
        if "previous" in step.input and _shareable(step, view.steps[i - 1]):
            if steps is None:
                steps = list(view.steps)
            kept = {k: v for k, v in step.input.items() if k != "previous"}
            steps[i] = msgspec.structs.replace(step, input=kept, input_previous_shared=True)
    return _encoder.encode(view if steps is None else msgspec.structs.replace(view, steps=steps))


def decode_view(data: bytes | str) -> ExecutionView:
    """A stored view back, packed (:func:`pack_view`) or not; msgspec.DecodeError or
    ValidationError when it is not one."""
    if isinstance(data, bytes) and data[:4] == _ZSTD_MAGIC:
        try:
            data = zstandard.ZstdDecompressor().decompress(data)
        except zstandard.ZstdError as exc:
            raise msgspec.DecodeError(f"a packed view that does not decompress: {exc}") from exc
    view = _decoder.decode(data)
    if not any(s.input_previous_shared for s in view.steps):
        return view
    steps = list(view.steps)
    for i, step in enumerate(steps):
        if step.input_previous_shared:
            if i == 0:
                raise msgspec.ValidationError("the first step cannot share its previous output")
            given = {**step.input, "previous": _previous_of(steps[i - 1])}
            steps[i] = msgspec.structs.replace(step, input=given, input_previous_shared=False)
    return msgspec.structs.replace(view, steps=steps)


def _previous_of(step: StepView) -> dict[str, Any]:
    """What engine.run.plan.step_input gives the step after ``step`` as its ``previous``."""
    return previous_input(step.step_index, step.tool_id, step.output, step.output_ref)


def _shareable(step: StepView, before: StepView) -> bool:
    """True when ``step``'s input ends with a ``previous`` that :func:`_previous_of` makes again
    from ``before`` with the same JSON (keys in the same order), so leaving it out loses nothing."""
    if next(reversed(step.input)) != "previous" or before.output is None:
        return False
    return _encoder.encode(step.input["previous"]) == _encoder.encode(_previous_of(before))


def is_packed(data: bytes) -> bool:
    """True for a view stored packed."""
    return data[:4] == _ZSTD_MAGIC


def pack_view(data: bytes) -> bytes:
    """A stored view's JSON packed for rest (one zstd frame; :func:`decode_view` reads it)."""
    return zstandard.ZstdCompressor(level=3).compress(data)


def is_active(view: ExecutionView) -> bool:
    """Pending or running: what ``GET /v1/executions/me?active=1`` lists."""
    return view.status in ACTIVE_STATUSES


def step_ran(step: StepView) -> bool:
    """A step that has started at least once (a client sees it under ``steps``, the others under
    ``step_inputs``)."""
    return step.status != "pending" or step.attempts > 0


def steps_done(steps: list[StepView]) -> int:
    """How many of ``steps`` are done."""
    return sum(1 for s in steps if s.status == "done")


# -- derived on read (projections.progress, projections.feed, projections.queries) ---------------


class ItemView(msgspec.Struct, frozen=True, kw_only=True):
    """One item of a per-item execution (``process_collection``; a channel of a ``schedule_run``):
    its steps' progress, cost, error and, once done, the output of its last step. A failed item's
    steps that never ran are ``steps_skipped``."""

    item_index: int
    item_id: Any  # the steps' ``item_id`` input (a str when the request built it)
    source: Any  # the steps' ``source`` input
    status: ItemStatus
    steps_total: int
    steps_done: int
    steps_skipped: int
    step_indexes: list[int]
    cost: int  # micro-coins
    error: ErrorView | None
    output: dict[str, Any] | None


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule run (an execution of kind ``schedule_run``): the execution, its channels (its
    items) and how many videos (and, under ``failed``, channels) ended each way."""

    execution: ExecutionView
    channels: list[ItemView]
    counts: dict[RunOutcome, int]


class RunEntryView(msgspec.Struct, frozen=True, kw_only=True):
    """One per-item event of a run: a decision about a video, or a channel whose sync or pick
    failed for good (no channel or video then; ``reason`` says why)."""

    outcome: RunOutcome
    item_id: Any
    collection_id: Any
    channel_id: str | None
    video_id: str | None
    title: str
    published_at: str | None
    execution_id: str | None
    reason: str
    at: int | None


class RunDetailView(RunView, frozen=True, kw_only=True):
    """A schedule run with its per-item events, in the order they happened."""

    entries: list[RunEntryView]


class TranscriptView(msgspec.Struct, frozen=True, kw_only=True):
    """The newest transcript of an item in one language: its text and segments (from its blob),
    and the execution that made it."""

    item_id: str
    lang: str
    text: str
    segments: list[Any]
    execution_id: str
    created_at: int


class Page(msgspec.Struct, Generic[V], frozen=True, kw_only=True):
    """One page of a list, newest first; ``next_cursor`` fetches the next one (None: the last)."""

    views: list[V]
    next_cursor: str | None


class FeedSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The compact execution a feed entry carries after each of its events: enough for a live list
    and a progress bar. Stored in the feed stream as JSON (see :mod:`projections.feed`): fields
    may be added with defaults, never renamed or removed."""

    execution_id: str
    kind: str
    status: Status
    current_step: int | None
    steps_done: int
    steps_total: int
    cost: int  # micro-coins
    error: ErrorView | None
    cancel_requested: bool
    created_at: int
    updated_at: int
    finished_at: int | None
