"""Schedules ``sch_``: a reporter's periodic run of one of its workflows over collections.

A schedule names one of its reporter's workflows (InvalidRequest otherwise) and any number of the
owner's collections (NotFound for one that is not the owner's). Each attached collection lists
the schedule in ``colschs``, so deleting the collection detaches it here in the same script.
Running schedules is engine.schedules.runs' and engine.schedules.scheduler's business; this module
stores them and keeps the partition's due index (``Keys.schedule_due``) in the same scripts: an
enabled schedule is listed there as ``"{owner} {schedule_id}"`` scored with its next due tick (ms),
one ``interval_hours`` after it was created, or after ``enabled`` or ``interval_hours`` last
changed; a disabled or deleted one is not listed. Deleting a schedule forgets its run marker and
the videos its runs processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.clock import now_ms
from engine.errors import InvalidRequest
from engine.log.ids import is_id, new_id
from engine.resources.records import (
    COLLECTIONS,
    REPORTERS,
    SCHEDULES,
    WORKFLOWS,
    Schedule,
)
from engine.resources.relations import (
    COLLECTION_SCHEDULES,
    REPORTER_SCHEDULES,
    REPORTER_WORKFLOWS,
)
from engine.resources.store import Store, Txn, retrying, revised
from engine.runtime import Runtime

MAX_COLLECTIONS = 100
HOUR_MS = 3_600_000


async def create_schedule(
    runtime: Runtime, owner: str, reporter_id: str, fields: dict[str, Any]
) -> Schedule:
    """Store a new schedule under the owner's reporter from validated ``fields``."""
    st = Store(runtime)
    await st.load(owner, REPORTERS, reporter_id)
    collection_ids = _unique(fields.pop("collection_ids", []))
    now = now_ms()
    schedule = Schedule(
        schedule_id=new_id("sch"),
        reporter_id=reporter_id,
        owner=owner,
        collection_ids=collection_ids,
        created_at=now,
        updated_at=now,
        **fields,
    )
    key = st.record(owner, SCHEDULES, schedule.schedule_id)
    txn = st.txn().exists(st.record(owner, REPORTERS, reporter_id))
    await _guard_workflow(st, txn, owner, reporter_id, schedule.workflow_id)
    await _attach(st, txn, owner, schedule.schedule_id, collection_ids)
    children = st.children(owner, REPORTER_SCHEDULES, reporter_id)
    txn.within(children, runtime.settings.quotas.schedules, "schedules in this reporter")
    txn.insert(key, schedule, children, schedule.schedule_id)
    _list_due(st, txn, schedule, now)
    if not await txn.commit():
        raise REPORTERS.missing()  # the reporter, its workflow or a collection went meanwhile
    return schedule


async def get_schedule(
    runtime: Runtime, owner: str, reporter_id: str, schedule_id: str
) -> Schedule:
    """The schedule of the owner's reporter; NotFound otherwise."""
    schedule, _ = await _load(Store(runtime), owner, reporter_id, schedule_id)
    return schedule


async def list_schedules(
    runtime: Runtime, owner: str, reporter_id: str, *, limit: int, cursor: str | None
) -> tuple[list[Schedule], str | None]:
    """A page of the reporter's schedules, newest first, and the next cursor."""
    st = Store(runtime)
    await st.load(owner, REPORTERS, reporter_id)
    key = st.children(owner, REPORTER_SCHEDULES, reporter_id)
    return await st.list(owner, SCHEDULES, key, limit=limit, cursor=cursor)


async def update_schedule(
    runtime: Runtime, owner: str, reporter_id: str, schedule_id: str, changes: dict[str, Any]
) -> Schedule:
    """Apply a partial update (``enabled`` included); ``collection_ids`` given replaces the
    attached collections."""
    st = Store(runtime)

    async def attempt() -> Schedule | None:
        current, raw = await _load(st, owner, reporter_id, schedule_id)
        fields = dict(changes)
        key = st.record(owner, SCHEDULES, schedule_id)
        txn = st.txn().unchanged(key, raw)
        if "workflow_id" in fields:
            await _guard_workflow(st, txn, owner, reporter_id, fields["workflow_id"])
        if "collection_ids" in fields:
            wanted = _unique(fields["collection_ids"])
            fields["collection_ids"] = wanted
            await _attach(
                st, txn, owner, schedule_id, [c for c in wanted if c not in current.collection_ids]
            )
            for gone in set(current.collection_ids) - set(wanted):
                txn.remove(st.children(owner, COLLECTION_SCHEDULES, gone), schedule_id)
        updated = revised(current, fields)
        if (updated.enabled, updated.interval_hours) != (current.enabled, current.interval_hours):
            _list_due(st, txn, updated, updated.updated_at)
        return updated if await txn.put(key, updated).commit() else None

    return await retrying(attempt)


