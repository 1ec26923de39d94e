"""Retrying dead letters: an operator sends a dead-lettered execution back to the workers.

A lease delivered more than ``CLIPSTREAM_MAX_DELIVERIES`` times is poison work: engine.run.claims
ends its execution in ``internal`` error and moves its entry to the partition's dead letters. Once
the cause is fixed (a provider back, a bug deployed away), :func:`retry` sends it back:

    what may be retried  a dead letter whose entry is an execution's lease (its
                         ExecutionRequested), of an execution that ended in ``error`` by it;
                         anything else is refused with the reason (StateConflict): an execution
                         that ended ``done`` or was cancelled, a dead letter that is not an
                         execution (an undecodable log entry), an execution whose events are
                         neither in Redis nor in the archive
    what it does         one script (engine.log.revival) appends ``ExecutionRetried`` (who asked,
                         which dead letter), removes the execution's dead letters and queues it
                         again; the worker that leases it resumes it from its first step without
                         a ``StepCompleted`` (engine.run.plan), its completed steps never run
                         again, its fee never charged again; an execution whose own stream has
                         expired since it ended (with an archive, finished streams are kept for
                         the hot window only) gets it back from the archive in the same script
    once                 the script only acts while the dead letters are still there: of two
                         operators retrying at once, one resumes it and the other is told it was
                         retried already

The CLI (``clipstream dead-letters retry``) and the admin API (``POST /admin/dead-letters/{id}/
retry``) both call :func:`retry` / :func:`retry_all`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.archive import reader
from engine.archive.stores import ArchiveStore
from engine.clock import now_ms
from engine.errors import InvalidRequest, NotFound, StateConflict, StoreError
from engine.log import codec
from engine.log.events import (
    ExecutionCancelled,
    ExecutionRequested,
    ExecutionRetried,
)
from engine.log.ids import execution_partition, is_id
from engine.log.revival import DeadEntry
from engine.log.store import EventStore
from engine.run import decide, plan

MAX_BY = 200  # characters of ``requested_by`` kept


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter as operators see it: ``execution_id`` and ``owner`` when its entry is an
    execution's lease (the ones :func:`retry` can send back), None otherwise."""

    partition: int
    dead_id: str
    entry_id: str
    reason: str
    deliveries: int
    at: int | None
    execution_id: str | None
    owner: str | None
    kind: str | None


@dataclass(frozen=True, slots=True)
class Retried:
    """A retry done: the execution, the dead letters it removed, the seq of its
    ``ExecutionRetried``."""

    execution_id: str
    partition: int
    dead_ids: list[str]
    seq: int
    requested_by: str


def _dead_letter(entry: DeadEntry) -> DeadLetter:
    request = _request_of(entry)
    return DeadLetter(
        partition=entry.partition,
        dead_id=entry.dead_id,
        entry_id=entry.entry_id,
        reason=entry.reason,
        deliveries=entry.deliveries,
        at=entry.at,
        execution_id=request.execution_id if request else None,
        owner=request.owner if request else None,
        kind=request.kind if request else None,
    )


def _request_of(entry: DeadEntry) -> ExecutionRequested | None:
    try:
        event = codec.decode(entry.payload)
    except StoreError:  # undecodable: dead-lettered for that very reason
        return None
    return event if isinstance(event, ExecutionRequested) else None


async def dead_letters(store: EventStore, partition: int | None = None) -> list[DeadLetter]:
    """Every dead letter of ``partition`` (None: of every partition), oldest first in each."""
    chosen = store.partitions if partition is None else [partition]
    out: list[DeadLetter] = []
    for p in chosen:
        out += [_dead_letter(entry) for entry in await store.revival.entries(p)]
    return out


