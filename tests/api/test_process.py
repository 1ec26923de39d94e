"""Running reporters over HTTP: process and process-collection (202, snapshot, 422 before any
charge, idempotency), the execution detail with per-item progress, and a reporter's executions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engine.run.worker import Worker
from engine.runtime import Runtime
from projections.projector import Projector
from tests.api.conftest import ApiAccount, new_account
from tests.api.test_workflows import reporter, workflow
from tests.helpers import micro

pytestmark = pytest.mark.anyio

VIDEO = "https://youtu.be/dQw4w9WgXcQ"
OTHER_VIDEO = "https://www.youtube.com/watch?v=9bZkp7q19f0"
CHANNEL = "https://www.youtube.com/@clipstream"
STEPS = [
    {"tool_id": "transcribe"},
    {"tool_id": "llm_prompt", "prompt_text": "Summarise", "params": {"max_tokens": 32}},
]


async def _drain(runtime: Runtime) -> None:
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()


async def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def _reporter(
    client: httpx.AsyncClient, who: ApiAccount, target_kind: str = "youtube_video"
) -> tuple[str, str]:
    """A reporter whose default workflow is transcribe → llm_prompt over ``target_kind``."""
    rep = await _ok(
        await client.post("/v1/reporters", json={"name": "r"}, headers=who.key_auth), 201
    )
    rid = rep["reporter"]["reporter_id"]
    wf = await _ok(
        await client.post(
            f"/v1/reporters/{rid}/workflows",
            json={"name": "w", "target_kind": target_kind, "steps": STEPS},
            headers=who.key_auth,
        ),
        201,
    )
    wid = wf["workflow"]["workflow_id"]
    await _ok(
        await client.patch(
            f"/v1/reporters/{rid}", json={"default_workflow_id": wid}, headers=who.key_auth
        )
    )
    return rid, wid


async def process_video(
    client: httpx.AsyncClient, who: ApiAccount, steps: list[dict[str, Any]]
) -> str:
    """A new reporter of ``who`` with a workflow of ``steps``, sent to process :data:`VIDEO`: the
    id of the execution accepted (202)."""
    rid = await reporter(client, who)
    wf = await workflow(client, who, rid, steps)
    body = {"source": VIDEO, "workflow_id": wf["workflow_id"]}
    accepted = await _ok(
        await client.post(f"/v1/reporters/{rid}/process", json=body, headers=who.key_auth), 202
    )
    xid: str = accepted["execution"]["execution_id"]
    return xid


async def _balance(client: httpx.AsyncClient, who: ApiAccount) -> float:
    body = await _ok(await client.get("/v1/me", headers=who.key_auth))
    coins: float = body["account"]["balance_coins"]
    return coins


async def test_process_runs_the_default_workflow_and_the_snapshot_survives_edits(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    rid, wid = await _reporter(client, alice)
    item = await _ok(
        await client.post("/v1/items", json={"source": VIDEO}, headers=alice.key_auth), 201
    )
    before = await _balance(client, alice)

    accepted = await _ok(
        await client.post(
            f"/v1/reporters/{rid}/process", json={"source": VIDEO}, headers=alice.key_auth
        ),
        202,
    )
    execution = accepted["execution"]
    assert (execution["status"], execution["kind"]) == ("pending", "process")
    assert execution["reporter_id"] == rid
    # The source resolved to the existing item: no second item.
    assert execution["target"]["item_id"] == item["item"]["item_id"]
    items = await _ok(await client.get("/v1/items", headers=alice.key_auth))
    assert len(items["items"]) == 1
    # The flat fee, and the one read in between.
    assert micro(await _balance(client, alice)) == micro(before) - 10_000 - 1_000

    xid = execution["execution_id"]
    pending = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert pending["steps"] == []
    assert [s["tool_id"] for s in pending["step_inputs"]] == ["transcribe", "llm_prompt"]
    assert pending["step_inputs"][0]["input"]["item_id"] == item["item"]["item_id"]

    # Editing the workflow afterwards changes nothing of what runs or what is shown.
    await _ok(
        await client.put(
            f"/v1/reporters/{rid}/workflows/{wid}/steps",
            json={"steps": [{"tool_id": "llm_prompt", "prompt_text": "Other"}]},
            headers=alice.key_auth,
        )
    )
    await _drain(runtime)

    done = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert done["execution"]["status"] == "done", done
    assert [s["prompt_text"] for s in done["workflow"]["steps"]] == ["", "Summarise"]
    assert [(s["tool_id"], s["status"], s["attempts"]) for s in done["steps"]] == [
        ("transcribe", "done", 1),
        ("llm_prompt", "done", 1),
    ]
    summary = done["steps"][1]
    assert summary["output"]["kind"] == "completion"
    assert summary["usage"]["prompt_tokens"] > 0
    assert summary["cost_coins"] > 0
    assert summary["started_at"]
    assert summary["finished_at"]
    # What was sent: the step's prompt over the transcript the previous step made.
    assert summary["input"]["prompt"].startswith("Summarise\n\n")
    assert summary["input"]["max_tokens"] == 32
    assert done["step_inputs"] == []

    listed = await _ok(await client.get(f"/v1/reporters/{rid}/executions", headers=alice.key_auth))
    assert [e["execution_id"] for e in listed["executions"]] == [xid]
    # The summary landed as a document of the reporter and the item.
    docs = await _ok(
        await client.get("/v1/documents", params={"reporter_id": rid}, headers=alice.key_auth)
    )
    mine = [d for d in docs["documents"] if d["kind"] == "completion"]
    assert len(mine) == 1
    assert mine[0]["item_id"] == item["item"]["item_id"]


async def test_process_creates_the_item_when_the_source_is_new(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    rid, _ = await _reporter(client, alice)
    accepted = await _ok(
        await client.post(
            f"/v1/reporters/{rid}/process", json={"source": OTHER_VIDEO}, headers=alice.key_auth
        ),
        202,
    )
    items = await _ok(await client.get("/v1/items", headers=alice.key_auth))
    assert [i["item_id"] for i in items["items"]] == [accepted["execution"]["target"]["item_id"]]
    assert items["items"][0]["type"] == "youtube_video"


async def test_a_workflow_that_does_not_fit_the_source_is_422_before_any_charge(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    rid, wid = await _reporter(client, alice, target_kind="youtube_channel")
    before = await _balance(client, alice)
    for body in ({"source": VIDEO}, {"source": VIDEO, "workflow_id": wid}):
        refused = await client.post(
            f"/v1/reporters/{rid}/process", json=body, headers=alice.key_auth
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "invalid_request"
    assert await _balance(client, alice) == before
    assert (await _ok(await client.get("/v1/executions/me", headers=alice.key_auth)))[
        "executions"
    ] == []
    # The channel fits.
    await _ok(
        await client.post(
            f"/v1/reporters/{rid}/process", json={"source": CHANNEL}, headers=alice.key_auth
        ),
        202,
    )


async def test_no_default_workflow_unknown_ids_and_bad_bodies(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    rep = await _ok(
        await client.post("/v1/reporters", json={"name": "r"}, headers=alice.key_auth), 201
    )
    rid = rep["reporter"]["reporter_id"]
    url = f"/v1/reporters/{rid}/process"
    no_default = await client.post(url, json={"source": VIDEO}, headers=alice.key_auth)
    assert no_default.status_code == 422
    assert "default workflow" in no_default.json()["error"]["message"]
    # Another owner's reporter is 404, and so is a malformed workflow id.
    assert (await client.post(url, json={"source": VIDEO}, headers=bob.key_auth)).status_code == 404
    bad_wf = await client.post(
        url, json={"source": VIDEO, "workflow_id": "x"}, headers=alice.key_auth
    )
    assert bad_wf.status_code == 404
    unknown = await client.post(url, json={"source": VIDEO, "extra": 1}, headers=alice.key_auth)
    assert unknown.status_code == 422
    assert "extra" in unknown.json()["error"]["message"]
    unclassifiable = await client.post(url, json={"source": "not a source"}, headers=alice.key_auth)
    assert unclassifiable.status_code == 422


async def test_idempotency_key_returns_the_same_execution_and_charges_once(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    rid, _ = await _reporter(client, alice)
    url = f"/v1/reporters/{rid}/process"
    headers = {**alice.key_auth, "Idempotency-Key": "k-1"}
    before = await _balance(client, alice)
    first = await _ok(await client.post(url, json={"source": VIDEO}, headers=headers), 202)
    again = await _ok(await client.post(url, json={"source": VIDEO}, headers=headers), 202)
    assert again["execution"]["execution_id"] == first["execution"]["execution_id"]
    assert micro(await _balance(client, alice)) == micro(before) - 10_000
    other = await client.post(url, json={"source": OTHER_VIDEO}, headers=headers)
    assert other.status_code == 409


async def test_process_with_no_balance_is_402_and_appends_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    poor = await new_account(client, admin, coins=0.0, name="poor")
    rid, _ = await _reporter(client, poor)
    refused = await client.post(
        f"/v1/reporters/{rid}/process", json={"source": VIDEO}, headers=poor.key_auth
    )
    assert refused.status_code == 402
    # At a zero balance reads are refused too; topped up, the list shows nothing was appended.
    assert (await client.get("/v1/executions/me", headers=poor.jwt_auth)).status_code == 402
    await _ok(
        await client.post(
            f"/admin/accounts/{poor.account_id}/credit",
            json={"coins": 1, "credit_id": "topup"},
            headers=admin,
        )
    )
    listed = await _ok(await client.get("/v1/executions/me", headers=poor.jwt_auth))
    assert listed["executions"] == []


async def _collection(
    client: httpx.AsyncClient, who: ApiAccount, sources: list[str]
) -> tuple[str, list[str]]:
    col = await _ok(
        await client.post("/v1/collections", json={"name": "c"}, headers=who.key_auth), 201
    )
    cid = col["collection"]["collection_id"]
    ids = []
    for source in sources:
        item = await _ok(
            await client.post("/v1/items", json={"source": source}, headers=who.key_auth), 201
        )
        ids.append(item["item"]["item_id"])
        await _ok(
            await client.post(
                f"/v1/collections/{cid}/items", json={"item_id": ids[-1]}, headers=who.key_auth
            ),
            201,
        )
    return cid, ids


async def test_process_collection_is_one_execution_with_per_item_progress(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    rid, _ = await _reporter(client, alice)
    # The channel does not fit a youtube_video workflow: only the two videos run.
    cid, ids = await _collection(client, alice, [VIDEO, CHANNEL, OTHER_VIDEO])
    before = await _balance(client, alice)
    accepted = await _ok(
        await client.post(
            f"/v1/reporters/{rid}/process-collection",
            json={"collection_id": cid},
            headers=alice.key_auth,
        ),
        202,
    )
    assert micro(await _balance(client, alice)) == micro(before) - 10_000
    xid = accepted["execution"]["execution_id"]
    assert accepted["execution"]["kind"] == "process_collection"
    pending = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert [(i["item_id"], i["status"]) for i in pending["items"]] == [
        (ids[0], "pending"),
        (ids[2], "pending"),
    ]
    assert len(pending["step_inputs"]) == 4

    await _drain(runtime)
    done = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert done["execution"]["status"] == "done", done
    assert [(i["item_id"], i["status"], i["steps_done"]) for i in done["items"]] == [
        (ids[0], "done", 2),
        (ids[2], "done", 2),
    ]
    assert all(i["output"]["kind"] == "completion" for i in done["items"])
    # Each item's summary step read its own item's transcript.
    transcripts = [s for s in done["steps"] if s["tool_id"] == "transcribe"]
    assert [s["output"]["item_id"] for s in transcripts] == [ids[0], ids[2]]

    capped = await _ok(
        await client.post(
            f"/v1/reporters/{rid}/process-collection",
            json={"collection_id": cid, "max_items": 1},
            headers=alice.key_auth,
        ),
        202,
    )
    detail = await _ok(
        await client.get(
            f"/v1/executions/{capped['execution']['execution_id']}", headers=alice.key_auth
        )
    )
    assert [i["item_id"] for i in detail["items"]] == [ids[0]]
    listed = await _ok(await client.get(f"/v1/reporters/{rid}/executions", headers=alice.key_auth))
    assert xid in [e["execution_id"] for e in listed["executions"]]


async def test_process_collection_refusals(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    rid, _ = await _reporter(client, alice, target_kind="youtube_channel")
    cid, _ = await _collection(client, alice, [VIDEO])
    url = f"/v1/reporters/{rid}/process-collection"
    before = await _balance(client, alice)
    no_fit = await client.post(url, json={"collection_id": cid}, headers=alice.key_auth)
    assert no_fit.status_code == 422
    empty, _ = await _collection(client, alice, [])
    assert (
        await client.post(url, json={"collection_id": empty}, headers=alice.key_auth)
    ).status_code == 422
    assert (
        await client.post(url, json={"collection_id": cid, "max_items": 0}, headers=alice.key_auth)
    ).status_code == 422
    assert await _balance(client, alice) == before
    bobs, _ = await _collection(client, bob, [CHANNEL])
    assert (
        await client.post(url, json={"collection_id": bobs}, headers=alice.key_auth)
    ).status_code == 404
    assert (
        await client.post(url, json={"collection_id": "col_x"}, headers=alice.key_auth)
    ).status_code == 404


async def test_reporter_executions_are_paged_and_owner_scoped(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, bob: ApiAccount
) -> None:
    rid, _ = await _reporter(client, alice)
    other_rid, _ = await _reporter(client, alice)
    made = []
    for _ in range(3):
        accepted = await _ok(
            await client.post(
                f"/v1/reporters/{rid}/process", json={"source": VIDEO}, headers=alice.key_auth
            ),
            202,
        )
        made.append(accepted["execution"]["execution_id"])
    await _ok(
        await client.post(
            f"/v1/reporters/{other_rid}/process", json={"source": VIDEO}, headers=alice.key_auth
        ),
        202,
    )
    await Projector(runtime).run_until_idle()
    url = f"/v1/reporters/{rid}/executions"
    first = await _ok(await client.get(url, params={"limit": 2}, headers=alice.key_auth))
    assert len(first["executions"]) == 2
    assert first["next_cursor"]
    rest = await _ok(
        await client.get(
            url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice.key_auth
        )
    )
    seen = [e["execution_id"] for e in first["executions"] + rest["executions"]]
    assert seen == list(reversed(made))
    assert rest["next_cursor"] is None
    assert (await client.get(url, headers=bob.key_auth)).status_code == 404
