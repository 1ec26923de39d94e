"""Read fees (DESIGN §6): every read of the account API pays ``fees.read`` once, taken when it is
admitted and kept once its answer has gone out (given back when it answered an error); a failed
settlement never fails the read and is applied later; a read the balance cannot cover answers 402,
while ``GET /v1/me``, the ledger and the owner's own execution always answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from starlette.types import Message

from api.app import create_app, routes
from api.openapi import endpoints, openapi_document
from engine.money import accounts
from engine.money.accounts import LedgerEntry
from engine.money.audit import audit_account
from engine.money.read_fees import GRACE_MS, ReadFees
from engine.runtime import Runtime
from tests.api.conftest import ApiAccount, http_scope, new_account
from tests.api.test_realtime import running
from tests.api.test_realtime_sse import sse_events

pytestmark = pytest.mark.anyio

READ = 1_000  # the default read fee, micro-coins
OPENING = 1_000_000  # what the conftest accounts start with


async def _entries(runtime: Runtime, account_id: str) -> list[LedgerEntry]:
    entries, _ = await accounts.ledger(runtime, account_id, limit=100, cursor=None)
    return entries


async def _reads(runtime: Runtime, account_id: str) -> list[LedgerEntry]:
    return [e for e in await _entries(runtime, account_id) if e.kind == "read"]


async def _pending(runtime: Runtime) -> int:
    keys = runtime.store.keys
    return sum([await runtime.redis.zcard(keys.read_charges(p)) for p in runtime.store.partitions])


def _fees(app: Starlette) -> ReadFees:
    fees: ReadFees = app.state.read_fees
    return fees


async def test_a_read_is_reserved_at_admission_and_kept_once_its_answer_went_out(
    runtime: Runtime, alice: ApiAccount
) -> None:
    """At the ASGI level: when the last byte of the answer is handed to the server, the fee is
    already taken and still pending; once the request is over it is kept, exactly once."""
    app = create_app(runtime)
    scope = http_scope("/v1/items", alice.key_auth)
    sent: list[Message] = []
    balance_when_sent: list[int] = []
    pending_when_sent: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            balance_when_sent.append(await accounts.balance(runtime, alice.account_id))
            pending_when_sent.append(await _pending(runtime))

    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert (balance_when_sent, pending_when_sent) == ([OPENING - READ], [1])
    assert await accounts.balance(runtime, alice.account_id) == OPENING - READ
    request_id = dict(sent[0]["headers"])[b"x-request-id"].decode()
    [read] = await _reads(runtime, alice.account_id)
    assert (read.charge_id, read.amount, read.balance) == (f"read:{request_id}", -READ, 999_000)
    assert await _pending(runtime) == 0


async def test_each_read_pays_once_and_me_and_writes_pay_no_read_fee(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    created = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=alice.key_auth
    )
    assert created.status_code == 201
    for _ in range(3):
        assert (await client.get("/v1/me", headers=alice.key_auth)).status_code == 200
    assert await _reads(runtime, alice.account_id) == []

    item_id = created.json()["item"]["item_id"]
    for path in ("/v1/items", f"/v1/items/{item_id}", "/v1/tools", "/v1/me/ledger"):
        assert (await client.get(path, headers=alice.jwt_auth)).status_code == 200, path
    reads = await _reads(runtime, alice.account_id)
    assert len(reads) == 4
    assert len({r.charge_id for r in reads}) == 4
    assert [r.balance for r in reads] == [996_000, 997_000, 998_000, 999_000]
    assert await accounts.balance(runtime, alice.account_id) == OPENING - 4 * READ


async def test_a_client_request_id_never_merges_two_charges(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    headers = {**alice.key_auth, "X-Request-ID": "same-id-every-time"}
    for _ in range(2):
        read = await client.get("/v1/items", headers=headers)
        assert read.headers["x-request-id"] == "same-id-every-time"
    reads = await _reads(runtime, alice.account_id)
    assert len({r.charge_id for r in reads}) == 2
    assert await accounts.balance(runtime, alice.account_id) == OPENING - 2 * READ


async def test_an_error_answer_is_not_charged(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    missing = await client.get("/v1/items/itm_00000000000000000000", headers=alice.key_auth)
    assert missing.status_code == 404
    bad = await client.get("/v1/items", params={"limit": "0"}, headers=alice.key_auth)
    assert bad.status_code == 422
    assert await accounts.balance(runtime, alice.account_id) == OPENING
    assert await _pending(runtime) == 0  # given back, so no sweep will keep them either
    # Each took its fee at admission and gave it back: the ledger says so, entry by entry.
    moves = [(e.kind, e.amount, e.balance) for e in await _entries(runtime, alice.account_id)]
    assert moves[:4] == [
        ("read_release", READ, OPENING),
        ("read", -READ, OPENING - READ),
        ("read_release", READ, OPENING),
        ("read", -READ, OPENING - READ),
    ]
    audit = await audit_account(runtime, alice.account_id)
    assert audit.ok, audit.problems


async def test_at_zero_reads_are_402_and_me_still_answers(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    broke = await new_account(client, admin, coins=0, name="broke")
    for path in ("/v1/items", "/v1/executions/me", "/v1/tools"):
        refused = await client.get(path, headers=broke.key_auth)
        assert refused.status_code == 402, path
        assert refused.json()["error"]["code"] == "insufficient_balance"
    stream = await client.get(
        "/v1/executions/stream", headers={**broke.key_auth, "Accept": "text/event-stream"}
    )
    assert stream.status_code == 402
    me = await client.get("/v1/me", headers=broke.jwt_auth)
    assert me.status_code == 200
    assert me.json()["account"]["balance_coins"] == 0
    # Writes that cost nothing still work; a top-up opens reads again.
    created = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=broke.key_auth
    )
    assert created.status_code == 201
    await client.post(
        f"/admin/accounts/{broke.account_id}/credit",
        json={"coins": 0.01, "credit_id": "topup"},
        headers=admin,
    )
    assert (await client.get("/v1/items", headers=broke.key_auth)).status_code == 200
    assert await accounts.balance(runtime, broke.account_id) == 10_000 - READ


async def test_a_read_the_balance_cannot_cover_whole_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    low = await new_account(client, admin, coins=0.0015, name="low")
    assert (await client.get("/v1/items", headers=low.key_auth)).status_code == 200
    refused = await client.get("/v1/items", headers=low.key_auth)
    assert refused.status_code == 402
    assert "0.001 coins" in refused.json()["error"]["message"]
    assert [(r.amount, r.balance) for r in await _reads(runtime, low.account_id)] == [(-1_000, 500)]
    assert await accounts.balance(runtime, low.account_id) == 500


async def test_an_error_read_whose_settlement_fails_gets_its_fee_back_on_retry(
    runtime: Runtime, alice: ApiAccount
) -> None:
    app = create_app(runtime)
    fees = _fees(app)
    working = fees._settle
    failures = [RedisConnectionError("connection reset")]

    async def flaky(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await working(**kwargs)

    fees._settle = flaky
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        read = await http.get("/v1/items/itm_00000000000000000000", headers=alice.key_auth)
    assert read.status_code == 404, read.text
    assert await accounts.balance(runtime, alice.account_id) == OPENING - READ
    assert (fees.queued, await _pending(runtime)) == (1, 1)

    assert await fees.retry() == 0
    assert await accounts.balance(runtime, alice.account_id) == OPENING
    assert await fees.retry() == 0  # nothing left: retrying never gives back twice
    kinds = [e.kind for e in await _entries(runtime, alice.account_id)]
    assert kinds == ["read_release", "read", "credit"]
    assert await _pending(runtime) == 0


async def test_a_charge_its_process_lost_is_settled_by_a_sweep_once(
    runtime: Runtime, alice: ApiAccount
) -> None:
    """A process admitted a read and died before settling it (or dropped it from a full retry
    queue): any other process's sweep charges it once its grace period is over, exactly once."""
    died = ReadFees(runtime)
    charge = await died.admit(alice.account_id, "read:req_lost")
    assert charge is not None
    survivor = ReadFees(runtime)
    assert await survivor.sweep() == 0  # still within its grace period: maybe still being served
    assert await _pending(runtime) == 1

    later = await _admitted_at(runtime, charge.member, alice.account_id) + GRACE_MS + 1
    assert await survivor.sweep(now_ms=later) == 1
    assert await survivor.sweep(now_ms=later) == 0
    assert await _pending(runtime) == 0
    # A late settlement finds it settled: it gives nothing back.
    assert await died.settle_now(charge, served=False) == 0
    [read] = await _reads(runtime, alice.account_id)
    assert (read.charge_id, read.amount) == ("read:req_lost", -READ)
    assert await accounts.balance(runtime, alice.account_id) == OPENING - READ


