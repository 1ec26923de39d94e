"""What runs beside the requests, end to end: the SSE feed resumed on another API process with
``Last-Event-ID`` (no gap), ``clipstream replay`` rebuilding every view identical to the live
ones, and the rate limits shared by API processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.client import Json, Tenant, new_item, new_tenant, ok, wait_terminal
from tests.e2e.deployment import Deployment
from tests.helpers import eventually
from tests.processes import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

SSE = {"Accept": "text/event-stream"}


async def feed(
    http: httpx.AsyncClient, who: Tenant, xid: str, *, last_id: str | None, stop_after: int | None
) -> tuple[list[Json], str | None]:
    """``event`` messages of ``xid`` from the SSE stream (resumed after ``last_id``), until
    ``stop_after`` of them or the execution's last one; and the last ``id:`` seen."""
    headers = {**who.auth, **SSE}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    got: list[Json] = []
    frame: dict[str, str] = {}
    seen = last_id
    async with http.stream("GET", "/v1/executions/stream", headers=headers) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line:
                name, _, value = line.partition(": ")
                frame[name] = value
                continue
            message: dict[str, Any] = orjson.loads(frame.get("data", "{}"))
            seen = frame.get("id", seen)
            frame = {}
            if message.get("type") != "event" or message.get("execution_id") != xid:
                continue
            got.append(message)
            ended = message["execution"]["status"] in ("done", "error")
            if ended or (stop_after is not None and len(got) >= stop_after):
                return got, seen
    raise AssertionError("the stream ended")


async def test_the_feed_resumes_on_another_api_process_without_a_gap(
    deployment: Deployment,
) -> None:
    one, two = deployment.api_bases[:2]
    async with (
        httpx.AsyncClient(base_url=one, timeout=30) as http,
        httpx.AsyncClient(base_url=two, timeout=30) as other,
    ):
        who = await new_tenant(http)
        item_id = await new_item(http, who)
        xid = ok(
            await http.post(f"/v1/items/{item_id}/transcript", json={}, headers=who.auth), 202
        )["execution"]["execution_id"]
        # From the start of the tenant's (new, so empty) feed: without a cursor the stream would
        # begin with a reset whose snapshot holds what was folded before it connected, and the
        # first events would not come one by one.
        first, last_id = await feed(http, who, xid, last_id="0-0", stop_after=2)
        rest, _ = await feed(other, who, xid, last_id=last_id, stop_after=None)
        done = await wait_terminal(http, who, xid)
        assert done["execution"]["status"] == "done"
        seqs = [m["seq"] for m in first + rest]
        # Every event, in order, across the reconnection. A duplicate is allowed: resuming from
        # an event halfway through a feed entry sends that entry whole again.
        assert list(dict.fromkeys(seqs)) == list(range(1, max(seqs) + 1))
        assert [m["seq"] for m in rest] == sorted(m["seq"] for m in rest)
        assert rest[-1]["execution"]["status"] == "done"


async def test_replay_rebuilds_every_view_identical_to_the_live_ones(
    deployment: Deployment,
) -> None:
    async with httpx.AsyncClient(base_url=deployment.api_bases[0], timeout=30) as http:
        who = await new_tenant(http)
        item_id = await new_item(http, who)
        xids = [
            ok(await http.post(f"/v1/items/{item_id}/transcript", json={"text": f"t{n}"},
                               headers=who.auth), 202)["execution"]["execution_id"]
            for n in range(3)
        ]  # fmt: skip
        for xid in xids:
            await wait_terminal(http, who, xid)

        async def listed_done() -> list[Json]:  # the projector has folded them (the list is its)
            body = ok(await http.get("/v1/executions/me", headers=who.auth))
            found: list[Json] = body["executions"]
            return found

        await eventually(
            listed_done, until=lambda xs: sorted(x["execution_id"] for x in xs if
                                                 x["status"] == "done") == sorted(xids)
        )  # fmt: skip

    def replay() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", "replay"],
            cwd=ROOT, env=deployment.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    # Other tests' work may still be folding: the parity is taken again until the live views
    # have caught up (each attempt rebuilds from the log).
    for _ in range(3):
        done = replay()
        assert done.returncode == 0, done.stderr
        if "identical" in done.stdout:
            break
    assert "0 gaps" in done.stdout, done.stdout
    assert "identical" in done.stdout, done.stdout


@pytest.fixture
async def limited(deployment: Deployment) -> AsyncIterator[list[str]]:
    """Two more API processes with tight limits, on the deployment's Redis."""
    started = [
        deployment.start("api", CLIPSTREAM_RATE_KEY="6/minute",
                         CLIPSTREAM_RATE_AUTH_FAILURES="4/minute")
        for _ in range(2)
    ]  # fmt: skip
    try:
        yield deployment.api_bases[-2:]
    finally:
        for role in started:
            deployment.stop(role)
        del deployment.api_bases[-2:]


async def test_rate_limits_are_shared_by_every_api_process(
    deployment: Deployment, limited: list[str]
) -> None:
    async with (
        httpx.AsyncClient(base_url=limited[0], timeout=30) as one,
        httpx.AsyncClient(base_url=limited[1], timeout=30) as two,
    ):
        who = await new_tenant(one)
        for n in range(6):
            assert (await (one if n % 2 else two).get("/v1/me", headers=who.auth)).is_success
        for client in (one, two):
            refused = await client.get("/v1/me", headers=who.auth)
            assert refused.status_code == 429
            assert refused.headers["ratelimit-policy"] == '"key";q=6;w=60'
            assert 1 <= int(refused.headers["retry-after"]) <= 60

        other = await new_tenant(one)
        for n in range(4):
            guess = {"Authorization": f"Bearer ck_live_{'0' * 42}{n}"}
            assert (await (one if n % 2 else two).get("/v1/me", headers=guess)).status_code == 401
        for client in (one, two):  # past the failures, even a good key waits at this address
            refused = await client.get("/v1/me", headers=other.auth)
            assert refused.status_code == 429
            assert refused.headers["ratelimit"].startswith('"auth";r=0;t=')
