"""Per-account quotas on what an account can create (DESIGN §7): ``403 quota_exceeded`` past
them, checked in the script that inserts, so concurrent creates never pass a quota; deleting one
makes room again, and another account is not affected."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import anyio
import httpx
import pytest

from engine.settings import Quotas, Settings
from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio

QUOTAS = Quotas(items=3, collections=2, reporters=2, workflows=2, schedules=1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, quotas=QUOTAS)


async def _reporter(client: httpx.AsyncClient, who: ApiAccount) -> tuple[str, str]:
    made = await client.post("/v1/reporters", json={"name": "r"}, headers=who.key_auth)
    rid = made.json()["reporter"]["reporter_id"]
    workflow = {"name": "w", "target_kind": "youtube_video", "steps": [{"tool_id": "transcribe"}]}
    wf = await client.post(f"/v1/reporters/{rid}/workflows", json=workflow, headers=who.key_auth)
    assert wf.status_code == 201, wf.text
    return rid, wf.json()["workflow"]["workflow_id"]


def _quota(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "quota_exceeded"


async def test_concurrent_creates_never_pass_the_items_quota(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    statuses: list[int] = []

    async def create(n: int) -> None:
        body = {"source": f"https://youtu.be/abcdefghi{n:02d}"}
        statuses.append(
            (await client.post("/v1/items", json=body, headers=alice.key_auth)).status_code
        )

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(create, n)
    assert Counter(statuses) == {201: 3, 403: 17}
    items = (await client.get("/v1/items", headers=alice.key_auth)).json()["items"]
    assert len(items) == 3
    # A process over a new source would create a fourth item: refused the same way, no fee.
    rid, wid = await _reporter(client, alice)
    process = {"source": "https://youtu.be/zzzzzzzzzzz", "workflow_id": wid}
    _quota(await client.post(f"/v1/reporters/{rid}/process", json=process, headers=alice.key_auth))
    ledger = (await client.get("/v1/me/ledger", headers=alice.key_auth)).json()["entries"]
    assert "fee" not in {e["kind"] for e in ledger}
    # Bob has his own quota; deleting one of Alice's makes room for one more.
    assert (
        await client.post("/v1/items", json={"source": "https://x.com/jack"}, headers=bob.key_auth)
    ).status_code == 201
    assert (
        await client.delete(f"/v1/items/{items[0]['item_id']}", headers=alice.key_auth)
    ).status_code == 204
    again = await client.post(
        "/v1/items", json={"source": "https://x.com/jack"}, headers=alice.key_auth
    )
    assert again.status_code == 201, again.text


async def test_collections_reporters_workflows_and_schedules_have_quotas(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    auth = alice.key_auth
    for _ in range(2):
        assert (
            await client.post("/v1/collections", json={"name": "c"}, headers=auth)
        ).status_code == 201
    _quota(await client.post("/v1/collections", json={"name": "c"}, headers=auth))

    rids = []
    for _ in range(2):
        made = await client.post("/v1/reporters", json={"name": "r"}, headers=auth)
        assert made.status_code == 201
        rids.append(made.json()["reporter"]["reporter_id"])
    _quota(await client.post("/v1/reporters", json={"name": "r"}, headers=auth))

    workflow = {"name": "w", "target_kind": "youtube_channel"}
    wids = []
    for _ in range(2):
        made = await client.post(f"/v1/reporters/{rids[0]}/workflows", json=workflow, headers=auth)
        assert made.status_code == 201, made.text
        wids.append(made.json()["workflow"]["workflow_id"])
    _quota(await client.post(f"/v1/reporters/{rids[0]}/workflows", json=workflow, headers=auth))
    # Per reporter: the other reporter has room.
    other = await client.post(f"/v1/reporters/{rids[1]}/workflows", json=workflow, headers=auth)
    assert other.status_code == 201

    schedule = {"workflow_id": wids[0], "interval_hours": 24}
    url = f"/v1/reporters/{rids[0]}/schedules"
    assert (await client.post(url, json=schedule, headers=auth)).status_code == 201
    _quota(await client.post(url, json=schedule, headers=auth))
