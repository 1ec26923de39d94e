"""Transcript requests end to end in one process: 202 at once, readable at once, done after the
worker and the projector have run; idempotency, 402 and cancellation."""

from __future__ import annotations

import httpx
import pytest

from engine.money.accounts import balance, ledger
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import micro_to_coins
from projections.projector import Projector
from tests.api.conftest import ApiAccount, new_account

pytestmark = pytest.mark.anyio

TEXT = "Hello there. This is the transcript a client supplied."


async def _drain(runtime: Runtime) -> None:
    """Run the worker and then the projector until neither has anything left to do."""
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()


async def _item(client: httpx.AsyncClient, who: ApiAccount) -> str:
    created = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=who.key_auth
    )
    assert created.status_code == 201, created.text
    item_id: str = created.json()["item"]["item_id"]
    return item_id


async def _balance(client: httpx.AsyncClient, who: ApiAccount) -> float:
    coins: float = (await client.get("/v1/me", headers=who.key_auth)).json()["account"][
        "balance_coins"
    ]
    return coins


async def test_supplied_text_becomes_the_transcript(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    item_id = await _item(client, alice)
    accepted = await client.post(
        f"/v1/items/{item_id}/transcript", json={"lang": "en", "text": TEXT}, headers=alice.key_auth
    )
    assert accepted.status_code == 202, accepted.text
    execution = accepted.json()["execution"]
    assert execution["status"] == "pending"
    assert execution["kind"] == "transcript"
    xid = execution["execution_id"]
    assert xid.startswith("exc_")

    # Read-your-writes: visible before any worker or projector has run.
    first = await client.get(f"/v1/executions/{xid}", headers=alice.jwt_auth)
    assert first.status_code == 200, first.text
    assert first.json()["execution"]["status"] == "pending"
    assert first.json()["workflow"]["steps"][0]["tool_id"] == "transcribe"
    assert (
        await client.get(f"/v1/items/{item_id}/transcript", headers=alice.key_auth)
    ).status_code == 404
    active = await client.get("/v1/executions/me", params={"active": "1"}, headers=alice.key_auth)
    assert active.status_code == 200

    await _drain(runtime)

    done = (await client.get(f"/v1/executions/{xid}", headers=alice.key_auth)).json()
    assert done["execution"]["status"] == "done", done
    assert [(s["tool_id"], s["status"]) for s in done["steps"]] == [("transcribe", "done")]
    transcript = await client.get(
        f"/v1/items/{item_id}/transcript", params={"lang": "en"}, headers=alice.key_auth
    )
    assert transcript.status_code == 200, transcript.text
    body = transcript.json()["transcript"]
    assert body["text"] == TEXT
    assert (body["item_id"], body["lang"], body["execution_id"]) == (item_id, "en", xid)
    # Without lang: the newest transcript in any language.
    any_lang = await client.get(f"/v1/items/{item_id}/transcript", headers=alice.key_auth)
    assert any_lang.json()["transcript"]["text"] == TEXT
    other_lang = await client.get(
        f"/v1/items/{item_id}/transcript", params={"lang": "de"}, headers=alice.key_auth
    )
    assert other_lang.status_code == 404

    events = (await client.get(f"/v1/executions/{xid}/events", headers=alice.key_auth)).json()
    types = [e["type"] for e in events["events"]]
    assert types[0] == "ExecutionRequested"
    assert types[-1] == "ExecutionCompleted"
    assert [e["seq"] for e in events["events"]] == list(range(1, len(types) + 1))
    assert events["next_cursor"] is None

    # Paginated: a page of `limit` events oldest first, the next one from the cursor.
    pages: list[int] = []
    params: dict[str, str | int] = {"limit": 2}
    while True:
        page = await client.get(
            f"/v1/executions/{xid}/events", params=params, headers=alice.key_auth
        )
        assert page.status_code == 200, page.text
        seqs = [e["seq"] for e in page.json()["events"]]
        assert 1 <= len(seqs) <= 2
        pages += seqs
        if page.json()["next_cursor"] is None:
            break
        assert page.json()["next_cursor"] == str(seqs[-1])
        params["cursor"] = page.json()["next_cursor"]
    assert pages == list(range(1, len(types) + 1))
    for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "x"}, {"cursor": "0"}):
        refused = await client.get(
            f"/v1/executions/{xid}/events", params=bad, headers=alice.key_auth
        )
        assert refused.status_code == 422, (bad, refused.text)

    active = await client.get("/v1/executions/me", params={"active": "1"}, headers=alice.key_auth)
    assert active.json()["executions"] == []
    mine = (await client.get("/v1/executions/me", headers=alice.key_auth)).json()
    assert [e["execution_id"] for e in mine["executions"]] == [xid]
    assert mine["next_cursor"] is None
    # The fee, no provider cost, and the reads above at 0.001 each.
    entries, _ = await ledger(runtime, alice.account_id, limit=100, cursor=None)
    assert [(e.amount, e.execution_id) for e in entries if e.kind == "fee"] == [(-10_000, xid)]
    reads = [e for e in entries if e.kind == "read"]
    assert {e.amount for e in reads} == {-1_000}
    given_back = [e for e in entries if e.kind == "read_release"]  # the 404s got theirs back
    assert {e.amount for e in given_back} == {1_000}
    kept = len(reads) - len(given_back)
    assert await _balance(client, alice) == micro_to_coins(990_000 - 1_000 * kept)


