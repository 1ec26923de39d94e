"""Money moved by the expected-seq append (engine.money.billing): reservations, settlements and
releases change the owner's balance, ledger and applied-charges hash in the same script as their
events, on every backend (and on the cluster: tests/cluster). The audit recomputes the account."""

from __future__ import annotations

import pytest

from engine.errors import BalanceRefused, ConcurrencyConflict
from engine.log.event_log import AppendOp
from engine.log.events import (
    AnyEvent,
    CostCharged,
    ExecutionRequested,
    ExecutionStarted,
    StepCompleted,
    StepStarted,
)
from engine.log.store import EventStore
from engine.money import accounts, billing
from engine.money.audit import audit_account
from engine.runtime import Runtime
from tests.contract.builders import FEE, balance, requested

pytestmark = pytest.mark.anyio


async def account(runtime: Runtime, micro: int, partition: int | None = None) -> str:
    """A new account opened with ``micro`` (its opening credit is in its ledger), in
    ``partition`` when one is given (ids are random: open accounts until one lands there)."""
    while True:
        made, _ = await accounts.create_account(runtime, name="money", coins_micro=micro)
        if partition is None or runtime.store.keys.partition(made.account_id) == partition:
            return made.account_id


async def accepted(runtime: Runtime, owner: str) -> ExecutionRequested:
    """An execution of ``owner`` whose fee was charged (seq 1)."""
    req = requested(runtime.store, owner)
    await runtime.store.admission.request(req)
    return req


def started(xid: str, estimate: int, attempt: int = 1) -> list[AnyEvent]:
    """ExecutionStarted, the reservation of step 0 and its StepStarted."""
    return [
        ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
        billing.reservation(xid, 0, attempt, estimate),
        StepStarted(execution_id=xid, step_index=0, attempt=attempt, epoch=1, worker_id="w1"),
    ]


def settled(xid: str, estimate: int, cost: int) -> list[AnyEvent]:
    """Step 0 completed: its reservation released and its actual cost charged."""
    return [
        StepCompleted(execution_id=xid, step_index=0, attempt=1, cost=cost),
        *billing.releases([billing.reservation(xid, 0, 1, estimate)], "settled"),
        billing.settlement(xid, 0, 1, cost),
    ]


async def append(
    store: EventStore, xid: str, seq: int, events: list[AnyEvent], *, owner: str
) -> list[AnyEvent]:
    """``store.log.append`` with the balance moves of ``events``, as the worker appends them."""
    return await store.log.append(xid, seq, events, owner=owner, moves=billing.moves_of(events))


async def ledger(store: EventStore, owner: str) -> list[dict[str, str]]:
    rows = await store.redis.xrange(store.keys.ledger(owner), "-", "+")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


async def applied(store: EventStore, owner: str, charge_id: str) -> str | None:
    value = await store.redis.hget(store.keys.charges(store.keys.partition(owner)), charge_id)
    return None if value is None else value.decode()


async def test_reserve_settle_release_move_the_balance_with_their_events(runtime: Runtime) -> None:
    store = runtime.store
    owner = await account(runtime, 100_000)
    req = await accepted(runtime, owner)
    xid = req.execution_id
    await append(store, xid, 1, started(xid, 5_000), owner=owner)
    assert await balance(store, owner) == 100_000 - FEE - 5_000
    entry = (await ledger(store, owner))[-1]
    assert entry.pop("at")
    assert entry == {
        "charge_id": f"reserve:{xid}:0:1",
        "kind": "reserve",
        "amount": "-5000",
        "balance": "85000",
        "execution_id": xid,
    }
    assert await applied(store, owner, f"reserve:{xid}:0:1") == "-5000"

    await append(store, xid, 4, settled(xid, 5_000, 3_000), owner=owner)
    assert await balance(store, owner) == 100_000 - FEE - 3_000
    rows = await ledger(store, owner)
    assert [(r["kind"], r["amount"], r["balance"]) for r in rows] == [
        ("credit", "100000", "100000"),
        ("fee", "-10000", "90000"),
        ("reserve", "-5000", "85000"),
        ("release", "5000", "90000"),
        ("settle", "-3000", "87000"),
    ]
    audit = await audit_account(runtime, owner)
    assert audit.ok, audit.problems
    assert (audit.credits, audit.charges, audit.releases) == (100_000, 18_000, 5_000)
    assert audit.held == {}


async def test_a_stale_append_moves_no_money(runtime: Runtime) -> None:
    store = runtime.store
    owner = await account(runtime, 100_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started(xid, 5_000), owner=owner)
    before = (await balance(store, owner), await ledger(store, owner))
    # A worker that lost its lease settles the step it was running: refused, nothing moves.
    with pytest.raises(ConcurrencyConflict):
        await append(store, xid, 1, settled(xid, 5_000, 3_000), owner=owner)
    assert (await balance(store, owner), await ledger(store, owner)) == before
    assert await applied(store, owner, f"settle:{xid}:0:1") is None
    assert len(await store.log.history(xid)) == 4


