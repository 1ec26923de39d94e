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

from api.openapi import id_pattern
from engine import commands
from engine.language import LANG_PATTERN
from engine.resources.reporters import StepInput

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
DocumentKind = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


def _id_pattern(param: str) -> str:
    """The pattern of ids of the kind ``param`` names (the one path parameters carry)."""
    pattern = id_pattern(param)
    assert pattern is not None, param
    return pattern


ItemIdFilter = Annotated[str, msgspec.Meta(pattern=_id_pattern("item_id"))]
ReporterIdFilter = Annotated[str, msgspec.Meta(pattern=_id_pattern("reporter_id"))]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


def changes(body: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body sets."""
    return {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not UNSET}


# -- accounts and items --------------------------------------------------------------------------


class CreateAccount(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    coins: Coins = 0


class Credit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts/{id}/credit``: ``credit_id`` makes a retried credit a no-op."""

    coins: Coins
    credit_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


class MintToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts/{id}/tokens`` (the body is optional)."""

    ttl_s: Annotated[int, msgspec.Meta(ge=60, le=30 * 86_400)] = 86_400


class CreateItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/items``: a URL or a handle."""

    source: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class TranscriptRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/items/{id}/transcript``; ``text`` given: it is the transcript."""

    lang: Annotated[str, msgspec.Meta(pattern=LANG_PATTERN)] | None = None
    embed: bool = False
    text: str | None = None


# -- collections, reporters, workflows, steps, schedules -----------------------------------------


class CreateCollection(_Body, frozen=True):
    """``POST /v1/collections``."""

    name: Name
    description: Text | None = None
    visibility: Visibility = "private"
    language: Language | None = None


class UpdateCollection(_Body, frozen=True):
    """``PATCH /v1/collections/{collection_id}``."""

    name: Name | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    visibility: Visibility | UnsetType = UNSET
    language: Language | UnsetType | None = UNSET


class AddCollectionItem(_Body, frozen=True):
    """``POST /v1/collections/{collection_id}/items``."""

    item_id: AnyId


class CreateReporter(_Body, frozen=True):
    """``POST /v1/reporters``."""

    name: Name
    description: Text | None = None
    default_workflow_id: AnyId | None = None


class UpdateReporter(_Body, frozen=True):
    """``PATCH /v1/reporters/{reporter_id}``."""

    name: Name | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    default_workflow_id: AnyId | UnsetType | None = UNSET


class CreateStep(StepInput, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST …/workflows/{workflow_id}/steps``: one step, appended."""


class ReplaceSteps(_Body, frozen=True):
    """``PUT …/workflows/{workflow_id}/steps``: every step, in order."""

    steps: list[StepInput]


class CreateWorkflow(_Body, frozen=True):
    """``POST /v1/reporters/{reporter_id}/workflows``."""

    name: Name
    target_kind: TargetKind
    steps: list[StepInput] = msgspec.field(default_factory=list)


class UpdateWorkflow(_Body, frozen=True):
    """``PATCH …/workflows/{workflow_id}`` (steps have their own routes)."""

    name: Name | UnsetType = UNSET
    target_kind: TargetKind | UnsetType = UNSET


class CreateSchedule(_Body, frozen=True, kw_only=True):
    """``POST /v1/reporters/{reporter_id}/schedules``."""

    name: Name | None = None
    workflow_id: AnyId
    interval_hours: Hours
    max_age_hours: AgeHours = 168
    max_videos_per_channel: PerChannel = 5
    enabled: bool = True
    collection_ids: list[AnyId] = msgspec.field(default_factory=list)


class UpdateSchedule(_Body, frozen=True):
    """``PATCH …/schedules/{schedule_id}``; ``collection_ids`` replaces the attached set."""

    name: Name | UnsetType | None = UNSET
    workflow_id: AnyId | UnsetType = UNSET
    interval_hours: Hours | UnsetType = UNSET
    max_age_hours: AgeHours | UnsetType = UNSET
    max_videos_per_channel: PerChannel | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    collection_ids: list[AnyId] | UnsetType = UNSET


class AttachCollection(_Body, frozen=True):
    """``POST …/schedules/{schedule_id}/collections``."""

    collection_id: AnyId


# -- work that runs asynchronously (202) ---------------------------------------------------------


class ProcessRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/reporters/{reporter_id}/process``: a URL or handle, and the workflow to run
    (default: the reporter's default workflow)."""

    source: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    workflow_id: str | None = None


class ProcessCollectionRequest(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True
):
    """``POST /v1/reporters/{reporter_id}/process-collection``: one execution over the items of
    the collection (at most ``max_items``, oldest first)."""

    collection_id: str
    workflow_id: str | None = None
    max_items: Annotated[int, msgspec.Meta(ge=1, le=commands.MAX_COLLECTION_ITEMS)] | None = None


class RunRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST …/schedules/{schedule_id}/run``: no fields (the body may be empty)."""


# -- query strings (documented as parameters; parsed by api.parse) -------------------------------


class PageQuery(msgspec.Struct, kw_only=True):
    """``?limit=&cursor=`` of every list."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: str | None = None


class ExecutionListQuery(PageQuery, kw_only=True):
    """``GET /v1/executions/me?active=1``: pending and running only."""

    active: Literal["1", "0", "true", "false", "yes", "no"] = "0"


class EventPageQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/executions/{execution_id}/events?limit=&cursor=``: oldest first; the cursor is
    the ``seq`` of the previous page's last event (its ``next_cursor``)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: Annotated[str, msgspec.Meta(pattern=SEQ_CURSOR)] | None = None


class TranscriptQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/items/{item_id}/transcript?lang=``: absent, the newest in any language."""

    lang: Annotated[str, msgspec.Meta(pattern=LANG_PATTERN)] | None = None


class DocumentListQuery(PageQuery, kw_only=True):
    """``GET /v1/documents?item_id=&reporter_id=&kind=``: filters, each optional; the cursor is
    the last ``document_id`` of the previous page."""

    item_id: ItemIdFilter | None = None
    reporter_id: ReporterIdFilter | None = None
    kind: DocumentKind | None = None
