"""What operators send and get back under ``/admin`` about the system as a whole: the overview the
operator console polls, dead letters and their retry, any execution with its events.

Like the other schemas: ``api.render_operators`` builds these (its ``overview`` …), the
OpenAPI document is built from them. Times are ISO-8601 like every date a client sees; durations are
milliseconds (``*_ms``).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from api.openapi import example
from api.schemas import examples as ex
from api.schemas.executions import ExecutionDetail


@example(ex.RETRY_DEAD_LETTER)
class RetryDeadLetter(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/dead-letters/{execution_id}/retry`` (the body is optional): who asks, kept in
    the ``ExecutionRetried`` event as ``admin:<operator>``."""

    operator: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "console"


class PartitionOut(msgspec.Struct, kw_only=True):
    """One partition: its log, queues, dead letters, projection checkpoint and lag, lease
    holders and schedules (projections.inspection and projections.overview say what each
    figure is; ``lag_ms`` is the age of the oldest entry not folded yet)."""

    partition: int
    log_entries: int
    queued: int
    oldest_queued_ms: int | None
    leased: int
    dead_letters: int
    checkpoint: str | None
    lag_entries: int
    lag_capped: bool
    lag_ms: int
    projector: str | None
    projector_ttl_ms: int | None
    archiver: str | None
    archiver_ttl_ms: int | None
    schedules: int
    schedules_overdue: int
    overdue_ms: int


class WorkerOut(msgspec.Struct, kw_only=True):
    """A live worker (its heartbeat younger than a lease) or one holding leases, with the
    leases it holds by partition (``beat_ms``: since its last heartbeat, null: none on record)."""

    worker_id: str
    live: bool
    beat_ms: int | None
    leases_held: int
    leases: dict[str, int]


class HolderOut(msgspec.Struct, kw_only=True):
    """A projector or an archiver and the partitions whose lease it holds."""

    holder_id: str
    partitions: list[int]


class RatePoint(msgspec.Struct, kw_only=True):
    """Executions accepted, ended ``done`` and ended in ``error`` during ``bucket_s`` seconds
    from ``at``."""

    at: str
    requested: int
    done: int
    error: int


class RatesOut(msgspec.Struct, kw_only=True):
    """The last minutes, oldest first; counted from the logs up to ``current_to``."""

    bucket_s: int
    current_to: str | None
    points: list[RatePoint]


class Totals(msgspec.Struct, kw_only=True):
    """Sums over the partitions."""

    log_entries: int
    queued: int
    leased: int
    dead_letters: int
    lag_entries: int
    live_workers: int


class OverviewResponse(msgspec.Struct, kw_only=True):
    """``GET /admin/overview``: the operator console's one poll."""

    at: str
    partitions_count: int
    projection_version: int
    archive: str | None
    totals: Totals
    partitions: list[PartitionOut]
    workers: list[WorkerOut]
    projectors: list[HolderOut]
    archivers: list[HolderOut]
    rates: RatesOut


class DeadLetterOut(msgspec.Struct, kw_only=True):
    """A dead letter; ``execution_id`` is null when its entry is not an execution's lease (an
    undecodable log entry), which cannot be retried."""

    partition: int
    dead_id: str
    entry_id: str
    execution_id: str | None
    owner: str | None
    kind: str | None
    reason: str
    deliveries: int
    at: str | None
    retriable: bool


class DeadLetterList(msgspec.Struct, kw_only=True):
    """``GET /admin/dead-letters``: every dead letter, by partition, oldest first."""

    dead_letters: list[DeadLetterOut]


class RetryOut(msgspec.Struct, kw_only=True):
    """A retry done: the execution is queued again; ``seq`` is its ``ExecutionRetried``."""

    execution_id: str
    partition: int
    seq: int
    requested_by: str
    dead_ids: list[str]


class RetryResponse(msgspec.Struct, kw_only=True):
    """``POST /admin/dead-letters/{execution_id}/retry`` → 202."""

    retry: RetryOut


class AdminExecution(msgspec.Struct, kw_only=True):
    """``GET /admin/executions/{execution_id}``: any owner's execution, folded from its events
    (the Redis tail, then the archive), and those events."""

    owner: str
    detail: ExecutionDetail
    events: list[dict[str, Any]]
