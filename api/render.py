"""The one place a response body's shape is written: the read side's views and the engine's records
in, the response Structs of ``api.schemas`` out.

The OpenAPI document is built from the same Structs, so a body, its schema, its dates and its coin
amounts have one source. Every date a client sees is :func:`iso` (ISO-8601 UTC with milliseconds
and ``Z``); every amount is coins as a JSON number, from micro-coins through
``engine.settings.micro_to_coins`` (called nowhere else in the API). Handlers send what these
functions build with :func:`respond`; the realtime hub sends :func:`feed_event` and
:func:`feed_reset`, each rendered once per event, not once per subscriber. The operators'
bodies (the console's overview, dead letters) are api.render_operators, on the same helpers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import msgspec
from starlette.responses import Response

from api.schemas.executions import (
    AttemptError,
    EmbeddingOut,
    ErrorOut,
    EventList,
    ExecutionDetail,
    ExecutionList,
    ExecutionSummary,
    FeedError,
    FeedExecution,
    ItemProgress,
    RunCounts,
    RunDetailOut,
    RunItemOut,
    RunList,
    RunSummaryOut,
    RunTriggeredOut,
    SegmentOut,
    StepCut,
    StepInputOut,
    StepResponse,
    StepSummary,
    StepWhole,
    TranscriptOut,
)
from api.schemas.resources import (
    AccountOut,
    AdminAccountOut,
    CollectionOut,
    DocumentOut,
    ItemOut,
    LedgerEntryOut,
    Pricing,
    PricingUnit,
    ReporterOut,
    ScheduleOut,
    StepOut,
    ToolOut,
    WorkflowOut,
)
from engine.log import codec
from engine.log.events import PER_ITEM_KINDS, AnyEvent
from engine.log.ids import run_id
from engine.money.accounts import Account, LedgerEntry
from engine.providers.base import span_seconds
from engine.resources.items import Item
from engine.resources.records import Collection, Document, Reporter, Schedule, Step, Workflow
from engine.schedules.runs import RunTriggered
from engine.settings import micro_to_coins
from engine.tools import Tool
from engine.tools.catalog import unit_prices
from projections import progress
from projections.feed import FeedEntry
from projections.views import (
    ErrorView,
    ExecutionView,
    FeedSummary,
    ItemView,
    Page,
    RunDetailView,
    RunEntryView,
    RunView,
    StepView,
    TranscriptView,
    step_ran,
    steps_done,
)

S = TypeVar("S", bound=msgspec.Struct)
# A realtime message (``api.realtime.endpoints``): JSON-ready builtins, encoded once per send.
Message = dict[str, Any]

_encoder = msgspec.json.Encoder()
_EPOCH = datetime(1970, 1, 1)  # naive, read as UTC: isoformat then has no offset to strip


# -- the one date format, the one encoder --------------------------------------------------------


@overload
def iso(ms: int) -> str: ...
@overload
def iso(ms: None) -> None: ...
def iso(ms: int | None) -> str | None:
    """ms since the epoch as ISO-8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``); None
    stays None. Exact: integer arithmetic, no float seconds."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    # isoformat of a whole second is "YYYY-MM-DDTHH:MM:SS": three times faster than strftime.
    return f"{(_EPOCH + timedelta(seconds=seconds)).isoformat()}.{millis:03d}Z"


def encode(body: msgspec.Struct | Message) -> bytes:
    """A response Struct (UNSET fields left out) or a realtime message as JSON: msgspec, the one
    encoder of the API's bodies. It encodes whatever msgspec decoded from a request (an integer
    beyond 64 bits in free-form params included, which orjson refuses)."""
    return _encoder.encode(body)


def respond(body: msgspec.Struct, status: int = 200) -> Response:
    """A response Struct as a JSON response."""
    return Response(encode(body), status_code=status, media_type="application/json")


def by_name(kind: type[S], source: object, **given: Any) -> S:
    """A ``kind`` whose fields are ``given``, or else ``source``'s field of the same name: what a
    record or view holds as it is (ids, names, counts) is copied by name, and only what a client
    sees differently (dates, coins, nested bodies) is written out."""
    copied = {name: getattr(source, name) for name in kind.__struct_fields__ if name not in given}
    return kind(**copied, **given)


# -- accounts, items and the synchronous resources -----------------------------------------------


def account(a: Account) -> AccountOut:
    """An account as its owner sees it."""
    return by_name(AccountOut, a, balance_coins=micro_to_coins(a.balance))


def admin_account(a: Account) -> AdminAccountOut:
    """An account as an operator sees it: the exact balance too."""
    return by_name(
        AdminAccountOut, a, balance_coins=micro_to_coins(a.balance), balance_micro=a.balance
    )


