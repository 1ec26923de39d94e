"""End to end through the HTTP API on a real Redis, with API, worker and projector as separate
processes — the deployment shape of compose.yaml."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import micro
from tests.processes import ADMIN_HEADERS, role_env, roles, wait_http
from tests.servers import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ADMIN = ADMIN_HEADERS


def _poll(
    client: httpx.Client, url: str, headers: dict[str, str], status: str
) -> dict[str, object]:
    import time

    end = time.monotonic() + 60
    while True:
        body: dict[str, object] = client.get(url, headers=headers).json()
        execution = body["execution"]
        assert isinstance(execution, dict)
        if execution["status"] == status:
            return body
        assert execution["status"] in ("pending", "running"), body
        assert time.monotonic() < end, f"still {execution['status']} after 60s: {body}"
        time.sleep(0.05)


def test_transcript_through_separate_processes(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    env = role_env(real_redis_server.url)
    specs = [["api", "--port", str(port)], ["worker"], ["worker"], ["projector"]]
    base = f"http://127.0.0.1:{port}"
    with roles(specs, env, tmp_path) as procs, httpx.Client(base_url=base, timeout=10) as http:
        wait_http(f"{base}/healthz", role=procs[0])
        created = http.post("/admin/accounts", json={"name": "e2e", "coins": 10}, headers=ADMIN)
        assert created.status_code == 201, created.text
        auth = {"Authorization": f"Bearer {created.json()['api_key']}"}

        item = http.post("/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=auth)
        assert item.status_code == 201, item.text
        item_id = item.json()["item"]["item_id"]

        accepted = http.post(f"/v1/items/{item_id}/transcript", json={"lang": "en"}, headers=auth)
        assert accepted.status_code == 202, accepted.text
        execution_id = accepted.json()["execution"]["execution_id"]
        # Read-your-writes: the execution is visible at once, whatever the projector's lag.
        first = http.get(f"/v1/executions/{execution_id}", headers=auth)
        assert first.status_code == 200, first.text

        done = _poll(http, f"/v1/executions/{execution_id}", auth, "done")
        steps = done["steps"]
        assert isinstance(steps, list)
        assert [s["tool_id"] for s in steps] == ["transcribe"]
        assert steps[0]["status"] == "done"

        # The execution reads its own log at once; the transcript index is the projector's, which
        # may still be folding what the worker wrote.
        transcript = _wait_for(http, f"/v1/items/{item_id}/transcript?lang=en", auth)
        body = transcript.json()["transcript"]
        assert body["text"]
        assert body["segments"]

        active = http.get("/v1/executions/me?active=1", headers=auth).json()
        assert active["executions"] == []
        assert http.get("/v1/me", headers=auth).status_code == 200
        # The balance paid the fee and the transcriber's cost, exactly what the execution shows;
        # every other charge is a read (0.001, taken after each answer; as many as the polling
        # took). The ledger's pages are checked, not a balance read while the last reads may
        # still be settling.
        execution = done["execution"]
        assert isinstance(execution, dict)
        cost = micro(execution["cost_coins"])
        assert micro(execution["fee_coins"]) == 10_000
        assert cost > 10_000
        ledger = _ledger(http, auth)
        assert ledger[-1]["kind"] == "credit"
        assert micro(ledger[-1]["amount_coins"]) == 10_000_000
        paid = [e for e in ledger[:-1] if not str(e["kind"]).startswith("read")]
        assert {e["kind"] for e in paid} == {"fee", "reserve", "release", "settle"}
        assert {e["execution_id"] for e in paid} == {execution_id}
        assert sum(micro(e["amount_coins"]) for e in paid) == -cost
        reads = [micro(e["amount_coins"]) for e in ledger if e["kind"] == "read"]
        given_back = [micro(e["amount_coins"]) for e in ledger if e["kind"] == "read_release"]
        assert set(reads) == {-1_000}
        assert set(given_back) <= {1_000}
        kept = len(reads) - len(given_back)
        assert micro(ledger[0]["balance_coins"]) == 10_000_000 - cost - 1_000 * kept


def _wait_for(client: httpx.Client, url: str, headers: dict[str, str]) -> httpx.Response:
    """GET ``url`` until it is no longer 404 (60 s at most)."""
    import time

    end = time.monotonic() + 60
    while True:
        response = client.get(url, headers=headers)
        if response.status_code != 404 or time.monotonic() > end:
            assert response.status_code == 200, response.text
            return response
        time.sleep(0.05)


def _ledger(client: httpx.Client, headers: dict[str, str]) -> list[dict[str, object]]:
    """Every ledger entry, newest first: the first page's, then the older ones page by page
    (entries written meanwhile go on top, outside the pages that follow)."""
    entries: list[dict[str, object]] = []
    params: dict[str, str | int] = {"limit": 100}
    while True:
        page = client.get("/v1/me/ledger", params=params, headers=headers).json()
        entries += page["entries"]
        if page["next_cursor"] is None:
            return entries
        params["cursor"] = page["next_cursor"]
