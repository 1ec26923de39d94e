"""What clients send: request bodies and query strings, as msgspec Structs.

Bodies forbid unknown fields (``forbid_unknown_fields=True``), so a server-owned field (``owner``,
ids, timestamps) is a 422 naming it; ``api.parse.decode_body`` decodes them in one pass. PATCH
bodies leave every field UNSET by default: only the fields given change (:func:`changes`). Query
Structs document the parameters (the handlers parse them with ``api.parse``). The OpenAPI document
is built from these same Structs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from api.openapi import example, id_pattern
from api.schemas import examples as ex
from engine import commands
from engine.language import LANG_PATTERN
from engine.resources.reporters import StepInput
from engine.tools import TOOLS

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
SEQ_CURSOR = r"^[1-9][0-9]{0,9}$"  # an event list's cursor: the seq of the last event given
MAX_COINS = 1e9  # engine.money.accounts.MAX_MICRO in coins: every amount up to it is exact

# JSON numbers of coins (integers decode too); exact micro-coins are derived from their repr.
Coins = Annotated[float, msgspec.Meta(ge=0, le=MAX_COINS)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=2000)]
Language = Annotated[str, msgspec.Meta(pattern=LANG_PATTERN)]
Visibility = Literal["private", "public"]
TargetKind = Literal["youtube_video", "youtube_channel", "collection"]
Hours = Annotated[int, msgspec.Meta(ge=1, le=720)]
AgeHours = Annotated[int, msgspec.Meta(ge=1, le=8760)]
PerChannel = Annotated[int, msgspec.Meta(ge=1, le=100)]
AnyId = Annotated[str, msgspec.Meta(max_length=64)]
DocumentKind = Annotated[str, msgspec.Meta(pattern=r"^$|^[a-z][a-z0-9_]{0,39}$")]


def _id_pattern(param: str) -> str:
    """The pattern of ids of the kind ``param`` names (the one path parameters carry)."""
    pattern = id_pattern(param)
    assert pattern is not None, param
    return pattern


ItemIdFilter = Annotated[str, msgspec.Meta(pattern=f"^$|{_id_pattern('item_id')}")]
ReporterIdFilter = Annotated[str, msgspec.Meta(pattern=f"^$|{_id_pattern('reporter_id')}")]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


def changes(body: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body sets."""
    return {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not UNSET}


# -- accounts and items --------------------------------------------------------------------------