def ledger_entry(e: LedgerEntry) -> LedgerEntryOut:
    """A ledger entry as its owner sees it."""
    return by_name(
        LedgerEntryOut,
        e,
        amount_coins=micro_to_coins(e.amount),
        balance_coins=micro_to_coins(e.balance),
        at=iso(e.at),
    )


def item(i: Item) -> ItemOut:
    """An item with its detected type."""
    return by_name(ItemOut, i, created_at=iso(i.created_at))


def collection(c: Collection) -> CollectionOut:
    """A collection (its items are listed apart)."""
    return by_name(CollectionOut, c, created_at=iso(c.created_at), updated_at=iso(c.updated_at))


def reporter(r: Reporter) -> ReporterOut:
    """A reporter (its workflows and schedules are listed apart)."""
    return by_name(ReporterOut, r, created_at=iso(r.created_at), updated_at=iso(r.updated_at))


def workflow_step(s: Step) -> StepOut:
    """One step of a workflow."""
    return by_name(StepOut, s)


def workflow(w: Workflow) -> WorkflowOut:
    """A workflow with its steps, in order."""
    return by_name(
        WorkflowOut,
        w,
        steps=[workflow_step(s) for s in w.steps],
        created_at=iso(w.created_at),
        updated_at=iso(w.updated_at),
    )


def schedule(s: Schedule) -> ScheduleOut:
    """A schedule with its attached collections."""
    return by_name(
        ScheduleOut,
        s,
        collection_ids=list(s.collection_ids),
        created_at=iso(s.created_at),
        updated_at=iso(s.updated_at),
    )


def document(d: Document, stored: Any = msgspec.UNSET) -> DocumentOut:
    """A document; its content (``stored`` decoded, as :func:`content` shows it) only when one is
    fetched by id."""
    shown = stored if stored is msgspec.UNSET else content(stored)
    return by_name(DocumentOut, d, created_at=iso(d.created_at), content=shown)


def tool(t: Tool) -> ToolOut:
    """A catalogue entry: the tool, its provider kind, its params' JSON schema and its prices."""
    units = [PricingUnit(unit=u, coins_per_unit=micro_to_coins(m)) for u, m in unit_prices(t)]
    return ToolOut(
        tool_id=t.tool_id,
        description=t.description,
        provider=t.provider_kind,
        params_schema=msgspec.json.schema(t.params_schema),
        pricing=Pricing(currency="coins", units=units, estimate=t.estimate_note),
    )


# -- executions ----------------------------------------------------------------------------------


def error(e: ErrorView | None) -> ErrorOut | None:
    """Why an execution or a step failed."""
    if e is None:
        return None
    return ErrorOut(code=e.code, message=e.message, http_status=e.http_status)


def execution(view: ExecutionView) -> ExecutionSummary:
    """The ``execution`` of the 202 body, of lists and of the detail; a schedule run and the
    executions it started also name the schedule and the run."""
    scheduled = view.schedule_id is not None
    return ExecutionSummary(
        execution_id=view.execution_id,
        status=view.status,
        kind=view.kind,
        target=view.target,
        reporter_id=view.reporter_id,
        created_at=iso(view.created_at),
        started_at=iso(view.started_at),
        finished_at=iso(view.finished_at),
        updated_at=iso(view.updated_at),
        fee_coins=micro_to_coins(view.fee),
        cost_coins=micro_to_coins(view.cost),
        error=error(view.error),
        cancel_requested=view.cancel_requested,
        current_step=view.current_step,
        steps_total=len(view.steps),
        steps_done=steps_done(view.steps),
        schedule_id=view.schedule_id if view.schedule_id is not None else msgspec.UNSET,
        run_id=run_id(view.run_execution_id or view.execution_id) if scheduled else msgspec.UNSET,
    )


SUMMARY_CHARS = 1000  # a step summary's strings are cut to this many characters


def step(s: StepView, execution_id: str) -> StepSummary:
    """A step that has started: what it was given (an LLM step: what it sent) and what it
    returned, strings cut to :data:`SUMMARY_CHARS` with the cut said."""
    given, returned = step_io(s.input, s.output)
    cut: list[str] = []
    if isinstance(given.get("prompt_chars"), int) and given["prompt_chars"] > len(
        str(given.get("prompt", ""))
    ):
        cut.append("input.prompt")  # the tool kept only the prompt's head inline
    given = _cut(given, "input", cut)
    shown = None if returned is None else _cut(returned, "output", cut)
    return by_name(
        StepSummary,
        s,
        input=given,
        output=shown,
        cost_coins=micro_to_coins(s.cost),
        started_at=iso(s.started_at),
        finished_at=iso(s.finished_at),
        retry_at=iso(s.retry_at),
        error=error(s.error),
        cut=StepCut(
            limit=SUMMARY_CHARS,
            fields=sorted(set(cut)),
            detail=f"/v1/executions/{execution_id}/steps/{s.step_index}",
        )
        if cut
        else None,
    )


