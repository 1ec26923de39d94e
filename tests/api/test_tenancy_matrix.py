"""The tenancy matrix: for every route of the app with a path id and every method it takes, tenant
A using tenant B's ids gets 404 with the standard error body, nothing of B in it, and B's
resources are exactly as they were afterwards (B's own GETs compared before and after).

Generic over ``app.routes``: path parameters are filled by their name (``item_id`` → B's item,
``collection_id`` → B's collection …), so a new route joins the matrix by existing. A route whose
parameter names a resource this build cannot seed yet is skipped, naming the parameter. Operator
routes (admin token) and public routes have no owner, and are left out of the matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
import pytest

from api.app import routes
from api.openapi import ID_PARAMS, INT_PARAMS, Endpoint, endpoints, security_of
from engine.resources.documents import create_document
from engine.runtime import Runtime
from engine.settings import Settings
from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio

SECRET = "bob-private-marker"  # in every name and text B creates: must never reach A
SOURCE = "https://youtu.be/bobsvideo01"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Free reads: B's snapshots read everything B owns, and a read fee would change B's balance
    and ledger between the two (read fees have their own tests)."""
    return replace(settings, fees=replace(settings.fees, read=0))


def _matrix() -> list[Endpoint]:
    """The account routes with a path id. Operator routes (admin token) and public ones have no
    owner to cross, so they are not in it; a step of an execution is the execution's (404 across
    tenants: tests/api/test_step_detail.py)."""
    return [
        ep
        for ep in endpoints(routes())
        if ep.params and "step_index" not in ep.params and security_of(ep.endpoint) == "account"
    ]


def _id(ep: Endpoint) -> str:
    return f"{ep.method} {ep.path}"


@dataclass
class Tenant:
    """B and everything B owns, by path parameter name."""

    account: ApiAccount
    ids: dict[str, str]
    tool_id: str | None


async def _created(response: httpx.Response, key: str) -> dict[str, Any]:
    assert response.status_code in (201, 202), response.text
    body: dict[str, Any] = response.json()[key]
    return body


async def _seed(client: httpx.AsyncClient, runtime: Runtime, bob: ApiAccount) -> Tenant:
    """One of every resource B can create in this build (routes that answer 404 are absent)."""
    auth = bob.key_auth
    ids: dict[str, str] = {"account_id": bob.account_id}

    async def post(path: str, body: dict[str, Any]) -> httpx.Response | None:
        response = await client.post(path, json=body, headers=auth)
        if response.status_code in (404, 405) and path.count("/") <= 3:
            return None  # the collection route does not exist in this build
        return response

    item = await _created(
        await client.post("/v1/items", json={"source": SOURCE}, headers=auth), "item"
    )
    ids["item_id"] = item["item_id"]
    execution = await _created(
        await client.post(
            f"/v1/items/{ids['item_id']}/transcript", json={"text": SECRET}, headers=auth
        ),
        "execution",
    )
    ids["execution_id"] = execution["execution_id"]
    ids["step_index"] = "0"  # not an id: the execution's first step (checked as the execution)

    tools = await client.get("/v1/tools", headers=auth)
    tool_id = tools.json()["tools"][0]["tool_id"] if tools.status_code == 200 else None

    made = await post("/v1/collections", {"name": SECRET, "description": SECRET})
    if made is not None:
        ids["collection_id"] = (await _created(made, "collection"))["collection_id"]
        channel = await _created(
            await client.post("/v1/items", json={"source": "@bobschannel"}, headers=auth), "item"
        )
        for item_id in (ids["item_id"], channel["item_id"]):
            added = await client.post(
                f"/v1/collections/{ids['collection_id']}/items",
                json={"item_id": item_id},
                headers=auth,
            )
            assert added.status_code == 201, added.text
    made = await post("/v1/reporters", {"name": SECRET, "description": SECRET})
    if made is not None:
        ids["reporter_id"] = (await _created(made, "reporter"))["reporter_id"]
        steps = [{"tool_id": "llm_prompt", "prompt_text": SECRET, "params": {}}]
        workflow = await _created(
            await client.post(
                f"/v1/reporters/{ids['reporter_id']}/workflows",
                json={"name": SECRET, "target_kind": "youtube_video", "steps": steps},
                headers=auth,
            ),
            "workflow",
        )
        ids["workflow_id"] = workflow["workflow_id"]
        ids["step_id"] = workflow["steps"][0]["step_id"]
        schedule_body: dict[str, Any] = {"workflow_id": ids["workflow_id"], "interval_hours": 6}
        if "collection_id" in ids:
            schedule_body["collection_ids"] = [ids["collection_id"]]
        made = await post(f"/v1/reporters/{ids['reporter_id']}/schedules", schedule_body)
        if made is not None and made.status_code == 201:
            ids["schedule_id"] = (await _created(made, "schedule"))["schedule_id"]
            run = await client.post(
                f"/v1/reporters/{ids['reporter_id']}/schedules/{ids['schedule_id']}/run",
                headers=auth,
            )
            assert run.status_code == 202, run.text
            ids["run_id"] = run.json()["run_id"]
    document = await create_document(
        runtime,
        bob.account_id,
        kind="summary",
        content=orjson.dumps({"text": SECRET}),
        item_id=ids["item_id"],
        reporter_id=ids.get("reporter_id"),
        title=SECRET,
    )
    ids["document_id"] = document.document_id
    return Tenant(bob, ids, tool_id)


