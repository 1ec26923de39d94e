"""Documents: what engine.resources.documents.create_document stores is listed with filters,
paged, read with its content, and never shown to another owner."""

from __future__ import annotations

import httpx
import orjson
import pytest

from engine.resources.documents import create_document
from engine.runtime import Runtime
from tests.api.conftest import ApiAccount
from tests.api.test_collections import make, pages

pytestmark = pytest.mark.anyio


async def test_list_filter_get(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, bob: ApiAccount
) -> None:
    item = (await make(client, alice, "/v1/items", {"source": "@veritasium"}))["item"]["item_id"]
    rep = (await make(client, alice, "/v1/reporters", {"name": "r"}))["reporter"]["reporter_id"]
    docs = []
    for i in range(5):
        doc = await create_document(
            runtime,
            alice.account_id,
            kind="summary" if i % 2 else "report",
            content=orjson.dumps({"text": f"doc {i}"}),
            item_id=item if i < 3 else None,
            reporter_id=rep if i >= 2 else None,
        )
        docs.append(doc.document_id)
    got = await pages(client, alice, "/v1/documents", "documents")
    # ids order the list (two made in the same millisecond order by their random part)
    assert [d["document_id"] for page in got for d in page] == newest(docs)
    assert len(got) == 3

    async def ids(**params: str) -> list[str]:
        listed = await client.get("/v1/documents", params=params, headers=alice.key_auth)
        assert listed.status_code == 200, listed.text
        return [d["document_id"] for d in listed.json()["documents"]]

    assert await ids(item_id=item) == newest(docs[:3])
    assert await ids(reporter_id=rep) == newest(docs[2:])
    assert await ids(kind="summary") == newest([docs[3], docs[1]])
    assert await ids(item_id=item, kind="report") == newest([docs[2], docs[0]])
    assert await ids(item_id=item, reporter_id=rep) == [docs[2]]

    one = await client.get(f"/v1/documents/{docs[0]}", headers=alice.key_auth)
    assert one.status_code == 200
    assert one.json()["document"]["content"] == {"text": "doc 0"}
    assert one.json()["document"]["item_id"] == item

    hidden = await client.get(f"/v1/documents/{docs[0]}", headers=bob.key_auth)
    assert hidden.status_code == 404
    assert "doc 0" not in hidden.text
    bobs = await client.get("/v1/documents", params={"item_id": item}, headers=bob.key_auth)
    assert bobs.json() == {"documents": [], "next_cursor": None}


def newest(ids: list[str]) -> list[str]:
    return sorted(ids, reverse=True)


@pytest.mark.parametrize(
    "params", [{"item_id": "nope"}, {"reporter_id": "itm_x"}, {"kind": "A B"}, {"cursor": "x"}]
)
async def test_bad_filters_are_422(
    client: httpx.AsyncClient, alice: ApiAccount, params: dict[str, str]
) -> None:
    response = await client.get("/v1/documents", params=params, headers=alice.key_auth)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("name", "noun"), [("item_id", "an itm_ id"), ("reporter_id", "a rep_ id")]
)
async def test_a_bad_filter_names_the_id_it_wanted(
    client: httpx.AsyncClient, alice: ApiAccount, name: str, noun: str
) -> None:
    response = await client.get("/v1/documents", params={name: "nope"}, headers=alice.key_auth)
    assert response.json()["error"]["message"] == f"{name}: not {noun}"


async def test_unknown_document_is_404(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    for doc_id in ("doc_00000000000000000000", "nope"):
        response = await client.get(f"/v1/documents/{doc_id}", headers=alice.key_auth)
        assert response.status_code == 404
