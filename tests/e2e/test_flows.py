"""Every promise an integrator relies on, over HTTP against separate processes, on a single Redis
and on a Redis Cluster with replicas (tests/e2e/conftest.py): transcript, process,
process-collection, schedule run, cancel, idempotency, tenancy, money exact to the micro-coin."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from tests.e2e.client import (
    Json,
    Tenant,
    events,
    ledger,
    new_item,
    new_reporter,
    new_tenant,
    ok,
    wait_terminal,
)
from tests.e2e.deployment import Deployment
from tests.helpers import eventually, micro

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

FEE = 10_000
READ = 1_000


@pytest.fixture
async def http(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the first API process (``other`` reaches the second)."""
    async with httpx.AsyncClient(base_url=deployment.api_bases[0], timeout=30) as client:
        yield client
    deployment.check_alive()


@pytest.fixture
async def other(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deployment.api_bases[1], timeout=30) as client:
        yield client


async def check_money(http: httpx.AsyncClient, who: Tenant, opening: int) -> list[Json]:
    """The account's money, exactly: the ledger adds up to the balance entry by entry; each
    execution in it paid its fee at most once (a schedule's videos have none: the run paid) and
    exactly the cost it shows; reads kept their fee or got it back. Returns the ledger (newest
    first)."""
    entries = await ledger(http, who)
    running = 0
    for entry in reversed(entries):
        running += micro(entry["amount_coins"])
        assert micro(entry["balance_coins"]) == running, entry
    assert [e["charge_id"] for e in entries].count(entries[-1]["charge_id"]) == 1
    me = ok(await http.get("/v1/me", headers=who.auth))["account"]
    assert micro(me["balance_coins"]) == running
    credits = sum(micro(e["amount_coins"]) for e in entries if e["kind"] == "credit")
    assert credits == opening
    charge_ids = [e["charge_id"] for e in entries]
    assert len(charge_ids) == len(set(charge_ids)), "a charge id twice"
    by_execution: dict[str, int] = {}
    for entry in entries:
        if entry["execution_id"] is not None:
            xid = entry["execution_id"]
            by_execution[xid] = by_execution.get(xid, 0) + micro(entry["amount_coins"])
    for xid, paid in by_execution.items():
        detail = await wait_terminal(http, who, xid)
        assert -paid == micro(detail["execution"]["cost_coins"]), xid
        fees = [
            micro(e["amount_coins"])
            for e in entries
            if e["kind"] == "fee" and e["execution_id"] == xid
        ]
        assert fees == ([-micro(detail["execution"]["fee_coins"])] if fees else []), xid
    reads = sum(1 for e in entries if e["kind"] == "read")
    given_back = sum(1 for e in entries if e["kind"] == "read_release")
    assert running == opening - sum(-p for p in by_execution.values()) - READ * (reads - given_back)
    return entries


