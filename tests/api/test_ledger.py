"""``GET /v1/me/ledger``: every credit and charge of the caller, newest first, paged by a cursor
that later entries never shift; ``GET /v1/me`` shows the balance the ledger ends at."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engine.runtime import Runtime
from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio

VIDEO = "https://youtu.be/dQw4w9WgXcQ"


async def _transcripts(client: httpx.AsyncClient, who: ApiAccount, n: int) -> list[str]:
    item = await client.post("/v1/items", json={"source": VIDEO}, headers=who.key_auth)
    url = f"/v1/items/{item.json()['item']['item_id']}/transcript"
    ids = []
    for _ in range(n):
        accepted = await client.post(url, json={"text": "hi"}, headers=who.key_auth)
        assert accepted.status_code == 202, accepted.text
        ids.append(accepted.json()["execution"]["execution_id"])
    return ids


async def _page(client: httpx.AsyncClient, who: ApiAccount, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/me/ledger", params=params, headers=who.key_auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_entries_newest_first_in_stable_pages(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    executions = await _transcripts(client, alice, 3)
    credited = await client.post(
        f"/admin/accounts/{alice.account_id}/credit",
        json={"coins": 2.5, "credit_id": "invoice-1"},
        headers=admin,
    )
    assert credited.status_code == 200, credited.text

    first_read = await client.get("/v1/me/ledger", params={"limit": 4}, headers=alice.key_auth)
    first, first_id = first_read.json(), first_read.headers["x-request-id"]
    second = await _page(client, alice, limit=3, cursor=first["next_cursor"])
    assert second["next_cursor"] is None
    entries = first["entries"] + second["entries"]
    # The first page's own read fee is on top: it was taken when that read was admitted.
    assert [(e["kind"], e["amount_coins"], e["balance_coins"]) for e in entries] == [
        ("read", -0.001, 3.469),
        ("credit", 2.5, 3.47),
        ("fee", -0.01, 0.97),
        ("fee", -0.01, 0.98),
        ("fee", -0.01, 0.99),
        ("credit", 1.0, 1.0),
    ]
    assert [e["execution_id"] for e in entries] == [None, None, *reversed(executions), None]
    assert [e["charge_id"] for e in entries] == [
        f"read:{first_id}",
        f"credit:{alice.account_id}:invoice-1",
        *(f"fee:{x}" for x in reversed(executions)),
        f"credit:{alice.account_id}:opening",
    ]
    assert all(e["at"].endswith("Z") for e in entries)
    me = (await client.get("/v1/me", headers=alice.key_auth)).json()["account"]
    # Where the ledger ends, less the second page's read (the first is in the page).
    assert me["balance_coins"] == 3.468


async def test_a_later_entry_never_shifts_the_next_page(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    await _transcripts(client, alice, 2)
    first = await _page(client, alice, limit=3)  # its own read fee, then the two fees
    await _transcripts(client, alice, 1)
    second = await _page(client, alice, limit=2, cursor=first["next_cursor"])
    assert [e["kind"] for e in second["entries"]] == ["credit"]
    assert second["entries"][0]["charge_id"].endswith(":opening")


async def test_each_owner_sees_only_its_own_ledger(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    await _transcripts(client, alice, 2)
    bobs = await _page(client, bob)
    assert [e["kind"] for e in bobs["entries"]] == ["read", "credit"]  # this read, the opening
    assert bobs["entries"][1]["charge_id"] == f"credit:{bob.account_id}:opening"


@pytest.mark.parametrize(
    "params", [{"cursor": "not-a-cursor"}, {"cursor": "1-0-0"}, {"limit": "0"}, {"limit": "101"}]
)
async def test_bad_paging_is_422(
    client: httpx.AsyncClient, alice: ApiAccount, params: dict[str, str]
) -> None:
    response = await client.get("/v1/me/ledger", params=params, headers=alice.key_auth)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


async def test_kinds_it_does_not_know_are_shown_as_they_are(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    """Other writers add kinds (reservations and settlements of provider cost): listed as
    written, with whatever fields they carry."""
    await runtime.redis.xadd(
        runtime.store.keys.ledger(alice.account_id),
        {"charge_id": "reserve:x", "kind": "reserve", "amount": "-2500", "balance": "997500",
         "execution_id": "exc_p1_0000000000000000000a", "at": "1700000000000", "extra": "kept out"},
    )  # fmt: skip
    [this_read, newest, _] = (await _page(client, alice))["entries"]
    assert this_read["kind"] == "read"
    assert newest == {
        "charge_id": "reserve:x",
        "kind": "reserve",
        "amount_coins": -0.0025,
        "balance_coins": 0.9975,
        "execution_id": "exc_p1_0000000000000000000a",
        "at": "2023-11-14T22:13:20.000Z",
    }
