"""What an integrator does over HTTP, as helpers for the end-to-end tests: accounts through the
admin API, resources, async requests, polling to the end, the ledger page by page."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from tests.processes import ADMIN_HEADERS

VIDEO = "https://youtu.be/dQw4w9WgXcQ"
TERMINAL = ("done", "error")
Json = dict[str, Any]


@dataclass(frozen=True)
class Tenant:
    """An account made through ``POST /admin/accounts``."""

    account_id: str
    api_key: str
    session_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: Json = response.json()
    return body


async def new_tenant(http: httpx.AsyncClient, coins: float = 10, name: str = "e2e") -> Tenant:
    body = ok(
        await http.post(
            "/admin/accounts", json={"name": name, "coins": coins}, headers=ADMIN_HEADERS
        ),
        201,
    )
    return Tenant(body["account"]["account_id"], body["api_key"], body["session_token"])


async def new_item(http: httpx.AsyncClient, who: Tenant, source: str = VIDEO) -> str:
    body = ok(await http.post("/v1/items", json={"source": source}, headers=who.auth), 201)
    item_id: str = body["item"]["item_id"]
    return item_id


async def new_reporter(
    http: httpx.AsyncClient, who: Tenant, steps: list[Json], target_kind: str = "youtube_video"
) -> tuple[str, str]:
    """A reporter and a workflow of ``steps`` over ``target_kind``: (reporter id, workflow id)."""
    rep = ok(await http.post("/v1/reporters", json={"name": "r"}, headers=who.auth), 201)
    rid: str = rep["reporter"]["reporter_id"]
    body = {"name": "w", "target_kind": target_kind, "steps": steps}
    wf = ok(await http.post(f"/v1/reporters/{rid}/workflows", json=body, headers=who.auth), 201)
    wid: str = wf["workflow"]["workflow_id"]
    return rid, wid


async def wait_terminal(
    http: httpx.AsyncClient, who: Tenant, execution_id: str, deadline_s: float = 90
) -> Json:
    """Poll the execution until it is ``done`` or ``error``; its detail."""
    end = time.monotonic() + deadline_s
    while True:
        response = await http.get(f"/v1/executions/{execution_id}", headers=who.auth)
        if response.status_code == 200:
            body: Json = response.json()
            status = body["execution"]["status"]
            if status in TERMINAL:
                return body
            assert status in ("pending", "running"), body
        else:
            assert response.status_code == 503, response.text  # Redis failing over
        assert time.monotonic() < end, f"{execution_id} not terminal after {deadline_s}s"
        await anyio.sleep(0.05)


async def ledger(http: httpx.AsyncClient, who: Tenant) -> list[Json]:
    """Every ledger entry, newest first, as it stands after this listing: each page's read pays
    its own fee on top of the ledger, so a last look at the first page brings in what the later
    pages' reads added."""
    entries: list[Json] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = ok(await http.get("/v1/me/ledger", params=params, headers=who.auth))
        entries += page["entries"]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    if len(entries) > 100:
        seen = {e["charge_id"] for e in entries}
        top = ok(await http.get("/v1/me/ledger", params={"limit": 100}, headers=who.auth))
        newer = [e for e in top["entries"] if e["charge_id"] not in seen]
        assert len(newer) < 100
        entries = newer + entries
    return entries


async def events(http: httpx.AsyncClient, who: Tenant, execution_id: str) -> list[Json]:
    """Every event of the execution, page after page."""
    found: list[Json] = []
    params: dict[str, str | int] = {"limit": 100}
    while True:
        url = f"/v1/executions/{execution_id}/events"
        body = ok(await http.get(url, params=params, headers=who.auth))
        found += body["events"]
        if body["next_cursor"] is None:
            return found
        params["cursor"] = body["next_cursor"]
