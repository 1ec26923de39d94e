"""The store's contract, on every backend: expected-version append, requests, leases."""

from __future__ import annotations

import pytest

from engine.errors import ConcurrencyConflict, IdempotencyMismatch, InsufficientBalance
from engine.log.events import ExecutionRequested, ExecutionStarted, Target, WorkflowSnapshot
from engine.log.ids import new_execution_id, new_id
from engine.log.store import EventStore

pytestmark = pytest.mark.anyio


def _requested(store: EventStore, owner: str, fee: int = 10_000) -> ExecutionRequested:
    return ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="transcript",
        target=Target(kind="youtube_video", item_id=new_id("itm")),
        workflow=WorkflowSnapshot(
            workflow_id=None, name="t", target_kind="youtube_video", steps=[]
        ),
        step_inputs=[],
        fee=fee,
        request_id=new_id("req"),
    )


async def test_append_refuses_a_stale_expected_seq(store: EventStore) -> None:
    owner = new_id("acc")
    await store.redis.set(store.keys.balance(owner), 10_000)
    req = _requested(store, owner)
    await store.admission.request(req)
    started = ExecutionStarted(execution_id=req.execution_id, worker_id="w1", epoch=1)
    [stamped] = await store.log.append(req.execution_id, 1, [started])
    assert stamped.seq == 2
    with pytest.raises(ConcurrencyConflict) as info:
        await store.log.append(req.execution_id, 1, [started])
    assert info.value.actual == 2
    assert [e.seq for e in await store.log.history(req.execution_id)] == [1, 2]
    log = await store.log.read_log(store.keys.partition(owner), "0-0", 10)
    assert [e.event.seq for e in log if e.event] == [1, 2]


async def test_request_charges_once_per_idempotency_key(store: EventStore) -> None:
    owner = new_id("acc")
    await store.redis.set(store.keys.balance(owner), 25_000)
    first = await store.admission.request(_requested(store, owner), idempotency=("k1", "body-a"))
    again = await store.admission.request(_requested(store, owner), idempotency=("k1", "body-a"))
    assert again.duplicate
    assert again.execution_id == first.execution_id
    with pytest.raises(IdempotencyMismatch):
        await store.admission.request(_requested(store, owner), idempotency=("k1", "body-b"))
    assert int(await store.redis.get(store.keys.balance(owner))) == 15_000


async def test_request_without_balance_appends_nothing(store: EventStore) -> None:
    owner = new_id("acc")
    await store.redis.set(store.keys.balance(owner), 9_999)
    req = _requested(store, owner)
    with pytest.raises(InsufficientBalance):
        await store.admission.request(req)
    assert await store.log.history(req.execution_id) == []
    assert int(await store.redis.get(store.keys.balance(owner))) == 9_999


async def test_lease_renewal_fails_after_takeover(store: EventStore) -> None:
    owner = new_id("acc")
    await store.redis.set(store.keys.balance(owner), 10_000)
    await store.admission.request(_requested(store, owner))
    p = store.keys.partition(owner)
    got = await store.leases.dispatch({p: 10}, "w1")
    ids = [lease.entry.entry_id for lease in got[p]]
    assert await store.leases.renew(p, "w1", ids) == [True]
    await store.leases.hand_back(p, "w1", ids)
    claimed = await store.leases.claim_expired(p, "w2", min_idle_ms=store.settings.lease_ms)
    assert [(e.entry_id, e.deliveries) for e in claimed] == [(ids[0], 2)]
    assert await store.leases.renew(p, "w1", ids) == [False]
    assert await store.leases.renew(p, "w2", ids) == [True]