async def _admitted_at(runtime: Runtime, member: str, account_id: str) -> int:
    keys = runtime.store.keys
    score = await runtime.redis.zscore(keys.read_charges(keys.partition(account_id)), member)
    return int(score)


async def test_a_full_retry_queue_leaves_the_rest_to_the_sweep(
    runtime: Runtime, alice: ApiAccount
) -> None:
    fees = ReadFees(runtime, capacity=1)
    charges = [await fees.admit(alice.account_id, f"read:req_{i}") for i in range(3)]
    fees._settle = _always_failing
    for charge in charges:
        assert charge is not None
        await fees.settle(charge, served=True)
    assert (fees.queued, await _pending(runtime)) == (1, 3)

    assert await ReadFees(runtime).sweep(now_ms=2**50) == 3
    assert await _pending(runtime) == 0
    assert len(await _reads(runtime, alice.account_id)) == 3
    assert await accounts.balance(runtime, alice.account_id) == OPENING - 3 * READ


async def _always_failing(**_: Any) -> Any:
    raise RedisConnectionError("down")


async def test_a_retry_while_redis_is_down_tries_once_and_keeps_the_order(
    runtime: Runtime, alice: ApiAccount
) -> None:
    fees = ReadFees(runtime)
    charges = [await fees.admit(alice.account_id, f"read:req_{i}") for i in range(3)]
    working = fees._settle
    calls: list[int] = []

    async def down(**kwargs: Any) -> Any:
        calls.append(1)
        raise RedisConnectionError("down")

    fees._settle = down
    for charge in charges:
        assert charge is not None
        await fees.settle(charge, served=False)
    calls.clear()
    assert await fees.retry() == 3
    assert len(calls) == 1  # the first failure ends the pass: no storm of calls and warnings

    fees._settle = working
    assert await fees.retry() == 0
    given = [e.charge_id for e in await _entries(runtime, alice.account_id)]
    assert given[:3] == [f"read_release:req_{i}" for i in (2, 1, 0)]  # newest first
    assert await accounts.balance(runtime, alice.account_id) == OPENING


