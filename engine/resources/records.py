"""The stored records of the synchronous resources, and their kinds.

Records are what Redis holds, owner included; the API decides what clients see. ``created_at`` and
``updated_at`` are ms since the epoch, set by the server only.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from engine.resources.store import Kind

Visibility = Literal["private", "public"]
TargetKind = Literal["youtube_video", "youtube_channel", "collection"]


class Collection(msgspec.Struct, frozen=True, kw_only=True):
    """A named set of the owner's items."""

    collection_id: str
    owner: str
    name: str
    description: str | None = None
    visibility: Visibility = "private"
    language: str | None = None
    created_at: int
    updated_at: int


class Reporter(msgspec.Struct, frozen=True, kw_only=True):
    """An LLM reporter: its workflows and schedules hang under it."""

    reporter_id: str
    owner: str
    name: str
    description: str | None = None
    default_workflow_id: str | None = None
    created_at: int
    updated_at: int


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a workflow: a catalogue tool, its prompt and its params."""

    step_id: str
    tool_id: str
    prompt_text: str = ""
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class Workflow(msgspec.Struct, frozen=True, kw_only=True):
    """An ordered list of steps a reporter runs over one kind of target."""

    workflow_id: str
    reporter_id: str
    owner: str
    name: str
    target_kind: TargetKind
    steps: list[Step] = msgspec.field(default_factory=list)
    created_at: int
    updated_at: int


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A reporter's periodic run of one workflow over the channels of some collections."""

    schedule_id: str
    reporter_id: str
    owner: str
    name: str | None = None  # added after the first schedules were stored: absent reads as None
    workflow_id: str
    interval_hours: int
    max_age_hours: int
    max_videos_per_channel: int
    enabled: bool = True
    collection_ids: list[str] = msgspec.field(default_factory=list)
    created_at: int
    updated_at: int


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """An output of an execution, stored once as a blob (``sha256``) and described here."""

    document_id: str
    owner: str
    kind: str
    item_id: str | None = None
    reporter_id: str | None = None
    execution_id: str | None = None
    title: str | None = None
    sha256: str
    size: int
    created_at: int


COLLECTIONS: Kind[Collection] = Kind(
    prefix="col", key="collection", noun="collection", type=Collection
)
REPORTERS: Kind[Reporter] = Kind(prefix="rep", key="reporter", noun="reporter", type=Reporter)
WORKFLOWS: Kind[Workflow] = Kind(prefix="wf", key="workflow", noun="workflow", type=Workflow)
SCHEDULES: Kind[Schedule] = Kind(prefix="sch", key="schedule", noun="schedule", type=Schedule)
DOCUMENTS: Kind[Document] = Kind(prefix="doc", key="document", noun="document", type=Document)
