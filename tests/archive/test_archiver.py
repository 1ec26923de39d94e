"""The archiver on both backends and every kind of archive store: segments in order, the log
trimmed below its floor, the hot tier forgetting what the archive holds, and every reader (replay
pages, ledger, history) seeing the whole truth across the two tiers."""

from __future__ import annotations

from typing import Any

import pytest

from engine.archive import catalog, reader
from engine.archive.copy import Cut
from engine.archive.report import verify
from engine.archive.segments import decompress, id_key, log_rows
from engine.archive.stores import ArchiveStore
from engine.money.audit import audit_account
from engine.runtime import Runtime
from projections.namespace import Namespace, current_version
from tests.archive.conftest import new_archiver
from tests.archive.load import (
    archive_everything,
    histories_in_log,
    log_ids,
    owners,
    settle,
    transcripts,
)

pytestmark = pytest.mark.anyio


async def test_archives_every_entry_once_then_trims(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    runtime = arch_runtime
    runtime.archive = archive
    who = await owners(runtime, 3)
    await transcripts(runtime, who, 4)
    await settle(runtime)
    before = {p: await log_ids(runtime, p) for p in runtime.store.partitions}
    archiver = new_archiver(runtime)
    await archive_everything(runtime, archiver)

    for p in runtime.store.partitions:
        manifest = await catalog.latest_manifest(archive, p)
        archived = []
        for info in manifest.segments:
            data = await archive.get(info.name)
            assert data is not None
            archived += [entry_id for entry_id, _ in log_rows(decompress(data, info.sha256))]
        assert archived == before[p]  # every entry, in order, once
        assert manifest.entries == len(before[p])
        # Archived, folded and out of the hot window: trimmed from Redis.
        assert await log_ids(runtime, p) == []
        # Readers still see the whole log.
        pages = [e.entry_id async for page in reader.log_pages(runtime.store, archive, p)
                 for e in page]  # fmt: skip
        assert pages == before[p]
    assert (await verify(runtime.store, archive)).ok


async def test_ledger_audit_and_history_read_the_archive(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    runtime = arch_runtime
    runtime.archive = archive
    who = await owners(runtime, 2)
    ids = await transcripts(runtime, who, 3)
    await settle(runtime)
    ledgers = {o.account_id: await reader.ledger_rows(runtime.store, archive, o.account_id)
               for o in who}  # fmt: skip
    histories = await histories_in_log(runtime, ids)
    await archive_everything(runtime, new_archiver(runtime))
    keys = runtime.store.keys
    for owner in who:
        # The hot ledger is gone; the audit reads it from the archive and it still adds up.
        assert await runtime.redis.xlen(keys.ledger(owner.account_id)) == 0
        assert await reader.ledger_rows(runtime.store, archive, owner.account_id) == \
            ledgers[owner.account_id]  # fmt: skip
        report = await audit_account(runtime, owner.account_id)
        assert report.ok, report.problems
        assert report.entries == len(ledgers[owner.account_id])
    for xid in ids:
        # Its stream expired one hot window (here 0 s) after its end: folded from the archive.
        assert not await runtime.redis.exists(keys.execution(xid))
        assert await reader.execution_history(runtime.store, archive, xid) == histories[xid]
    # The applied charges of ended executions are forgotten; the opening credits stay.
    for p in runtime.store.partitions:
        remaining = [k.decode() for k in await runtime.redis.hkeys(keys.charges(p))]
        assert all(k.startswith("credit:") for k in remaining), remaining


async def test_ledger_pages_run_on_into_the_archive(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    runtime = arch_runtime
    runtime.archive = archive
    (owner,) = await owners(runtime, 1)
    await transcripts(runtime, [owner], 3)
    await settle(runtime)
    await archive_everything(runtime, new_archiver(runtime))
    await transcripts(runtime, [owner], 2)  # newer entries, still hot
    await settle(runtime)
    everything = await reader.ledger_rows(runtime.store, archive, owner.account_id)
    assert await runtime.redis.xlen(runtime.store.keys.ledger(owner.account_id)) > 0
    paged: list[str] = []
    cursor = None
    while True:
        page = await reader.ledger_page(runtime.store, archive, owner.account_id, 3, cursor)
        paged += [entry_id for entry_id, _ in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert paged == [entry_id for entry_id, _ in reversed(everything)]
    assert sorted(paged, key=id_key, reverse=True) == paged


async def test_a_log_is_never_trimmed_past_the_projector(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    runtime = arch_runtime
    runtime.archive = archive
    who = await owners(runtime, 2)
    await transcripts(runtime, who, 2)
    await settle(runtime)
    await transcripts(runtime, who, 2)
    from engine.run.worker import Worker

    await Worker(runtime).run_until_idle()  # appended, not folded: the projector is behind
    keys = runtime.store.keys
    version = await current_version(runtime.redis, keys)
    checkpoints = {
        p: (await runtime.redis.get(Namespace(keys, p, version).ckpt) or b"0-0").decode()
        for p in runtime.store.partitions
    }
    unfolded = {
        p: [i for i in await log_ids(runtime, p) if id_key(i) > id_key(checkpoints[p])]
        for p in runtime.store.partitions
    }
    await archive_everything(runtime, new_archiver(runtime))
    for p in runtime.store.partitions:
        hot = await log_ids(runtime, p)
        assert hot == unfolded[p]  # archived, yet kept for the projector that has not taken them
    await settle(runtime)


async def test_replay_from_the_archive_and_the_tail_equals_the_live_views(
    arch_runtime: Runtime,
) -> None:
    from projections import replay

    runtime = arch_runtime
    who = await owners(runtime, 3)
    await transcripts(runtime, who, 3)
    await settle(runtime)
    await archive_everything(runtime, new_archiver(runtime))
    await transcripts(runtime, who, 2)  # a hot tail beside the archive
    await settle(runtime)
    assert any([await log_ids(runtime, p) for p in runtime.store.partitions])
    report = await replay.rebuild(runtime)
    assert report.events > 0
    parity = await replay.compare(runtime, report.previous_version, report.version)
    assert parity.identical, parity.describe()
    assert parity.count_a == 15


async def test_feeds_keep_the_hot_window(arch_runtime: Runtime) -> None:
    runtime = arch_runtime
    who = await owners(runtime, 2)
    await transcripts(runtime, who, 2)
    await settle(runtime)
    keys = runtime.store.keys
    feeds = [keys.feed(keys.partition(o.account_id), o.account_id) for o in who]
    assert all([await runtime.redis.xlen(f) for f in feeds])
    await archive_everything(runtime, new_archiver(runtime))
    assert [await runtime.redis.xlen(f) for f in feeds] == [0, 0]  # hot window 0: all older


async def _past_view_retention(
    redis: object, archived_settings: object
) -> tuple[Runtime, list[Any], list[str]]:
    """Two owners' four finished transcripts, archived, finished longer ago than a view
    retention of 1 s."""
    from dataclasses import replace

    import anyio

    from engine.settings import Settings

    assert isinstance(archived_settings, Settings)
    runtime = await Runtime.open(replace(archived_settings, view_retention_seconds=1), redis)
    who = await owners(runtime, 2)
    ids = await transcripts(runtime, who, 2)
    await settle(runtime)
    await archive_everything(runtime, new_archiver(runtime))
    await anyio.sleep(1.1)  # a precondition (their age), not the verdict
    return runtime, who, ids


async def test_evicted_views_are_folded_from_the_archive_on_demand(
    redis: object, archived_settings: object
) -> None:
    from projections.queries import Queries
    from projections.retention import ViewRetention

    runtime, who, ids = await _past_view_retention(redis, archived_settings)
    queries = Queries(runtime)
    live = {x: await queries.get_view(who[i % 2].account_id, x) for i, x in enumerate(ids)}
    retention = ViewRetention(runtime)
    assert await retention.sweep() == len(ids)
    keys = runtime.store.keys
    version = await current_version(runtime.redis, keys)
    for i, xid in enumerate(ids):
        owner = who[i % 2].account_id
        ns = Namespace(keys, keys.partition(owner), version)
        assert not await runtime.redis.exists(ns.view(xid), keys.execution(xid))
        assert await queries.get_view(owner, xid) == live[xid]  # folded from the archive
        assert await queries.get_view(who[(i + 1) % 2].account_id, xid) is None  # not theirs
    page = await queries.list_executions(who[0].account_id, active=False, limit=10, cursor=None)
    assert page.views == []  # evicted from the lists too


async def test_a_view_written_again_after_the_sweep_read_it_is_not_evicted(
    redis: object, archived_settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The projector rewrites a retried execution's view (running again) between the sweep's
    read and its eviction: the eviction leaves that view and its index entries alone (the
    projector writes a running view's indexes only when they change, so none would come back)."""
    from projections.retention import ViewRetention

    runtime, who, ids = await _past_view_retention(redis, archived_settings)
    keys = runtime.store.keys
    version = await current_version(runtime.redis, keys)
    owner = who[0].account_id
    ns = Namespace(keys, keys.partition(owner), version)
    rewritten = ids[0]
    retention = ViewRetention(runtime)
    read = retention._finished_before

    async def then_rewritten(*args: Any) -> Any:
        found = await read(*args)
        if await runtime.redis.exists(ns.view(rewritten)):
            await runtime.redis.append(ns.view(rewritten), b" ")  # another write, same JSON
        return found

    monkeypatch.setattr(retention, "_finished_before", then_rewritten)
    assert await retention.sweep() == len(ids) - 1
    assert await runtime.redis.exists(ns.view(rewritten))
    assert await runtime.redis.zscore(ns.all, rewritten) is not None
    assert await runtime.redis.zscore(ns.owned(owner), rewritten) is not None


async def test_finished_views_are_packed_at_rest_and_read_the_same(arch_runtime: Runtime) -> None:
    from projections.queries import Queries
    from projections.retention import ViewRetention
    from projections.views import is_packed

    runtime = arch_runtime
    who = await owners(runtime, 2)
    ids = await transcripts(runtime, who, 3)
    await settle(runtime)
    queries = Queries(runtime)
    owner_of = {x: who[i % 2].account_id for i, x in enumerate(ids)}
    live = {x: await queries.get_view(owner_of[x], x) for x in ids}
    keys = runtime.store.keys
    version = await current_version(runtime.redis, keys)

    def view_key(xid: str) -> str:
        return Namespace(keys, keys.partition(owner_of[xid]), version).view(xid)

    sizes = {x: len(await runtime.redis.get(view_key(x))) for x in ids}
    sweep = ViewRetention(runtime)
    await sweep.sweep()  # hot window 0: every finished view is past it
    assert sweep.packed == len(ids)
    for xid in ids:
        raw = await runtime.redis.get(view_key(xid))
        assert is_packed(raw)
        assert len(raw) < sizes[xid] * 0.6
        assert await queries.get_view(owner_of[xid], xid) == live[xid]
    page = await queries.list_executions(who[0].account_id, active=False, limit=10, cursor=None)
    assert {v.execution_id for v in page.views} == {
        x for x in ids if owner_of[x] == who[0].account_id
    }
    await sweep.sweep()
    assert sweep.packed == len(ids)  # the watermark: nothing packed twice
    # A running execution is packed once it has finished.
    more = await transcripts(runtime, who[:1], 1)
    from projections.projector import Projector

    await Projector(runtime).run_until_idle()  # requested, not run yet
    await sweep.sweep()
    assert not is_packed(await runtime.redis.get(view_key_for(runtime, who[0].account_id, more[0])))
    await settle(runtime)
    await sweep.sweep()
    assert sweep.packed == len(ids) + 1


def view_key_for(runtime: Runtime, owner: str, xid: str) -> str:
    keys = runtime.store.keys
    return Namespace(keys, keys.partition(owner), 1).view(xid)


async def test_old_segments_are_frozen_into_volumes(
    arch_runtime: Runtime, archive: ArchiveStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.archive import manifest as mf

    monkeypatch.setattr(mf, "MAX_SEGMENTS", 3)
    monkeypatch.setattr(mf, "VOLUME_SEGMENTS", 2)
    runtime = arch_runtime
    runtime.archive = archive
    (owner,) = await owners(runtime, 1)
    partition = runtime.store.keys.partition(owner.account_id)
    archiver = new_archiver(runtime)
    seen: list[str] = []
    for _ in range(8):  # a segment (and a ledger segment) per round
        await transcripts(runtime, [owner], 1)
        await settle(runtime)
        seen += await log_ids(runtime, partition)
        await archive_everything(runtime, archiver)
    manifest = await catalog.latest_manifest(archive, partition)
    assert manifest.volumes  # the manifest lists at most 3 segments, the rest in volumes
    assert len(manifest.segments) <= 3
    assert manifest.ledger_volumes
    pages = [e.entry_id async for page in reader.log_pages(runtime.store, archive, partition)
             for e in page]  # fmt: skip
    assert pages == seen
    audit = await audit_account(runtime, owner.account_id)
    assert audit.ok, audit.problems
    assert audit.entries == len(await reader.ledger_rows(runtime.store, archive, owner.account_id))
    found = await verify(runtime.store, archive)
    assert found.ok, found.problems
    assert not found.warnings
    assert found.segments >= 16


async def test_replay_pages_hold_the_same_events_as_the_entry_reader_from_any_position(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    """reader.event_pages (segments decoded at once, the next fetched ahead) and log_pages (entry
    by entry) agree from every position: in a segment, at its end, in the hot tail; an entry of
    another shape among them too."""
    import asyncio

    runtime = arch_runtime
    runtime.archive = archive
    who = await owners(runtime, 3)
    await transcripts(runtime, who, 3)
    await settle(runtime)
    p = runtime.store.keys.partition(who[0].account_id)
    await runtime.redis.xadd(runtime.store.keys.log(p), {"e": b"not json", "o": b"x"})
    cut = Cut(min_entries=1, max_entries=5, max_wait_ms=0)  # several segments per partition
    await archive_everything(runtime, new_archiver(runtime, cut=cut))
    await transcripts(runtime, who, 1)  # a hot tail beside the archive
    await settle(runtime)

    entries = [e async for page in reader.log_pages(runtime.store, archive, p) for e in page]
    ids = [e.entry_id for e in entries]
    assert len((await catalog.latest_manifest(archive, p)).segments) > 2
    assert await log_ids(runtime, p)  # some still hot
    for k in range(len(ids) + 1):
        after = ids[k - 1] if k else "0-0"
        pages = [page async for page in reader.event_pages(runtime.store, archive, p, after, 2)]
        assert [e for page in pages for e in page.events] == [e.event for e in entries[k:]]
        ends = [k + sum(len(q.events) for q in pages[: n + 1]) - 1 for n in range(len(pages))]
        assert [page.last_id for page in pages] == [ids[n] for n in ends]  # each page's last
        assert all(0 < len(page.events) <= 2 for page in pages)
    assert None in [e.event for e in entries]  # the odd entry is there, undecodable

    # A reader that stops early leaves no segment fetch running.
    before = asyncio.all_tasks()
    pages_ = reader.event_pages(runtime.store, archive, p, "0-0", 1)
    await anext(pages_)
    await pages_.aclose()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
