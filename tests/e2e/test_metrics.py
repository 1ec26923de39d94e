"""Every role's metrics during an end-to-end run, each role its own process: the API's
``GET /metrics`` and the ``--metrics-port`` of the worker, projector, scheduler and archiver,
parsed with prometheus_client's parser. The families are there, move as executions flow, and
carry no id label.

Its own private Redis and processes (the session's e2e deployments run without metrics ports).
Counters are compared once the work is known to be done (polled over HTTP), never after a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.samples import Sample

from engine.log.keys import Keys
from engine.resources.schedules import due_member
from tests.e2e.client import new_item, new_reporter, new_tenant, ok
from tests.e2e.deployment import PARTITIONS, deployment_env
from tests.processes import Role, wait_http
from tests.scrapes import (
    PROCESS_FAMILIES,
    STORE_FAMILIES,
    assert_no_id_labels,
    samples,
    value,
)
from tests.servers import (
    free_port,
    redis_server,
    redis_server_available,
    unavailable,
)

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

ROLES = ("api", "worker", "projector", "scheduler", "archiver")


@dataclass
class Deployed:
    env: dict[str, str]
    url: str
    api: str
    endpoints: dict[str, str]  # role -> its metrics URL

    def scrape(self, role: str) -> dict[str, list[Sample]]:
        response = httpx.get(self.endpoints[role], timeout=10)
        assert response.status_code == 200, response.text
        return samples(response.text)


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    if not redis_server_available():
        unavailable("redis-server is not on PATH")
    with ExitStack() as stack:
        import tempfile

        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cs-metrics-")))
        server = stack.enter_context(redis_server())
        env = deployment_env(
            server.url,
            cluster=False,
            CLIPSTREAM_ARCHIVE_URL=(tmp / "archive").as_uri(),
            CLIPSTREAM_HOT_SECONDS="0",  # entries leave the hot window at once: segments now
            CLIPSTREAM_ARCHIVE_SEGMENT_ENTRIES="1",
            CLIPSTREAM_ARCHIVE_SEGMENT_MS="0",
        )
        endpoints: dict[str, str] = {}
        started: list[Role] = []
        stack.callback(lambda: [r.terminate() for r in reversed(started)])
        api_port = free_port()
        for role in ROLES:
            if role == "api":
                args = ["api", "--port", str(api_port)]
                endpoints[role] = f"http://127.0.0.1:{api_port}/metrics"
            else:
                port = free_port()
                args = [role, "--metrics-port", str(port)]
                endpoints[role] = f"http://127.0.0.1:{port}/metrics"
            proc = Role(args, env, tmp / f"{role}.log")
            started.append(proc)
            wait_http(endpoints[role].replace("/metrics", "/healthz"), role=proc)
        yield Deployed(env, server.url, f"http://127.0.0.1:{api_port}", endpoints)


def _total(found: dict[str, list[Sample]], family: str, sample: str, **labels: str) -> float:
    return value(found, family, sample, **labels)


async def test_every_role_serves_its_families_and_they_move(deployed: Deployed) -> None:
    before = {role: deployed.scrape(role) for role in ROLES}
    for role, found in before.items():
        for family in (*STORE_FAMILIES, *PROCESS_FAMILIES, "clipstream_redis_memory_used_bytes"):
            assert family in found, (role, family)
        assert _total(found, "clipstream_scrape_store_ok", "clipstream_scrape_store_ok") == 1
    assert "clipstream_feed_subscribers" in before["api"]

    async with httpx.AsyncClient(base_url=deployed.api, timeout=30) as http:
        who = await new_tenant(http, coins=5)
        item = await new_item(http, who)
        # Their end is read from the worker's counters below, not by polling the executions
        # (with CLIPSTREAM_HOT_SECONDS=0 the archiver works on them at once, which is not what
        # this test is about).
        for _ in range(3):
            answer = await http.post(f"/v1/items/{item}/transcript", json={}, headers=who.auth)
            ok(answer, 202)
        # A schedule made due now: the scheduler fires it.
        rid, wid = await new_reporter(http, who, [{"tool_id": "transcribe"}])
        col = ok(await http.post("/v1/collections", json={"name": "c"}, headers=who.auth), 201)
        cid = col["collection"]["collection_id"]
        channel = await new_item(http, who, "https://www.youtube.com/@metered")
        added = await http.post(
            f"/v1/collections/{cid}/items", json={"item_id": channel}, headers=who.auth
        )
        ok(added, 201)
        made = await http.post(
            f"/v1/reporters/{rid}/schedules",
            json={"workflow_id": wid, "interval_hours": 24, "collection_ids": [cid],
                  "max_videos_per_channel": 1, "max_age_hours": 8760},
            headers=who.auth,
        )  # fmt: skip
        sid = ok(made, 201)["schedule"]["schedule_id"]
    keys = Keys(deployed.env["CLIPSTREAM_PREFIX"], PARTITIONS)
    with redis.Redis.from_url(deployed.url) as client:
        due = keys.schedule_due(keys.partition(who.account_id))
        client.zadd(due, {due_member(who.account_id, sid): int(time.time() * 1000)})

    def counted(role: str, family: str, sample: str, **labels: str) -> float:
        return _total(deployed.scrape(role), family, sample, **labels)

    def grows(role: str, family: str, sample: str, by: float, **labels: str) -> None:
        """Until ``role``'s counter has grown by ``by`` (a deadline only bounds a failure)."""
        start = _total(before[role], family, sample, **labels)
        end = time.monotonic() + 60
        while (now := counted(role, family, sample, **labels)) - start < by:
            assert time.monotonic() < end, (role, family, labels, start, now)
            time.sleep(0.1)

    route = "/v1/items/{item_id}/transcript"
    grows("api", "clipstream_http_requests", "clipstream_http_requests_total", 3,
          route=route, method="POST", status="202")  # fmt: skip
    grows("api", "clipstream_executions_accepted", "clipstream_executions_accepted_total", 3,
          kind="transcript")  # fmt: skip
    grows("api", "clipstream_coins_charged", "clipstream_coins_charged_total", 0.03 - 1e-9,
          charge="fee")  # fmt: skip
    grows("worker", "clipstream_executions_ended", "clipstream_executions_ended_total", 3,
          kind="transcript", status="done", code="none")  # fmt: skip
    # Each new execution's view is read from Redis once (there is none yet); later batches of a
    # running one may take it from the projector's memory.
    grows("projector", "clipstream_projector_views", "clipstream_projector_views_total", 3,
          source="redis")  # fmt: skip
    grows("worker", "clipstream_step_duration_seconds", "clipstream_step_duration_seconds_count",
          3, tool="transcribe", outcome="completed")  # fmt: skip
    grows("worker", "clipstream_coins_charged", "clipstream_coins_charged_total", 1e-6,
          charge="provider")  # fmt: skip
    grows("scheduler", "clipstream_schedule_ticks", "clipstream_schedule_ticks_total", 1,
          outcome="dispatched")  # fmt: skip
    grows("scheduler", "clipstream_executions_accepted", "clipstream_executions_accepted_total",
          1, kind="schedule_run")  # fmt: skip
    grows("archiver", "clipstream_archive_segments_written",
          "clipstream_archive_segments_written_total", 1, content="log")  # fmt: skip

    # The store's figures moved too: the archive's position in the tenant's partition moves
    # past where it was, and every role reads the same store.
    p = str(keys.partition(who.account_id))
    position = ("clipstream_archive_position_ms", "clipstream_archive_position_ms")
    grows("archiver", *position, 1, partition=p)
    for role in ROLES:
        found = deployed.scrape(role)
        assert _total(found, *position, partition=p) > _total(before[role], *position, partition=p)
        assert_no_id_labels(found)
