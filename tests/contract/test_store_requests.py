"""``store.admission.request``: the flat fee, its ledger entry, idempotency and the 402 path, on
every backend. A request is one script in one slot, so each outcome is all or nothing."""

from __future__ import annotations

import pytest

from engine.errors import IdempotencyMismatch, InsufficientBalance, StoreError
from engine.log.admission import IDEMPOTENCY_TTL_S
from engine.log.events import ExecutionRequested
from engine.log.ids import new_id
from engine.log.store import EventStore
from tests.contract.builders import FEE, balance, funded, requested

pytestmark = pytest.mark.anyio


async def test_request_charges_the_fee_and_appends_seq_1(store: EventStore) -> None:
    owner = await funded(store, 25_000)
    req = requested(store, owner)
    accepted = await store.admission.request(req)
    assert (accepted.execution_id, accepted.duplicate, accepted.balance) == (
        req.execution_id,
        False,
        15_000,
    )
    assert await balance(store, owner) == 15_000
    [event] = await store.log.history(req.execution_id)
    assert isinstance(event, ExecutionRequested)
    assert (event.seq, event.owner, event.fee) == (1, owner, FEE)
    assert event.at > 0
    [entry] = await store.log.read_log(store.keys.partition(owner), "0-0", 10)
    assert entry.event == event


async def test_request_writes_one_ledger_entry_per_fee(store: EventStore) -> None:
    owner = await funded(store, 25_000)
    req = requested(store, owner)
    await store.admission.request(req)
    rows = await store.redis.xrange(store.keys.ledger(owner), "-", "+")
    assert len(rows) == 1
    fields = {k.decode(): v.decode() for k, v in rows[0][1].items()}
    assert fields["charge_id"] == f"fee:{req.execution_id}"
    assert fields["kind"] == "fee"
    assert fields["amount"] == str(-FEE)
    assert fields["balance"] == "15000"
    assert fields["execution_id"] == req.execution_id


async def test_a_free_request_writes_no_ledger_entry(store: EventStore) -> None:
    owner = await funded(store, 0)
    accepted = await store.admission.request(requested(store, owner, fee=0))
    assert accepted.balance == 0
    assert await store.redis.xlen(store.keys.ledger(owner)) == 0


async def test_insufficient_balance_appends_and_records_nothing(store: EventStore) -> None:
    owner = await funded(store, FEE - 1)
    req = requested(store, owner)
    with pytest.raises(InsufficientBalance):
        await store.admission.request(req, idempotency=("k1", "body"))
    assert await store.log.history(req.execution_id) == []
    assert await store.log.read_log(store.keys.partition(owner), "0-0", 10) == []
    assert await store.redis.xlen(store.keys.ledger(owner)) == 0
    assert await balance(store, owner) == FEE - 1
    # The refused request left no idempotency record: after a top-up the same key is accepted.
    await store.redis.incrby(store.keys.balance(owner), 1)
    accepted = await store.admission.request(req, idempotency=("k1", "body"))
    assert not accepted.duplicate
    assert accepted.execution_id == req.execution_id


async def test_an_unfunded_account_cannot_pay(store: EventStore) -> None:
    owner = new_id("acc")
    with pytest.raises(InsufficientBalance):
        await store.admission.request(requested(store, owner))


async def test_same_key_and_body_returns_the_first_execution(store: EventStore) -> None:
    owner = await funded(store, 25_000)
    first = requested(store, owner)
    second = requested(store, owner)
    await store.admission.request(first, idempotency=("k1", "body-a"))
    again = await store.admission.request(second, idempotency=("k1", "body-a"))
    assert again.duplicate
    assert again.execution_id == first.execution_id
    assert await store.log.history(second.execution_id) == []
    assert await store.log.log_length(store.keys.partition(owner)) == 1
    assert await balance(store, owner) == 15_000
    assert await store.redis.xlen(store.keys.ledger(owner)) == 1


async def test_same_key_other_body_is_a_mismatch_and_charges_nothing(store: EventStore) -> None:
    owner = await funded(store, 25_000)
    await store.admission.request(requested(store, owner), idempotency=("k1", "body-a"))
    other = requested(store, owner)
    with pytest.raises(IdempotencyMismatch):
        await store.admission.request(other, idempotency=("k1", "body-b"))
    assert await store.log.history(other.execution_id) == []
    assert await balance(store, owner) == 15_000


async def test_idempotency_keys_are_per_owner(store: EventStore) -> None:
    a = await funded(store, FEE)
    b = await funded(store, FEE)
    ra = await store.admission.request(requested(store, a), idempotency=("k1", "body"))
    rb = await store.admission.request(requested(store, b), idempotency=("k1", "body"))
    assert not ra.duplicate
    assert not rb.duplicate
    assert ra.execution_id != rb.execution_id


async def test_idempotency_record_lives_24_hours(store: EventStore) -> None:
    owner = await funded(store, FEE)
    await store.admission.request(requested(store, owner), idempotency=("k1", "body"))
    ttl_ms = await store.redis.pttl(store.keys.idempotency(owner, "k1"))
    assert IDEMPOTENCY_TTL_S * 1000 - 60_000 < ttl_ms <= IDEMPOTENCY_TTL_S * 1000


async def test_without_a_key_no_idempotency_record_is_kept(store: EventStore) -> None:
    owner = await funded(store, 2 * FEE)
    await store.admission.request(requested(store, owner))
    await store.admission.request(requested(store, owner))
    assert await store.redis.exists(store.keys.idempotency(owner, "-")) == 0
    assert await balance(store, owner) == 0


@pytest.mark.parametrize("how", ["deleted", "expired"])
async def test_an_expired_key_starts_a_new_execution(store: EventStore, how: str) -> None:
    owner = await funded(store, 2 * FEE)
    first = await store.admission.request(requested(store, owner), idempotency=("k1", "body"))
    key = store.keys.idempotency(owner, "k1")
    if how == "deleted":
        await store.redis.delete(key)
    else:
        # An expiry time in the past removes the key at once: what 24 h of waiting would do.
        await store.redis.pexpireat(key, 1)
    second = await store.admission.request(
        requested(store, owner), idempotency=("k1", "other body")
    )
    assert not second.duplicate
    assert second.execution_id != first.execution_id
    assert await balance(store, owner) == 0


async def test_an_existing_execution_id_is_refused_without_charge(store: EventStore) -> None:
    owner = await funded(store, 2 * FEE)
    req = requested(store, owner)
    await store.admission.request(req)
    with pytest.raises(StoreError):
        await store.admission.request(req)
    assert len(await store.log.history(req.execution_id)) == 1
    assert await balance(store, owner) == FEE
