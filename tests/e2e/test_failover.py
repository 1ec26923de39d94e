"""A Redis Cluster master SIGKILLed while executions run: its replica is promoted, the old master
comes back as the replica of its successor, and every execution accepted with a 202 — before,
during and after the failover — finishes once, with its money exact to the micro-coin.

Own cluster (three masters, one replica each, a short node timeout) and own processes: the kill
changes the topology for good. The API waits for one replica before a 202
(``CLIPSTREAM_WAIT_REPLICAS=1``), so while the promoted master has no replica yet it answers 503;
the client retries with the same ``Idempotency-Key``, as an integrator would, until it gets its
202, so a request the store took while answering 503 is the one it gets back, never a second.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest
from redis.cluster import RedisCluster

from tests.e2e.client import Json, Tenant, events, new_item, new_reporter, new_tenant
from tests.e2e.client import wait_terminal as poll_terminal
from tests.e2e.conftest import _require_redis
from tests.e2e.deployment import Deployment, start_deployment
from tests.e2e.test_flows import check_money
from tests.helpers import eventually
from tests.servers import (
    RedisServer,
    redis_cluster,
    replicas_of,
    role_of,
    wait_cluster_settled,
    wait_failover,
)

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow, pytest.mark.cluster]

TENANTS = 6
BEFORE = 4  # executions per tenant accepted before the kill
DURING = 3  # and sent while the master is dead and the cluster fails over
STEPS = [
    {"tool_id": "transcribe"},
    {"tool_id": "llm_prompt", "prompt_text": "One."},
    {"tool_id": "llm_prompt", "prompt_text": "Two."},
]


async def submit(
    http: httpx.AsyncClient, who: Tenant, rid: str, wid: str, key: str, deadline_s: float = 120
) -> str:
    """POST process with ``key`` until it is accepted (202); the execution id. A 503 (no replica
    confirmed, or the cluster is down) or a broken connection is retried with the same key."""
    body = {"source": "https://youtu.be/" + key[-11:].rjust(11, "x"), "workflow_id": wid}
    headers = {**who.auth, "Idempotency-Key": key}
    end = time.monotonic() + deadline_s
    while True:
        try:
            answer = await http.post(f"/v1/reporters/{rid}/process", json=body, headers=headers)
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code == 202:
            execution_id: str = answer.json()["execution"]["execution_id"]
            return execution_id
        if answer is not None:
            assert answer.status_code in (500, 503), answer.text
        assert time.monotonic() < end, f"{key} never accepted"
        await anyio.sleep(0.2)


def victim_of(deployment: Deployment, tenants: list[Tenant]) -> RedisServer:
    """The master holding the most of the tenants' partitions."""
    client: RedisCluster = deployment.redis()
    try:
        owners = Counter(
            client.get_node_from_key(deployment.keys.balance(t.account_id)).port  # type: ignore[no-untyped-call]
            for t in tenants
        )
    finally:
        client.close()
    port, _ = owners.most_common(1)[0]
    return next(n for n in deployment.nodes if n.port == port)


async def test_a_master_killed_mid_run_loses_no_accepted_execution_and_no_money(
    tmp_path: Path,
) -> None:
    _require_redis()
    with (
        redis_cluster(3, replicas=1, node_timeout_ms=2_000) as nodes,
        start_deployment(
            "cluster",
            f"redis://127.0.0.1:{nodes[0].port}/0",
            nodes,
            tmp_path,
            roles=["api", "api", "worker", "worker", "projector"],
            CLIPSTREAM_SIM_LATENCY_MS="150",
        ) as deployment,
    ):
        await _scenario(deployment)


async def _scenario(deployment: Deployment) -> None:
    bases = deployment.api_bases
    async with (
        httpx.AsyncClient(base_url=bases[0], timeout=30) as http,
        httpx.AsyncClient(base_url=bases[1], timeout=30) as other,
    ):
        tenants = [await new_tenant(http, coins=10, name=f"t{n}") for n in range(TENANTS)]
        flows = [await new_reporter(http, t, STEPS) for t in tenants]
        for tenant in tenants:
            await new_item(http, tenant)
        accepted: dict[str, tuple[Tenant, str]] = {}  # execution id -> owner, key

        async def batch(phase: str, per_tenant: int) -> None:
            async def one(n: int, tenant: Tenant, rid: str, wid: str) -> None:
                key = f"{phase}{n:03d}{tenant.account_id[-8:]}"
                client = http if n % 2 else other
                accepted[await submit(client, tenant, rid, wid, key)] = (tenant, key)

            async with anyio.create_task_group() as tg:
                for tenant, (rid, wid) in zip(tenants, flows, strict=True):
                    for n in range(per_tenant):
                        tg.start_soon(one, n, tenant, rid, wid)

        await batch("before", BEFORE)
        first = next(iter(accepted))
        owner = accepted[first][0]
        await eventually(
            lambda: _status(http, owner, first), until=lambda s: s in ("running", "done")
        )

        victim = victim_of(deployment, tenants)
        assert role_of(victim)[0] == "master"
        [replica] = replicas_of(victim, deployment.nodes)
        victim.stop(kill=True)  # SIGKILL: no goodbye, no last write
        async with anyio.create_task_group() as tg:
            tg.start_soon(batch, "during", DURING)
            await anyio.to_thread.run_sync(wait_failover, deployment.nodes, victim, replica)
            assert role_of(replica)[0] == "master"  # the fault happened: a replica took over
            victim.start()  # the old master comes back ...
            await anyio.to_thread.run_sync(
                lambda: wait_cluster_settled(deployment.nodes, masters=3)
            )
            assert role_of(victim) == ("slave", "up")  # ... as the replica of its successor
            assert replicas_of(replica, deployment.nodes) == [victim]
        assert len(accepted) == TENANTS * (BEFORE + DURING)

        for xid, (tenant, _) in accepted.items():
            detail = await poll_terminal(http, tenant, xid, deadline_s=180)
            assert detail["execution"]["status"] == "done", detail
            history = await events(http, tenant, xid)
            _once(xid, history)
        for tenant in tenants:
            entries = await check_money(http, tenant, 10_000_000)
            mine = {x for x, (t, _) in accepted.items() if t is tenant}
            fees = [e["execution_id"] for e in entries if e["kind"] == "fee"]
            assert sorted(fees) == sorted(mine), tenant.account_id
        deployment.check_alive()


async def _status(http: httpx.AsyncClient, who: Tenant, xid: str) -> str:
    response = await http.get(f"/v1/executions/{xid}", headers=who.auth)
    status: str = response.json()["execution"]["status"] if response.status_code == 200 else ""
    return status


def _once(execution_id: str, history: list[Json]) -> None:
    """Nothing of the execution happened twice: one terminal event, last; seq without gaps; one
    StepCompleted per step."""
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1)), execution_id
    terminal = [e for e in history if e["type"] in ("ExecutionCompleted", "ExecutionFailed",
                                                    "ExecutionCancelled")]  # fmt: skip
    assert [e["type"] for e in terminal] == ["ExecutionCompleted"], execution_id
    assert history[-1] is terminal[0]
    completed = Counter(e["step_index"] for e in history if e["type"] == "StepCompleted")
    assert completed == dict.fromkeys(range(len(STEPS)), 1), (execution_id, completed)
