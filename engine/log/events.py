"""The event catalogue: every fact the log records about an execution.

Each event is a frozen, keyword-only, tagged ``msgspec.Struct``; the tag (``"type"``) is the class
name. :data:`AnyEvent` is the union the codec decodes, so ``match`` over it is exhaustive.

Envelope, on every event:
    execution_id  the execution it belongs to
    seq           1, 2, 3 … within the execution, no gaps (assigned by the expected-version append)
    at            ms since the epoch by the writer's clock: for display only; order is seq
    schema        version of the event's own shape, starting at 1

Schema evolution (golden logs under ``tests/golden/`` keep these honest):
    1. A new field gets a default and goes last.
    2. A field is never renamed or retyped; a field no longer written keeps its default.
    3. A new meaning gets a new event type (a new tag); a tag is never repurposed.
    4. Every entry ever written must still decode; when a shape must change, bump ``schema`` and
       teach the fold both shapes.

Who emits what:
    api (engine.commands)  ExecutionRequested, ExecutionCancelRequested
    scheduler              ExecutionRequested (a schedule run, engine.schedules.runs)
    worker                 ExecutionStarted, StepStarted, StepCompleted, StepFailed,
                           StepRetryScheduled, CostReleased, ExecutionCompleted, ExecutionFailed,
                           ExecutionCancelled; in a schedule run, ExecutionRequested of each
                           video's execution and RunItemRecorded
    older workers          CostReserved, CostCharged (no longer written, still folded)
    operator               ExecutionRetried (engine.run.revive: a dead letter retried from the
                           CLI or the admin API)

Money (engine.money.billing) travels on the events of the step it pays for: a StepStarted with a
``reserve_id`` holds its ``estimated_cost``; the StepCompleted or StepFailed that ends the attempt
carries its :class:`Settlement` (the reservation given back and, once completed, the actual cost
charged). A one-step execution is five events: ExecutionRequested, ExecutionStarted, StepStarted,
StepCompleted, ExecutionCompleted. CostReleased gives back a reservation no outcome settles (an
attempt abandoned by a dead worker, an execution ended around it). Logs written before this shape
(schema 1 of StepStarted, StepCompleted and StepFailed) moved the same money with a CostReserved
before the StepStarted and a CostReleased and a CostCharged after the outcome; they still fold.

Every event that moves money (:func:`charge_ids` names its charge ids) is appended by the same
script that moves the owner's balance and writes the ledger entries: the log and the ledger cannot
disagree, and an append refused by its expected seq moves no money.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

ExecutionKind = Literal["transcript", "process", "process_collection", "schedule_run"]
# Kinds whose steps are grouped by item (``step_inputs[i]["item_index"]``): a step failing for good
# fails its item only (engine.run.plan). A schedule run's items are its channels.
PER_ITEM_KINDS = ("process_collection", "schedule_run")
RunOutcome = Literal["processed", "skipped_seen", "skipped_too_old", "capped", "failed"]

# The four statuses clients see, and the error codes behind ``error``.
Status = Literal["pending", "running", "done", "error"]
ERROR_CODES = (
    "cancelled",
    "timeout",
    "insufficient_balance",
    "provider_failed",
    "invalid_target",
    "internal",
)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What an execution works on: an item, a source URL, or a collection."""

    kind: str  # the target's type: youtube_video, youtube_channel, twitter, rss, collection
    item_id: str | None = None
    collection_id: str | None = None
    source: str | None = None
    external_id: str | None = None


class StepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a workflow as it was when the execution was requested."""

    step_id: str
    tool_id: str
    prompt_text: str = ""
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class WorkflowSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The workflow an execution runs, copied at request time so later edits cannot change it."""

    workflow_id: str | None
    name: str
    target_kind: str
    steps: list[StepSpec]
    reporter_id: str | None = None


class BlobRef(msgspec.Struct, frozen=True, kw_only=True):
    """A large output stored once under its own key, named by its content hash."""

    sha256: str
    size: int
    content_type: str = "application/json"


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """The money of an attempt's end, carried by its StepCompleted or StepFailed: the reservation
    ``reservation`` given back (``released`` micro-coins, under charge id ``release_id``) and, for
    a completed attempt with a cost, the actual cost charged (``charged`` under ``charge_id``;
    ``uncovered`` is the part the balance could not pay, written off). The release moves first,
    so the freed estimate pays for the charge. Empty ids: that half did not happen."""

    reservation: str = ""
    release_id: str = ""
    released: int = 0
    charge_id: str = ""
    charged: int = 0
    uncovered: int = 0


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """The envelope every event carries."""

    execution_id: str
    seq: int = 0
    at: int = 0
    schema: int = 1


