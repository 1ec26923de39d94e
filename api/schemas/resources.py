"""Request and response Structs of the synchronous resources (collections, reporters, workflows,
steps, schedules, documents, tools).

Requests forbid unknown fields, so a server-owned field (``owner``, ids, timestamps) is a 422
naming it. PATCH bodies leave every field UNSET by default: only the fields given change.
Responses are Structs too (one source for validation, encoding and the OpenAPI document); they
are turned into builtins and encoded with orjson at the edge.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

from api.openapi import id_pattern
from api.schemas import PageQuery, iso, respond
from engine.language import LANG_PATTERN
from engine.resources.records import Collection, Document, Reporter, Schedule, Step, Workflow
from engine.resources.reporters import StepInput

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


# -- requests ------------------------------------------------------------------------------------


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


class CreateSchedule(_Body, frozen=True):
    """``POST /v1/reporters/{reporter_id}/schedules``."""

    workflow_id: AnyId
    interval_hours: Hours
    max_age_hours: AgeHours = 168
    max_videos_per_channel: PerChannel = 5
    enabled: bool = True
    collection_ids: list[AnyId] = msgspec.field(default_factory=list)


class UpdateSchedule(_Body, frozen=True):
    """``PATCH …/schedules/{schedule_id}``; ``collection_ids`` replaces the attached set."""

    workflow_id: AnyId | UnsetType = UNSET
    interval_hours: Hours | UnsetType = UNSET
    max_age_hours: AgeHours | UnsetType = UNSET
    max_videos_per_channel: PerChannel | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    collection_ids: list[AnyId] | UnsetType = UNSET


class AttachCollection(_Body, frozen=True):
    """``POST …/schedules/{schedule_id}/collections``."""

    collection_id: AnyId


# -- query strings (documented as parameters; the handlers parse and check them) -----------------


class DocumentListQuery(PageQuery, kw_only=True):
    """``GET /v1/documents?item_id=&reporter_id=&kind=``: filters, each optional; the cursor is
    the last ``document_id`` of the previous page."""

    item_id: ItemIdFilter | None = None
    reporter_id: ReporterIdFilter | None = None
    kind: DocumentKind | None = None


# -- responses -----------------------------------------------------------------------------------


class CollectionOut(msgspec.Struct, kw_only=True):
    collection_id: str
    name: str
    description: str | None
    visibility: Visibility
    language: str | None
    created_at: str
    updated_at: str


class StepOut(msgspec.Struct, kw_only=True):
    step_id: str
    tool_id: str
    prompt_text: str
    params: dict[str, Any]


class ReporterOut(msgspec.Struct, kw_only=True):
    reporter_id: str
    name: str
    description: str | None
    default_workflow_id: str | None
    created_at: str
    updated_at: str


class WorkflowOut(msgspec.Struct, kw_only=True):
    workflow_id: str
    reporter_id: str
    name: str
    target_kind: TargetKind
    steps: list[StepOut]
    created_at: str
    updated_at: str


class ScheduleOut(msgspec.Struct, kw_only=True):
    schedule_id: str
    reporter_id: str
    workflow_id: str
    interval_hours: int
    max_age_hours: int
    max_videos_per_channel: int
    enabled: bool
    collection_ids: list[str]
    created_at: str
    updated_at: str


class DocumentOut(msgspec.Struct, kw_only=True):
    """A document; ``content`` only when one is fetched by id (JSON content decoded)."""

    document_id: str
    kind: str
    item_id: str | None
    reporter_id: str | None
    execution_id: str | None
    title: str | None
    size: int
    created_at: str
    content: Any = UNSET


class PricingUnit(msgspec.Struct, kw_only=True):
    unit: str
    coins_per_unit: float


class Pricing(msgspec.Struct, kw_only=True):
    currency: str
    units: list[PricingUnit]


class ToolOut(msgspec.Struct, kw_only=True):
    tool_id: str
    description: str
    provider: str
    params_schema: dict[str, Any]
    pricing: Pricing


class ToolList(msgspec.Struct, kw_only=True):
    tools: list[ToolOut]


class CollectionResponse(msgspec.Struct, kw_only=True):
    collection: CollectionOut


class CollectionList(msgspec.Struct, kw_only=True):
    collections: list[CollectionOut]
    next_cursor: str | None


class ReporterResponse(msgspec.Struct, kw_only=True):
    reporter: ReporterOut


class ReporterList(msgspec.Struct, kw_only=True):
    reporters: list[ReporterOut]
    next_cursor: str | None


class WorkflowResponse(msgspec.Struct, kw_only=True):
    workflow: WorkflowOut


class StepResponse(msgspec.Struct, kw_only=True):
    step: StepOut
    workflow: WorkflowOut


class WorkflowList(msgspec.Struct, kw_only=True):
    workflows: list[WorkflowOut]
    next_cursor: str | None


class ScheduleResponse(msgspec.Struct, kw_only=True):
    schedule: ScheduleOut


class ScheduleList(msgspec.Struct, kw_only=True):
    schedules: list[ScheduleOut]
    next_cursor: str | None


class DocumentResponse(msgspec.Struct, kw_only=True):
    document: DocumentOut


class DocumentList(msgspec.Struct, kw_only=True):
    documents: list[DocumentOut]
    next_cursor: str | None


def out(body: msgspec.Struct, status: int = 200) -> Response:
    """A response Struct as JSON (UNSET fields left out)."""
    return respond(msgspec.to_builtins(body), status)


# -- records -> responses ------------------------------------------------------------------------


def collection_out(c: Collection) -> CollectionOut:
    return CollectionOut(
        collection_id=c.collection_id,
        name=c.name,
        description=c.description,
        visibility=c.visibility,
        language=c.language,
        created_at=iso(c.created_at),
        updated_at=iso(c.updated_at),
    )


def reporter_out(r: Reporter) -> ReporterOut:
    return ReporterOut(
        reporter_id=r.reporter_id,
        name=r.name,
        description=r.description,
        default_workflow_id=r.default_workflow_id,
        created_at=iso(r.created_at),
        updated_at=iso(r.updated_at),
    )


def step_out(s: Step) -> StepOut:
    return StepOut(step_id=s.step_id, tool_id=s.tool_id, prompt_text=s.prompt_text, params=s.params)


def workflow_out(w: Workflow) -> WorkflowOut:
    return WorkflowOut(
        workflow_id=w.workflow_id,
        reporter_id=w.reporter_id,
        name=w.name,
        target_kind=w.target_kind,
        steps=[step_out(s) for s in w.steps],
        created_at=iso(w.created_at),
        updated_at=iso(w.updated_at),
    )


def schedule_out(s: Schedule) -> ScheduleOut:
    return ScheduleOut(
        schedule_id=s.schedule_id,
        reporter_id=s.reporter_id,
        workflow_id=s.workflow_id,
        interval_hours=s.interval_hours,
        max_age_hours=s.max_age_hours,
        max_videos_per_channel=s.max_videos_per_channel,
        enabled=s.enabled,
        collection_ids=list(s.collection_ids),
        created_at=iso(s.created_at),
        updated_at=iso(s.updated_at),
    )


def document_out(d: Document, content: Any = UNSET) -> DocumentOut:
    return DocumentOut(
        document_id=d.document_id,
        kind=d.kind,
        item_id=d.item_id,
        reporter_id=d.reporter_id,
        execution_id=d.execution_id,
        title=d.title,
        size=d.size,
        created_at=iso(d.created_at),
        content=content,
    )
