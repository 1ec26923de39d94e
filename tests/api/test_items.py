"""Items through the API: create with type detection, read, list in pages, delete, and owners
that never see each other's items."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio

VIDEO = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


async def _create(client: httpx.AsyncClient, who: ApiAccount, source: str) -> dict[str, str]:
    created = await client.post("/v1/items", json={"source": source}, headers=who.key_auth)
    assert created.status_code == 201, created.text
    item: dict[str, str] = created.json()["item"]
    return item


async def test_create_read_delete(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    item = await _create(client, alice, VIDEO)
    assert item["item_id"].startswith("itm_")
    assert (item["type"], item["external_id"], item["source"]) == (
        "youtube_video",
        "dQw4w9WgXcQ",
        VIDEO,
    )
    assert item["created_at"].endswith("Z")
    url = f"/v1/items/{item['item_id']}"
    got = await client.get(url, headers=alice.jwt_auth)  # a session token sees the same item
    assert got.status_code == 200
    assert got.json() == {"item": item}

    deleted = await client.delete(url, headers=alice.key_auth)
    assert deleted.status_code == 204
    assert (await client.get(url, headers=alice.key_auth)).status_code == 404
    assert (await client.delete(url, headers=alice.key_auth)).status_code == 404
    listed = await client.get("/v1/items", headers=alice.key_auth)
    assert listed.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("https://youtu.be/dQw4w9WgXcQ", "youtube_video"),
        ("@veritasium", "youtube_channel"),
        ("https://x.com/jack", "twitter"),
        ("https://example.com/feed", "rss"),
    ],
)
async def test_detected_types(
    client: httpx.AsyncClient, alice: ApiAccount, source: str, kind: str
) -> None:
    assert (await _create(client, alice, source))["type"] == kind


async def test_unclassifiable_source_is_422_naming_why(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    refused = await client.post(
        "/v1/items", json={"source": "https://example.com/page.html"}, headers=alice.key_auth
    )
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert "source" in error["message"]
    assert "classify" in error["message"]


async def test_list_pages_newest_first(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    created = [
        (await _create(client, alice, f"https://x.com/user{i}"))["item_id"] for i in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await client.get("/v1/items", params=params, headers=alice.key_auth)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen += [i["item_id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    assert pages == 3
    default = (await client.get("/v1/items", headers=alice.key_auth)).json()
    assert [i["item_id"] for i in default["items"]] == list(reversed(created))


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "zz"}]
)
async def test_bad_paging_is_422(
    client: httpx.AsyncClient, alice: ApiAccount, params: dict[str, str]
) -> None:
    response = await client.get("/v1/items", params=params, headers=alice.key_auth)
    assert response.status_code == 422, response.text


async def test_other_owners_items_are_404_without_data(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    item = await _create(client, alice, VIDEO)
    url = f"/v1/items/{item['item_id']}"
    for response in (
        await client.get(url, headers=bob.key_auth),
        await client.delete(url, headers=bob.key_auth),
        await client.get(f"{url}/transcript", headers=bob.key_auth),
        await client.post(f"{url}/transcript", json={}, headers=bob.key_auth),
    ):
        assert response.status_code == 404, response.text
        assert item["item_id"] not in response.text
        assert "dQw4w9WgXcQ" not in response.text
    assert (await client.get("/v1/items", headers=bob.key_auth)).json()["items"] == []
    assert (await client.get(url, headers=alice.key_auth)).status_code == 200  # still there


async def test_items_need_credentials(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/items")).status_code == 401
    assert (await client.post("/v1/items", json={"source": VIDEO})).status_code == 401
