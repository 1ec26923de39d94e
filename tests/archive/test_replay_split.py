"""Replay written with big pipelined commands, and split across processes, reading the archive
and then the hot tail: the rebuilt namespace equals the live projector's, key for key (views,
every index, transcript pointers, checkpoint)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.connection import as_str
from engine.runtime import Runtime
from engine.settings import Settings
from projections import replay
from projections.namespace import Namespace
from tests.archive.conftest import new_archiver
from tests.archive.load import archive_everything, log_ids, owners, settle, transcripts
from tests.golden import scenarios
from tests.integration.test_projector import make
from tests.servers import RedisServer

pytestmark = pytest.mark.anyio

# Keys a rebuild does not write: who holds the live namespace, and the view retention's marks.
_NOT_REBUILT = (":lease", ":packed", ":unpacked")


async def namespace_dump(runtime: Runtime, version: int) -> dict[str, object]:
    """Every key of projection ``version`` (its name without the version) and its content."""
    redis = runtime.redis
    out: dict[str, object] = {}
    for p in runtime.store.partitions:
        ns = Namespace(runtime.store.keys, p, version)
        async for raw in redis.scan_iter(match=ns.pattern, count=1000):
            key = as_str(raw)
            if key.endswith(_NOT_REBUILT):
                continue
            name = f"{p}:{key.removeprefix(ns.base)}"
            kind = as_str(await redis.type(key))
            if kind == "zset":
                out[name] = await redis.zrange(key, 0, -1, withscores=True)
            else:
                out[name] = await redis.get(key)
    # A rebuild marks an empty partition's namespace built ("0-0"); live it has no checkpoint yet.
    return {k: v for k, v in out.items() if not (k.endswith(":ckpt") and v == b"0-0")}


async def _assert_rebuilt_equals_live(runtime: Runtime, report: replay.RebuildReport) -> None:
    parity = await replay.compare(runtime, report.previous_version, report.version)
    assert parity.identical, parity.describe()
    live = await namespace_dump(runtime, report.previous_version)
    rebuilt = await namespace_dump(runtime, report.version)
    assert rebuilt.keys() == live.keys()
    assert rebuilt == live


async def test_a_rebuild_writes_every_index_as_the_projector_does(runtime: Runtime) -> None:
    """Every golden scenario (reporters, schedule runs, transcripts, failures, cancels) for
    several owners, folded live, then rebuilt: the same keys with the same contents."""
    from engine.log.ids import new_id

    for _ in range(3):
        owner = new_id("acc")
        for scenario in scenarios.SCENARIOS.values():
            await make(runtime.store, owner, scenario)
    from projections.projector import Projector

    await Projector(runtime).run_until_idle()
    report = await replay.rebuild(runtime)
    assert report.executions == 3 * len(scenarios.SCENARIOS)
    await _assert_rebuilt_equals_live(runtime, report)


@pytest.fixture
async def split_runtime(
    real_redis_server: RedisServer, settings: Settings, tmp_path: Path
) -> AsyncIterator[Runtime]:
    """A runtime on the private real Redis (child processes reach it by its URL) with its archive
    in a directory (they read it too), and a hot window of zero."""
    client = aioredis.Redis.from_url(real_redis_server.url)
    await client.flushall()
    shared = replace(
        settings,
        redis_url=real_redis_server.url,
        archive_url=f"file://{tmp_path / 'archive'}",
        hot_seconds=0,
    )
    runtime = await Runtime.open(shared, client)
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.mark.redis
@pytest.mark.slow
async def test_replay_in_two_processes_from_the_archive_and_the_tail_equals_the_live_views(
    split_runtime: Runtime,
) -> None:
    runtime = split_runtime
    who = await owners(runtime, 6)
    await transcripts(runtime, who, 3)
    await settle(runtime)
    await archive_everything(runtime, new_archiver(runtime))
    await transcripts(runtime, who, 2)  # a hot tail beside the archive
    await settle(runtime)
    assert any([await log_ids(runtime, p) for p in runtime.store.partitions])
    progress: list[tuple[int, int]] = []
    report = await replay.rebuild(
        runtime, processes=2, progress=lambda d, t: progress.append((d, t))
    )
    assert report.executions == 30
    assert report.events > report.executions
    assert progress[-1][0] >= report.events  # the children's progress reached the parent
    await _assert_rebuilt_equals_live(runtime, report)


@pytest.mark.redis
@pytest.mark.slow
async def test_a_failing_replay_process_fails_the_rebuild_and_switches_nothing(
    split_runtime: Runtime,
) -> None:
    from engine.errors import StoreError

    who = await owners(split_runtime, 4)
    await transcripts(split_runtime, who, 1)
    await settle(split_runtime)
    broken = replace(split_runtime.settings, redis_url="redis://127.0.0.1:1/0")
    runtime = Runtime(
        broken,
        split_runtime.redis,
        split_runtime.store,
        split_runtime.secrets,
        split_runtime.archive,
    )
    with pytest.raises(StoreError, match="replay process"):
        await replay.rebuild(runtime, processes=2)
    for p in runtime.store.partitions:  # no checkpoint: the half-built version is incomplete
        assert not await runtime.redis.exists(Namespace(runtime.store.keys, p, 2).ckpt)


async def test_the_cycle_collector_is_paused_while_folding_and_back_after(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild folds with Python's cycle collector off (it would walk every view held, again
    and again) and turns it back on after, when the rebuild fails too."""
    import gc

    from engine.log.ids import new_id
    from projections.batch import fold_events as fold
    from projections.projector import Projector

    await make(runtime.store, new_id("acc"), scenarios.SCENARIOS["transcript_done"])
    await Projector(runtime).run_until_idle()
    seen: list[bool] = []

    def spy(views: Any, events: Any) -> Any:
        seen.append(gc.isenabled())
        return fold(views, events)

    monkeypatch.setattr("projections.rebuild.fold_events", spy)
    assert gc.isenabled()
    report = await replay.rebuild(runtime)
    assert seen
    assert not any(seen)
    assert gc.isenabled()
    await _assert_rebuilt_equals_live(runtime, report)

    def broken(views: Any, events: Any) -> Any:
        raise RuntimeError("fold failed")

    monkeypatch.setattr("projections.rebuild.fold_events", broken)
    with pytest.raises(RuntimeError, match="fold failed"):
        await replay.rebuild(runtime)
    assert gc.isenabled()
