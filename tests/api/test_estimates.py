"""Cost estimates that match reality (issue 15 #5): a step reserves about what it will cost, so
an account that can pay for the work can start it. For the simulated providers, a transcription
reserves within 2x of the cost settled for it (the LLM steps reserve every token ``max_tokens``
allows, an upper bound by design); ``GET /v1/tools`` says how each tool estimates."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engine.log.events import CostCharged, CostReserved, StepCompleted, StepStarted
from engine.providers.base import audio_cost
from engine.providers.sim import SimTranscriber
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.tools import TOOLS
from projections.projector import Projector
from tests.api.conftest import ApiAccount, new_account

pytestmark = pytest.mark.anyio

VIDEO = "https://youtu.be/dQw4w9WgXcQ"


async def _drain(runtime: Runtime) -> None:
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()


async def _reserved_and_charged(runtime: Runtime, xid: str) -> dict[int, tuple[int, int]]:
    """Per step: (reserved, charged) in micro-coins, whichever events carry the money (a
    reserving StepStarted and its outcome's settlement, or an older log's Cost* events)."""
    history = await runtime.store.log.history(xid)
    reserved: dict[int, int] = {}
    charged: dict[int, int] = {}
    for e in history:
        if isinstance(e, CostReserved):
            reserved[e.step_index] = e.amount
        elif isinstance(e, StepStarted) and e.reserve_id:
            reserved[e.step_index] = e.estimated_cost
        elif isinstance(e, CostCharged) and e.step_index is not None:
            charged[e.step_index] = e.amount + e.uncovered
        elif isinstance(e, StepCompleted) and e.settlement is not None:
            charged[e.step_index] = e.settlement.charged + e.settlement.uncovered
    return {i: (reserved[i], charged.get(i, 0)) for i in reserved}


async def _post(client: httpx.AsyncClient, who: ApiAccount, url: str, body: Any) -> str:
    accepted = await client.post(url, json=body, headers=who.key_auth)
    assert accepted.status_code == 202, accepted.text
    xid: str = accepted.json()["execution"]["execution_id"]
    return xid


async def test_transcriptions_reserve_within_twice_the_settled_cost(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    item = await client.post("/v1/items", json={"source": VIDEO}, headers=alice.key_auth)
    item_id = item.json()["item"]["item_id"]
    transcript = await _post(client, alice, f"/v1/items/{item_id}/transcript", {"lang": "en"})
    rep = await client.post("/v1/reporters", json={"name": "r"}, headers=alice.key_auth)
    rid = rep.json()["reporter"]["reporter_id"]
    steps = [
        {"tool_id": "youtube_metadata"},
        {"tool_id": "transcribe"},
        {"tool_id": "summary_review"},
        {"tool_id": "extract_claims"},
    ]
    wf = await client.post(
        f"/v1/reporters/{rid}/workflows",
        json={"name": "w", "target_kind": "youtube_video", "steps": steps},
        headers=alice.key_auth,
    )
    assert wf.status_code == 201, wf.text
    wid = wf.json()["workflow"]["workflow_id"]
    process = await _post(
        client, alice, f"/v1/reporters/{rid}/process", {"source": VIDEO, "workflow_id": wid}
    )
    await _drain(runtime)
    for xid in (transcript, process):
        done = (await client.get(f"/v1/executions/{xid}", headers=alice.key_auth)).json()
        assert done["execution"]["status"] == "done", done
        money = await _reserved_and_charged(runtime, xid)
        transcribing = [0] if xid == transcript else [1]  # the transcribe steps
        for index in transcribing:
            reserved, charged = money[index]
            assert 0 < charged <= reserved <= 2 * charged, (xid, index, reserved, charged)
        for reserved, charged in money.values():
            assert charged <= reserved  # every estimate still covers its step


async def test_an_account_that_can_pay_for_a_transcript_gets_one(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    """The fee and the audio's actual cost are enough: no 600-second reservation in the way."""
    seconds = SimTranscriber(runtime.settings).known_duration_s("dQw4w9WgXcQ", "en")
    assert seconds is not None
    assert seconds < 600
    fee = runtime.settings.fees.transcript
    poor = await new_account(client, admin, coins=(fee + audio_cost(seconds)) / 1e6)
    item = await client.post("/v1/items", json={"source": VIDEO}, headers=poor.key_auth)
    item_id = item.json()["item"]["item_id"]
    xid = await _post(client, poor, f"/v1/items/{item_id}/transcript", {"lang": "en"})
    await _drain(runtime)
    done = (await client.get(f"/v1/executions/{xid}", headers=poor.key_auth)).json()
    assert done["execution"]["status"] == "done", done
    assert await _reserved_and_charged(runtime, xid) == {
        0: (audio_cost(seconds), audio_cost(seconds))
    }


async def test_the_catalogue_says_how_each_tool_estimates(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    tools = (await client.get("/v1/tools", headers=alice.key_auth)).json()["tools"]
    estimates = {t["tool_id"]: t["pricing"]["estimate"] for t in tools}
    assert set(estimates) == set(TOOLS)
    assert "600 s" in estimates["transcribe"]
    assert "duration" in estimates["transcribe"]
    assert "max_tokens" in estimates["llm_prompt"]
    assert all(estimates.values())
