"""Two ``clipstream scheduler`` processes racing on the same due schedules over many ticks: each
tick starts exactly one run, whichever process wins it, on a single Redis and on the cluster.

The test makes ticks come due by writing each schedule's due time in its partition's due index
(what the passing of an interval would do), then waits until both schedulers have moved past it
and the runs have ended, round after round. The verdict is read from the partition logs: one
``schedule_run`` request per schedule and tick, every tick of every round, with both scheduler
processes alive throughout (which of them wins a tick is timing, so it is not asserted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from engine.clock import now_ms
from engine.log.events import ExecutionRequested
from engine.resources.schedules import due_member
from engine.runtime import Runtime
from engine.schedules.runs import TICK_KEY
from engine.settings import Settings
from tests.e2e.client import Tenant, new_item, new_reporter, new_tenant, ok, wait_terminal
from tests.e2e.deployment import Deployment
from tests.e2e.test_flows import check_money
from tests.helpers import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

SCHEDULES = 4
ROUNDS = 10


@pytest.fixture
async def runtime(deployment: Deployment) -> AsyncIterator[Runtime]:
    """A runtime on the deployment's store, to read its logs and write its due index."""
    opened = await Runtime.open(Settings.from_env(deployment.env))
    try:
        yield opened
    finally:
        await opened.close()


async def _schedules(http: httpx.AsyncClient, who: Tenant) -> list[str]:
    rid, wid = await new_reporter(http, who, [{"tool_id": "transcribe"}])
    cid = ok(await http.post("/v1/collections", json={"name": "ch"}, headers=who.auth), 201)[
        "collection"
    ]["collection_id"]
    channel = await new_item(http, who, "https://www.youtube.com/@raced")
    ok(await http.post(f"/v1/collections/{cid}/items", json={"item_id": channel},
                       headers=who.auth), 201)  # fmt: skip
    ids = []
    for _ in range(SCHEDULES):
        made = await http.post(
            f"/v1/reporters/{rid}/schedules",
            json={"workflow_id": wid, "interval_hours": 24, "collection_ids": [cid],
                  "max_videos_per_channel": 1, "max_age_hours": 8760},
            headers=who.auth,
        )  # fmt: skip
        ids.append(ok(made, 201)["schedule"]["schedule_id"])
    return ids


async def _runs(runtime: Runtime, owner: str) -> list[ExecutionRequested]:
    """The owner's schedule runs, read from its partition's log (which other tenants share)."""
    store = runtime.store
    entries = await store.log.read_log(store.keys.partition(owner), "0-0", 100_000)
    return [
        e.event
        for e in entries
        if isinstance(e.event, ExecutionRequested)
        and e.event.kind == "schedule_run"
        and e.event.owner == owner
    ]


def _tick(run: ExecutionRequested) -> int:
    return int((run.idempotency_key or "").rsplit(":", 1)[1])


async def test_two_scheduler_processes_fire_each_tick_once(
    deployment: Deployment, runtime: Runtime
) -> None:
    assert [r.args[0] for r in deployment.roles].count("scheduler") == 2
    async with httpx.AsyncClient(base_url=deployment.api_bases[0], timeout=30) as http:
        who = await new_tenant(http, coins=100)
        schedule_ids = await _schedules(http, who)
        keys = runtime.store.keys
        due_key = keys.schedule_due(keys.partition(who.account_id))
        base = now_ms() - 30 * 60_000  # ticks in the last half hour: each is the latest due
        ticks = [base + r * 1_000 for r in range(ROUNDS)]
        for tick in ticks:
            await runtime.redis.zadd(
                due_key, {due_member(who.account_id, s): tick for s in schedule_ids}, xx=True
            )

            async def fired(tick: int = tick) -> list[ExecutionRequested]:
                return [r for r in await _runs(runtime, who.account_id) if _tick(r) == tick]

            # Every schedule's tick fired (a tick consumed without a run never gets here) ...
            for run in await eventually(fired, until=lambda runs: len(runs) == SCHEDULES):
                # ... and its run ended, so the next tick finds none in flight.
                await wait_terminal(http, who, run.execution_id)
            deployment.check_alive()

        runs = await _runs(runtime, who.account_id)
        assert sorted((r.schedule_id or "", _tick(r)) for r in runs) == sorted(
            (s, t) for s in schedule_ids for t in ticks
        )
        assert all((r.idempotency_key or "").startswith(f"{TICK_KEY}:") for r in runs)
        # Which process wins a tick is the scheduler's timing, not a verdict: both were alive and
        # polling the same due index every tick (check_alive), and each tick still fired once.
        winners = {r.request_id.split(":", 1)[0] for r in runs}
        assert 1 <= len(winners) <= 2, winners
        await check_money(http, who, 100_000_000)
