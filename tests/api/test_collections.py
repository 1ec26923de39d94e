"""Collections through the API: CRUD with PATCH, items in a collection, pages, other owners."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio


async def make(client: httpx.AsyncClient, who: ApiAccount, path: str, body: Any) -> Any:
    created = await client.post(path, json=body, headers=who.key_auth)
    assert created.status_code == 201, created.text
    return created.json()


async def pages(client: httpx.AsyncClient, who: ApiAccount, path: str, field: str) -> list[Any]:
    """Every page of a list at limit 2: the pages' ids in order."""
    out: list[Any] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await client.get(path, params=params, headers=who.key_auth)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body[field]) <= 2
        out.append(body[field])
        cursor = body["next_cursor"]
        if cursor is None:
            return out


async def test_crud(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    body = await make(client, alice, "/v1/collections", {"name": "news"})
    col = body["collection"]
    assert col["collection_id"].startswith("col_")
    assert (col["visibility"], col["language"], col["description"]) == ("private", None, None)
    url = f"/v1/collections/{col['collection_id']}"
    assert (await client.get(url, headers=alice.jwt_auth)).json() == body
    patched = await client.patch(
        url, json={"visibility": "public", "language": "pt-BR"}, headers=alice.key_auth
    )
    assert patched.status_code == 200, patched.text
    got = patched.json()["collection"]
    assert (got["name"], got["visibility"], got["language"]) == ("news", "public", "pt-BR")
    cleared = await client.patch(url, json={"language": None}, headers=alice.key_auth)
    assert cleared.json()["collection"]["language"] is None
    assert (await client.delete(url, headers=alice.key_auth)).status_code == 204
    assert (await client.get(url, headers=alice.key_auth)).status_code == 404
    assert (await client.delete(url, headers=alice.key_auth)).status_code == 404


async def test_three_stable_pages(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    ids = [
        (await make(client, alice, "/v1/collections", {"name": f"c{i}"}))["collection"][
            "collection_id"
        ]
        for i in range(5)
    ]
    got = await pages(client, alice, "/v1/collections", "collections")
    assert len(got) == 3
    assert [c["collection_id"] for page in got for c in page] == sorted(ids, reverse=True)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "owner": "acc_00000000000000000000"},
        {"name": "x", "collection_id": "col_00000000000000000000"},
        {"name": "x", "visibility": "secret"},
        {"name": ""},
        {},
    ],
)
async def test_bad_bodies_are_422(
    client: httpx.AsyncClient, alice: ApiAccount, body: dict[str, Any]
) -> None:
    refused = await client.post("/v1/collections", json=body, headers=alice.key_auth)
    assert refused.status_code == 422, refused.text
    for field in ("owner", "collection_id", "visibility"):
        if field in body:
            assert field in refused.json()["error"]["message"]


async def test_items_of_a_collection(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    col = (await make(client, alice, "/v1/collections", {"name": "c"}))["collection"]
    url = f"/v1/collections/{col['collection_id']}/items"
    item_ids = []
    for i in range(5):
        item = (await make(client, alice, "/v1/items", {"source": f"https://x.com/u{i}"}))["item"]
        item_ids.append(item["item_id"])
        added = await client.post(url, json={"item_id": item["item_id"]}, headers=alice.key_auth)
        assert added.status_code == 201
    again = await client.post(url, json={"item_id": item_ids[0]}, headers=alice.key_auth)
    assert again.status_code == 201  # adding twice is a no-op
    got = await pages(client, alice, url, "items")
    assert [i["item_id"] for page in got for i in page] == sorted(item_ids, reverse=True)
    assert len(got) == 3

    removed = await client.delete(f"{url}/{item_ids[1]}", headers=alice.key_auth)
    assert removed.status_code == 204
    assert (await client.delete(f"{url}/{item_ids[1]}", headers=alice.key_auth)).status_code == 404
    # deleting an item takes it out of the collection
    deleted = await client.delete(f"/v1/items/{item_ids[2]}", headers=alice.key_auth)
    assert deleted.status_code == 204
    listed = (await client.get(url, headers=alice.key_auth)).json()["items"]
    assert [i["item_id"] for i in listed] == sorted(
        [item_ids[4], item_ids[3], item_ids[0]], reverse=True
    )


async def test_other_owner_is_404_and_changes_nothing(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    col = (await make(client, alice, "/v1/collections", {"name": "mine"}))["collection"]
    alice_item = (await make(client, alice, "/v1/items", {"source": "@veritasium"}))["item"]
    bob_col = (await make(client, bob, "/v1/collections", {"name": "bobs"}))["collection"]
    url = f"/v1/collections/{col['collection_id']}"
    await client.post(
        f"{url}/items", json={"item_id": alice_item["item_id"]}, headers=alice.key_auth
    )
    for response in (
        await client.get(url, headers=bob.key_auth),
        await client.patch(url, json={"name": "stolen"}, headers=bob.key_auth),
        await client.delete(url, headers=bob.key_auth),
        await client.get(f"{url}/items", headers=bob.key_auth),
        await client.post(
            f"{url}/items", json={"item_id": alice_item["item_id"]}, headers=bob.key_auth
        ),
        await client.delete(f"{url}/items/{alice_item['item_id']}", headers=bob.key_auth),
        # bob cannot put alice's item in his own collection either
        await client.post(
            f"/v1/collections/{bob_col['collection_id']}/items",
            json={"item_id": alice_item["item_id"]},
            headers=bob.key_auth,
        ),
    ):
        assert response.status_code == 404, response.text
        assert "mine" not in response.text
    assert (await client.get(url, headers=alice.key_auth)).json()["collection"]["name"] == "mine"
    items = (await client.get(f"{url}/items", headers=alice.key_auth)).json()["items"]
    assert [i["item_id"] for i in items] == [alice_item["item_id"]]
    bobs = await client.get(
        f"/v1/collections/{bob_col['collection_id']}/items", headers=bob.key_auth
    )
    assert bobs.json()["items"] == []
