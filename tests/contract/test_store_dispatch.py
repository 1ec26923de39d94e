"""Fair dispatch on every backend (decision 0002): ``store.leases.dispatch`` leases executions
owners in turn from per-owner ready lists, skips owners at the per-owner cap, and counts an
owner's leases across all consumers until the lease ends, whoever holds it by then.

Leases here are an hour long, so nothing is ever idle long enough to be claimed by accident:
takeovers happen only through ``hand_back``.
"""

from __future__ import annotations

import pytest

from engine.log.events import ExecutionCancelRequested, ExecutionRequested
from engine.log.store import EventStore
from tests.contract.builders import FEE, funded, owner_in, requested

pytestmark = pytest.mark.anyio

P = 1


async def _queue(store: EventStore, owner: str, n: int) -> list[str]:
    """Accept ``n`` executions of ``owner``, in order; their ids."""
    await store.redis.incrby(store.keys.balance(owner), n * FEE)
    ids = []
    for _ in range(n):
        req = requested(store, owner)
        await store.admission.request(req)
        ids.append(req.execution_id)
    return ids


def _owners(store: EventStore, n: int) -> list[str]:
    """``n`` distinct owners of partition ``P``."""
    found: list[str] = []
    while len(found) < n:
        owner = owner_in(store, P)
        if owner not in found:
            found.append(owner)
    return found


async def _leased(store: EventStore, n: int, consumer: str = "w1", cap: int = 0) -> list[str]:
    """Execution ids ``consumer`` leases in partition ``P``, in lease order."""
    got = await store.leases.dispatch({P: n}, consumer, cap)
    return [
        lease.entry.event.execution_id
        for lease in got.get(P, [])
        if isinstance(lease.entry.event, ExecutionRequested)
    ]


async def test_owners_take_turns_whatever_their_backlog(store: EventStore) -> None:
    flooder, second, third = _owners(store, 3)
    flood = await _queue(store, flooder, 6)
    [two] = await _queue(store, second, 1)
    [three] = await _queue(store, third, 1)
    assert await store.leases.queued(P) == 8
    # Requested after all of the flood, leased in the first round all the same.
    assert await _leased(store, 4) == [flood[0], two, three, flood[1]]
    assert await store.leases.queued(P) == 4
    assert await _leased(store, 10, "w2") == flood[2:]
    assert await _leased(store, 10) == []
    assert await store.leases.queued(P) == 0
    assert await store.leases.leased(P) == {flooder: 6, second: 1, third: 1}


async def test_a_lease_carries_its_request_and_the_history_so_far(store: EventStore) -> None:
    owner = await funded(store, FEE, P)
    req = requested(store, owner)
    await store.admission.request(req)
    cancel = ExecutionCancelRequested(execution_id=req.execution_id, requested_by=owner)
    await store.log.append(req.execution_id, 1, [cancel])
    [lease] = (await store.leases.dispatch({P: 5}, "w1"))[P]
    assert lease.entry.deliveries == 1
    assert isinstance(lease.entry.event, ExecutionRequested)
    assert lease.entry.event.execution_id == req.execution_id
    assert [type(e) for e in lease.history] == [ExecutionRequested, ExecutionCancelRequested]
    assert lease.history[0] == lease.entry.event


async def test_an_owner_at_the_cap_is_skipped_not_waited_for(store: EventStore) -> None:
    capped, other = _owners(store, 2)
    mine = await _queue(store, capped, 4)
    [theirs] = await _queue(store, other, 1)
    assert await _leased(store, 10, cap=2) == [mine[0], theirs, mine[1]]
    # Another consumer sees the same cap: the leases are counted per owner, not per consumer.
    assert await _leased(store, 10, "w2", cap=2) == []
    assert await store.leases.leased(P) == {capped: 2, other: 1}
    assert await _leased(store, 10, "w2", cap=3) == [mine[2]]  # a larger cap lets one more go


async def test_a_released_lease_gives_its_slot_back_once(store: EventStore) -> None:
    owner = _owners(store, 1)[0]
    mine = await _queue(store, owner, 3)
    got = await store.leases.dispatch({P: 10}, "w1", 1)
    [first] = [lease.entry.entry_id for lease in got[P]]
    assert await _leased(store, 10, cap=1) == []
    await store.leases.release(P, [first])
    await store.leases.release(P, [first])  # a second release of the same lease changes nothing
    assert await store.leases.leased(P) == {}
    assert await _leased(store, 10, "w2", cap=1) == [mine[1]]
    assert await store.leases.leased(P) == {owner: 1}


async def test_a_takeover_keeps_the_slot_with_the_lease(hour_store: EventStore) -> None:
    store = hour_store
    owner = _owners(store, 1)[0]
    mine = await _queue(store, owner, 2)
    got = await store.leases.dispatch({P: 10}, "dead", 1)
    [entry] = [lease.entry for lease in got[P]]
    await store.leases.hand_back(P, "dead", [entry.entry_id])
    [claimed] = await store.leases.claim_expired(P, "heir", min_idle_ms=store.settings.lease_ms)
    assert (claimed.entry_id, claimed.deliveries, claimed.event) == (
        entry.entry_id,
        2,
        entry.event,
    )
    # The heir drives the execution on in the same slot: the owner is still at its cap.
    assert await store.leases.leased(P) == {owner: 1}
    assert await _leased(store, 10, "heir", cap=1) == []
    await store.leases.dead_letter_lease(P, claimed, "test")
    assert await store.leases.leased(P) == {}
    assert await _leased(store, 10, "heir", cap=1) == [mine[1]]


async def test_dispatch_reads_only_the_partitions_asked(store: EventStore) -> None:
    for p in store.partitions:
        await _queue(store, owner_in(store, p), 2)
    got = await store.leases.dispatch({0: 1, 2: 5}, "w1")
    assert {p: len(got[p]) for p in got} == {0: 1, 2: 2}
    got = await store.leases.dispatch({p: 5 for p in store.partitions}, "w1")
    assert {p: len(got[p]) for p in got} == {0: 1, 1: 2, 3: 2}