async def test_a_sweep_drops_a_pending_record_it_cannot_parse_and_settles_the_rest(
    runtime: Runtime, alice: ApiAccount
) -> None:
    fees = ReadFees(runtime)
    charge = await fees.admit(alice.account_id, "read:req_behind")
    assert charge is not None
    keys = runtime.store.keys
    pending = keys.read_charges(keys.partition(alice.account_id))
    await runtime.redis.zadd(pending, {"not a charge": 0})  # sorts first: before the real one

    assert await ReadFees(runtime).sweep(now_ms=2**50) == 2
    assert [r.charge_id for r in await _reads(runtime, alice.account_id)] == ["read:req_behind"]
    assert await _pending(runtime) == 0


async def test_the_sse_stream_is_one_read_charged_when_it_closes(
    runtime: Runtime, alice: ApiAccount
) -> None:
    async with running(create_app(runtime)) as app:
        [reset] = await sse_events(app, {"Accept": "text/event-stream", **alice.key_auth}, 1)
    assert reset["type"] == "reset"
    [read] = await _reads(runtime, alice.account_id)
    assert read.amount == -READ
    assert await _pending(runtime) == 0


def test_the_document_says_which_routes_can_answer_402() -> None:
    """Every charged read documents the 402 it gives at a zero balance; the reads that always
    answer (GET /v1/me, the ledger, the owner's execution and its events) never do."""
    document = openapi_document(routes())
    for ep in endpoints(routes()):
        responses = document["paths"][ep.path][ep.method.lower()]["responses"]
        if getattr(ep.endpoint, "access", None) == "read":
            assert "402" in responses, f"{ep.method} {ep.path}"
    for path in (
        "/v1/me",
        "/v1/me/ledger",
        "/v1/executions/{execution_id}",
        "/v1/executions/{execution_id}/events",
    ):
        assert "402" not in document["paths"][path]["get"]["responses"], path
    assert "402" in document["paths"]["/v1/executions/me"]["get"]["responses"]