async def test_simulated_transcriber_runs_without_text(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    item_id = await _item(client, alice)
    accepted = await client.post(f"/v1/items/{item_id}/transcript", json={}, headers=alice.key_auth)
    assert accepted.status_code == 202, accepted.text
    await _drain(runtime)
    xid = accepted.json()["execution"]["execution_id"]
    done = (await client.get(f"/v1/executions/{xid}", headers=alice.key_auth)).json()
    assert done["execution"]["status"] == "done", done
    body = (
        await client.get(f"/v1/items/{item_id}/transcript?lang=en", headers=alice.key_auth)
    ).json()
    assert body["transcript"]["text"]
    segments = body["transcript"]["segments"]
    assert segments
    # Seconds, as the platform's transcripts carry them (DESIGN §7).
    assert all(set(s) == {"start", "end", "text"} for s in segments)
    assert all(0 <= s["start"] < s["end"] < 3600 for s in segments)
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)


async def test_idempotency_key_returns_the_same_execution_and_charges_once(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    item_id = await _item(client, alice)
    url = f"/v1/items/{item_id}/transcript"
    headers = {**alice.key_auth, "Idempotency-Key": "order-7"}
    first = await client.post(url, json={"lang": "en", "text": TEXT}, headers=headers)
    # The same body written differently (key order, spacing) is the same request.
    again = await client.post(
        url,
        content=b'{ "text": "' + TEXT.encode() + b'",  "lang": "en" }',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert first.status_code == again.status_code == 202, again.text
    xid = first.json()["execution"]["execution_id"]
    assert again.json()["execution"]["execution_id"] == xid

    other = await client.post(url, json={"lang": "fr", "text": TEXT}, headers=headers)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "conflict"
    assert await _balance(client, alice) == 0.99

    # Another key is another execution.
    fresh = await client.post(
        url, json={"lang": "en", "text": TEXT}, headers={**alice.key_auth, "Idempotency-Key": "o8"}
    )
    assert fresh.json()["execution"]["execution_id"] != xid
    assert await _balance(client, alice) == 0.98

    await _drain(runtime)
    mine = (await client.get("/v1/executions/me", headers=alice.key_auth)).json()["executions"]
    assert len(mine) == 2


async def test_no_balance_is_402_and_nothing_is_appended(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    poor = await new_account(client, admin, coins=0.005)
    item_id = await _item(client, poor)
    refused = await client.post(
        f"/v1/items/{item_id}/transcript",
        json={},
        headers={**poor.key_auth, "Idempotency-Key": "k"},
    )
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "insufficient_balance"
    assert "(0.01 coins)" in refused.json()["error"]["message"]  # coins, as everywhere else
    assert "micro" not in refused.text

    store = runtime.store
    log = await store.log.read_log(store.keys.partition(poor.account_id), "0-0", 1000)
    assert [
        e for e in log if e.event is not None and getattr(e.event, "owner", None) == poor.account_id
    ] == []
    assert await _balance(client, poor) == 0.005
    await _drain(runtime)
    assert (await client.get("/v1/executions/me", headers=poor.key_auth)).json()["executions"] == []

    # The refused key was not recorded: once funded, the same key goes through.
    await client.post(
        f"/admin/accounts/{poor.account_id}/credit",
        json={"coins": 1, "credit_id": "topup-1"},
        headers=admin,
    )
    accepted = await client.post(
        f"/v1/items/{item_id}/transcript",
        json={},
        headers={**poor.key_auth, "Idempotency-Key": "k"},
    )
    assert accepted.status_code == 202, accepted.text


async def test_cancel_before_the_worker_runs(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    item_id = await _item(client, alice)
    accepted = await client.post(f"/v1/items/{item_id}/transcript", json={}, headers=alice.key_auth)
    xid = accepted.json()["execution"]["execution_id"]
    url = f"/v1/executions/{xid}/cancel"

    cancelled = await client.post(url, headers=alice.key_auth)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["execution"]["execution_id"] == xid
    again = await client.post(url, headers=alice.key_auth)
    assert again.status_code == 202  # asking twice records one request
    events = (await client.get(f"/v1/executions/{xid}/events", headers=alice.key_auth)).json()
    assert [e["type"] for e in events["events"]].count("ExecutionCancelRequested") == 1

    await _drain(runtime)
    done = (await client.get(f"/v1/executions/{xid}", headers=alice.key_auth)).json()
    assert done["execution"]["status"] == "error", done
    assert done["execution"]["error"]["code"] == "cancelled"
    finished = await client.post(url, headers=alice.key_auth)
    assert finished.status_code == 409, finished.text


async def test_other_owners_executions_are_404_without_data(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    item_id = await _item(client, alice)
    accepted = await client.post(f"/v1/items/{item_id}/transcript", json={}, headers=alice.key_auth)
    xid = accepted.json()["execution"]["execution_id"]
    for response in (
        await client.get(f"/v1/executions/{xid}", headers=bob.key_auth),
        await client.get(f"/v1/executions/{xid}/events", headers=bob.key_auth),
        await client.post(f"/v1/executions/{xid}/cancel", headers=bob.key_auth),
    ):
        assert response.status_code == 404, response.text
        assert item_id not in response.text
    assert (await client.get("/v1/executions/me", headers=bob.key_auth)).json()["executions"] == []
    events = (await client.get(f"/v1/executions/{xid}/events", headers=alice.key_auth)).json()
    assert "ExecutionCancelRequested" not in [e["type"] for e in events["events"]]


async def test_a_language_code_is_one_code_in_any_case(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    """One language rule everywhere: ``PT-br`` asked for is the ``pt-BR`` transcript, found by
    any spelling of the code; what is not a code is 422 on both routes."""
    item_id = await _item(client, alice)
    accepted = await client.post(
        f"/v1/items/{item_id}/transcript",
        json={"lang": "PT-br", "text": TEXT},
        headers=alice.key_auth,
    )
    assert accepted.status_code == 202, accepted.text
    await _drain(runtime)
    for spelling in ("pt-BR", "pt-br", "PT-BR"):
        got = await client.get(
            f"/v1/items/{item_id}/transcript", params={"lang": spelling}, headers=alice.key_auth
        )
        assert got.status_code == 200, (spelling, got.text)
        assert got.json()["transcript"]["lang"] == "pt-BR"
    bad = await client.post(
        f"/v1/items/{item_id}/transcript", json={"lang": "english"}, headers=alice.key_auth
    )
    assert bad.status_code == 422, bad.text
    bad_query = await client.get(
        f"/v1/items/{item_id}/transcript", params={"lang": "e"}, headers=alice.key_auth
    )
    assert bad_query.status_code == 422, bad_query.text


@pytest.mark.parametrize(
    "source", ["@somechannel", "twitter:someone", "https://example.com/feed.xml"]
)
async def test_only_a_video_has_a_transcript(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, source: str
) -> None:
    """A channel, a Twitter account or a feed is 422 invalid_target, and nothing is charged."""
    created = await client.post("/v1/items", json={"source": source}, headers=alice.key_auth)
    assert created.status_code == 201, created.text
    item_id = created.json()["item"]["item_id"]
    before = await balance(runtime, alice.account_id)
    refused = await client.post(
        f"/v1/items/{item_id}/transcript", json={"lang": "en"}, headers=alice.key_auth
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_target"
    assert "youtube_video" in error["message"]
    assert await balance(runtime, alice.account_id) == before
    mine = await client.get("/v1/executions/me", headers=alice.key_auth)
    assert mine.json()["executions"] == []


async def test_embed_is_a_real_step_with_its_cost_passed_through(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    """``embed: true`` adds an embed step after the transcription: its vectors are stored beside
    the transcript, its status shows on the transcript, and its cost is charged."""
    item_id = await _item(client, alice)
    accepted = await client.post(
        f"/v1/items/{item_id}/transcript", json={"embed": True}, headers=alice.key_auth
    )
    assert accepted.status_code == 202, accepted.text
    xid = accepted.json()["execution"]["execution_id"]
    pending = (await client.get(f"/v1/executions/{xid}", headers=alice.key_auth)).json()
    assert [s["tool_id"] for s in pending["workflow"]["steps"]] == ["transcribe", "embed"]
    await _drain(runtime)

    done = (await client.get(f"/v1/executions/{xid}", headers=alice.key_auth)).json()
    assert done["execution"]["status"] == "done", done
    transcribe, embed = done["steps"]
    assert embed["tool_id"] == "embed"
    assert embed["usage"]["embedding_tokens"] > 0
    assert embed["cost_coins"] > 0  # the embedder's cost, passed through
    got = (await client.get(f"/v1/items/{item_id}/transcript", headers=alice.key_auth)).json()
    embedding = got["transcript"]["embedding"]
    assert embedding["status"] == "done"
    assert embedding["dims"] == 16
    assert embedding["count"] == len(got["transcript"]["segments"])
    assert embedding["sha256"] == embed["output"]["sha256"]
    assert embedding["model"] == embed["output"]["model"]
    # The vectors, whole, in the step's detail.
    whole = (await client.get(f"/v1/executions/{xid}/steps/1", headers=alice.key_auth)).json()[
        "step"
    ]
    assert len(whole["output"]["vectors"]) == embedding["count"]
    assert len(whole["output"]["vectors"][0]["vector"]) == 16
    assert whole["output"]["transcript"]["sha256"] == transcribe["output"]["sha256"]
    # The charge: the fee, and each step's settled cost.
    entries, _ = await ledger(runtime, alice.account_id, limit=100, cursor=None)
    charged = {e.charge_id: e.amount for e in entries if xid in e.charge_id}
    assert any(k.startswith("settle:") and k.endswith(":1:1") for k in charged), charged

    # Without embed: no embedding.
    plain = await client.post(
        f"/v1/items/{item_id}/transcript", json={"lang": "fr"}, headers=alice.key_auth
    )
    assert plain.status_code == 202
    await _drain(runtime)
    fr = (
        await client.get(f"/v1/items/{item_id}/transcript?lang=fr", headers=alice.key_auth)
    ).json()
    assert fr["transcript"]["embedding"] is None
