"""Flat fees under concurrency, through the HTTP API on both backends: a balance that covers
exactly 100 fees accepts exactly 100 of 1,000 requests sent at once, and concurrent copies of one
Idempotency-Key make one execution and pay one fee; read fees likewise: 1,000 reads at once
against a balance for 100 serve exactly 100."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio
import httpx
import pytest

from engine.connection import connect, embedded
from engine.money import accounts
from engine.money.audit import audit_account
from engine.requests import idempotency
from engine.runtime import Runtime
from engine.settings import Settings
from tests.api.conftest import ApiAccount, new_account
from tests.servers import RedisServer

pytestmark = pytest.mark.anyio

FEE = 10_000  # the default transcript fee, micro-coins
READ = 1_000  # the default read fee
OPENING = 1_000_000  # what the conftest accounts start with: exactly 100 fees


@pytest.fixture
async def runtime(
    backend: str, settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[Runtime]:
    """The runtime over the client a deployment opens (engine.connection), whose pool makes a
    request wait for a free connection when a thousand want one at once."""
    if backend == "fake":
        client = embedded()
    else:
        server: RedisServer = request.getfixturevalue("real_redis_server")
        client = connect(replace(settings, redis_url=server.url))
        await client.flushall()
    try:
        yield await Runtime.open(settings, client)
    finally:
        await client.aclose()


async def _transcript_url(client: httpx.AsyncClient, who: ApiAccount) -> str:
    created = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=who.key_auth
    )
    assert created.status_code == 201, created.text
    return f"/v1/items/{created.json()['item']['item_id']}/transcript"


async def _all_at_once(
    client: httpx.AsyncClient, n: int, url: str, body: dict[str, str], headers: dict[str, str]
) -> list[httpx.Response]:
    responses: list[httpx.Response] = []

    async def one() -> None:
        responses.append(await client.post(url, json=body, headers=headers))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return responses


async def test_a_thousand_requests_against_a_hundred_fees(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    url = await _transcript_url(client, alice)
    with anyio.fail_after(60):  # a hang fails; the verdict never depends on speed
        responses = await _all_at_once(client, 1_000, url, {"text": "hi"}, alice.key_auth)

    assert Counter(r.status_code for r in responses) == {202: 100, 402: 900}
    accepted = {r.json()["execution"]["execution_id"] for r in responses if r.status_code == 202}
    assert len(accepted) == 100
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} == {
        "insufficient_balance"
    }
    assert await accounts.balance(runtime, alice.account_id) == 0
    entries, _ = await accounts.ledger(runtime, alice.account_id, limit=100, cursor=None)
    fees = [e for e in entries if e.kind == "fee"]
    assert len(fees) == 100
    assert {e.execution_id for e in fees} == accepted
    assert {e.amount for e in fees} == {-FEE}
    # Each fee entry's balance is distinct: no two requests saw the same balance.
    assert sorted(e.balance for e in fees) == list(range(0, OPENING, FEE))
    store = runtime.store
    log = await store.log.read_log(store.keys.partition(alice.account_id), "0-0", 2_000)
    assert {e.event.execution_id for e in log if e.event is not None} == accepted

    # At zero, GET /v1/me and the ledger still answer (free); other reads are 402.
    me = await client.get("/v1/me", headers=alice.key_auth)
    assert me.json()["account"]["balance_coins"] == 0
    assert (await client.get("/v1/me/ledger", headers=alice.key_auth)).status_code == 200
    assert (await client.get("/v1/items", headers=alice.key_auth)).status_code == 402
    assert await accounts.balance(runtime, alice.account_id) == 0


async def test_a_thousand_reads_against_a_balance_for_a_hundred(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    """Each read's fee is taken when it is admitted, in one script with the balance check: of
    1,000 reads sent at once against a balance for exactly 100, exactly 100 are served."""
    reader = await new_account(client, admin, coins=0.1, name="reader")  # 100 reads of 0.001
    responses: list[httpx.Response] = []

    async def read() -> None:
        responses.append(await client.get("/v1/items", headers=reader.key_auth))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(1_000):
                tg.start_soon(read)

    assert Counter(r.status_code for r in responses) == {200: 100, 402: 900}
    assert await accounts.balance(runtime, reader.account_id) == 0
    entries, _ = await accounts.ledger(runtime, reader.account_id, limit=200, cursor=None)
    reads = [e for e in entries if e.kind == "read"]
    assert len(reads) == 100
    assert {e.amount for e in reads} == {-READ}
    assert sorted(e.balance for e in reads) == list(range(0, 100 * READ, READ))
    audit = await audit_account(runtime, reader.account_id)
    assert audit.ok, audit.problems


async def test_ten_concurrent_copies_of_one_key_make_one_execution_and_pay_once(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    url = await _transcript_url(client, alice)
    headers = {**alice.key_auth, "Idempotency-Key": "order-1"}
    copies = await _all_at_once(client, 10, url, {"text": "hi"}, headers)
    assert {r.status_code for r in copies} == {202}
    [xid] = {r.json()["execution"]["execution_id"] for r in copies}

    other = await client.post(url, json={"text": "other"}, headers=headers)
    assert other.status_code == 409, other.text
    entries, _ = await accounts.ledger(runtime, alice.account_id, limit=100, cursor=None)
    assert [(e.kind, e.execution_id) for e in entries if e.kind == "fee"] == [("fee", xid)]
    assert await accounts.balance(runtime, alice.account_id) == OPENING - FEE

    # Once the key's record has expired (an expiry time in the past: what 24 hours would do), the
    # same key starts a new execution and pays again.
    digest, _ = idempotency("order-1", "", {}) or ("", "")
    record = runtime.store.keys.idempotency(alice.account_id, digest)
    assert await runtime.redis.exists(record) == 1
    await runtime.redis.pexpireat(record, 1)
    again = await client.post(url, json={"text": "other"}, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["execution"]["execution_id"] != xid
    assert await accounts.balance(runtime, alice.account_id) == OPENING - 2 * FEE
