"""Claims: what a dead worker left behind. Its leases idle longer than ``lease_ms`` are taken over
(the epoch is the delivery count) and keep their owner's cap slot, so a crash neither leaks a slot
nor lets the owner exceed the cap; a lease delivered too often is poison work and is dead-lettered.

The worker's claim pass (engine.run.worker) claims the leases; :func:`triage` decides what becomes
of each one, and :func:`dead_letter_execution` ends a poisoned execution in error before its entry
moves to the dead letters.
"""

from __future__ import annotations

import logging

from engine import meters
from engine.errors import ConcurrencyConflict
from engine.log.entries import Entry
from engine.log.events import ExecutionRequested
from engine.log.store import EventStore
from engine.money import billing
from engine.run import decide, plan
from engine.settings import Settings

log = logging.getLogger("clipstream.worker")


async def triage(
    store: EventStore, settings: Settings, worker_id: str, partition: int, entry: Entry
) -> ExecutionRequested | None:
    """The request of a claimed lease to take over, or None when the lease was dead-lettered
    instead: undecodable, or delivered more than ``max_deliveries`` times."""
    event = entry.event
    if not isinstance(event, ExecutionRequested):
        await store.leases.dead_letter_lease(partition, entry, "undecodable lease")
        meters.DEAD_LETTERS.inc()
        return None
    if entry.deliveries > settings.max_deliveries:
        await dead_letter_execution(store, settings, worker_id, partition, entry, event)
        return None
    return event


async def dead_letter_execution(
    store: EventStore,
    settings: Settings,
    worker_id: str,
    partition: int,
    entry: Entry,
    event: ExecutionRequested,
) -> None:
    """Poison work: end the execution in error first, then move the entry to the dead letters
    (a crash in between redelivers it and this runs again, idempotently)."""
    reason = (
        f"delivered {entry.deliveries} times (max {settings.max_deliveries}): "
        f"dead-lettered as entry {entry.entry_id} of partition {partition}"
    )
    xid = event.execution_id
    for _ in range(decide.MAX_CONFLICTS):
        state = plan.fold(await store.log.history(xid))
        if state.requested is None or state.terminal:
            break
        closing = decide.closing(state, decide.DeadLettered(reason))
        try:
            await store.log.append(
                xid,
                state.seq,
                closing,
                expire_ms=settings.unfolded_stream_retention_ms,
                owner=event.owner,
                moves=billing.moves_of(closing),
            )
            meters.appended(event.kind, closing)
            break
        except ConcurrencyConflict:
            continue
    await store.leases.dead_letter_lease(partition, entry, reason)
    meters.DEAD_LETTERS.inc()
    log.warning("worker %s: %s %s", worker_id, xid, reason)
