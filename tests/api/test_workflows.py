"""Reporters, workflows and steps through the API: CRUD, default workflow, step validation
against the tool catalogue, cascading deletes, other owners."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import ApiAccount
from tests.api.test_collections import make, pages

pytestmark = pytest.mark.anyio

STEP = {"tool_id": "llm_prompt", "prompt_text": "Summarise", "params": {"max_tokens": 64}}


async def reporter(client: httpx.AsyncClient, who: ApiAccount, name: str = "r") -> str:
    rid: str = (await make(client, who, "/v1/reporters", {"name": name}))["reporter"]["reporter_id"]
    return rid


async def workflow(
    client: httpx.AsyncClient, who: ApiAccount, rid: str, steps: list[Any] | None = None
) -> dict[str, Any]:
    body = {"name": "wf", "target_kind": "youtube_video", "steps": steps or []}
    wf: dict[str, Any] = (await make(client, who, f"/v1/reporters/{rid}/workflows", body))[
        "workflow"
    ]
    return wf


async def test_reporter_crud_and_default_workflow(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    rid = await reporter(client, alice)
    other = await reporter(client, alice, "other")
    wf = await workflow(client, alice, rid)
    foreign = await workflow(client, alice, other)
    url = f"/v1/reporters/{rid}"
    patched = await client.patch(
        url, json={"default_workflow_id": wf["workflow_id"]}, headers=alice.key_auth
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["reporter"]["default_workflow_id"] == wf["workflow_id"]
    for bad in (foreign["workflow_id"], "wf_00000000000000000000", "nope"):
        refused = await client.patch(url, json={"default_workflow_id": bad}, headers=alice.key_auth)
        assert refused.status_code == 422, refused.text
        assert "default_workflow_id" in refused.json()["error"]["message"]
    refused = await client.post(
        "/v1/reporters",
        json={"name": "x", "default_workflow_id": wf["workflow_id"]},
        headers=alice.key_auth,
    )
    assert refused.status_code == 422
    got = (await client.get(url, headers=alice.key_auth)).json()["reporter"]
    assert got["default_workflow_id"] == wf["workflow_id"]
    # deleting the default workflow leaves the reporter without one
    wf_url = f"{url}/workflows/{wf['workflow_id']}"
    assert (await client.delete(wf_url, headers=alice.key_auth)).status_code == 204
    got = (await client.get(url, headers=alice.key_auth)).json()["reporter"]
    assert got["default_workflow_id"] is None


async def test_pages_of_reporters_and_workflows(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    rids = [await reporter(client, alice, f"r{i}") for i in range(5)]
    got = await pages(client, alice, "/v1/reporters", "reporters")
    assert [r["reporter_id"] for page in got for r in page] == sorted(rids, reverse=True)
    assert len(got) == 3
    wfs = [(await workflow(client, alice, rids[0]))["workflow_id"] for _ in range(5)]
    got = await pages(client, alice, f"/v1/reporters/{rids[0]}/workflows", "workflows")
    assert [w["workflow_id"] for page in got for w in page] == sorted(wfs, reverse=True)
    assert len(got) == 3


async def test_steps_add_replace_delete(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    rid = await reporter(client, alice)
    wf = await workflow(client, alice, rid, [{"tool_id": "transcribe"}])
    assert [s["tool_id"] for s in wf["steps"]] == ["transcribe"]
    url = f"/v1/reporters/{rid}/workflows/{wf['workflow_id']}"
    added = await client.post(f"{url}/steps", json=STEP, headers=alice.key_auth)
    assert added.status_code == 201, added.text
    step = added.json()["step"]
    assert step["step_id"].startswith("stp_")
    assert [s["tool_id"] for s in added.json()["workflow"]["steps"]] == ["transcribe", "llm_prompt"]
    replaced = await client.put(
        f"{url}/steps",
        json={"steps": [STEP, {"tool_id": "transcribe", "params": {"lang": "en"}}, STEP]},
        headers=alice.key_auth,
    )
    assert replaced.status_code == 200, replaced.text
    steps = replaced.json()["workflow"]["steps"]
    assert [s["tool_id"] for s in steps] == ["llm_prompt", "transcribe", "llm_prompt"]
    assert (
        await client.delete(f"{url}/steps/{step['step_id']}", headers=alice.key_auth)
    ).status_code == 404
    assert (
        await client.delete(f"{url}/steps/{steps[1]['step_id']}", headers=alice.key_auth)
    ).status_code == 204
    got = (await client.get(url, headers=alice.key_auth)).json()["workflow"]["steps"]
    assert [s["step_id"] for s in got] == [steps[0]["step_id"], steps[2]["step_id"]]
    patched = await client.patch(url, json={"target_kind": "collection"}, headers=alice.key_auth)
    assert patched.json()["workflow"]["target_kind"] == "collection"


@pytest.mark.parametrize(
    ("step", "named"),
    [
        ({"tool_id": "no_such_tool"}, "tool_id"),
        ({"tool_id": "llm_prompt", "params": {"max_tokens": "many"}}, "max_tokens"),
        ({"tool_id": "llm_prompt", "params": {"temperature": 1}}, "temperature"),
        ({"tool_id": "transcribe", "step_id": "stp_00000000000000000000"}, "step_id"),
    ],
)
async def test_bad_steps_are_422(
    client: httpx.AsyncClient, alice: ApiAccount, step: dict[str, Any], named: str
) -> None:
    rid = await reporter(client, alice)
    wf = await workflow(client, alice, rid, [STEP])
    url = f"/v1/reporters/{rid}/workflows/{wf['workflow_id']}"
    for response in (
        await client.post(f"{url}/steps", json=step, headers=alice.key_auth),
        await client.put(f"{url}/steps", json={"steps": [STEP, step]}, headers=alice.key_auth),
        await client.post(
            f"/v1/reporters/{rid}/workflows",
            json={"name": "w", "target_kind": "youtube_video", "steps": [step]},
            headers=alice.key_auth,
        ),
    ):
        assert response.status_code == 422, response.text
        assert named in response.json()["error"]["message"]
    steps = (await client.get(url, headers=alice.key_auth)).json()["workflow"]["steps"]
    assert [s["step_id"] for s in steps] == [s["step_id"] for s in wf["steps"]]  # unchanged


async def test_bad_target_kind_is_422(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    rid = await reporter(client, alice)
    refused = await client.post(
        f"/v1/reporters/{rid}/workflows",
        json={"name": "w", "target_kind": "twitter"},
        headers=alice.key_auth,
    )
    assert refused.status_code == 422
    assert "target_kind" in refused.json()["error"]["message"]


async def test_deleting_a_reporter_deletes_its_workflows(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    rid = await reporter(client, alice)
    wf = await workflow(client, alice, rid)
    assert (await client.delete(f"/v1/reporters/{rid}", headers=alice.key_auth)).status_code == 204
    gone = await client.get(
        f"/v1/reporters/{rid}/workflows/{wf['workflow_id']}", headers=alice.key_auth
    )
    assert gone.status_code == 404
    assert (await client.get("/v1/reporters", headers=alice.key_auth)).json()["reporters"] == []


async def test_other_owner_and_other_reporter_are_404(
    client: httpx.AsyncClient, alice: ApiAccount, bob: ApiAccount
) -> None:
    rid = await reporter(client, alice, "secret-name")
    wf = await workflow(client, alice, rid, [STEP])
    other = await reporter(client, alice)
    url = f"/v1/reporters/{rid}"
    wf_url = f"{url}/workflows/{wf['workflow_id']}"
    step_url = f"{wf_url}/steps/{wf['steps'][0]['step_id']}"
    for response in (
        await client.get(url, headers=bob.key_auth),
        await client.patch(url, json={"name": "x"}, headers=bob.key_auth),
        await client.delete(url, headers=bob.key_auth),
        await client.get(f"{url}/workflows", headers=bob.key_auth),
        await client.post(
            f"{url}/workflows",
            json={"name": "w", "target_kind": "collection"},
            headers=bob.key_auth,
        ),
        await client.get(wf_url, headers=bob.key_auth),
        await client.patch(wf_url, json={"name": "x"}, headers=bob.key_auth),
        await client.delete(wf_url, headers=bob.key_auth),
        await client.post(f"{wf_url}/steps", json=STEP, headers=bob.key_auth),
        await client.put(f"{wf_url}/steps", json={"steps": []}, headers=bob.key_auth),
        await client.delete(step_url, headers=bob.key_auth),
        # alice's own workflow under another of her reporters is not there either
        await client.get(
            f"/v1/reporters/{other}/workflows/{wf['workflow_id']}", headers=alice.key_auth
        ),
    ):
        assert response.status_code == 404, response.text
        assert "secret-name" not in response.text
    got = (await client.get(wf_url, headers=alice.key_auth)).json()["workflow"]
    assert got == wf


async def test_a_number_beyond_64_bits_in_free_form_params_is_answered_as_given(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    """``sim`` is free-form JSON: an integer too large for 64 bits decodes and is stored, so the
    answers must be able to carry it too (they were a 500, and the workflow list with them)."""
    rid = await reporter(client, alice)
    huge = 123456789012345678901234567890
    body = (
        b'{"name":"wf","target_kind":"youtube_video","steps":[{"tool_id":"llm_prompt",'
        b'"params":{"sim":{"seed":' + str(huge).encode() + b"}}}]}"
    )
    headers = {**alice.key_auth, "Content-Type": "application/json"}
    created = await client.post(f"/v1/reporters/{rid}/workflows", content=body, headers=headers)
    assert created.status_code == 201, created.text
    assert f'"seed":{huge}'.encode() in created.content
    listed = await client.get(f"/v1/reporters/{rid}/workflows", headers=alice.key_auth)
    assert listed.status_code == 200, listed.text
    assert f'"seed":{huge}'.encode() in listed.content