def _body(ep: Endpoint, b: Tenant, a_item: str) -> dict[str, Any] | None:
    """A body that would be valid for the owner, so only ownership can refuse it."""
    if ep.method not in ("POST", "PUT", "PATCH"):
        return None
    last = ep.path.rstrip("/").rsplit("/", 1)[-1]
    ids = b.ids
    by_last: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "transcript"): {"text": "stolen"},
        ("POST", "cancel"): {},
        ("POST", "items"): {"item_id": a_item},  # A's own item into B's collection
        ("POST", "workflows"): {"name": "stolen", "target_kind": "youtube_video"},
        ("POST", "steps"): {"tool_id": "llm_prompt", "prompt_text": "stolen", "params": {}},
        ("PUT", "steps"): {"steps": []},
        ("POST", "schedules"): {"workflow_id": ids.get("workflow_id", ""), "interval_hours": 6},
        ("POST", "collections"): {"collection_id": ids.get("collection_id", "")},
        ("POST", "process"): {"source": SOURCE},
        ("POST", "process-collection"): {"collection_id": ids.get("collection_id", "")},
        ("POST", "run"): {},
    }
    if (ep.method, last) in by_last:
        return by_last[(ep.method, last)]
    if ep.method == "PATCH":
        return {"schedule_id": {"enabled": False}}.get(ep.params[-1], {"name": "stolen"})
    return {}


def _url(ep: Endpoint, ids: dict[str, str]) -> str:
    return re.sub(r"{([^}]+)}", lambda m: ids[m.group(1)], ep.path)


async def _snapshot(client: httpx.AsyncClient, b: Tenant) -> dict[str, Any]:
    """Everything B can read: every GET route B's ids fill (and the lists), as B, and B's
    balance."""
    seen: dict[str, Any] = {}
    for ep in endpoints(routes()):
        if ep.method != "GET" or security_of(ep.endpoint) != "account":
            continue
        if not all(p in b.ids for p in ep.params):
            continue
        if ep.path == "/v1/executions/stream":
            continue  # a body that never ends (any Accept admitting it streams): not a snapshot
        url = _url(ep, b.ids)
        response = await client.get(url, headers=b.account.key_auth)
        body = response.json()
        if "error" in body:  # an error's request id differs per request, the rest must not
            body["error"].pop("request_id", None)
        seen[url] = (response.status_code, body)
    return seen


@pytest.mark.parametrize("ep", _matrix(), ids=_id)
async def test_another_tenants_ids_are_404_and_leave_nothing_changed(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, bob: ApiAccount, ep: Endpoint
) -> None:
    b = await _seed(client, runtime, bob)
    missing = [p for p in ep.params if p not in b.ids]
    # Every resource with a path id can be created: a new route must be seeded here too.
    assert not missing, f"cannot seed {missing}: teach _seed to create it"
    unknown = [p for p in ep.params if p not in ID_PARAMS]
    assert not unknown, f"path parameters without an id prefix in ID_PARAMS: {unknown}"
    a_item = (
        await client.post("/v1/items", json={"source": SOURCE}, headers=alice.key_auth)
    ).json()["item"]["item_id"]
    before = await _snapshot(client, b)
    assert before, "B's snapshot is empty: nothing would detect a change"

    url = _url(ep, b.ids)
    body = _body(ep, b, a_item)
    for credential in (alice.key_auth, alice.jwt_auth):
        response = await client.request(
            ep.method,
            url,
            headers={**credential, "Content-Type": "application/json"},
            content=None if body is None else orjson.dumps(body),
        )
        assert response.status_code == 404, f"{ep.method} {url}: {response.text}"
        error = response.json()
        assert set(error) == {"error", "erro"}
        assert error["error"]["code"] == "not_found"
        assert error["error"]["request_id"] == response.headers["x-request-id"]
        assert error["erro"] == error["error"]["message"]
        text = response.text
        assert SECRET not in text
        assert bob.account_id not in text
        assert not [
            v for k, v in b.ids.items() if v in text and k not in ep.params and k in ID_PARAMS
        ]

    assert await _snapshot(client, b) == before
    me = await client.get("/v1/me", headers=alice.key_auth)
    assert me.json()["account"]["balance_coins"] == 1.0  # A was charged nothing either


async def test_lists_filtered_by_another_tenants_ids_show_nothing(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, bob: ApiAccount
) -> None:
    b = await _seed(client, runtime, bob)
    for key in ("item_id", "reporter_id"):
        if key not in b.ids:
            continue
        listed = await client.get("/v1/documents", params={key: b.ids[key]}, headers=alice.key_auth)
        assert listed.status_code in (200, 404), listed.text
        if listed.status_code == 200:
            assert listed.json()["documents"] == []
        assert SECRET not in listed.text


def test_the_matrix_covers_every_route_with_an_id() -> None:
    """Every path parameter of an account route is one the matrix knows how to fill."""
    matrix = _matrix()
    assert matrix
    for ep in matrix:
        assert set(ep.params) <= set(ID_PARAMS) | set(INT_PARAMS), _id(ep)
