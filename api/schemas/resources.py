"""What clients get back about the synchronous resources: accounts and their ledger, items,
collections, reporters, workflows and their steps, schedules, documents, the tool catalogue and
the health probes.

Response Structs describe a body once: ``api.render`` builds them from the engine's records (it
is the only code that does), the handlers encode them (``api.render.respond``) and the OpenAPI
document is built from them. UNSET fields are left out of the body.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET

from api.openapi import example
from api.schemas import examples as ex
from api.schemas.requests import TargetKind, Visibility
from engine.resources.items import ItemType

# -- accounts ------------------------------------------------------------------------------------


class AccountOut(msgspec.Struct, kw_only=True):
    """An account as its owner sees it."""

    account_id: str
    name: str
    balance_coins: float


@example(ex.ACCOUNT_RESPONSE)
class AccountResponse(msgspec.Struct, kw_only=True):
    account: AccountOut


class LedgerEntryOut(msgspec.Struct, kw_only=True):
    """One movement of the account's coins. ``amount_coins`` is signed (a credit is positive, a
    charge negative) and ``balance_coins`` is the balance right after it. ``kind``: ``credit``,
    ``fee`` (an execution's flat fee), ``read`` (a read's fee), and kinds added later, shown as
    they are. ``execution_id`` names the execution a charge belongs to, when it belongs to one."""

    charge_id: str
    kind: str
    amount_coins: float
    balance_coins: float
    execution_id: str | None
    at: str


class LedgerPage(msgspec.Struct, kw_only=True):
    """``GET /v1/me/ledger``: newest first; ``next_cursor`` pages on to older entries."""

    entries: list[LedgerEntryOut]
    next_cursor: str | None


class AdminAccountOut(AccountOut, kw_only=True):
    """An account as an operator sees it: the exact balance too."""

    balance_micro: int


class AdminAccountResponse(msgspec.Struct, kw_only=True):
    account: AdminAccountOut


class CreatedAccount(msgspec.Struct, kw_only=True):
    """``POST /admin/accounts``: the account, its first API key and a session token."""

    account: AccountOut
    api_key: str
    session_token: str


class IssuedKey(msgspec.Struct, kw_only=True):
    """A new API key (shown once) and its sha256, by which it is revoked."""

    account_id: str
    api_key: str
    key_hash: str


class MintedToken(msgspec.Struct, kw_only=True):
    account_id: str
    session_token: str
    ttl_s: int


# -- items and collections -----------------------------------------------------------------------


class ItemOut(msgspec.Struct, kw_only=True):
    item_id: str
    source: str
    type: ItemType
    external_id: str
    created_at: str


@example(ex.ITEM_RESPONSE)
class ItemResponse(msgspec.Struct, kw_only=True):
    item: ItemOut


class ItemList(msgspec.Struct, kw_only=True):
    items: list[ItemOut]
    next_cursor: str | None


class CollectionOut(msgspec.Struct, kw_only=True):
    collection_id: str
    name: str
    description: str | None
    visibility: Visibility
    language: str | None
    created_at: str
    updated_at: str


@example(ex.COLLECTION_RESPONSE)
class CollectionResponse(msgspec.Struct, kw_only=True):
    collection: CollectionOut


class CollectionList(msgspec.Struct, kw_only=True):
    collections: list[CollectionOut]
    next_cursor: str | None


# -- reporters, workflows, steps, schedules ------------------------------------------------------


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
    name: str | None
    workflow_id: str
    interval_hours: int
    max_age_hours: int
    max_videos_per_channel: int
    enabled: bool
    collection_ids: list[str]
    created_at: str
    updated_at: str


@example(ex.REPORTER_RESPONSE)
class ReporterResponse(msgspec.Struct, kw_only=True):
    reporter: ReporterOut


class ReporterList(msgspec.Struct, kw_only=True):
    reporters: list[ReporterOut]
    next_cursor: str | None


@example(ex.WORKFLOW_RESPONSE)
class WorkflowResponse(msgspec.Struct, kw_only=True):
    workflow: WorkflowOut


class StepResponse(msgspec.Struct, kw_only=True):
    step: StepOut
    workflow: WorkflowOut


class WorkflowList(msgspec.Struct, kw_only=True):
    workflows: list[WorkflowOut]
    next_cursor: str | None


@example(ex.SCHEDULE_RESPONSE)
class ScheduleResponse(msgspec.Struct, kw_only=True):
    schedule: ScheduleOut


class ScheduleList(msgspec.Struct, kw_only=True):
    schedules: list[ScheduleOut]
    next_cursor: str | None


# -- documents -----------------------------------------------------------------------------------


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


@example(ex.DOCUMENT_RESPONSE)
class DocumentResponse(msgspec.Struct, kw_only=True):
    document: DocumentOut


class DocumentList(msgspec.Struct, kw_only=True):
    documents: list[DocumentOut]
    next_cursor: str | None


# -- the tool catalogue and the probes -----------------------------------------------------------


class PricingUnit(msgspec.Struct, kw_only=True):
    unit: str
    coins_per_unit: float


class Pricing(msgspec.Struct, kw_only=True):
    """The provider's prices per unit, and how a step's cost is estimated (what it reserves
    before it starts; the actual cost is settled when it completes)."""

    currency: str
    units: list[PricingUnit]
    estimate: str


class ToolOut(msgspec.Struct, kw_only=True):
    tool_id: str
    description: str
    provider: str
    params_schema: dict[str, Any]
    pricing: Pricing


class ToolList(msgspec.Struct, kw_only=True):
    """The whole catalogue on one page: ``next_cursor`` is always null (the list shape of every
    list, DESIGN §7)."""

    tools: list[ToolOut]
    next_cursor: None = None


class HealthOut(msgspec.Struct, kw_only=True):
    status: Literal["ok", "ready"]
