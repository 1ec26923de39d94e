"""Schedules through the API: CRUD with PATCH (enabled too), attach and detach collections,
deletes that detach, other owners."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ApiAccount
from tests.api.test_collections import make, pages
from tests.api.test_workflows import reporter, workflow

pytestmark = pytest.mark.anyio


async def collection(client: httpx.AsyncClient, who: ApiAccount) -> str:
    cid: str = (await make(client, who, "/v1/collections", {"name": "c"}))["collection"][
        "collection_id"
    ]
    return cid


async def test_crud_attach_detach(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    rid = await reporter(client, alice)
    wf = (await workflow(client, alice, rid))["workflow_id"]
    c1, c2 = await collection(client, alice), await collection(client, alice)
    base = f"/v1/reporters/{rid}/schedules"
    created = await make(
        client, alice, base, {"workflow_id": wf, "interval_hours": 24, "collection_ids": [c1]}
    )
    sch = created["schedule"]
    assert (sch["enabled"], sch["collection_ids"], sch["interval_hours"]) == (True, [c1], 24)
    url = f"{base}/{sch['schedule_id']}"
    assert (await client.get(url, headers=alice.key_auth)).json() == created
    patched = await client.patch(
        url, json={"enabled": False, "interval_hours": 6}, headers=alice.key_auth
    )
    assert patched.status_code == 200, patched.text
    assert (
        patched.json()["schedule"]["enabled"],
        patched.json()["schedule"]["interval_hours"],
    ) == (False, 6)
    attached = await client.post(
        f"{url}/collections", json={"collection_id": c2}, headers=alice.key_auth
    )
    assert attached.json()["schedule"]["collection_ids"] == [c1, c2]
    assert (
        await client.delete(f"{url}/collections/{c1}", headers=alice.key_auth)
    ).status_code == 204
    assert (
        await client.delete(f"{url}/collections/{c1}", headers=alice.key_auth)
    ).status_code == 404
    # deleting a collection detaches it
    assert (await client.delete(f"/v1/collections/{c2}", headers=alice.key_auth)).status_code == 204
    assert (await client.get(url, headers=alice.key_auth)).json()["schedule"][
        "collection_ids"
    ] == []
    # a workflow a schedule runs cannot be deleted
    in_use = await client.delete(f"/v1/reporters/{rid}/workflows/{wf}", headers=alice.key_auth)
    assert in_use.status_code == 409
    assert (await client.delete(url, headers=alice.key_auth)).status_code == 204
    assert (await client.get(url, headers=alice.key_auth)).status_code == 404


async def test_pages_and_reporter_delete(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    rid = await reporter(client, alice)
    wf = (await workflow(client, alice, rid))["workflow_id"]
    cid = await collection(client, alice)
    base = f"/v1/reporters/{rid}/schedules"
    ids = [
        (
            await make(
                client,
                alice,
                base,
                {"workflow_id": wf, "interval_hours": 1, "collection_ids": [cid]},
            )
        )["schedule"]["schedule_id"]
        for _ in range(5)
    ]
    got = await pages(client, alice, base, "schedules")
    assert [s["schedule_id"] for page in got for s in page] == sorted(ids, reverse=True)
    assert len(got) == 3
    assert (await client.delete(f"/v1/reporters/{rid}", headers=alice.key_auth)).status_code == 204
    assert (await client.get(f"{base}/{ids[0]}", headers=alice.key_auth)).status_code == 404
    # the collection outlives them and can be deleted cleanly
    assert (
        await client.delete(f"/v1/collections/{cid}", headers=alice.key_auth)
    ).status_code == 204


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"interval_hours": 0}, "interval_hours"),
        ({"interval_hours": 721}, "interval_hours"),
        ({"enabled": "yes"}, "enabled"),
        ({"owner": "acc_00000000000000000000"}, "owner"),
        ({"workflow_id": "wf_00000000000000000000"}, "workflow_id"),
    ],
)
async def test_bad_patches_are_422(
    client: httpx.AsyncClient, alice: ApiAccount, patch: dict[str, object], named: str
) -> None:
    rid = await reporter(client, alice)
    wf = (await workflow(client, alice, rid))["workflow_id"]
    sch = (
        await make(
            client,
            alice,
            f"/v1/reporters/{rid}/schedules",
            {"workflow_id": wf, "interval_hours": 2},
        )
    )["schedule"]
    url = f"/v1/reporters/{rid}/schedules/{sch['schedule_id']}"
    refused = await client.patch(url, json=patch, headers=alice.key_auth)
    assert refused.status_code == 422, refused.text
    assert named in refused.json()["error"]["message"]
    assert (await client.get(url, headers=alice.key_auth)).json()["schedule"] == sch


async def test_other_owner_is_404(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    rid = await reporter(client, alice)
    wf = (await workflow(client, alice, rid))["workflow_id"]
    cid = await collection(client, alice)
    bob_rid = await reporter(client, bob)
    bob_wf = (await workflow(client, bob, bob_rid))["workflow_id"]
    bob_cid = await collection(client, bob)
    base = f"/v1/reporters/{rid}/schedules"
    sch = (
        await make(
            client, alice, base, {"workflow_id": wf, "interval_hours": 2, "collection_ids": [cid]}
        )
    )["schedule"]
    url = f"{base}/{sch['schedule_id']}"
    for response in (
        await client.get(url, headers=bob.key_auth),
        await client.get(base, headers=bob.key_auth),
        await client.patch(url, json={"enabled": False}, headers=bob.key_auth),
        await client.delete(url, headers=bob.key_auth),
        await client.post(
            f"{url}/collections", json={"collection_id": bob_cid}, headers=bob.key_auth
        ),
        await client.delete(f"{url}/collections/{cid}", headers=bob.key_auth),
        await client.post(
            base, json={"workflow_id": bob_wf, "interval_hours": 1}, headers=bob.key_auth
        ),
        # alice cannot attach bob's collection
        await client.post(
            f"{url}/collections", json={"collection_id": bob_cid}, headers=alice.key_auth
        ),
    ):
        assert response.status_code == 404, response.text
    assert (await client.get(url, headers=alice.key_auth)).json()["schedule"] == sch


async def test_every_field_of_the_platform_including_name(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    """DESIGN §7's fields, ``name`` included, are accepted, stored, patched and shown."""
    rid = await reporter(client, alice)
    wf = (await workflow(client, alice, rid))["workflow_id"]
    cid = await collection(client, alice)
    sent = {
        "name": "nightly",
        "workflow_id": wf,
        "interval_hours": 24,
        "collection_ids": [cid],
        "enabled": False,
        "max_videos_per_channel": 3,
        "max_age_hours": 48,
    }
    sch = (await make(client, alice, f"/v1/reporters/{rid}/schedules", sent))["schedule"]
    assert {k: sch[k] for k in sent} == sent
    url = f"/v1/reporters/{rid}/schedules/{sch['schedule_id']}"
    renamed = await client.patch(url, json={"name": "hourly"}, headers=alice.key_auth)
    assert renamed.json()["schedule"]["name"] == "hourly"
    cleared = await client.patch(url, json={"name": None}, headers=alice.key_auth)
    assert cleared.json()["schedule"]["name"] is None
    unnamed = (
        await make(
            client,
            alice,
            f"/v1/reporters/{rid}/schedules",
            {"workflow_id": wf, "interval_hours": 1},
        )
    )["schedule"]
    assert unnamed["name"] is None


