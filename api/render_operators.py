"""The operators' response bodies (``/admin/overview``, dead letters and their retry, any
execution with its events), built like every other body in api.render and with its helpers."""

from __future__ import annotations

from api.render import by_name, events, execution_detail, iso
from api.schemas.operators import (
    AdminExecution,
    DeadLetterList,
    DeadLetterOut,
    HolderOut,
    OverviewResponse,
    PartitionOut,
    RatePoint,
    RatesOut,
    RetryOut,
    RetryResponse,
    Totals,
    WorkerOut,
)
from engine.log.events import AnyEvent
from engine.run.revive import DeadLetter, Retried
from projections.activity import BUCKET_MS, Bucket
from projections.inspection import LAG_COUNT_CAP
from projections.overview import Overview
from projections.views import ExecutionView


def overview(
    o: Overview, points: list[Bucket], current_to: int, archive: str | None
) -> OverviewResponse:
    """The operator console's poll: the overview (projections.overview) and the rate chart's
    buckets (projections.activity)."""
    figures = [p.figures for p in o.partitions]
    parts = [
        PartitionOut(
            partition=f.partition,
            log_entries=f.log_entries,
            queued=f.queued,
            oldest_queued_ms=f.oldest_pending_ms,
            leased=f.leased,
            dead_letters=f.dead_letters,
            checkpoint=None if f.checkpoint == "0-0" else f.checkpoint,
            lag_entries=f.projection_lag_entries,
            lag_capped=f.projection_lag_entries >= LAG_COUNT_CAP,
            lag_ms=f.projection_lag_ms,
            projector=p.projector,
            projector_ttl_ms=p.projector_ttl_ms,
            archiver=p.archiver,
            archiver_ttl_ms=p.archiver_ttl_ms,
            schedules=p.schedules,
            schedules_overdue=p.schedules_overdue,
            overdue_ms=p.overdue_ms,
        )
        for p, f in zip(o.partitions, figures, strict=True)
    ]
    workers = [
        WorkerOut(
            worker_id=w.worker_id,
            live=w.live,
            beat_ms=w.beat_ms,
            leases_held=w.held,
            leases={str(p): n for p, n in sorted(w.leases.items())},
        )
        for w in o.workers
    ]
    totals = Totals(
        log_entries=sum(f.log_entries for f in figures),
        queued=sum(f.queued for f in figures),
        leased=sum(f.leased for f in figures),
        dead_letters=sum(f.dead_letters for f in figures),
        lag_entries=sum(f.projection_lag_entries for f in figures),
        live_workers=sum(1 for w in o.workers if w.live),
    )
    return OverviewResponse(
        at=iso(o.at),
        partitions_count=o.partitions_count,
        projection_version=o.projection_version,
        archive=archive,
        totals=totals,
        partitions=parts,
        workers=workers,
        projectors=[
            HolderOut(holder_id=h.holder_id, partitions=h.partitions) for h in o.projectors
        ],
        archivers=[HolderOut(holder_id=h.holder_id, partitions=h.partitions) for h in o.archivers],
        rates=RatesOut(
            bucket_s=BUCKET_MS // 1000,
            current_to=iso(current_to) if current_to else None,
            points=[
                RatePoint(at=iso(b.start), requested=b.requested, done=b.done, error=b.error)
                for b in points
            ],
        ),
    )


def dead_letters(found: list[DeadLetter]) -> DeadLetterList:
    """Dead letters, by partition, oldest first."""
    return DeadLetterList(
        dead_letters=[
            DeadLetterOut(
                partition=d.partition,
                dead_id=d.dead_id,
                entry_id=d.entry_id,
                execution_id=d.execution_id,
                owner=d.owner,
                kind=d.kind,
                reason=d.reason,
                deliveries=d.deliveries,
                at=iso(d.at),
                retriable=d.execution_id is not None,
            )
            for d in found
        ]
    )


def retried(r: Retried) -> RetryResponse:
    """A dead letter retried."""
    return RetryResponse(retry=by_name(RetryOut, r))


def admin_execution(view: ExecutionView, history: list[AnyEvent]) -> AdminExecution:
    """Any owner's execution and its events, for operators."""
    return AdminExecution(
        owner=view.owner, detail=execution_detail(view), events=events(history, None).events
    )