class ExecutionRequested(Event, tag=True, frozen=True, kw_only=True):
    """A client asked for work and its flat fee was charged. Emitted by the API, atomically with
    the fee and the idempotency record; always seq 1."""

    owner: str
    kind: ExecutionKind
    target: Target
    workflow: WorkflowSnapshot
    step_inputs: list[dict[str, Any]]
    fee: int
    request_id: str
    idempotency_key: str | None = None
    reporter_id: str | None = None
    # A schedule run (kind ``schedule_run``) names its schedule; an execution a run started for
    # one video names that schedule and the run's execution id.
    schedule_id: str | None = None
    run_execution_id: str | None = None


class ExecutionStarted(Event, tag=True, frozen=True, kw_only=True):
    """A worker took the execution on for the first time."""

    worker_id: str
    epoch: int


class StepStarted(Event, tag=True, frozen=True, kw_only=True):
    """A worker holding the lease at ``epoch`` starts ``attempt`` of step ``step_index``.

    Schema 2: with a ``reserve_id``, the event itself holds ``estimated_cost`` from the owner's
    balance (``reserve:{execution}:{step}:{attempt}``) until the attempt's outcome settles it.
    Schema 1 (``reserve_id`` None) moves no money: a CostReserved before it did."""

    step_index: int
    attempt: int
    epoch: int
    worker_id: str
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    estimated_cost: int = 0
    reserve_id: str | None = None


class StepCompleted(Event, tag=True, frozen=True, kw_only=True):
    """A step finished; its output is recorded, so it is never run again.

    ``output`` holds a small output inline; a large one is stored as a blob and ``output_ref``
    names it (``output`` then carries a short preview). ``cost`` is in micro-coins."""

    step_index: int
    attempt: int
    output: dict[str, Any] = msgspec.field(default_factory=dict)
    output_ref: BlobRef | None = None
    usage: dict[str, int] = msgspec.field(default_factory=dict)
    cost: int = 0
    duration_ms: int = 0
    # Schema 2: the attempt's reservation released and its cost charged (None: no money moved
    # here; a schema 1 log settled with a CostReleased and a CostCharged after it).
    settlement: Settlement | None = None


class StepFailed(Event, tag=True, frozen=True, kw_only=True):
    """An attempt of a step failed; ``retryable`` says whether the policy may try again."""

    step_index: int
    attempt: int
    code: str
    message: str
    retryable: bool
    # Schema 2: the attempt's reservation released (a failed attempt is charged nothing).
    settlement: Settlement | None = None


class StepRetryScheduled(Event, tag=True, frozen=True, kw_only=True):
    """The step will be tried again as ``next_attempt``, not before ``not_before`` (ms)."""

    step_index: int
    next_attempt: int
    not_before: int


class CostCharged(Event, tag=True, frozen=True, kw_only=True):
    """Provider cost was charged to the owner. ``charge_id`` is unique: a retried write of the same
    charge never charges twice.

    The worker settles a completed step with one (``settle:{execution}:{step}:{attempt}``).
    ``uncovered`` is the part of the step's actual cost the balance could not pay: the balance
    never goes negative, so ``amount`` is what was taken and the rest is written off."""

    charge_id: str
    amount: int
    step_index: int | None = None
    reason: str = "provider"
    uncovered: int = 0


class ExecutionCompleted(Event, tag=True, frozen=True, kw_only=True):
    """Every step completed; ``cost`` is the execution's total in micro-coins (fee included)."""

    cost: int = 0


class ExecutionFailed(Event, tag=True, frozen=True, kw_only=True):
    """The execution ended in ``error`` with ``code`` (one of ERROR_CODES)."""

    code: str
    message: str
    http_status: int | None = None


class ExecutionCancelRequested(Event, tag=True, frozen=True, kw_only=True):
    """Someone asked to cancel; the worker driving the execution stops it within about a second."""

    requested_by: str
    reason: str = ""


class ExecutionCancelled(Event, tag=True, frozen=True, kw_only=True):
    """The execution stopped on request; its status is ``error`` with code ``cancelled``."""

    step_index: int | None = None


class RunItemRecorded(Event, tag=True, frozen=True, kw_only=True):
    """What a schedule run decided for one video of a channel: ``processed`` (an execution of the
    schedule's workflow was started for it: ``child_execution_id``), ``skipped_seen`` (a run of
    this schedule processed it before), ``skipped_too_old`` (published more than
    ``max_age_hours`` before the run), ``capped`` (past ``max_videos_per_channel`` this run) or
    ``failed`` (``reason``). Emitted by the worker with the StepCompleted of the channel's pick
    step, in the same append, so each decision is recorded exactly once. For ``skipped_seen``,
    ``child_execution_id`` is the execution an earlier run started for the video."""

    item_id: str  # the channel item
    channel_id: str
    video_id: str
    outcome: RunOutcome
    collection_id: str | None = None
    title: str = ""
    published_at: str | None = None
    child_execution_id: str | None = None
    reason: str = ""