@pytest.mark.parametrize(
    "patch", [{}, {"interval_hours": 2}, {"enabled": True, "name": None, "collection_ids": []}]
)
async def test_a_patch_that_changes_nothing_keeps_updated_at(
    client: httpx.AsyncClient, alice: ApiAccount, patch: dict[str, object]
) -> None:
    rid = await reporter(client, alice)
    wf = (await workflow(client, alice, rid))["workflow_id"]
    base = f"/v1/reporters/{rid}/schedules"
    sch = (await make(client, alice, base, {"workflow_id": wf, "interval_hours": 2}))["schedule"]
    url = f"{base}/{sch['schedule_id']}"
    for path, before in [
        (url, sch),
        (
            f"/v1/reporters/{rid}",
            (await client.get(f"/v1/reporters/{rid}", headers=alice.key_auth)).json()["reporter"],
        ),
        (f"/v1/reporters/{rid}/workflows/{wf}", None),
    ]:
        body = patch if path == url else {}
        answered = await client.patch(path, json=body, headers=alice.key_auth)
        assert answered.status_code == 200, answered.text
        (record,) = answered.json().values()
        if before is not None:
            assert record == before
        again = await client.patch(path, json={}, headers=alice.key_auth)
        assert again.json() == answered.json()
    cid = await collection(client, alice)
    col_url = f"/v1/collections/{cid}"
    col = (await client.get(col_url, headers=alice.key_auth)).json()
    assert (await client.patch(col_url, json={}, headers=alice.key_auth)).json() == col