async def test_a_transcript_from_request_to_polled_result(
    http: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    who = await new_tenant(http, coins=10)
    item_id = await new_item(http, who)
    accepted = ok(
        await http.post(f"/v1/items/{item_id}/transcript", json={"lang": "en"}, headers=who.auth),
        202,
    )
    xid = accepted["execution"]["execution_id"]
    # Read-your-writes, through the other API process, whatever the projector's lag.
    first = ok(await other.get(f"/v1/executions/{xid}", headers=who.auth))
    assert first["execution"]["status"] in ("pending", "running", "done")

    done = await wait_terminal(http, who, xid)
    assert done["execution"]["status"] == "done", done
    assert [(s["tool_id"], s["status"]) for s in done["steps"]] == [("transcribe", "done")]

    async def transcript() -> httpx.Response:
        return await other.get(f"/v1/items/{item_id}/transcript?lang=en", headers=who.auth)

    got = await eventually(transcript, until=lambda r: r.status_code == 200)
    assert got.json()["transcript"]["segments"]
    history = await events(http, who, xid)
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    assert history[-1]["type"] == "ExecutionCompleted"
    await check_money(http, who, 10_000_000)


async def test_process_and_process_collection(http: httpx.AsyncClient) -> None:
    who = await new_tenant(http, coins=10)
    steps = [{"tool_id": "transcribe"}, {"tool_id": "llm_prompt", "prompt_text": "Summarize."}]
    rid, wid = await new_reporter(http, who, steps)
    one = ok(
        await http.post(
            f"/v1/reporters/{rid}/process",
            json={"source": "https://youtu.be/aaaaaaaaaaa", "workflow_id": wid},
            headers=who.auth,
        ),
        202,
    )
    done = await wait_terminal(http, who, one["execution"]["execution_id"])
    assert [s["status"] for s in done["steps"]] == ["done", "done"], done

    collection = ok(await http.post("/v1/collections", json={"name": "c"}, headers=who.auth), 201)
    cid = collection["collection"]["collection_id"]
    for source in ("https://youtu.be/bbbbbbbbbbb", "https://youtu.be/ccccccccccc"):
        item_id = await new_item(http, who, source)
        ok(await http.post(f"/v1/collections/{cid}/items", json={"item_id": item_id},
                           headers=who.auth), 201)  # fmt: skip
    body = {"name": "each", "target_kind": "collection", "steps": steps}
    made = await http.post(f"/v1/reporters/{rid}/workflows", json=body, headers=who.auth)
    per_item = ok(made, 201)["workflow"]["workflow_id"]
    many = ok(
        await http.post(
            f"/v1/reporters/{rid}/process-collection",
            json={"collection_id": cid, "workflow_id": per_item},
            headers=who.auth,
        ),
        202,
    )
    finished = await wait_terminal(http, who, many["execution"]["execution_id"])
    assert finished["execution"]["status"] == "done", finished
    assert len(finished["items"]) == 2
    await check_money(http, who, 10_000_000)


async def test_a_schedule_run_starts_once_however_many_ask(http: httpx.AsyncClient) -> None:
    who = await new_tenant(http, coins=10)
    rid, wid = await new_reporter(http, who, [{"tool_id": "transcribe"}])
    collection = ok(await http.post("/v1/collections", json={"name": "ch"}, headers=who.auth), 201)
    cid = collection["collection"]["collection_id"]
    channel = await new_item(http, who, "https://www.youtube.com/@e2echannel")
    ok(await http.post(f"/v1/collections/{cid}/items", json={"item_id": channel},
                       headers=who.auth), 201)  # fmt: skip
    schedule = ok(
        await http.post(
            f"/v1/reporters/{rid}/schedules",
            json={"workflow_id": wid, "interval_hours": 24, "collection_ids": [cid],
                  "max_videos_per_channel": 2, "max_age_hours": 8760},
            headers=who.auth,
        ),
        201,
    )  # fmt: skip
    sid = schedule["schedule"]["schedule_id"]
    answers: list[Json] = []

    async def run() -> None:
        url = f"/v1/reporters/{rid}/schedules/{sid}/run"
        answers.append(ok(await http.post(url, headers=who.auth), 202))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(run)
    dispatched = {a["run_id"] for a in answers if a["status"] == "dispatched"}
    assert dispatched
    # A run already in flight is named, never a second one started beside it.
    assert {a["run_id"] for a in answers if a["status"] == "already_running"} <= dispatched

    async def run_detail(run_id: str) -> Json:
        url = f"/v1/reporters/{rid}/schedule/runs/{run_id}"
        response = await http.get(url, headers=who.auth)
        return response.json() if response.status_code == 200 else {}

    for run_id in dispatched:
        found = await eventually(functools.partial(run_detail, run_id), until=bool)
        done = await wait_terminal(http, who, found["run"]["execution_id"])
        assert done["execution"]["status"] == "done", done
        # Every video the run started ran to the end too.
        for item in (await run_detail(run_id))["run"]["items"]:
            if item["outcome"] == "processed":
                video = await wait_terminal(http, who, item["execution_id"])
                assert video["execution"]["status"] == "done", video

    async def runs() -> list[Json]:
        body = ok(await http.get(f"/v1/reporters/{rid}/schedule/runs", headers=who.auth))
        found: list[Json] = body["runs"]
        return found

    listed = await eventually(runs, until=lambda r: len(r) == len(dispatched))
    assert {r["run_id"] for r in listed} == dispatched
    await check_money(http, who, 10_000_000)


async def test_cancel_stops_a_running_step(http: httpx.AsyncClient) -> None:
    who = await new_tenant(http, coins=10)
    hang = {"tool_id": "llm_prompt", "prompt_text": "Go.", "params": {"sim": {"hang": True}}}
    rid, wid = await new_reporter(http, who, [{"tool_id": "transcribe"}, hang])
    accepted = ok(
        await http.post(f"/v1/reporters/{rid}/process",
                        json={"source": "https://youtu.be/ddddddddddd", "workflow_id": wid},
                        headers=who.auth),
        202,
    )  # fmt: skip
    xid = accepted["execution"]["execution_id"]

    async def hanging() -> Json:
        return ok(await http.get(f"/v1/executions/{xid}", headers=who.auth))

    await eventually(
        hanging,
        until=lambda d: len(d["steps"]) == 2 and d["steps"][1]["status"] == "running",
        deadline_s=60,
    )
    ok(await http.post(f"/v1/executions/{xid}/cancel", headers=who.auth), 202)
    ended = await wait_terminal(http, who, xid)
    assert ended["execution"]["status"] == "error"
    assert ended["execution"]["error"]["code"] == "cancelled"
    again = await http.post(f"/v1/executions/{xid}/cancel", headers=who.auth)
    assert again.status_code == 409
    await check_money(http, who, 10_000_000)


async def test_idempotency_under_concurrent_retries(
    http: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    who = await new_tenant(http, coins=1)
    item_id = await new_item(http, who)
    url = f"/v1/items/{item_id}/transcript"
    headers = {**who.auth, "Idempotency-Key": "e2e-order-1"}
    answers: list[httpx.Response] = []

    async def send(client: httpx.AsyncClient) -> None:
        answers.append(await client.post(url, json={"text": "hello"}, headers=headers))

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(send, http if n % 2 else other)
    assert {r.status_code for r in answers} == {202}
    [xid] = {r.json()["execution"]["execution_id"] for r in answers}
    conflict = await http.post(url, json={"text": "another"}, headers=headers)
    assert conflict.status_code == 409
    await wait_terminal(http, who, xid)
    entries = await check_money(http, who, 1_000_000)
    assert [e["execution_id"] for e in entries if e["kind"] == "fee"] == [xid]


async def test_fees_and_reads_never_take_more_than_the_balance(
    http: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    who = await new_tenant(http, coins=0.05)  # exactly five fees
    item_id = await new_item(http, who)
    url = f"/v1/items/{item_id}/transcript"
    answers: list[httpx.Response] = []

    async def send(client: httpx.AsyncClient) -> None:
        answers.append(await client.post(url, json={"text": "hi"}, headers=who.auth))

    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(send, http if n % 2 else other)
    assert Counter(r.status_code for r in answers) == {202: 5, 402: 25}
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 402} == {
        "insufficient_balance"
    }
    accepted = [r.json()["execution"]["execution_id"] for r in answers if r.status_code == 202]
    me = ok(await http.get("/v1/me", headers=who.auth))["account"]
    assert me["balance_coins"] == 0
    # At zero the owner still reads its execution, its events and its ledger (free); other
    # reads are 402.
    for xid in accepted:
        done = await wait_terminal(http, who, xid)
        assert done["execution"]["status"] == "done"
        await events(http, who, xid)
    assert (await http.get("/v1/items", headers=who.auth)).status_code == 402
    entries = await check_money(http, who, 50_000)
    assert sorted(e["execution_id"] for e in entries if e["kind"] == "fee") == sorted(accepted)

    reader = await new_tenant(http, coins=0.02)  # exactly twenty reads
    statuses: list[int] = []

    async def read(client: httpx.AsyncClient) -> None:
        statuses.append((await client.get("/v1/items", headers=reader.auth)).status_code)

    async with anyio.create_task_group() as tg:
        for n in range(60):
            tg.start_soon(read, http if n % 2 else other)
    assert Counter(statuses) == {200: 20, 402: 40}
    assert ok(await http.get("/v1/me", headers=reader.auth))["account"]["balance_coins"] == 0
    await check_money(http, reader, 20_000)


async def test_another_tenant_gets_404_for_everything_of_mine(
    http: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    alice, bob = await new_tenant(http, name="alice"), await new_tenant(http, name="bob")
    item_id = await new_item(http, alice)
    rid, _ = await new_reporter(http, alice, [{"tool_id": "transcribe"}])
    cid = ok(await http.post("/v1/collections", json={"name": "c"}, headers=alice.auth), 201)[
        "collection"
    ]["collection_id"]
    xid = ok(
        await http.post(f"/v1/items/{item_id}/transcript", json={"text": "secret words"},
                        headers=alice.auth),
        202,
    )["execution"]["execution_id"]  # fmt: skip
    await wait_terminal(http, alice, xid)
    for method, path in (
        ("GET", f"/v1/executions/{xid}"),
        ("GET", f"/v1/executions/{xid}/events"),
        ("POST", f"/v1/executions/{xid}/cancel"),
        ("GET", f"/v1/items/{item_id}"),
        ("GET", f"/v1/items/{item_id}/transcript"),
        ("GET", f"/v1/reporters/{rid}"),
        ("GET", f"/v1/collections/{cid}"),
        ("DELETE", f"/v1/items/{item_id}"),
    ):
        for client in (http, other):
            answer = await client.request(method, path, headers=bob.auth)
            assert answer.status_code == 404, (method, path, answer.text)
            assert "secret" not in answer.text
    mine = ok(await http.get("/v1/executions/me", headers=bob.auth))["executions"]
    assert mine == []
    assert ok(await http.get(f"/v1/items/{item_id}", headers=alice.auth))["item"]["item_id"]