class CostReserved(Event, tag=True, frozen=True, kw_only=True):
    """Before ``attempt`` of step ``step_index`` starts, its estimated cost (``amount``,
    micro-coins) was taken from the owner's balance and held. Emitted by the worker in the append
    of the StepStarted it pays for; ``charge_id`` is ``reserve:{execution}:{step}:{attempt}``.
    Every reservation ends in exactly one CostReleased."""

    charge_id: str
    amount: int
    step_index: int
    attempt: int


class CostReleased(Event, tag=True, frozen=True, kw_only=True):
    """A reservation's held ``amount`` went back to the owner's balance, because its attempt
    ``reason``: ``settled`` (completed; a CostCharged takes the actual cost in the same append),
    ``failed``, ``abandoned`` (its worker died or lost the lease: a takeover starts the step
    again), ``cancelled``, or ``ended`` (the execution ended otherwise, e.g. dead-lettered).
    ``charge_id`` is ``release:{execution}:{step}:{attempt}``; ``reservation`` is the
    CostReserved's charge id."""

    charge_id: str
    reservation: str
    amount: int
    step_index: int
    attempt: int
    reason: str


class ExecutionRetried(Event, tag=True, frozen=True, kw_only=True):
    """An operator retried the dead-lettered execution: it is ``pending`` again and the workers
    resume it from its first step without a StepCompleted (completed steps are never run again;
    the next attempt of the step in flight when it was dead-lettered gets a new number).
    ``requested_by`` says who asked (``cli:<user>@<host>``, ``admin:<operator>``); ``dead_id``
    is the dead-letter entry it came from (partition ``partition``) and ``reason`` why that entry
    was dead-lettered. Emitted by engine.run.revive in the script that removes the dead letter
    and queues the execution again, so one dead letter is retried once however many ask at once.
    """

    requested_by: str
    partition: int
    dead_id: str
    reason: str = ""


AnyEvent = (
    ExecutionRequested
    | ExecutionStarted
    | StepStarted
    | StepCompleted
    | StepFailed
    | StepRetryScheduled
    | CostCharged
    | ExecutionCompleted
    | ExecutionFailed
    | ExecutionCancelRequested
    | ExecutionCancelled
    | RunItemRecorded
    | CostReserved
    | CostReleased
    | ExecutionRetried
)

# The message of the StepFailed that closes the attempt in flight when its execution is
# dead-lettered (engine.run.decide): a retry (ExecutionRetried) starts that step again.
DEAD_LETTER_ABANDONED = "abandoned: the execution was dead-lettered"

TERMINAL_EVENTS = (ExecutionCompleted, ExecutionFailed, ExecutionCancelled)
# Events that may move an owner's balance: each charge id :func:`charge_ids` names is appended
# with its Move (engine.log.event_log), computed by engine.money.billing. The first three always
# move money; a step's events only when they carry a reservation or a settlement.
MONEY_EVENTS = (CostReserved, CostCharged, CostReleased, StepStarted, StepCompleted, StepFailed)
# The schema of the step events that carry their money (StepStarted.reserve_id, .settlement).
MONEY_ON_STEPS_SCHEMA = 2


def previous_input(
    step_index: int, tool_id: str, output: dict[str, Any] | None, ref: BlobRef | None
) -> dict[str, Any]:
    """The ``previous`` a step's input carries: what the step before it (``step_index``) output,
    a small preview and the reference of its blob (engine.run.plan.step_input makes it; the
    stored view leaves it out and makes it again, projections.views)."""
    return {
        "step_index": step_index,
        "tool_id": tool_id,
        "output": output,
        "output_ref": None if ref is None else {"sha256": ref.sha256, "size": ref.size},
    }


def charge_ids(event: AnyEvent) -> tuple[str, ...]:
    """The charge ids of the balance movements ``event`` stands for, in the order they move (a
    settlement's release before its charge); empty for an event that moves no money."""
    match event:
        case CostReserved() | CostCharged() | CostReleased():
            return (event.charge_id,)
        case StepStarted(reserve_id=str(reserve_id)):
            return (reserve_id,)
        case StepCompleted(settlement=Settlement() as s) | StepFailed(settlement=Settlement() as s):
            return tuple(cid for cid in (s.release_id, s.charge_id) if cid)
    return ()


def is_terminal(event: AnyEvent) -> bool:
    """True for the events that end an execution."""
    return isinstance(event, TERMINAL_EVENTS)


def has_ended(history: Iterable[AnyEvent]) -> bool:
    """True when the execution (its events in order) has ended: a terminal event that no
    ExecutionRetried followed (an operator's retry of a dead letter sends it back to work)."""
    ended = False
    for event in history:
        if is_terminal(event):
            ended = True
        elif isinstance(event, ExecutionRetried):
            ended = False
    return ended


def event_type(event: AnyEvent) -> str:
    """The event's tag, e.g. ``"StepCompleted"``."""
    return type(event).__name__
