"""Properties of money (the rule is stated beside engine.settings.coins_to_micro): amounts are
exact micro-coins both ways, anything finer than a micro-coin is refused rather than rounded, and
over random credits, fees and read charges the ledger adds up exactly to the balance, which never
goes negative."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Literal, NamedTuple

import anyio
import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.parse import micro
from engine.connection import embedded
from engine.errors import InsufficientBalance, InvalidRequest
from engine.money import accounts
from engine.money.accounts import MAX_MICRO
from engine.money.read_fees import ReadFees
from engine.runtime import Runtime
from engine.settings import MICRO, Fees, Settings, micro_to_coins
from tests.contract.builders import requested

amounts = st.integers(min_value=-MAX_MICRO, max_value=MAX_MICRO)


def shown(micro_coins: int) -> Decimal:
    """The number a client reads: the API's JSON for the coins, taken as the decimal it says."""
    return Decimal(orjson.dumps(micro_to_coins(micro_coins)).decode())


@given(amounts)
def test_every_amount_prints_as_exactly_its_micro_coins(amount: int) -> None:
    assert shown(amount) == Decimal(amount) / MICRO


@given(st.integers(min_value=0, max_value=MAX_MICRO))
def test_a_written_amount_with_up_to_six_decimals_is_taken_exactly(amount: int) -> None:
    """What a client writes as a JSON number (at most 6 decimals) is what it gets, to the
    micro-coin: through the JSON decoder's double and back."""
    written = f"{Decimal(amount) / MICRO:f}"
    assert micro(msgspec.json.decode(written, type=float)) == amount


@given(st.integers(min_value=0, max_value=10**15 - 1).filter(lambda n: n % 10 != 0))
def test_a_seventh_decimal_is_refused_never_rounded(tenths_of_micro: int) -> None:
    written = f"{Decimal(tenths_of_micro) / (10 * MICRO):f}"
    with pytest.raises(InvalidRequest):
        micro(msgspec.json.decode(written, type=float))


@given(st.lists(st.integers(min_value=-MAX_MICRO // 50, max_value=MAX_MICRO // 50), max_size=50))
def test_the_shown_amounts_add_up_to_the_shown_total(parts: list[int]) -> None:
    assert sum((shown(p) for p in parts), Decimal(0)) == shown(sum(parts))


Op = tuple[Literal["credit", "fee", "read"], int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), st.integers(min_value=1, max_value=10**9)),
        st.tuples(st.just("fee"), st.integers(min_value=0, max_value=10**6)),
        # 1: the read was served (charged), 0: it answered an error (released)
        st.tuples(st.just("read"), st.integers(min_value=0, max_value=1)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(
    opening=st.integers(min_value=0, max_value=10**7),
    read_fee=st.integers(min_value=0, max_value=50_000),
    steps=ops,
)
def test_the_ledger_adds_up_to_the_balance_which_never_goes_negative(
    opening: int, read_fee: int, steps: list[Op]
) -> None:
    """The real scripts (on the in-memory store) against a model in integers: every fee is taken
    whole or refused, every read's fee too (and given back whole when the read answered an
    error), and each ledger entry's balance is the one before it plus its amount."""
    outcome = anyio.run(_run_ops, opening, read_fee, steps)
    assert outcome.ledger_sum == outcome.balance == outcome.model


class _Outcome(NamedTuple):
    balance: int  # as stored
    ledger_sum: int  # of every ledger entry's amount
    model: int  # what the model says it must be


async def _run_ops(opening: int, read_fee: int, steps: list[Op]) -> _Outcome:
    redis = embedded()
    try:
        runtime = await Runtime.open(
            replace(Settings(), partitions=2, fees=Fees(read=read_fee)), redis
        )
        account, _ = await accounts.create_account(runtime, name="p", coins_micro=opening)
        owner = account.account_id
        reads = ReadFees(runtime)
        model = opening
        for n, (kind, value) in enumerate(steps):
            if kind == "credit":
                await accounts.credit(runtime, owner, value, credit_id=f"c{n}")
                model += value
            elif kind == "fee":
                try:
                    await runtime.store.admission.request(
                        requested(runtime.store, owner, fee=value)
                    )
                    assert value <= model
                    model -= value
                except InsufficientBalance:
                    assert value > model
            else:
                try:
                    charge = await reads.admit(owner, f"read:r{n}")
                except InsufficientBalance:
                    assert read_fee > model
                    continue
                if charge is None:
                    assert read_fee == 0
                    continue
                model -= read_fee  # taken whole at admission
                given = await reads.settle_now(charge, served=value == 1)
                assert given == (0 if value == 1 else read_fee)
                model += given
        entries, _ = await accounts.ledger(runtime, owner, limit=100, cursor=None)
        before = 0
        for entry in reversed(entries):  # oldest first
            assert entry.balance == before + entry.amount >= 0
            before = entry.balance
        return _Outcome(
            balance=await accounts.balance(runtime, owner),
            ledger_sum=sum(e.amount for e in entries),
            model=model,
        )
    finally:
        await redis.aclose()
