"""The worker group on every backend (``store.leases``): on the work streams, leases taken by
``dispatch`` (``renew``, ``renew_many``, ``hand_back``, ``claim_expired``, ``release``,
``dead_letter_lease``); and the cancel sets the appends keep (``cancelled``). Workers do not read
the partition logs: no group is left on them.

Leases here are an hour long, so an entry a test has just touched is never idle long enough to
be claimed by accident, however slow the machine: takeovers happen only through ``hand_back``.
"""

from __future__ import annotations

import pytest

from engine.errors import ConcurrencyConflict
from engine.log.entries import Entry
from engine.log.events import ExecutionCancelled, ExecutionCancelRequested, ExecutionRequested
from engine.log.store import EventStore
from tests.contract.builders import started_execution

pytestmark = pytest.mark.anyio


async def _pending(store: EventStore, partition: int) -> list[str]:
    """Every lease still pending in ``partition`` (claiming them all is the observable way)."""
    return [
        e.entry_id for e in await store.leases.claim_expired(partition, "observer", min_idle_ms=0)
    ]


async def _one_leased(store: EventStore, consumer: str = "w1") -> tuple[int, Entry]:
    req = await started_execution(store, partition=1)
    got = await store.leases.dispatch({1: 10}, consumer)
    [entry] = [lease.entry for lease in got[1]]
    assert isinstance(entry.event, ExecutionRequested)
    assert entry.event.execution_id == req.execution_id
    return 1, entry


async def test_release_ends_the_lease(hour_store: EventStore) -> None:
    p, entry = await _one_leased(hour_store)
    await hour_store.leases.release(p, [entry.entry_id])
    await hour_store.leases.release(p, [])
    assert await hour_store.leases.renew(p, "w1", [entry.entry_id]) == [False]
    assert await _pending(hour_store, p) == []
    assert await hour_store.leases.leased(p) == {}


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
    got = await store.leases.dispatch({0: 10}, "w1")
    for i, lease in enumerate(got[0]):
        await store.leases.dead_letter_lease(0, lease.entry, f"reason {i}")
    assert [d["reason"] for d in await store.leases.dead_letters(0)] == [
        f"reason {i}" for i in range(3)
    ]
    assert [d["reason"] for d in await store.leases.dead_letters(0, count=2)] == [
        "reason 1",
        "reason 2",
    ]
    assert await store.leases.dead_letters(1) == []


async def test_renew_many_renews_every_partition_in_one_call(hour_store: EventStore) -> None:
    ids: dict[int, list[str]] = {}
    for p in (0, 2):
        await started_execution(hour_store, partition=p)
        got = await hour_store.leases.dispatch({p: 10}, "w1")
        ids[p] = [lease.entry.entry_id for lease in got[p]]
    asked = {0: ids[0], 2: [*ids[2], "0-1"], 3: []}
    assert await hour_store.leases.renew_many(asked, "w1") == {
        0: [True],
        2: [True, False],
        3: [],
    }
    assert await hour_store.leases.renew_many(asked, "w2") == {0: [False], 2: [False, False], 3: []}
    assert await hour_store.leases.renew_many({}, "w1") == {}


async def test_a_cancel_request_marks_its_execution_until_it_ends(store: EventStore) -> None:
    a = await started_execution(store, partition=1)
    b = await started_execution(store, partition=1)
    c = await started_execution(store, partition=3)
    asked = {1: [a.execution_id, b.execution_id], 3: [c.execution_id]}
    assert await store.leases.cancelled(asked) == set()
    for req in (a, c):
        cancel = ExecutionCancelRequested(execution_id=req.execution_id, requested_by=req.owner)
        await store.log.append(req.execution_id, 1, [cancel])
    assert await store.leases.cancelled(asked) == {a.execution_id, c.execution_id}
    # A cancel refused by its expected seq marks nothing.
    late = ExecutionCancelRequested(execution_id=b.execution_id, requested_by=b.owner)
    with pytest.raises(ConcurrencyConflict):
        await store.log.append(b.execution_id, 5, [late])
    # The end of the execution clears its mark.
    await store.log.append(a.execution_id, 2, [ExecutionCancelled(execution_id=a.execution_id)])
    assert await store.leases.cancelled(asked) == {c.execution_id}
    assert await store.leases.cancelled({}) == set()


async def test_no_group_is_left_on_the_logs(store: EventStore) -> None:
    for p in store.partitions:
        assert await store.redis.xinfo_groups(store.keys.log(p)) == []


async def test_claim_expired_many_takes_over_every_partition_at_once(
    hour_store: EventStore,
) -> None:
    handed: dict[int, list[str]] = {}
    for p, n in ((0, 1), (2, 3)):
        for _ in range(n):
            await started_execution(hour_store, partition=p)
        got = await hour_store.leases.dispatch({p: 10}, "w1")
        handed[p] = [lease.entry.entry_id for lease in got[p]]
        await hour_store.leases.hand_back(p, "w1", handed[p])
    lease_ms = hour_store.settings.lease_ms
    # A page of two: partition 2's third lease comes from a second page.
    claimed = await hour_store.leases.claim_expired_many(
        [0, 1, 2, 3], "w2", min_idle_ms=lease_ms, count=2
    )
    assert sorted(claimed) == [0, 2]
    for p, entries in claimed.items():
        assert sorted(e.entry_id for e in entries) == sorted(handed[p])
        assert {e.deliveries for e in entries} == {2}
        assert await hour_store.leases.renew(p, "w2", handed[p]) == [True] * len(handed[p])
    assert await hour_store.leases.claim_expired_many([0, 2], "w3", min_idle_ms=lease_ms) == {}
