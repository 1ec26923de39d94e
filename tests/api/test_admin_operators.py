"""The operator console's admin routes: the overview, dead letters and their retry, any execution
with its events. On fakeredis and a private real Redis."""

from __future__ import annotations

import anyio
import httpx
import pytest

from engine.log.events import ExecutionCompleted, ExecutionRetried
from engine.log.ids import new_execution_id
from engine.run.worker import Worker
from engine.runtime import Runtime
from projections.projector import Projector
from tests.api.conftest import ApiAccount
from tests.integration.test_dead_letter_retry import dead_lettered
from tests.integration.test_worker import of_type

pytestmark = pytest.mark.anyio


async def transcript(client: httpx.AsyncClient, account: ApiAccount) -> str:
    item = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=account.key_auth
    )
    assert item.status_code == 201, item.text
    item_id = item.json()["item"]["item_id"]
    accepted = await client.post(
        f"/v1/items/{item_id}/transcript", json={"lang": "en"}, headers=account.key_auth
    )
    assert accepted.status_code == 202, accepted.text
    execution_id: str = accepted.json()["execution"]["execution_id"]
    return execution_id


async def test_the_admin_routes_need_the_admin_token(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    xid = new_execution_id(0)
    for method, path in (
        ("GET", "/admin/overview"),
        ("GET", "/admin/dead-letters"),
        ("POST", f"/admin/dead-letters/{xid}/retry"),
        ("GET", f"/admin/executions/{xid}"),
    ):
        for headers in ({}, alice.key_auth):
            answer = await client.request(method, path, headers=headers)
            assert answer.status_code == 401, (method, path, answer.text)


async def test_the_overview_moves_as_executions_queue_and_end(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount, runtime: Runtime
) -> None:
    xid = await transcript(client, alice)
    p = runtime.store.keys.partition(alice.account_id)
    body = (await client.get("/admin/overview", headers=admin)).json()
    assert body["partitions_count"] == runtime.store.keys.partitions
    part = body["partitions"][p]
    assert part["partition"] == p
    assert part["queued"] == 1
    assert part["oldest_queued_ms"] is not None
    assert part["leased"] == 0
    assert part["lag_entries"] >= 1  # no projector has folded the request yet
    assert part["checkpoint"] is None
    assert body["totals"]["queued"] == 1
    points = body["rates"]["points"]
    assert len(points) == 60
    assert body["rates"]["bucket_s"] == 10
    assert sum(pt["requested"] for pt in points) == 1

    await Worker(runtime, worker_id="w-console").run_until_idle()
    await Projector(runtime).run_until_idle()
    assert isinstance((await runtime.store.log.history(xid))[-1], ExecutionCompleted)
    body = (await client.get("/admin/overview", headers=admin)).json()
    part = body["partitions"][p]
    assert part["queued"] == 0
    assert part["oldest_queued_ms"] is None
    assert part["lag_entries"] == 0
    assert part["lag_ms"] == 0
    [(newest, _)] = await runtime.store.redis.xrevrange(runtime.store.keys.log(p), count=1)
    assert part["checkpoint"] == newest.decode()
    points = body["rates"]["points"]
    assert sum(pt["requested"] for pt in points) == 1  # counted once across polls
    assert sum(pt["done"] for pt in points) == 1
    assert sum(pt["error"] for pt in points) == 0
    # The worker ended its leases: it is listed only while live or holding one.
    assert not [w for w in body["workers"] if w["worker_id"] == "w-console" and w["leases_held"]]


async def test_a_dead_letter_listed_retried_from_the_route_ends_done(
    client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
) -> None:
    req = await dead_lettered(runtime)
    xid = req.execution_id
    listed = (await client.get("/admin/dead-letters", headers=admin)).json()["dead_letters"]
    [dead] = [d for d in listed if d["execution_id"] == xid]
    assert dead["retriable"] is True
    assert dead["owner"] == req.owner
    assert dead["deliveries"] == runtime.settings.max_deliveries + 1
    overview = (await client.get("/admin/overview", headers=admin)).json()
    assert overview["totals"]["dead_letters"] == 1

    answer = await client.post(
        f"/admin/dead-letters/{xid}/retry", json={"operator": "ana"}, headers=admin
    )
    assert answer.status_code == 202, answer.text
    retry = answer.json()["retry"]
    assert retry["execution_id"] == xid
    assert retry["requested_by"] == "admin:ana"
    assert retry["dead_ids"] == [dead["dead_id"]]
    await Worker(runtime).run_until_idle()

    detail = (await client.get(f"/admin/executions/{xid}", headers=admin)).json()
    assert detail["owner"] == req.owner
    assert detail["detail"]["execution"]["status"] == "done"
    types = [e["type"] for e in detail["events"]]
    assert types.count("ExecutionRetried") == 1
    assert types[-1] == "ExecutionCompleted"
    [event] = of_type(await runtime.store.log.history(xid), ExecutionRetried)
    assert event.requested_by == "admin:ana"

    again = await client.post(f"/admin/dead-letters/{xid}/retry", headers=admin)
    assert again.status_code == 409
    assert "not dead-lettered" in again.json()["error"]["message"]


async def test_concurrent_retries_from_the_route_resume_it_once(
    client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
) -> None:
    req = await dead_lettered(runtime)
    codes: list[int] = []

    async def one() -> None:
        answer = await client.post(f"/admin/dead-letters/{req.execution_id}/retry", headers=admin)
        codes.append(answer.status_code)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert sorted(codes) == [202, 409, 409, 409]
    history = await runtime.store.log.history(req.execution_id)
    [event] = of_type(history, ExecutionRetried)
    assert event.requested_by == "admin:console"


async def test_retry_errors_are_clear(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount, runtime: Runtime
) -> None:
    xid = await transcript(client, alice)
    answer = await client.post(f"/admin/dead-letters/{xid}/retry", headers=admin)
    assert answer.status_code == 409
    assert "not dead-lettered (its status is pending)" in answer.json()["error"]["message"]
    missing = await client.post(f"/admin/dead-letters/{new_execution_id(1)}/retry", headers=admin)
    assert missing.status_code == 404
    bad = await client.post("/admin/dead-letters/nope/retry", headers=admin)
    assert bad.status_code == 404
    unknown = await client.post(
        f"/admin/dead-letters/{xid}/retry", json={"who": "x"}, headers=admin
    )
    assert unknown.status_code == 422
    empty = await client.post(
        f"/admin/dead-letters/{xid}/retry", json={"operator": ""}, headers=admin
    )
    assert empty.status_code == 422
    assert (
        await client.get(f"/admin/executions/{new_execution_id(1)}", headers=admin)
    ).status_code == 404


async def test_the_console_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for path, method, status in (
        ("/admin/overview", "get", "200"),
        ("/admin/dead-letters", "get", "200"),
        ("/admin/dead-letters/{execution_id}/retry", "post", "202"),
        ("/admin/executions/{execution_id}", "get", "200"),
    ):
        operation = paths[path][method]
        assert operation["security"] == [{"adminToken": []}], path
        assert "application/json" in operation["responses"][status]["content"], path
    schemas = document["components"]["schemas"]
    assert {"OverviewResponse", "PartitionOut", "RetryResponse", "DeadLetterList"} <= set(schemas)
