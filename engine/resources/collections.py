"""Collections ``col_``: named sets of the owner's items.

Membership is two zsets kept together in every write: the collection's items (``colitems``) and,
per item, the collections holding it (``itemcols``), so deleting an item detaches it everywhere
without a scan. A collection also knows the schedules it is attached to (``colschs``): deleting
it detaches it from each of them in the same script.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.clock import now_ms
from engine.log.ids import is_id, new_id
from engine.resources.items import ITEMS, Item
from engine.resources.records import COLLECTIONS, SCHEDULES, Collection
from engine.resources.relations import (
    COLLECTION_ITEMS,
    COLLECTION_SCHEDULES,
    ITEM_COLLECTIONS,
)
from engine.resources.store import Store, retrying, revised
from engine.runtime import Runtime

_ITEM_PAGE = 100  # items read per page when a collection is walked whole


async def create_collection(runtime: Runtime, owner: str, fields: dict[str, Any]) -> Collection:
    """Store a new collection of ``owner`` from validated ``fields`` (name, description, …)."""
    now = now_ms()
    collection = Collection(
        collection_id=new_id("col"), owner=owner, created_at=now, updated_at=now, **fields
    )
    st = Store(runtime)
    key = st.record(owner, COLLECTIONS, collection.collection_id)
    index = st.index(owner, COLLECTIONS)
    txn = st.txn().within(index, runtime.settings.quotas.collections, "collections")
    await txn.insert(key, collection, index, collection.collection_id).commit()
    return collection


async def get_collection(runtime: Runtime, owner: str, collection_id: str) -> Collection:
    """The owner's collection; NotFound when it is missing or someone else's."""
    collection, _ = await Store(runtime).load(owner, COLLECTIONS, collection_id)
    return collection


async def list_collections(
    runtime: Runtime, owner: str, *, limit: int, cursor: str | None
) -> tuple[list[Collection], str | None]:
    """A page of the owner's collections, newest first, and the next cursor."""
    st = Store(runtime)
    return await st.list(
        owner, COLLECTIONS, st.index(owner, COLLECTIONS), limit=limit, cursor=cursor
    )


async def update_collection(
    runtime: Runtime, owner: str, collection_id: str, changes: dict[str, Any]
) -> Collection:
    """Apply a partial update (only the fields given) to the owner's collection."""
    st = Store(runtime)

    async def attempt() -> Collection | None:
        current, raw = await st.load(owner, COLLECTIONS, collection_id)
        updated = revised(current, changes)
        key = st.record(owner, COLLECTIONS, collection_id)
        return updated if await st.txn().unchanged(key, raw).put(key, updated).commit() else None

    return await retrying(attempt)


async def delete_collection(runtime: Runtime, owner: str, collection_id: str) -> None:
    """Delete the collection, take it out of its items' memberships and detach it from every
    schedule it was attached to."""
    st = Store(runtime)

    async def attempt() -> bool | None:
        _, raw = await st.load(owner, COLLECTIONS, collection_id)
        key = st.record(owner, COLLECTIONS, collection_id)
        items_key = st.children(owner, COLLECTION_ITEMS, collection_id)
        schedules_key = st.children(owner, COLLECTION_SCHEDULES, collection_id)
        item_ids = await st.members(items_key)
        schedule_ids = await st.members(schedules_key)
        txn = st.txn().unchanged(key, raw).exactly(items_key, item_ids)
        txn.exactly(schedules_key, schedule_ids)
        for item_id in item_ids:
            txn.remove(st.children(owner, ITEM_COLLECTIONS, item_id), collection_id)
        for schedule_id in schedule_ids:
            schedule, schedule_raw = await st.load(owner, SCHEDULES, schedule_id)
            schedule_key = st.record(owner, SCHEDULES, schedule_id)
            kept = [c for c in schedule.collection_ids if c != collection_id]
            detached = msgspec.structs.replace(schedule, collection_ids=kept, updated_at=now_ms())
            txn.unchanged(schedule_key, schedule_raw).put(schedule_key, detached)
        txn.delete(items_key).delete(schedules_key).delete(key)
        txn.remove(st.index(owner, COLLECTIONS), collection_id)
        return True if await txn.commit() else None

    await retrying(attempt)


async def add_item(runtime: Runtime, owner: str, collection_id: str, item_id: str) -> Item:
    """Put the owner's item in the owner's collection (a second add is a no-op); NotFound when
    either is missing or someone else's."""
    st = Store(runtime)

    async def attempt() -> Item | None:
        await st.load(owner, COLLECTIONS, collection_id)
        item, item_raw = await st.load(owner, ITEMS, item_id)
        collection_key = st.record(owner, COLLECTIONS, collection_id)
        txn = st.txn().exists(collection_key)
        txn.unchanged(st.record(owner, ITEMS, item_id), item_raw)
        txn.add(st.children(owner, COLLECTION_ITEMS, collection_id), item_id)
        txn.add(st.children(owner, ITEM_COLLECTIONS, item_id), collection_id)
        return item if await txn.commit() else None

    return await retrying(attempt)


async def remove_item(runtime: Runtime, owner: str, collection_id: str, item_id: str) -> None:
    """Take an item out of the owner's collection; NotFound when it is not in it."""
    st = Store(runtime)
    await st.load(owner, COLLECTIONS, collection_id)
    items_key = st.children(owner, COLLECTION_ITEMS, collection_id)
    if not is_id(item_id, ITEMS.prefix) or await runtime.redis.zscore(items_key, item_id) is None:
        raise ITEMS.missing()
    txn = st.txn().remove(items_key, item_id)
    await txn.remove(st.children(owner, ITEM_COLLECTIONS, item_id), collection_id).commit()


async def list_items(
    runtime: Runtime, owner: str, collection_id: str, *, limit: int, cursor: str | None
) -> tuple[list[Item], str | None]:
    """A page of the items in the owner's collection, newest first, and the next cursor."""
    st = Store(runtime)
    await st.load(owner, COLLECTIONS, collection_id)
    key = st.children(owner, COLLECTION_ITEMS, collection_id)
    return await st.list(owner, ITEMS, key, limit=limit, cursor=cursor)


async def collection_items(
    runtime: Runtime, owner: str, collection_id: str, target_kind: str, max_items: int
) -> list[Item]:
    """Up to ``max_items`` items of the collection that a ``target_kind`` workflow runs on
    (``collection``: every item; an item type: the items of that type), oldest first."""
    found: list[Item] = []
    cursor: str | None = None
    while True:
        page, cursor = await list_items(
            runtime, owner, collection_id, limit=_ITEM_PAGE, cursor=cursor
        )
        found.extend(i for i in page if target_kind in ("collection", i.type))
        if cursor is None:
            break
    found.reverse()  # pages are newest first; items run in the order they were added
    return found[:max_items]