async def retry(
    store: EventStore,
    execution_id: str,
    requested_by: str,
    archive: ArchiveStore | None = None,
    known: list[DeadLetter] | None = None,
) -> Retried:
    """Send the dead-lettered ``execution_id`` back to the workers (see the module docstring);
    ``archive``: where its events are found once its own stream has expired; ``known``: its
    partition's dead letters when the caller has just read them (:func:`retry_all`).

    InvalidRequest for a malformed id or an empty ``requested_by``; NotFound for an execution
    that does not exist; StateConflict when it is not dead-lettered (or was retried just now)."""
    by = requested_by.strip()[:MAX_BY]
    if not by:
        raise InvalidRequest("a retry must say who asked for it (requested_by)")
    try:
        if not is_id(execution_id, "exc"):
            raise ValueError(execution_id)
        partition = execution_partition(execution_id)
    except ValueError:
        raise InvalidRequest(f"not an execution id: {execution_id!r}") from None
    if partition >= store.keys.partitions:
        raise NotFound(f"no execution {execution_id}")
    for attempt in range(decide.MAX_CONFLICTS):
        found = (
            known if known is not None and attempt == 0 else await dead_letters(store, partition)
        )
        dead = [d for d in found if d.execution_id == execution_id]
        history = await store.log.history(execution_id)
        restore: list[bytes] = []
        if not history and archive is not None:
            history = await reader.execution_history(store, archive, execution_id)
            restore = [codec.encode(e) for e in history]
        if not dead:
            if not history:
                raise NotFound(f"no execution {execution_id}")
            state = plan.fold(history)
            raise StateConflict(
                f"{execution_id} is not dead-lettered (its status is {state.status}): "
                "only a dead-lettered execution can be retried"
            )
        if not history:
            raise StateConflict(
                f"{execution_id}: its events are no longer in Redis (past the retention) nor in "
                "an archive, so it cannot be resumed"
            )
        state = plan.fold(history)
        _check_retriable(execution_id, state, history[-1])
        assert state.requested is not None
        last = dead[-1]
        event = codec.stamp(
            ExecutionRetried(
                execution_id=execution_id,
                requested_by=by,
                partition=partition,
                dead_id=last.dead_id,
                reason=last.reason,
            ),
            state.seq + 1,
            now_ms(),
        )
        dead_ids = [d.dead_id for d in dead]
        outcome = await store.revival.revive(
            execution_id,
            state.requested.owner,
            state.seq,
            codec.encode(event),
            dead_ids,
            restore,
        )
        if outcome == "revived":
            return Retried(execution_id, partition, dead_ids, event.seq, by)
        if outcome == "gone":
            raise StateConflict(f"{execution_id} was retried already (its dead letter is gone)")
    raise StateConflict(f"{execution_id} kept changing while it was retried; try again")


def _check_retriable(execution_id: str, state: plan.ExecState, last: object) -> None:
    """StateConflict unless the execution ended in error other than by a cancellation."""
    if state.requested is None:
        raise StateConflict(f"{execution_id}: its history does not start with its request")
    if state.status == "done":
        raise StateConflict(f"{execution_id} ended done: there is nothing to retry")
    if not state.terminal:
        raise StateConflict(
            f"{execution_id} has not ended (status {state.status}): it is not dead-lettered "
            "any more"
        )
    if isinstance(last, ExecutionCancelled) or state.cancel_requested:
        raise StateConflict(f"{execution_id} was cancelled on request: it is not retried")


@dataclass(frozen=True, slots=True)
class RetryReport:
    """What :func:`retry_all` did: the executions retried, and each dead letter left alone with
    the reason."""

    retried: list[Retried]
    skipped: list[tuple[DeadLetter, str]]


async def retry_all(
    store: EventStore, requested_by: str, archive: ArchiveStore | None = None
) -> RetryReport:
    """:func:`retry` every dead-lettered execution of every partition; dead letters that cannot
    be retried are reported with the reason, never fail the others."""
    retried: list[Retried] = []
    skipped: list[tuple[DeadLetter, str]] = []
    seen: set[str] = set()
    found = await dead_letters(store)
    by_partition: dict[int, list[DeadLetter]] = {}
    for dead in found:
        by_partition.setdefault(dead.partition, []).append(dead)
    for dead in found:
        xid = dead.execution_id
        if xid is None:
            skipped.append((dead, "not an execution's lease: nothing to resume"))
            continue
        if xid in seen:
            continue
        seen.add(xid)
        try:
            known = by_partition[dead.partition]
            retried.append(await retry(store, xid, requested_by, archive, known))
        except (StateConflict, NotFound) as exc:
            skipped.append((dead, str(exc)))
    return RetryReport(retried, skipped)