@example(ex.CREATE_ACCOUNT)
class CreateAccount(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    coins: Coins = 0


@example(ex.CREDIT)
class Credit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts/{id}/credit``: ``credit_id`` makes a retried credit a no-op."""

    coins: Coins
    credit_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


@example(ex.MINT_TOKEN)
class MintToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts/{id}/tokens`` (the body is optional; no ``ttl_s``: a day, or
    ``CLIPSTREAM_SESSION_MAX_TTL`` when that is shorter; more than that is 422)."""

    ttl_s: Annotated[int, msgspec.Meta(ge=60, le=30 * 86_400)] | None = None


@example(ex.CREATE_ITEM)
class CreateItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/items``: a URL or a handle."""

    source: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


@example(ex.TRANSCRIPT_REQUEST)
class TranscriptRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/items/{id}/transcript``; ``text`` given: it is the transcript."""

    lang: Annotated[str, msgspec.Meta(pattern=LANG_PATTERN)] | None = None
    embed: bool = False
    text: str | None = None


# -- collections, reporters, workflows, steps, schedules -----------------------------------------


@example(ex.CREATE_COLLECTION)
class CreateCollection(_Body, frozen=True):
    """``POST /v1/collections``."""

    name: Name
    description: Text | None = None
    visibility: Visibility = "private"
    language: Language | None = None


@example(ex.UPDATE_COLLECTION)
class UpdateCollection(_Body, frozen=True):
    """``PATCH /v1/collections/{collection_id}``."""

    name: Name | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    visibility: Visibility | UnsetType = UNSET
    language: Language | UnsetType | None = UNSET


@example(ex.ADD_COLLECTION_ITEM)
class AddCollectionItem(_Body, frozen=True):
    """``POST /v1/collections/{collection_id}/items``."""

    item_id: AnyId


@example(ex.CREATE_REPORTER)
class CreateReporter(_Body, frozen=True):
    """``POST /v1/reporters``."""

    name: Name
    description: Text | None = None
    default_workflow_id: AnyId | None = None


@example(ex.UPDATE_REPORTER)
class UpdateReporter(_Body, frozen=True):
    """``PATCH /v1/reporters/{reporter_id}``."""

    name: Name | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    default_workflow_id: AnyId | UnsetType | None = UNSET


# A step's tool: one of the catalogue's ids (the document lists them; the server checks the
# same catalogue, and the step's params against the tool's params schema).
ToolId = Annotated[str, msgspec.Meta(extra_json_schema={"enum": sorted(TOOLS)})]


class StepBody(StepInput, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A step as a client writes it: a catalogue tool, its prompt and its params."""

    tool_id: ToolId


@example(ex.CREATE_STEP)
class CreateStep(StepBody, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST …/workflows/{workflow_id}/steps``: one step, appended."""


@example(ex.REPLACE_STEPS)
class ReplaceSteps(_Body, frozen=True):
    """``PUT …/workflows/{workflow_id}/steps``: every step, in order."""

    steps: list[StepBody]


@example(ex.CREATE_WORKFLOW)
class CreateWorkflow(_Body, frozen=True):
    """``POST /v1/reporters/{reporter_id}/workflows``."""

    name: Name
    target_kind: TargetKind
    steps: list[StepBody] = msgspec.field(default_factory=list)


@example(ex.UPDATE_WORKFLOW)
class UpdateWorkflow(_Body, frozen=True):
    """``PATCH …/workflows/{workflow_id}`` (steps have their own routes)."""

    name: Name | UnsetType = UNSET
    target_kind: TargetKind | UnsetType = UNSET


@example(ex.CREATE_SCHEDULE)
class CreateSchedule(_Body, frozen=True, kw_only=True):
    """``POST /v1/reporters/{reporter_id}/schedules``."""

    name: Name | None = None
    workflow_id: AnyId
    interval_hours: Hours
    max_age_hours: AgeHours = 168
    max_videos_per_channel: PerChannel = 5
    enabled: bool = True
    collection_ids: list[AnyId] = msgspec.field(default_factory=list)


@example(ex.UPDATE_SCHEDULE)
class UpdateSchedule(_Body, frozen=True):
    """``PATCH …/schedules/{schedule_id}``; ``collection_ids`` replaces the attached set."""

    name: Name | UnsetType | None = UNSET
    workflow_id: AnyId | UnsetType = UNSET
    interval_hours: Hours | UnsetType = UNSET
    max_age_hours: AgeHours | UnsetType = UNSET
    max_videos_per_channel: PerChannel | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    collection_ids: list[AnyId] | UnsetType = UNSET


@example(ex.ATTACH_COLLECTION)
class AttachCollection(_Body, frozen=True):
    """``POST …/schedules/{schedule_id}/collections``."""

    collection_id: AnyId


# -- work that runs asynchronously (202) ---------------------------------------------------------


@example(ex.PROCESS_REQUEST)
class ProcessRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/reporters/{reporter_id}/process``: a URL or handle, and the workflow to run
    (default: the reporter's default workflow)."""

    source: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    workflow_id: str | None = None


@example(ex.PROCESS_COLLECTION_REQUEST)
class ProcessCollectionRequest(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True
):
    """``POST /v1/reporters/{reporter_id}/process-collection``: one execution over the items of
    the collection (at most ``max_items``, oldest first)."""

    collection_id: str
    workflow_id: str | None = None
    max_items: Annotated[int, msgspec.Meta(ge=1, le=commands.MAX_COLLECTION_ITEMS)] | None = None


@example(ex.RUN_REQUEST)
class RunRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST …/schedules/{schedule_id}/run``: no fields (the body may be empty)."""


# -- query strings (documented as parameters; parsed by api.parse) -------------------------------


class PageQuery(msgspec.Struct, kw_only=True):
    """``?limit=&cursor=`` of every list (each list's cursor has its own form: see
    :func:`page_query`)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: str | None = None


Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
# The forms of the cursors lists return (the ``next_cursor`` of the previous page): anything else
# is 422 "not a cursor this list returned".
EXECUTION_CURSOR = r"^[0-9]{1,16}\.exc_p[0-9]{1,4}_[0-9a-hjkmnp-tv-z]{20}$"  # created_at.id
LEDGER_CURSOR = r"^[0-9]{1,15}-[0-9]{1,18}$"  # a ledger stream id (engine.money.accounts)


def or_empty(pattern: str) -> str:
    """``pattern``, or the empty string: an empty query parameter is read as an absent one."""
    return f"^$|{pattern}"


def page_query(name: str, cursor: str, what: str) -> type[msgspec.Struct]:
    """The ``?limit=&cursor=`` query of a list whose cursor matches ``cursor`` (``what`` says
    what it is, for the document)."""
    meta = msgspec.Meta(
        pattern=or_empty(cursor), description=f"the previous page's next_cursor: {what}"
    )
    return msgspec.defstruct(
        name,
        [
            ("limit", Limit, DEFAULT_LIMIT),
            ("cursor", Annotated[str, meta] | None, None),
        ],
        kw_only=True,
    )


def _id_cursor(kind: str, param: str) -> type[msgspec.Struct]:
    return page_query(f"{kind}PageQuery", _id_pattern(param), f"the last {param} of that page")


ItemPageQuery = _id_cursor("Item", "item_id")
CollectionPageQuery = _id_cursor("Collection", "collection_id")
ReporterPageQuery = _id_cursor("Reporter", "reporter_id")
WorkflowPageQuery = _id_cursor("Workflow", "workflow_id")
SchedulePageQuery = _id_cursor("Schedule", "schedule_id")
ExecutionPageQuery = page_query(
    "ExecutionPageQuery", EXECUTION_CURSOR, "the last execution's created_at (ms) and its id"
)
LedgerPageQuery = page_query("LedgerPageQuery", LEDGER_CURSOR, "the last entry's ledger id")


class ExecutionListQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/executions/me?active=1``: pending and running only."""

    limit: Limit = DEFAULT_LIMIT
    cursor: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=or_empty(EXECUTION_CURSOR),
                description="the previous page's next_cursor: the last execution's created_at "
                "(ms) and its id",
            ),
        ]
        | None
    ) = None
    active: Literal["1", "0", "true", "false", "yes", "no", ""] = "0"


class EventPageQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/executions/{execution_id}/events?limit=&cursor=``: oldest first; the cursor is
    the ``seq`` of the previous page's last event (its ``next_cursor``)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: Annotated[str, msgspec.Meta(pattern=or_empty(SEQ_CURSOR))] | None = None


class TranscriptQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/items/{item_id}/transcript?lang=``: absent, the newest in any language."""

    lang: Annotated[str, msgspec.Meta(pattern=or_empty(LANG_PATTERN))] | None = None


class DocumentListQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/documents?item_id=&reporter_id=&kind=``: filters, each optional; the cursor is
    the last ``document_id`` of the previous page."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Annotated[str, msgspec.Meta(pattern=or_empty(_id_pattern("document_id")))] | None = None
    item_id: ItemIdFilter | None = None
    reporter_id: ReporterIdFilter | None = None
    kind: DocumentKind | None = None