def step_io(
    given: dict[str, Any], returned: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A step's input and output as a client reads them: a step whose output says what it
    ``sent`` to its provider (an LLM step) shows that as its input, and the rest as its output."""
    if isinstance(returned, dict) and isinstance(returned.get("sent"), dict):
        return dict(returned["sent"]), {k: v for k, v in returned.items() if k != "sent"}
    return given, returned


def _cut(values: dict[str, Any], where: str, cut: list[str]) -> dict[str, Any]:
    """``values`` with every string longer than :data:`SUMMARY_CHARS` cut to it (named in
    ``cut`` as ``where.name``)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str) and len(value) > SUMMARY_CHARS:
            out[name] = value[:SUMMARY_CHARS]
            cut.append(f"{where}.{name}")
        else:
            out[name] = value
    return out


def step_whole(s: StepView, blob: Any, failures: list[tuple[int, str, str, bool]]) -> StepResponse:
    """One step whole: ``blob`` is its output's blob decoded (None when it has none), whose
    ``sent`` is the whole input of an LLM step; ``failures`` its failed attempts."""
    output: Any = s.output
    if blob is not None:
        output = content(blob, s.output.get("kind") if isinstance(s.output, dict) else None)
    given, returned = step_io(s.input, output if isinstance(output, dict) else None)
    if not isinstance(output, dict):
        returned = output
    return StepResponse(
        step=by_name(
            StepWhole,
            s,
            input=given,
            output=returned,
            cost_coins=micro_to_coins(s.cost),
            started_at=iso(s.started_at),
            finished_at=iso(s.finished_at),
            retry_at=iso(s.retry_at),
            error=error(s.error),
            errors=[
                AttemptError(attempt=a, code=c, message=m, retryable=r) for a, c, m, r in failures
            ],
        )
    )


def item_progress(i: ItemView) -> ItemProgress:
    """One item of a per-item execution."""
    return by_name(ItemProgress, i, cost_coins=micro_to_coins(i.cost), error=error(i.error))


def execution_detail(view: ExecutionView) -> ExecutionDetail:
    """``GET /v1/executions/{id}``: the execution, its workflow, the steps that ran and the inputs
    of those not run yet; a per-item execution adds its ``items``."""
    per_item = view.kind in PER_ITEM_KINDS
    return ExecutionDetail(
        execution=execution(view),
        workflow=view.workflow,
        steps=[step(s, view.execution_id) for s in view.steps if step_ran(s)],
        step_inputs=[
            StepInputOut(
                step_index=s.step_index, step_id=s.step_id, tool_id=s.tool_id, input=s.input
            )
            for s in view.steps
            if not step_ran(s)
        ],
        items=[item_progress(i) for i in progress.items(view)] if per_item else msgspec.UNSET,
    )


def execution_list(page: Page[ExecutionView]) -> ExecutionList:
    """A page of executions, newest first."""
    return ExecutionList(
        executions=[execution(v) for v in page.views], next_cursor=page.next_cursor
    )


def events(page: list[AnyEvent], next_cursor: str | None) -> EventList:
    """A page of an execution's raw events, oldest first, each tagged by ``type``."""
    return EventList(events=[codec.to_builtins(e) for e in page], next_cursor=next_cursor)


def transcript(t: TranscriptView, made_by: ExecutionView | None = None) -> TranscriptOut:
    """An item's transcript in one language; its segments in seconds (:func:`segment`), and the
    status of the embedding the execution that made it (``made_by``) asked for (null: none)."""
    segments = [s for s in map(segment, t.segments) if s is not None]
    return by_name(
        TranscriptOut,
        t,
        segments=segments,
        embedding=embedding(made_by),
        created_at=iso(t.created_at),
    )


def embedding(view: ExecutionView | None) -> EmbeddingOut | None:
    """The status of the ``embed`` step of ``view``; None when it has none."""
    found = (
        None
        if view is None
        else next((s for s in view.steps if s.tool_id == "embed" and s.step_index > 0), None)
    )
    if found is None:
        return None
    if found.status == "done" and isinstance(found.output, dict):
        out = found.output
        return EmbeddingOut(
            status="done",
            model=out.get("model"),
            dims=out.get("dims"),
            count=out.get("count"),
            sha256=out.get("sha256"),
        )
    if found.status == "error":
        return EmbeddingOut(status="error", error=error(found.error))
    if found.status == "pending" and view is not None and view.status == "error":
        return EmbeddingOut(status="error", error=error(view.error))  # it never ran
    return EmbeddingOut(status="pending" if found.status == "pending" else "running")


