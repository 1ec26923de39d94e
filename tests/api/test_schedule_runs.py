"""Schedule runs through the API: trigger (dispatched, already running, fee once, 402, 422,
Idempotency-Key), the runs list and a run's detail with its per-item events, the executions a run
started among the reporter's, and other owners' and malformed ids."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engine.runtime import Runtime
from tests.api.conftest import ApiAccount, new_account
from tests.api.test_collections import make, pages
from tests.api.test_workflows import reporter, workflow
from tests.helpers import micro
from tests.schedules import FakeYouTube, install, settle

pytestmark = pytest.mark.anyio


@pytest.fixture
def youtube(monkeypatch: pytest.MonkeyPatch) -> FakeYouTube:
    return install(monkeypatch)


async def schedule(client: httpx.AsyncClient, who: ApiAccount, *channels: str) -> tuple[str, str]:
    """A reporter and its schedule over one collection of ``channels``: (reporter, schedule)."""
    rid = await reporter(client, who)
    wf = await workflow(client, who, rid, [{"tool_id": "transcribe"}])
    cid = (await make(client, who, "/v1/collections", {"name": "c"}))["collection"]["collection_id"]
    for handle in channels:
        item = (await make(client, who, "/v1/items", {"source": handle}))["item"]["item_id"]
        await make(client, who, f"/v1/collections/{cid}/items", {"item_id": item})
    body = {"workflow_id": wf["workflow_id"], "interval_hours": 6, "collection_ids": [cid]}
    made = await make(client, who, f"/v1/reporters/{rid}/schedules", body)
    sid: str = made["schedule"]["schedule_id"]
    return rid, sid


async def trigger(
    client: httpx.AsyncClient, who: ApiAccount, rid: str, sid: str, **headers: str
) -> httpx.Response:
    return await client.post(
        f"/v1/reporters/{rid}/schedules/{sid}/run", headers={**who.key_auth, **headers}
    )


async def coins(client: httpx.AsyncClient, who: ApiAccount) -> float:
    balance: float = (await client.get("/v1/me", headers=who.key_auth)).json()["account"][
        "balance_coins"
    ]
    return balance


async def test_trigger_runs_and_reads(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, youtube: FakeYouTube
) -> None:
    youtube.upload("@alpha", "a1000000000", hours_old=1)
    rid, sid = await schedule(client, alice, "@alpha")
    before = await coins(client, alice)
    first = await trigger(client, alice, rid, sid)
    assert first.status_code == 202, first.text
    body = first.json()
    assert set(body) == {"status", "schedule_id", "run_id"}
    assert (body["status"], body["schedule_id"]) == ("dispatched", sid)
    assert body["run_id"].startswith("run_")
    busy = await trigger(client, alice, rid, sid)
    assert busy.status_code == 202
    assert busy.json() == {
        "status": "already_running",
        "schedule_id": sid,
        "run_id": body["run_id"],
    }
    assert micro(await coins(client, alice)) == micro(before) - 10_000  # the fee, once

    # Read-your-writes: the run is readable before the projector ran.
    url = f"/v1/reporters/{rid}/schedule/runs/{body['run_id']}"
    pending = await client.get(url, headers=alice.key_auth)
    assert pending.status_code == 200, pending.text
    assert pending.json()["run"]["status"] == "pending"

    await settle(runtime)
    run: dict[str, Any] = (await client.get(url, headers=alice.key_auth)).json()["run"]
    assert (run["run_id"], run["status"], run["schedule_id"]) == (body["run_id"], "done", sid)
    assert run["counts"]["processed"] == 1
    [item] = run["items"]
    assert (item["outcome"], item["video_id"]) == ("processed", "a1000000000")
    detail = await client.get(f"/v1/executions/{run['execution_id']}", headers=alice.key_auth)
    assert detail.json()["execution"]["kind"] == "schedule_run"
    assert [i["status"] for i in detail.json()["items"]] == ["done"]

    child = await client.get(f"/v1/executions/{item['execution_id']}", headers=alice.key_auth)
    assert child.status_code == 200
    summary = child.json()["execution"]
    assert (summary["status"], summary["run_id"], summary["schedule_id"]) == (
        "done",
        body["run_id"],
        sid,
    )
    assert summary["fee_coins"] == 0
    listed = await client.get(f"/v1/reporters/{rid}/executions", headers=alice.key_auth)
    ids = {e["execution_id"] for e in listed.json()["executions"]}
    assert {run["execution_id"], item["execution_id"]} <= ids

    later = []
    for _ in range(2):
        later.append((await trigger(client, alice, rid, sid)).json()["run_id"])
        await settle(runtime)
    runs = await pages(client, alice, f"/v1/reporters/{rid}/schedule/runs", "runs")
    assert [[r["run_id"] for r in page] for page in runs] == [
        [later[1], later[0]],
        [body["run_id"]],
    ]
    assert runs[0][0]["counts"]["skipped_seen"] == 1


async def test_an_idempotency_key_gives_back_its_run(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, youtube: FakeYouTube
) -> None:
    rid, sid = await schedule(client, alice, "@alpha")
    first = await trigger(client, alice, rid, sid, **{"Idempotency-Key": "nightly-1"})
    await settle(runtime)
    again = await trigger(client, alice, rid, sid, **{"Idempotency-Key": "nightly-1"})
    assert again.json() == first.json()
    assert first.json()["status"] == "dispatched"


async def test_refusals(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    alice: ApiAccount,
    bob: ApiAccount,
    youtube: FakeYouTube,
) -> None:
    rid, sid = await schedule(client, alice, "@alpha")
    empty_rid, empty_sid = await schedule(client, alice)
    no_channel = await trigger(client, alice, empty_rid, empty_sid)
    assert no_channel.status_code == 422
    assert "no YouTube channel" in no_channel.json()["error"]["message"]
    unknown = await client.post(
        f"/v1/reporters/{rid}/schedules/{sid}/run", json={"surprise": 1}, headers=alice.key_auth
    )
    assert unknown.status_code == 422
    poor = await new_account(client, admin, coins=0, name="poor")
    poor_rid, poor_sid = await schedule(client, poor, "@alpha")
    broke = await trigger(client, poor, poor_rid, poor_sid)
    assert broke.status_code == 402
    assert broke.json()["error"]["code"] == "insufficient_balance"
    # The same schedule under another of the owner's reporters is not found.
    other_rid = await reporter(client, alice, "other")
    assert (await trigger(client, alice, other_rid, sid)).status_code == 404
    # Another owner's schedule, and runs read with malformed or unknown ids.
    assert (await trigger(client, bob, rid, sid)).status_code == 404
    run = (await trigger(client, alice, rid, sid)).json()["run_id"]
    for who, path in (
        (bob, f"/v1/reporters/{rid}/schedule/runs/{run}"),
        (alice, f"/v1/reporters/{other_rid}/schedule/runs/{run}"),
        (alice, f"/v1/reporters/{rid}/schedule/runs/run_nope"),
        (alice, f"/v1/reporters/{rid}/schedule/runs/run_00000000000000000000"),
        (bob, f"/v1/reporters/{rid}/schedule/runs"),
    ):
        response = await client.get(path, headers=who.key_auth)
        assert response.status_code == 404, (path, response.text)
