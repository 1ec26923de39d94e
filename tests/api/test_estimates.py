"""Cost estimates that match reality (issue 15 #5): a step reserves about what it will cost, so
an account that can pay for the work can start it. For the simulated providers, every tool's
step reserves within 2x of the cost settled for it, either way (an LLM step is estimated at the
expected completion, not every token ``max_tokens`` allows); ``GET /v1/tools`` says how each tool
estimates."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engine.log.events import AnyEvent, CostCharged, CostReserved, StepCompleted, StepStarted
from engine.providers.base import audio_cost
from engine.providers.sim import SimTranscriber
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.tools import TOOLS
from projections.projector import Projector
from tests.api.conftest import ApiAccount, new_account

pytestmark = pytest.mark.anyio

VIDEO = "https://youtu.be/dQw4w9WgXcQ"


async def _drain(runtime: Runtime, *xids: str) -> dict[str, list[AnyEvent]]:
    """Runs the work of ``xids`` and returns their histories, read before the projector folds
    their ends (an ended execution's own stream then only lasts the hot window)."""
    await Worker(runtime).run_until_idle()
    histories = {xid: await runtime.store.log.history(xid) for xid in xids}
    await Projector(runtime).run_until_idle()
    return histories


def _reserved_and_charged(history: list[AnyEvent]) -> dict[int, tuple[int, int]]:
    """Per step: (reserved, charged) in micro-coins, from a schema 2 log (the StepStarted holds
    the reservation, the StepCompleted's settlement charges) or a schema 1 one (Cost events)."""
    reserved: dict[int, int] = {}
    charged: dict[int, int] = {}
    for e in history:
        if isinstance(e, StepStarted) and e.reserve_id is not None:
            reserved[e.step_index] = e.estimated_cost
        elif isinstance(e, CostReserved):
            reserved[e.step_index] = e.amount
        elif isinstance(e, StepCompleted) and e.settlement is not None:
            charged[e.step_index] = e.settlement.charged + e.settlement.uncovered
        elif isinstance(e, CostCharged) and e.step_index is not None:
            charged[e.step_index] = e.amount + e.uncovered
    return {i: (reserved[i], charged.get(i, 0)) for i in reserved}


async def _post(client: httpx.AsyncClient, who: ApiAccount, url: str, body: Any) -> str:
    accepted = await client.post(url, json=body, headers=who.key_auth)
    assert accepted.status_code == 202, accepted.text
    xid: str = accepted.json()["execution"]["execution_id"]
    return xid


def _within_twice(reserved: int, charged: int) -> bool:
    return reserved <= 2 * charged and charged <= 2 * reserved


async def test_every_tool_reserves_within_twice_the_settled_cost(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    item = await client.post("/v1/items", json={"source": VIDEO}, headers=alice.key_auth)
    item_id = item.json()["item"]["item_id"]
    transcript = await _post(client, alice, f"/v1/items/{item_id}/transcript", {"lang": "en"})
    rep = await client.post("/v1/reporters", json={"name": "r"}, headers=alice.key_auth)
    rid = rep.json()["reporter"]["reporter_id"]
    chains = [
        ["youtube_metadata", "transcribe", "summary_review", "extract_claims"],
        ["transcribe", "llm_prompt", "llm_prompt"],
        ["summary_review"],  # transcribes inside the step
        ["transcribe", "embed"],
        ["embed"],  # transcribes inside the step
        ["llm_prompt"],
    ]
    executions = [transcript]
    for n, chain in enumerate(chains):
        steps = [
            {
                "tool_id": t,
                **({"prompt_text": "Say what this is about."} if t == "llm_prompt" else {}),
            }
            for t in chain
        ]
        wf = await client.post(
            f"/v1/reporters/{rid}/workflows",
            json={"name": f"w{n}", "target_kind": "youtube_video", "steps": steps},
            headers=alice.key_auth,
        )
        assert wf.status_code == 201, wf.text
        wid = wf.json()["workflow"]["workflow_id"]
        executions.append(
            await _post(
                client, alice, f"/v1/reporters/{rid}/process", {"source": VIDEO, "workflow_id": wid}
            )
        )
    histories = await _drain(runtime, *executions)
    seen: set[str] = set()
    for xid in executions:
        done = (await client.get(f"/v1/executions/{xid}", headers=alice.key_auth)).json()
        assert done["execution"]["status"] == "done", done
        tools = [s["tool_id"] for s in done["steps"]]
        money = _reserved_and_charged(histories[xid])
        for index, tool in enumerate(tools):
            reserved, charged = money.get(index, (0, 0))  # a step that costs nothing holds none
            seen.add(tool)
            if tool in ("youtube_metadata", "channel_sync"):
                assert reserved == charged == 0, (xid, tool)
            else:
                assert charged > 0, (xid, tool)
                assert _within_twice(reserved, charged), (xid, tool, reserved, charged)
    assert seen >= set(TOOLS) - {"channel_sync"}


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
    histories = await _drain(runtime, xid)
    done = (await client.get(f"/v1/executions/{xid}", headers=poor.key_auth)).json()
    assert done["execution"]["status"] == "done", done
    assert _reserved_and_charged(histories[xid]) == {0: (audio_cost(seconds), audio_cost(seconds))}


async def test_the_catalogue_says_how_each_tool_estimates(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    tools = (await client.get("/v1/tools", headers=alice.key_auth)).json()["tools"]
    estimates = {t["tool_id"]: t["pricing"]["estimate"] for t in tools}
    assert set(estimates) == set(TOOLS)
    assert "600 s" in estimates["transcribe"]
    assert "duration" in estimates["transcribe"]
    assert "max_tokens" in estimates["llm_prompt"]
    assert "expected completion" in estimates["llm_prompt"]
    assert "every completion token" not in estimates["summary_review"]
    assert all(estimates.values())
