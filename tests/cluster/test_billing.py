"""The billing scripts on a 3-master Redis Cluster: opening an account, crediting it, the flat fee
of a request, and admitting, settling and sweeping read charges each run as one script on the
owner's slot (CROSSSLOT would fail them here), and the ledger lists what they wrote."""

from __future__ import annotations

import pytest

from engine.money import accounts
from engine.money.read_fees import GRACE_MS, ReadFees
from engine.runtime import Runtime
from tests.contract.builders import FEE, requested

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

READ = 1_000


async def _accounts_on_every_node(runtime: Runtime, per_node: int = 2) -> list[str]:
    """Accounts whose slots sit on every master, so each script runs on each node."""
    made: dict[str, list[str]] = {}
    nodes = {n.name for n in runtime.redis.get_primaries()}
    while any(len(made.get(n, [])) < per_node for n in nodes):
        account, _ = await accounts.create_account(runtime, name="c", coins_micro=100_000)
        node = runtime.redis.get_node_from_key(runtime.store.keys.balance(account.account_id))
        made.setdefault(node.name, []).append(account.account_id)
    return [a for ids in made.values() for a in ids]


async def test_credit_fee_and_ledger_on_every_node(runtime: Runtime) -> None:
    for account_id in await _accounts_on_every_node(runtime):
        assert await accounts.credit(runtime, account_id, 50_000, credit_id="inv-1") == 150_000
        assert await accounts.credit(runtime, account_id, 50_000, credit_id="inv-1") == 150_000
        req = requested(runtime.store, account_id)
        accepted = await runtime.store.admission.request(req, idempotency=("k", "body"))
        assert accepted.balance == 150_000 - FEE
        entries, cursor = await accounts.ledger(runtime, account_id, limit=2, cursor=None)
        older, last = await accounts.ledger(runtime, account_id, limit=2, cursor=cursor)
        assert last is None
        assert [(e.kind, e.amount, e.balance) for e in entries + older] == [
            ("fee", -FEE, 140_000),
            ("credit", 50_000, 150_000),
            ("credit", 100_000, 100_000),
        ]
        assert entries[0].execution_id == req.execution_id


async def test_read_charges_admit_settle_and_sweep_on_every_node(runtime: Runtime) -> None:
    fees = ReadFees(runtime)
    ids = await _accounts_on_every_node(runtime)
    for account_id in ids:
        served = await fees.admit(account_id, f"read:req_served_{account_id}")
        released = await fees.admit(account_id, f"read:req_released_{account_id}")
        await fees.admit(account_id, f"read:req_lost_{account_id}")  # its process dies
        assert served is not None
        assert released is not None
        assert await fees.settle_now(served, served=True) == 0  # kept: taken at admission
        assert await fees.settle_now(released, served=False) == READ  # given back
    # The lost ones (one per account, on every node) are found by one sweep over all partitions.
    assert await ReadFees(runtime).sweep(now_ms=2**50, grace_ms=GRACE_MS) == len(ids)
    for account_id in ids:
        assert await accounts.balance(runtime, account_id) == 100_000 - 2 * READ
        entries, _ = await accounts.ledger(runtime, account_id, limit=10, cursor=None)
        assert [e.kind for e in entries] == ["read_release", "read", "read", "read", "credit"]