def segment(stored: Any) -> SegmentOut | None:
    """A stored segment in the API's shape, in seconds (engine.providers.base.span_seconds: stored
    in milliseconds, or already in seconds). Anything else is skipped."""
    span = span_seconds(stored)
    if span is None or not isinstance(stored.get("text"), str):
        return None
    return SegmentOut(start=span[0], end=span[1], text=stored["text"])


# What holds time spans in a stored output, by its kind: the list of timed entries.
_TIMED = {"claims": "claims", "transcript": "segments", "embedding": "vectors"}


def content(stored: Any, kind: Any = None) -> Any:
    """A document's or a step's stored content as a client reads it: the time spans of a claims
    document's claims, a transcript's segments and an embedding's vectors in seconds
    (``start``/``end``), as transcript segments are shown (what is stored holds
    ``start_ms``/``end_ms``: transcripts, embeddings, claims stored before 2026-12-05); anything
    else as it is. ``kind``: the step output's kind, for a blob that does not name its own."""
    if not isinstance(stored, dict):
        return stored
    field = _TIMED.get(stored.get("kind", kind))
    entries = stored.get(field) if field else None
    if field is None or not isinstance(entries, list):
        return stored
    return {**stored, field: [in_seconds(e) for e in entries]}


def in_seconds(entry: Any) -> Any:
    """A timed entry with ``start``/``end`` in seconds for ``start_ms``/``end_ms`` (null when it
    has no times)."""
    if not isinstance(entry, dict) or ("start_ms" not in entry and "end_ms" not in entry):
        return entry
    span = span_seconds(entry)
    rest = {k: v for k, v in entry.items() if k not in ("start_ms", "end_ms")}
    return {**rest, "start": span[0] if span else None, "end": span[1] if span else None}


# -- schedule runs -------------------------------------------------------------------------------


def run_triggered(t: RunTriggered) -> RunTriggeredOut:
    """The answer to ``POST …/schedules/{schedule_id}/run``."""
    return RunTriggeredOut(status=t.status, schedule_id=t.schedule_id, run_id=t.run_id)


def _run_fields(run: RunView) -> dict[str, Any]:
    view = run.execution
    return {
        "run_id": run_id(view.execution_id),
        "execution_id": view.execution_id,
        "schedule_id": view.schedule_id,
        "reporter_id": view.reporter_id,
        "status": view.status,
        "error": error(view.error),
        "created_at": iso(view.created_at),
        "started_at": iso(view.started_at),
        "finished_at": iso(view.finished_at),
        "fee_coins": micro_to_coins(view.fee),
        "channels_total": len(run.channels),
        "channels_done": sum(1 for c in run.channels if c.status == "done"),
        "channels_failed": sum(1 for c in run.channels if c.status == "error"),
        "counts": RunCounts(**run.counts),
    }


def run_summary(run: RunView) -> RunSummaryOut:
    """A schedule run as the runs list shows it: timing, status, channels and outcome counts."""
    return RunSummaryOut(**_run_fields(run))


def run_entry(e: RunEntryView) -> RunItemOut:
    """One per-item event of a run."""
    return by_name(RunItemOut, e, at=iso(e.at))


def run_detail(run: RunDetailView) -> RunDetailOut:
    """One schedule run with its per-item events, in the order they happened."""
    return RunDetailOut(**_run_fields(run), items=[run_entry(e) for e in run.entries])


def run_list(page: Page[RunView]) -> RunList:
    """A page of schedule runs, newest first."""
    return RunList(runs=[run_summary(r) for r in page.views], next_cursor=page.next_cursor)


# -- the realtime feed ---------------------------------------------------------------------------


def feed_execution(s: FeedSummary) -> FeedExecution:
    """The compact execution a feed event carries."""
    e = s.error
    return by_name(
        FeedExecution,
        s,
        cost_coins=micro_to_coins(s.cost),
        error=None if e is None else FeedError(code=e.code, message=e.message),
        created_at=iso(s.created_at),
        updated_at=iso(s.updated_at),
        finished_at=iso(s.finished_at),
    )


def feed_event(entry: FeedEntry) -> Message:
    """The ``event`` message of one feed entry. An entry written before summaries were view data
    carries the client JSON itself, sent on as it was stored."""
    summary = entry.summary
    shown = summary if isinstance(summary, dict) else msgspec.to_builtins(feed_execution(summary))
    return {
        "type": "event",
        "cursor": entry.cursor,
        "execution_id": entry.execution_id,
        "seq": entry.seq,
        "event": entry.type,
        "execution": shown,
    }


def feed_reset(cursor: str, page: Page[ExecutionView]) -> Message:
    """The ``reset`` message: a snapshot of executions (as lists show them) and the cursor the
    live events continue from."""
    executions = msgspec.to_builtins([execution(v) for v in page.views])
    return {"type": "reset", "cursor": cursor, "executions": executions}
