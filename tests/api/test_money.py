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


async def test_more_than_six_decimals_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    url = f"/admin/accounts/{alice.account_id}/credit"
    refused = await client.post(url, json={"coins": 0.0000001, "credit_id": "c"}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert await _admin_balance(client, admin, alice.account_id) == (1_000_000, 1.0)


async def test_a_credit_cannot_take_the_balance_past_a_billion_coins(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    url = f"/admin/accounts/{alice.account_id}/credit"
    refused = await client.post(url, json={"coins": 1e9, "credit_id": "big"}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert await _admin_balance(client, admin, alice.account_id) == (1_000_000, 1.0)
    # Up to the bound is fine, and the refused credit_id was not used up.
    topped = await client.post(url, json={"coins": 999_999_999, "credit_id": "big"}, headers=admin)
    assert topped.status_code == 200, topped.text
    assert topped.json()["account"]["balance_coins"] == 1e9
