"""The worker group on every backend (``store.leases``): on the logs, ``read_group`` across
partitions, ``ack``/``ack_many``, ``reclaim_log`` and ``dead_letter``; on the work streams, leases
taken by ``dispatch`` (``renew``, ``hand_back``, ``claim_expired``, ``release``,
``dead_letter_lease``).

Leases here are an hour long, so an entry a test has just touched is never idle long enough to
be claimed by accident, however slow the machine: takeovers happen only through ``hand_back``.
"""

from __future__ import annotations

import pytest

from engine.log.entries import Entry
from engine.log.events import ExecutionRequested
from engine.log.store import EventStore
from tests.contract.builders import started_execution

pytestmark = pytest.mark.anyio


async def _pending(store: EventStore, partition: int) -> list[str]:
    """Every lease still pending in ``partition`` (claiming them all is the observable way)."""
    return [
        e.entry_id for e in await store.leases.claim_expired(partition, "observer", min_idle_ms=0)
    ]


async def _pending_log(store: EventStore, partition: int) -> list[str]:
    """Every log entry still pending in ``partition``, the same way."""
    return [
        e.entry_id for e in await store.leases.reclaim_log(partition, "observer", min_idle_ms=0)
    ]


async def _one_leased(store: EventStore, consumer: str = "w1") -> tuple[int, Entry]:
    req = await started_execution(store, partition=1)
    got = await store.leases.dispatch({1: 10}, consumer)
    [entry] = [lease.entry for lease in got[1]]
    assert isinstance(entry.event, ExecutionRequested)
    assert entry.event.execution_id == req.execution_id
    return 1, entry


async def test_read_group_delivers_each_partition_once(store: EventStore) -> None:
    reqs = {p: await started_execution(store, partition=p) for p in store.partitions}
    got = await store.leases.read_group(list(store.partitions), "w1", 10)
    assert sorted(got) == list(store.partitions)
    for p, entries in got.items():
        assert [e.event.execution_id for e in entries if e.event] == [reqs[p].execution_id]
        assert [e.deliveries for e in entries] == [1]
    assert await store.leases.read_group(list(store.partitions), "w1", 10) == {}
    assert await store.leases.read_group(list(store.partitions), "w2", 10) == {}


async def test_read_group_splits_entries_between_consumers(store: EventStore) -> None:
    xids = {(await started_execution(store, partition=0)).execution_id for _ in range(5)}
    first = await store.leases.read_group([0], "w1", 2)
    second = await store.leases.read_group([0], "w2", 10)
    got = [e.event.execution_id for e in first[0] + second[0] if e.event]
    assert len(first[0]) == 2
    assert sorted(got) == sorted(xids)


async def test_read_group_only_reads_the_partitions_asked(store: EventStore) -> None:
    await started_execution(store, partition=0)
    await started_execution(store, partition=2)
    got = await store.leases.read_group([2, 3], "w1", 10)
    assert list(got) == [2]
    assert list(await store.leases.read_group([0, 1], "w1", 10)) == [0]


async def test_release_ends_the_lease(hour_store: EventStore) -> None:
    p, entry = await _one_leased(hour_store)
    await hour_store.leases.release(p, [entry.entry_id])
    await hour_store.leases.release(p, [])
    assert await hour_store.leases.renew(p, "w1", [entry.entry_id]) == [False]
    assert await _pending(hour_store, p) == []
    assert await hour_store.leases.leased(p) == {}


async def test_ack_ends_a_log_entrys_delivery(store: EventStore) -> None:
    await started_execution(store, partition=1)
    [entry] = (await store.leases.read_group([1], "w1", 10))[1]
    await store.leases.ack(1, [entry.entry_id])
    await store.leases.ack(1, [])
    assert await _pending_log(store, 1) == []


async def test_ack_many_acknowledges_every_partition(store: EventStore) -> None:
    for p in store.partitions:
        await started_execution(store, partition=p)
        await started_execution(store, partition=p)
    got = await store.leases.read_group(list(store.partitions), "w1", 10)
    keep = {p: entries[1].entry_id for p, entries in got.items()}
    await store.leases.ack_many({p: [entries[0].entry_id] for p, entries in got.items()} | {99: []})
    await store.leases.ack_many({})
    for p in store.partitions:
        assert await _pending_log(store, p) == [keep[p]]


async def test_renew_keeps_only_leases_still_held(hour_store: EventStore) -> None:
    await started_execution(hour_store, partition=1)
    await started_execution(hour_store, partition=1)
    got = await hour_store.leases.dispatch({1: 10}, "w1")
    ids = [lease.entry.entry_id for lease in got[1]]
    assert await hour_store.leases.renew(1, "w1", ids) == [True, True]
    assert await hour_store.leases.renew(1, "w2", ids) == [False, False]
    assert await hour_store.leases.renew(1, "w1", ["0-1"]) == [False]
    assert await hour_store.leases.renew(1, "w1", []) == []
    # Renewal resets the idle time, so nothing is up for takeover.
    assert (
        await hour_store.leases.claim_expired(1, "w2", min_idle_ms=hour_store.settings.lease_ms)
        == []
    )