async def test_a_move_the_balance_cannot_cover_refuses_the_whole_append(
    runtime: Runtime,
) -> None:
    store = runtime.store
    owner = await account(runtime, FEE + 10)
    xid = (await accepted(runtime, owner)).execution_id
    with pytest.raises(BalanceRefused) as info:
        await append(store, xid, 1, started(xid, 11), owner=owner)
    assert (info.value.event_index, info.value.available) == (1, 10)
    assert [e.seq for e in await store.log.history(xid)] == [1]
    assert await balance(store, owner) == 10
    assert [r["kind"] for r in await ledger(store, owner)] == ["credit", "fee"]
    assert await applied(store, owner, f"reserve:{xid}:0:1") is None
    # Exactly the balance is enough: it reaches 0, never below.
    await append(store, xid, 1, started(xid, 10), owner=owner)
    assert await balance(store, owner) == 0


async def test_the_release_pays_before_the_charge_and_a_capped_charge_fits(
    runtime: Runtime,
) -> None:
    store = runtime.store
    owner = await account(runtime, FEE + 5_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started(xid, 5_000), owner=owner)
    assert await balance(store, owner) == 0
    # The actual cost (7,000) exceeds what the released reservation gives back (5,000).
    events = settled(xid, 5_000, 7_000)
    with pytest.raises(BalanceRefused) as info:
        await append(store, xid, 4, events, owner=owner)
    assert (info.value.event_index, info.value.available) == (2, 5_000)
    charge = events[2]
    assert isinstance(charge, CostCharged)
    events[2] = billing.capped(charge, info.value.available)
    await append(store, xid, 4, events, owner=owner)
    assert await balance(store, owner) == 0
    last = (await ledger(store, owner))[-1]
    assert (last["kind"], last["amount"], last["uncovered"]) == ("settle", "-5000", "2000")
    audit = await audit_account(runtime, owner)
    assert audit.ok, audit.problems
    assert audit.uncovered == 2_000


async def test_a_charge_id_moves_money_once(runtime: Runtime) -> None:
    store = runtime.store
    owner = await account(runtime, 100_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started(xid, 5_000), owner=owner)
    # The same reservation written again under later seqs (a writer replaying its events).
    await append(store, xid, 4, started(xid, 5_000)[1:], owner=owner)
    assert await balance(store, owner) == 100_000 - FEE - 5_000
    ids = [r["charge_id"] for r in await ledger(store, owner)]
    assert ids.count(f"reserve:{xid}:0:1") == 1


async def test_an_applied_charge_is_not_refused_by_a_balance_it_emptied(runtime: Runtime) -> None:
    """A charge id already applied moves nothing again, so a balance it took to zero does not
    refuse it when it is written again (the script looks each charge id up whenever the balance
    could not cover every taking of the op)."""
    store = runtime.store
    owner = await account(runtime, FEE + 5_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started(xid, 5_000), owner=owner)
    assert await balance(store, owner) == 0
    await append(store, xid, 4, started(xid, 5_000)[1:], owner=owner)
    assert await balance(store, owner) == 0
    ids = [r["charge_id"] for r in await ledger(store, owner)]
    assert ids.count(f"reserve:{xid}:0:1") == 1


async def test_append_many_refuses_only_the_op_that_cannot_pay(runtime: Runtime) -> None:
    store = runtime.store
    rich = await account(runtime, 100_000, partition=2)
    poor = await account(runtime, FEE + 1, partition=2)
    a = (await accepted(runtime, rich)).execution_id
    b = (await accepted(runtime, poor)).execution_id
    ops = [
        (a, 1, started(a, 5_000), rich),
        (b, 1, started(b, 5_000), poor),
        (a, 9, started(a, 5_000, attempt=2), rich),  # stale
    ]
    got = await store.log.append_many(
        [
            AppendOp(xid, seq, events, owner=owner, moves=billing.moves_of(events))
            for xid, seq, events, owner in ops
        ]
    )
    ok, refused, stale = got
    assert isinstance(ok, list)
    assert isinstance(refused, BalanceRefused)
    assert (refused.execution_id, refused.event_index, refused.available) == (b, 1, 1)
    assert isinstance(stale, ConcurrencyConflict)
    assert (await balance(store, rich), await balance(store, poor)) == (85_000, 1)
    assert len(await store.log.history(b)) == 1
    assert await applied(store, rich, f"reserve:{a}:0:2") is None


async def test_money_events_need_their_owner(runtime: Runtime) -> None:
    store = runtime.store
    owner = await account(runtime, 100_000)
    xid = (await accepted(runtime, owner)).execution_id
    events = started(xid, 5_000)
    with pytest.raises(ValueError, match="owner"):
        await store.log.append(xid, 1, events, moves=billing.moves_of(events))
    assert len(await store.log.history(xid)) == 1


