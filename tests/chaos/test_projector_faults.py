"""A projector that dies between any two reads or writes, or pauses past its lease, leaves views
that a fresh projector completes to exactly what a full replay builds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis

from engine.log.ids import new_id
from engine.runtime import Runtime
from engine.settings import Settings
from projections import replay
from projections.namespace import Namespace, checkpoints
from projections.projector import BatchWrite, Projector
from projections.views import ExecutionView
from tests.golden import scenarios
from tests.helpers import eventually
from tests.integration.test_projector import make
from tests.processes import Role, role_env
from tests.servers import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Tiny batches (many commits to die between) and a short lease (quick takeover)."""
    return replace(settings, batch=3, lease_ms=300)


async def _fill(runtime: Runtime, owners: int = 3) -> int:
    total = 0
    for _ in range(owners):
        owner = new_id("acc")
        for scenario in scenarios.SCENARIOS.values():
            total += len((await make(runtime.store, owner, scenario)).events)
    return total


async def _assert_complete_and_identical(runtime: Runtime) -> None:
    """Every checkpoint at its log's tail, and the live views equal a fresh replay."""
    store = runtime.store
    for p, after in (await checkpoints(runtime.redis, store.keys, store.partitions)).items():
        assert await store.log.read_log(p, after, 1) == []
    report = await replay.rebuild(runtime)
    parity = await replay.compare(runtime, 1, report.version)
    assert parity.identical, parity.describe()
    assert parity.count_a == report.executions


class CrashingProjector(Projector):
    """Dies (its task is cancelled, nothing cleaned up) around its ``n``-th batch write; its
    other lanes (``CLIPSTREAM_PROJECTOR_LANES``) die wherever they are, a write of theirs
    possibly in flight too."""

    def __init__(self, runtime: Runtime, scope: anyio.CancelScope, n: int, after: bool) -> None:
        super().__init__(runtime)
        self.scope, self.n, self.after, self.writes = scope, n, after, 0
        self.died = False

    async def _write(self, ns: Namespace, write: BatchWrite) -> None:
        self.writes += 1
        this = self.writes  # another lane's write may start while this one is in flight
        if this == self.n and not self.after:
            await self._die()
        await super()._write(ns, write)
        if this == self.n and self.after:
            await self._die()

    async def _die(self) -> None:
        self.died = True
        self.scope.cancel()
        await anyio.lowlevel.checkpoint()  # the cancellation lands here, as a kill would

    async def _release_all(self) -> None:
        """A dead process gives nothing back: its leases must expire."""


@pytest.mark.parametrize("after", [False, True], ids=["before-commit", "after-commit"])
@pytest.mark.parametrize("n", [1, 4, 9])
async def test_killed_projector_then_a_fresh_one_equals_replay(
    runtime: Runtime, n: int, after: bool
) -> None:
    await _fill(runtime)
    with anyio.CancelScope() as scope:
        crashing = CrashingProjector(runtime, scope, n, after)
        await crashing.run()
    assert crashing.died  # it really died at its n-th write (its other lane maybe past it)
    assert crashing.writes >= n
    await Projector(runtime).run_until_idle()
    await _assert_complete_and_identical(runtime)


async def test_a_paused_projector_that_lost_its_lease_discards_its_batch(
    runtime: Runtime,
) -> None:
    await _fill(runtime, owners=2)
    busy = [p for p in runtime.store.partitions if await runtime.store.log.log_length(p)]
    paused = Projector(runtime, partitions=busy[:1])
    other = Projector(runtime)
    loads = 0
    real_load = paused._load

    async def load_then_pause(ns: Namespace, ids: Sequence[str]) -> dict[str, ExecutionView]:
        nonlocal loads
        loads += 1
        views = await real_load(ns, ids)
        if loads == 1:
            # Paused past its lease: the lease expires, another projector does all the work.
            await runtime.redis.delete(ns.lease)
            await other.run_until_idle()
        return views

    paused._load = load_then_pause  # type: ignore[method-assign,assignment]
    await paused.run_until_idle()
    assert paused.stats.conflicts == 1
    await _assert_complete_and_identical(runtime)


@pytest.mark.redis
@pytest.mark.slow
async def test_sigkilled_projector_process_then_a_fresh_one_equals_replay(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    client = aioredis.Redis.from_url(real_redis_server.url)
    await client.flushall()
    settings = replace(Settings(redis_url=real_redis_server.url), partitions=4, lease_ms=1_500)
    runtime = await Runtime.open(settings, client)
    try:
        await _fill(runtime, owners=12)
        env = role_env(real_redis_server.url, CLIPSTREAM_BATCH="2")
        role = Role(["projector"], env, tmp_path / "projector.log")
        try:

            async def some_checkpoint() -> int:
                found = 0
                for p in runtime.store.partitions:
                    found += int(await client.exists(Namespace(runtime.store.keys, p, 1).ckpt))
                if role.proc.poll() is not None:
                    raise AssertionError(f"projector exited:\n{role.output()}")
                return found

            await eventually(some_checkpoint)
            role.kill()
        finally:
            role.terminate()
        await Projector(runtime).run_until_idle()
        await _assert_complete_and_identical(runtime)
    finally:
        await runtime.close()