async def test_takeover_bumps_the_delivery_count_each_time(hour_store: EventStore) -> None:
    p, entry = await _one_leased(hour_store)
    assert (
        await hour_store.leases.claim_expired(p, "w2", min_idle_ms=hour_store.settings.lease_ms)
        == []
    )
    await hour_store.leases.hand_back(p, "w1", [entry.entry_id])
    [claimed] = await hour_store.leases.claim_expired(
        p, "w2", min_idle_ms=hour_store.settings.lease_ms
    )
    assert (claimed.entry_id, claimed.deliveries, claimed.raw) == (entry.entry_id, 2, entry.raw)
    assert claimed.event == entry.event
    assert await hour_store.leases.renew(p, "w1", [entry.entry_id]) == [False]
    assert await hour_store.leases.renew(p, "w2", [entry.entry_id]) == [True]
    await hour_store.leases.hand_back(p, "w2", [entry.entry_id])
    [again] = await hour_store.leases.claim_expired(
        p, "w3", min_idle_ms=hour_store.settings.lease_ms
    )
    assert again.deliveries == 3
    assert await hour_store.leases.renew(p, "w2", [entry.entry_id]) == [False]
    assert await hour_store.leases.renew(p, "w3", [entry.entry_id]) == [True]


async def test_a_stale_hand_back_leaves_the_new_holder_alone(hour_store: EventStore) -> None:
    p, entry = await _one_leased(hour_store)
    await hour_store.leases.hand_back(p, "w1", [entry.entry_id])
    await hour_store.leases.claim_expired(p, "w2", min_idle_ms=hour_store.settings.lease_ms)
    await hour_store.leases.hand_back(p, "w1", [entry.entry_id])
    assert (
        await hour_store.leases.claim_expired(p, "w3", min_idle_ms=hour_store.settings.lease_ms)
        == []
    )
    assert await hour_store.leases.renew(p, "w2", [entry.entry_id]) == [True]


async def test_claim_expired_pages_through_every_expired_entry(hour_store: EventStore) -> None:
    for _ in range(7):
        await started_execution(hour_store, partition=2)
    got = await hour_store.leases.dispatch({2: 10}, "w1")
    ids = [lease.entry.entry_id for lease in got[2]]
    await hour_store.leases.hand_back(2, "w1", ids)
    claimed = await hour_store.leases.claim_expired(
        2, "w2", min_idle_ms=hour_store.settings.lease_ms, count=3
    )
    assert sorted(e.entry_id for e in claimed) == sorted(ids)
    assert {e.deliveries for e in claimed} == {2}
    assert await hour_store.leases.renew(2, "w2", ids) == [True] * 7


async def test_dead_letter_moves_and_acknowledges(hour_store: EventStore) -> None:
    p, entry = await _one_leased(hour_store)
    await hour_store.leases.hand_back(p, "w1", [entry.entry_id])
    [claimed] = await hour_store.leases.claim_expired(
        p, "w2", min_idle_ms=hour_store.settings.lease_ms
    )
    await hour_store.leases.dead_letter_lease(p, claimed, "delivered 2 times")
    [dead] = await hour_store.leases.dead_letters(p)
    assert dead["entry_id"] == entry.entry_id
    assert dead["reason"] == "delivered 2 times"
    assert dead["deliveries"] == "2"
    assert dead["e"].encode() == entry.raw
    assert int(dead["at"]) > 0
    assert dead["dead_id"]
    assert await _pending(hour_store, p) == []
    assert await hour_store.leases.renew(p, "w2", [entry.entry_id]) == [False]
    assert await hour_store.leases.leased(p) == {}  # the owner's cap slot is given back
    # The log itself keeps the request: dead-lettering ends its delivery, not its history.
    assert [e.event for e in await hour_store.log.read_log(p, "0-0", 10)] == [entry.event]


async def test_dead_letters_lists_oldest_first_and_per_partition(store: EventStore) -> None:
    for _ in range(3):
        await started_execution(store, partition=0)
    got = await store.leases.read_group([0], "w1", 10)
    for i, entry in enumerate(got[0]):
        await store.leases.dead_letter(0, entry, f"reason {i}")
    assert [d["reason"] for d in await store.leases.dead_letters(0)] == [
        f"reason {i}" for i in range(3)
    ]
    assert [d["reason"] for d in await store.leases.dead_letters(0, count=2)] == [
        "reason 1",
        "reason 2",
    ]
    assert await store.leases.dead_letters(1) == []


async def test_an_undecodable_entry_is_delivered_for_dead_lettering(store: EventStore) -> None:
    await store.redis.xadd(store.keys.log(3), {"e": b"\xffgarbage"})
    [entry] = (await store.leases.read_group([3], "w1", 10))[3]
    assert (entry.event, entry.raw) == (None, b"\xffgarbage")
    await store.leases.dead_letter(3, entry, "undecodable")
    assert [d["reason"] for d in await store.leases.dead_letters(3)] == ["undecodable"]
    assert await _pending_log(store, 3) == []


async def test_read_group_raw_reads_the_type_without_decoding(store: EventStore) -> None:
    req = await started_execution(store, partition=0)
    await store.redis.xadd(store.keys.log(0), {"e": b"\xffgarbage"})
    [raw, garbage] = (await store.leases.read_group_raw([0], "w1", 10))[0]
    assert raw.event_type == "ExecutionRequested"
    entry = raw.decode()
    assert isinstance(entry.event, ExecutionRequested)
    assert entry.event.execution_id == req.execution_id
    assert (entry.entry_id, entry.raw, entry.deliveries) == (raw.entry_id, raw.raw, 1)
    assert garbage.event_type is None
    assert garbage.decode().event is None
    assert await store.leases.read_group_raw([0], "w1", 10) == {}
