"""Read-your-writes for the lists (DESIGN §7, issue 15 #2): an execution is listed by
``GET /v1/executions/me`` (active or all) and by its reporter's executions from the moment its 202
is sent, before the projector has folded it, in its place among the folded ones and once only
when the projector catches up."""

from __future__ import annotations

import httpx
import pytest

from engine.run.worker import Worker
from engine.runtime import Runtime
from projections.projector import Projector
from tests.api.conftest import ApiAccount
from tests.api.test_process import VIDEO, _ok, _reporter

pytestmark = pytest.mark.anyio


async def _ids(client: httpx.AsyncClient, who: ApiAccount, url: str, **params: str) -> list[str]:
    body = await _ok(await client.get(url, params=params, headers=who.key_auth))
    return [e["execution_id"] for e in body["executions"]]


async def _process(client: httpx.AsyncClient, who: ApiAccount, rid: str) -> str:
    accepted = await _ok(
        await client.post(
            f"/v1/reporters/{rid}/process", json={"source": VIDEO}, headers=who.key_auth
        ),
        202,
    )
    xid: str = accepted["execution"]["execution_id"]
    return xid


async def test_every_list_shows_an_execution_from_its_202(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, bob: ApiAccount
) -> None:
    rid, _ = await _reporter(client, alice)
    folded = await _process(client, alice, rid)
    await Projector(runtime).run_until_idle()
    await _process(client, bob, (await _reporter(client, bob))[0])  # another owner's, unfolded

    fresh = await _process(client, alice, rid)  # no projector from here on
    mine = "/v1/executions/me"
    assert await _ids(client, alice, mine) == [fresh, folded]
    assert await _ids(client, alice, mine, active="1") == [fresh, folded]
    assert await _ids(client, alice, f"/v1/reporters/{rid}/executions") == [fresh, folded]
    # Paged: the unfolded one takes its place on the first page.
    first = await _ok(await client.get(mine, params={"limit": "1"}, headers=alice.key_auth))
    assert [e["execution_id"] for e in first["executions"]] == [fresh]
    assert [e["status"] for e in first["executions"]] == ["pending"]
    rest = await _ids(client, alice, mine, limit="1", cursor=first["next_cursor"])
    assert rest == [folded]
    # Another reporter of the same owner does not list it.
    other, _ = await _reporter(client, alice)
    assert await _ids(client, alice, f"/v1/reporters/{other}/executions") == []

    # The worker ran both; the projector has not: done ones leave the active list at once.
    await Worker(runtime).run_until_idle()
    assert fresh not in await _ids(client, alice, mine, active="1")
    assert await _ids(client, alice, mine) == [fresh, folded]
    await Projector(runtime).run_until_idle()
    assert await _ids(client, alice, mine) == [fresh, folded]  # once, not twice
    assert await _ids(client, alice, mine, active="1") == []


async def test_ten_of_ten_right_after_the_202(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    """The integrator's try: POST, then at once the "still working" list — every time."""
    rid, _ = await _reporter(client, alice)
    for _ in range(10):
        xid = await _process(client, alice, rid)
        assert xid in await _ids(client, alice, "/v1/executions/me", active="1")