async def delete_schedule(runtime: Runtime, owner: str, reporter_id: str, schedule_id: str) -> None:
    """Delete the reporter's schedule and detach it from its collections."""
    st = Store(runtime)

    async def attempt() -> bool | None:
        current, raw = await _load(st, owner, reporter_id, schedule_id)
        key = st.record(owner, SCHEDULES, schedule_id)
        txn = st.txn().unchanged(key, raw).delete(key)
        for collection_id in current.collection_ids:
            txn.remove(st.children(owner, COLLECTION_SCHEDULES, collection_id), schedule_id)
        txn.remove(st.children(owner, REPORTER_SCHEDULES, reporter_id), schedule_id)
        forget_runs(st, txn, owner, schedule_id)
        return True if await txn.commit() else None

    await retrying(attempt)


async def attach_collection(
    runtime: Runtime, owner: str, reporter_id: str, schedule_id: str, collection_id: str
) -> Schedule:
    """Attach the owner's collection to the schedule (attaching twice is a no-op)."""
    st = Store(runtime)
    await st.load(owner, COLLECTIONS, collection_id)  # before the schedule: a clear 404
    current = await get_schedule(runtime, owner, reporter_id, schedule_id)
    if collection_id in current.collection_ids:
        return current
    if len(current.collection_ids) >= MAX_COLLECTIONS:
        raise InvalidRequest(f"collection_ids: at most {MAX_COLLECTIONS} collections")
    return await update_schedule(
        runtime,
        owner,
        reporter_id,
        schedule_id,
        {"collection_ids": [*current.collection_ids, collection_id]},
    )


async def detach_collection(
    runtime: Runtime, owner: str, reporter_id: str, schedule_id: str, collection_id: str
) -> Schedule:
    """Detach a collection from the schedule; NotFound when it is not attached."""
    current = await get_schedule(runtime, owner, reporter_id, schedule_id)
    if collection_id not in current.collection_ids:
        raise COLLECTIONS.missing()
    kept = [c for c in current.collection_ids if c != collection_id]
    return await update_schedule(runtime, owner, reporter_id, schedule_id, {"collection_ids": kept})


async def load_schedule(runtime: Runtime, owner: str, schedule_id: str) -> tuple[Schedule, bytes]:
    """The owner's schedule and its stored bytes (for a guard on it); NotFound otherwise."""
    return await Store(runtime).load(owner, SCHEDULES, schedule_id)


def schedule_key(runtime: Runtime, owner: str, schedule_id: str) -> str:
    """The key of the schedule's record."""
    return runtime.store.keys.resource(owner, SCHEDULES.key, schedule_id)


def due_member(owner: str, schedule_id: str) -> str:
    """The schedule's member in its partition's due index."""
    return f"{owner} {schedule_id}"


def forget_runs(st: Store, txn: Txn, owner: str, schedule_id: str) -> None:
    """With a deleted schedule: out of the due index, its run marker and seen videos gone."""
    keys = st.keys
    txn.remove(keys.schedule_due(keys.partition(owner)), due_member(owner, schedule_id))
    txn.delete(keys.schedule_run(owner, schedule_id)).delete(keys.schedule_seen(owner, schedule_id))


# -- helpers -------------------------------------------------------------------------------------


def _unique(ids: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(ids))
    if len(out) > MAX_COLLECTIONS:
        raise InvalidRequest(f"collection_ids: at most {MAX_COLLECTIONS} collections")
    return out


def _list_due(st: Store, txn: Txn, schedule: Schedule, anchor_ms: int) -> None:
    """List an enabled schedule as due one interval after ``anchor_ms``; unlist a disabled one."""
    due = st.keys.schedule_due(st.keys.partition(schedule.owner))
    member = due_member(schedule.owner, schedule.schedule_id)
    if schedule.enabled:
        txn.add_at(due, member, anchor_ms + schedule.interval_hours * HOUR_MS)
    else:
        txn.remove(due, member)


async def _load(
    st: Store, owner: str, reporter_id: str, schedule_id: str
) -> tuple[Schedule, bytes]:
    await st.load(owner, REPORTERS, reporter_id)
    schedule, raw = await st.load(owner, SCHEDULES, schedule_id)
    if schedule.reporter_id != reporter_id:
        raise SCHEDULES.missing()
    return schedule, raw


async def _guard_workflow(
    st: Store, txn: Txn, owner: str, reporter_id: str, workflow_id: str
) -> None:
    """InvalidRequest unless ``workflow_id`` is one of the reporter's workflows; the Txn checks
    it still is when it commits."""
    listed = is_id(workflow_id, WORKFLOWS.prefix) and (
        await st.redis.zscore(st.children(owner, REPORTER_WORKFLOWS, reporter_id), workflow_id)
        is not None
    )
    if not listed:
        raise InvalidRequest("workflow_id: not a workflow of this reporter")
    txn.exists(st.record(owner, WORKFLOWS, workflow_id))


async def _attach(
    st: Store, txn: Txn, owner: str, schedule_id: str, collection_ids: Sequence[str]
) -> None:
    """NotFound unless every collection is the owner's; list the schedule under each."""
    for collection_id in collection_ids:
        await st.load(owner, COLLECTIONS, collection_id)
        txn.exists(st.record(owner, COLLECTIONS, collection_id))
        txn.add(st.children(owner, COLLECTION_SCHEDULES, collection_id), schedule_id)
