"""Coins at the edge: a JSON number of coins in, exact micro-coins inside, the same number out
(engine.settings states the rule). Amounts and balances stay at or under a billion coins, where
every micro-coin value reads and prints back exactly."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio


async def _admin_balance(
    client: httpx.AsyncClient, admin: dict[str, str], account_id: str
) -> tuple[int, float]:
    body = (await client.get(f"/admin/accounts/{account_id}", headers=admin)).json()["account"]
    return body["balance_micro"], body["balance_coins"]


async def test_the_largest_amount_with_every_decimal_is_kept_exactly(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post(
        "/admin/accounts", json={"name": "rich", "coins": 999_999_999.999999}, headers=admin
    )
    assert created.status_code == 201, created.text
    account = created.json()["account"]
    assert account["balance_coins"] == 999_999_999.999999
    assert await _admin_balance(client, admin, account["account_id"]) == (
        999_999_999_999_999,
        999_999_999.999999,
    )


@pytest.mark.parametrize("coins", [123_456_789_012.345678, 1_000_000_000.000001])
async def test_an_amount_a_double_cannot_hold_exactly_is_refused_not_rounded(
    client: httpx.AsyncClient, admin: dict[str, str], coins: float
) -> None:
    """Above a billion coins a JSON number with 6 decimals has more digits than a double keeps:
    123456789012.345678 used to be credited as 123456789012.34568 without a word."""
    created = await client.post(
        "/admin/accounts", json={"name": "too-rich", "coins": coins}, headers=admin
    )
    assert created.status_code == 422, created.text
    assert "coins" in created.json()["error"]["message"]


@pytest.mark.parametrize("coins", [0.0000001, 1e9], ids=["7th-decimal", "past-a-billion"])
async def test_a_refused_credit_changes_nothing_and_leaves_its_id_unused(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount, coins: float
) -> None:
    url = f"/admin/accounts/{alice.account_id}/credit"
    refused = await client.post(url, json={"coins": coins, "credit_id": "c"}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert await _admin_balance(client, admin, alice.account_id) == (1_000_000, 1.0)
    taken = await client.post(url, json={"coins": 0.5, "credit_id": "c"}, headers=admin)
    assert taken.status_code == 200, taken.text


async def test_a_credit_may_take_the_balance_up_to_a_billion_coins(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    url = f"/admin/accounts/{alice.account_id}/credit"
    topped = await client.post(url, json={"coins": 999_999_999, "credit_id": "big"}, headers=admin)
    assert topped.status_code == 200, topped.text
    assert await _admin_balance(client, admin, alice.account_id) == (10**15, 1e9)
