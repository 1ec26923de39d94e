"""Separate ``clipstream projector`` processes share the partitions evenly; when one is SIGKILLed
the others take its partitions over, and the views stay exactly what a full replay builds."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from engine.connection import as_str
from engine.runtime import Runtime
from engine.settings import Settings
from projections.namespace import Namespace
from tests.chaos.test_projector_faults import _assert_complete_and_identical, _fill
from tests.helpers import eventually
from tests.processes import Role, role_env
from tests.servers import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

PARTITIONS = 6


async def _holders(runtime: Runtime, roles: list[Role]) -> Counter[str]:
    """How many partitions each projector holds a lease on (``free``: how many none holds)."""
    for role in roles:
        if role.proc.poll() is not None and role.proc.returncode != -9:
            raise AssertionError(f"projector exited:\n{role.output()}")
    pipe = runtime.redis.pipeline(transaction=False)
    for p in runtime.store.partitions:
        pipe.get(Namespace(runtime.store.keys, p, 1).lease)
    return Counter(as_str(raw) if raw is not None else "free" for raw in await pipe.execute())


async def test_projector_processes_share_and_take_over_a_killed_ones_partitions(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    client = aioredis.Redis.from_url(real_redis_server.url)
    await client.flushall()
    settings = replace(
        Settings(redis_url=real_redis_server.url), partitions=PARTITIONS, lease_ms=1_500
    )
    runtime = await Runtime.open(settings, client)
    env = role_env(
        real_redis_server.url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_BATCH="3"
    )
    roles: list[Role] = []
    try:
        await _fill(runtime, owners=6)
        for i in range(3):
            roles.append(Role(["projector"], env, tmp_path / f"projector-{i}.log"))
        split = await eventually(
            lambda: _holders(runtime, roles),
            until=lambda held: "free" not in held and sorted(held.values()) == [2, 2, 2],
        )
        await _fill(runtime, owners=3)  # work arriving while they share
        roles[0].kill()  # whichever it is, one of the three dies holding its partitions
        held = await eventually(
            lambda: _holders(runtime, roles),
            until=lambda held: "free" not in held and sorted(held.values()) == [3, 3],
        )
        assert len(set(held) & set(split)) == 2  # the two survivors took the dead one's share
        await _fill(runtime, owners=3)

        await eventually(lambda: _caught_up(runtime))
    finally:
        for role in roles:
            role.terminate()
    try:
        await _assert_complete_and_identical(runtime)
    finally:
        await runtime.close()


async def _caught_up(runtime: Runtime) -> bool:
    """Every checkpoint of the live version at its log's tail."""
    store = runtime.store
    for p in store.partitions:
        raw = await runtime.redis.get(Namespace(store.keys, p, 1).ckpt)
        if await store.log.read_log(p, as_str(raw) if raw is not None else "0-0", 1):
            return False
    return True