async def test_money_events_need_their_moves(runtime: Runtime) -> None:
    """A money event appended without its move would be in the log but not in the balance."""
    store = runtime.store
    owner = await account(runtime, 100_000)
    xid = (await accepted(runtime, owner)).execution_id
    with pytest.raises(ValueError, match="moves"):
        await store.log.append(xid, 1, started(xid, 5_000), owner=owner)
    assert len(await store.log.history(xid)) == 1
    assert await balance(store, owner) == 100_000 - FEE


async def test_the_audit_finds_what_does_not_add_up(runtime: Runtime) -> None:
    store = runtime.store
    owner = await account(runtime, 100_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started(xid, 5_000), owner=owner)
    audit = await audit_account(runtime, owner)
    assert audit.ok, audit.problems
    assert audit.held == {f"reserve:{xid}:0:1": 5_000}  # the step is still running

    # Money that moved without a ledger entry, and an entry written twice.
    await store.redis.incrby(store.keys.balance(owner), 7)
    rows = await store.redis.xrange(store.keys.ledger(owner), "-", "+")
    await store.redis.xadd(store.keys.ledger(owner), rows[-1][1])
    problems = (await audit_account(runtime, owner)).problems
    assert any("appears twice" in p for p in problems), problems
    assert any(p.startswith("balance is 85007") for p in problems), problems
    assert any("entries up to it add up" in p for p in problems), problems


def started_reserving(xid: str, estimate: int) -> list[AnyEvent]:
    """ExecutionStarted and step 0's StepStarted holding ``estimate`` (the worker's shape)."""
    started = StepStarted(
        execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1", estimated_cost=estimate
    )
    return [
        ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
        billing.reserving(started),
    ]


def completed_settled(xid: str, estimate: int, cost: int) -> StepCompleted:
    """Step 0's StepCompleted carrying its release and its charge."""
    done = StepCompleted(execution_id=xid, step_index=0, attempt=1, cost=cost)
    return billing.settled(done, billing.reservation(xid, 0, 1, estimate))


async def test_money_carried_on_the_step_events_moves_like_money_events(
    runtime: Runtime,
) -> None:
    store = runtime.store
    owner = await account(runtime, 100_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started_reserving(xid, 5_000), owner=owner)
    assert await balance(store, owner) == 100_000 - FEE - 5_000
    await append(store, xid, 3, [completed_settled(xid, 5_000, 1_200)], owner=owner)
    assert await balance(store, owner) == 100_000 - FEE - 1_200
    # One ledger entry per charge id, in the order they moved: the release before the charge.
    rows = [(r["kind"], r["charge_id"], r["amount"]) for r in await ledger(store, owner)][-3:]
    assert rows == [
        ("reserve", f"reserve:{xid}:0:1", "-5000"),
        ("release", f"release:{xid}:0:1", "5000"),
        ("settle", f"settle:{xid}:0:1", "-1200"),
    ]
    assert await applied(store, owner, f"settle:{xid}:0:1") == "-1200"
    audit = await audit_account(runtime, owner)
    assert audit.ok, audit.problems
    assert audit.held == {}


async def test_a_refused_settlement_on_a_step_completed_is_capped_and_fits(
    runtime: Runtime,
) -> None:
    store = runtime.store
    owner = await account(runtime, FEE + 5_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started_reserving(xid, 5_000), owner=owner)
    done = completed_settled(xid, 5_000, 7_000)
    with pytest.raises(BalanceRefused) as info:
        await append(store, xid, 3, [done], owner=owner)
    # The release (first move of the event) gave back 5,000; the charge could not take 7,000.
    assert (info.value.event_index, info.value.available) == (0, 5_000)
    assert await balance(store, owner) == 0  # nothing moved
    await append(store, xid, 3, [billing.capped(done, info.value.available)], owner=owner)
    assert await balance(store, owner) == 0
    last = (await ledger(store, owner))[-1]
    assert (last["kind"], last["amount"], last["uncovered"]) == ("settle", "-5000", "2000")
    audit = await audit_account(runtime, owner)
    assert audit.ok, audit.problems


async def test_a_settlement_needs_both_its_moves(runtime: Runtime) -> None:
    """A settlement whose charge is left out of the moves would charge in the log only."""
    store = runtime.store
    owner = await account(runtime, 100_000)
    xid = (await accepted(runtime, owner)).execution_id
    await append(store, xid, 1, started_reserving(xid, 5_000), owner=owner)
    done = completed_settled(xid, 5_000, 1_200)
    with pytest.raises(ValueError, match="moves"):
        await store.log.append(xid, 3, [done], owner=owner, moves=billing.moves_of([done])[:1])
    assert len(await store.log.history(xid)) == 3
