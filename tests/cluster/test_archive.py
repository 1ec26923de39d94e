"""The archive tier on a 3-master Redis Cluster: every partition's archiving, trimming, ledger
trim and charge forgetting runs in its own slot, and the readers (replay pages, ledger, audit,
an expired execution's history, replay parity) read across the two tiers there too."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.archive import reader
from engine.archive.report import archive_status, verify
from engine.connection import RedisClient
from engine.money.audit import audit_account
from engine.runtime import Runtime
from engine.settings import Settings
from projections import replay
from tests.archive.conftest import new_archiver
from tests.archive.load import (
    archive_everything,
    histories_in_log,
    log_ids,
    owners_in_every_partition,
    settle,
    transcripts,
)

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def test_archive_trim_and_read_back_on_a_cluster(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await Runtime.open(replace(settings, archive_url="memory://", hot_seconds=0), redis)
    assert runtime.archive is not None
    archive = runtime.archive
    nodes = {n.name for n in redis.get_primaries()}
    who = await owners_in_every_partition(runtime, 2)
    assert len({redis.get_node_from_key(runtime.store.keys.tag(runtime.store.keys.partition(
        o.account_id))).name for o in who}) > 1  # fmt: skip
    ids = await transcripts(runtime, who, 2)
    await settle(runtime)
    before = {p: await log_ids(runtime, p) for p in runtime.store.partitions}
    histories = await histories_in_log(runtime, ids)
    await archive_everything(runtime, new_archiver(runtime))
    for p in runtime.store.partitions:
        assert await log_ids(runtime, p) == []
        pages = [e.entry_id async for page in reader.log_pages(runtime.store, archive, p)
                 for e in page]  # fmt: skip
        assert pages == before[p]
    for xid in ids:
        assert await reader.execution_history(runtime.store, archive, xid) == histories[xid]
    for owner in who:
        assert await runtime.redis.xlen(runtime.store.keys.ledger(owner.account_id)) == 0
        report = await audit_account(runtime, owner.account_id)
        assert report.ok, report.problems
    assert (await verify(runtime.store, archive)).ok
    assert all(not s.error for s in await archive_status(runtime.store))
    rebuilt = await replay.rebuild(runtime)
    parity = await replay.compare(runtime, rebuilt.previous_version, rebuilt.version)
    assert parity.identical, parity.describe()
    assert len(nodes) == 3
