"""The reads an owner can always make (DESIGN §6): ``GET /v1/me``, ``GET /v1/me/ledger``, its own
execution and that execution's events answer at any balance — charged like any read while the
balance covers the fee, free when it does not — so a client whose job ended for lack of coins can
learn why, what it paid, and that it must top up. Another owner's execution is still 404."""

from __future__ import annotations

import httpx
import pytest

from engine.money import accounts
from engine.money.audit import audit_account
from engine.runtime import Runtime
from tests.api.conftest import ApiAccount, new_account

pytestmark = pytest.mark.anyio

READ = 1_000
FEE = 10_000  # the transcript fee


async def _transcript(client: httpx.AsyncClient, who: ApiAccount) -> str:
    item = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=who.key_auth
    )
    assert item.status_code == 201, item.text
    url = f"/v1/items/{item.json()['item']['item_id']}/transcript"
    accepted = await client.post(url, json={"text": "words"}, headers=who.key_auth)
    assert accepted.status_code == 202, accepted.text
    execution_id: str = accepted.json()["execution"]["execution_id"]
    return execution_id


async def test_at_zero_the_owner_still_reads_its_execution_events_and_ledger_free(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], bob: ApiAccount
) -> None:
    broke = await new_account(client, admin, coins=0.01, name="spent")  # exactly one fee
    execution_id = await _transcript(client, broke)
    assert await accounts.balance(runtime, broke.account_id) == 0

    for path in (
        "/v1/me",
        "/v1/me/ledger",
        f"/v1/executions/{execution_id}",
        f"/v1/executions/{execution_id}/events",
    ):
        answer = await client.get(path, headers=broke.key_auth)
        assert answer.status_code == 200, (path, answer.text)
    assert (await client.get("/v1/items", headers=broke.key_auth)).status_code == 402
    assert (await client.get("/v1/executions/me", headers=broke.key_auth)).status_code == 402
    # Free means free: nothing was taken, nothing is pending, the ledger adds up.
    assert await accounts.balance(runtime, broke.account_id) == 0
    entries, _ = await accounts.ledger(runtime, broke.account_id, limit=100, cursor=None)
    assert [e.kind for e in entries] == ["fee", "credit"]
    audit = await audit_account(runtime, broke.account_id)
    assert audit.ok, audit.problems

    # Another owner's execution stays invisible, at any balance, and costs its reader nothing.
    for path in (f"/v1/executions/{execution_id}", f"/v1/executions/{execution_id}/events"):
        assert (await client.get(path, headers=bob.key_auth)).status_code == 404
    assert await accounts.balance(runtime, bob.account_id) == 1_000_000


async def test_while_the_balance_covers_them_the_owner_reads_are_charged(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    execution_id = await _transcript(client, alice)
    for path in (
        "/v1/me/ledger",
        f"/v1/executions/{execution_id}",
        f"/v1/executions/{execution_id}/events",
    ):
        assert (await client.get(path, headers=alice.key_auth)).status_code == 200, path
    assert await accounts.balance(runtime, alice.account_id) == 1_000_000 - FEE - 3 * READ
    assert (await client.get("/v1/me", headers=alice.key_auth)).status_code == 200  # always free
    assert await accounts.balance(runtime, alice.account_id) == 1_000_000 - FEE - 3 * READ


async def test_a_balance_below_one_read_serves_the_owner_reads_free_and_refuses_the_rest(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    low = await new_account(client, admin, coins=0.0105, name="low")  # a fee and half a read
    execution_id = await _transcript(client, low)
    assert (await client.get(f"/v1/executions/{execution_id}", headers=low.key_auth)).is_success
    assert (await client.get("/v1/tools", headers=low.key_auth)).status_code == 402
    assert await accounts.balance(runtime, low.account_id) == 500


async def test_a_job_that_ran_out_of_coins_says_why_at_a_zero_balance(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    """Issue 15 #3 end to end: the fee takes the whole balance, the transcription cannot reserve,
    the execution ends insufficient_balance; at 0 coins the owner still reads why (in coins)."""
    from engine.run.worker import Worker
    from projections.projector import Projector

    broke = await new_account(client, admin, coins=FEE / 1e6)
    item = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=broke.key_auth
    )
    url = f"/v1/items/{item.json()['item']['item_id']}/transcript"
    accepted = await client.post(url, json={}, headers=broke.key_auth)
    assert accepted.status_code == 202, accepted.text
    execution_id = accepted.json()["execution"]["execution_id"]
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()
    assert await accounts.balance(runtime, broke.account_id) == 0
    detail = await client.get(f"/v1/executions/{execution_id}", headers=broke.key_auth)
    assert detail.status_code == 200, detail.text
    error = detail.json()["execution"]["error"]
    assert (error["code"], error["http_status"]) == ("insufficient_balance", 402)
    assert "coins" in error["message"]
    assert "micro" not in error["message"]
    events = await client.get(f"/v1/executions/{execution_id}/events", headers=broke.key_auth)
    assert events.status_code == 200
    assert events.json()["events"][-1]["type"] == "ExecutionFailed"
    assert (await client.get("/v1/me/ledger", headers=broke.key_auth)).status_code == 200
