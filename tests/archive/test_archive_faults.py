"""Faults of the archive tier in one process, on both backends: a crash between a segment and its
manifest, two archivers racing for the same partitions, an archive store that fails, a damaged
segment, and readers the trim must wait for (a projector behind, a worker that never acknowledged).

The same faults across real processes (SIGKILL, a moto server stopped, a full disk) are in
test_archive_processes.py."""

from __future__ import annotations

import anyio
import pytest

from engine.archive import catalog, reader
from engine.archive.report import archive_gauges, archive_status, verify
from engine.archive.segments import id_key
from engine.archive.stores import ArchiveStore, open_archive
from engine.errors import ArchiveCorrupt
from engine.runtime import Runtime
from tests.archive.conftest import FaultyArchive, new_archiver
from tests.archive.load import archive_everything, log_ids, owners, settle, transcripts

pytestmark = pytest.mark.anyio


async def _all_pages(runtime: Runtime, archive: ArchiveStore, partition: int) -> list[str]:
    return [e.entry_id async for page in reader.log_pages(runtime.store, archive, partition)
            for e in page]  # fmt: skip


async def test_a_crash_between_segment_and_manifest_leaves_no_gap_and_no_duplicate(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    runtime = arch_runtime
    faulty = FaultyArchive(archive)
    runtime.archive = faulty
    who = await owners(runtime, 2)
    await transcripts(runtime, who, 3)
    await settle(runtime)
    before = {p: await log_ids(runtime, p) for p in runtime.store.partitions}
    busy = [p for p, ids in before.items() if ids]

    faulty.manifests_fail = True  # the segment is written, then the archiver "dies"
    first = new_archiver(runtime)
    await anyio.sleep(0.005)  # let the last entries leave the (zero) hot window
    await first.pass_once()
    orphans = {}
    for p in busy:
        names = await archive.list(f"p{p:04d}/log/")
        assert len(names) == 1, names  # the segment is there ...
        assert await catalog.manifest_names(archive, p) == []  # ... no manifest lists it
        data = await archive.get(names[0])
        assert data is not None
        orphans[names[0]] = data
        assert await log_ids(runtime, p) == before[p]  # nothing trimmed
    statuses = {s.partition: s for s in await archive_status(runtime.store)}
    assert all("injected fault" in statuses[p].error for p in busy)
    await runtime.redis.delete(*[runtime.store.keys.archive_lease(p) for p in busy])  # it died

    faulty.manifests_fail = False
    second = new_archiver(runtime)
    await archive_everything(runtime, second)
    for name, data in orphans.items():
        assert await archive.get(name) == data  # written again, byte-identical
    for p in busy:
        manifest = await catalog.latest_manifest(archive, p)
        assert manifest.segments[0].name in orphans
        assert await _all_pages(runtime, archive, p) == before[p]  # no gap, no duplicate
    assert (await verify(runtime.store, archive)).ok
    assert all(not s.error for s in await archive_status(runtime.store))


async def test_two_archivers_racing_never_fork_the_archive(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    runtime = arch_runtime
    runtime.archive = archive
    who = await owners(runtime, 3)
    one, two = new_archiver(runtime), new_archiver(runtime)
    await one.pass_once()
    # Both believe they hold every partition (a paused archiver whose lease passed on).
    await runtime.redis.delete(*[runtime.store.keys.archive_lease(p) for p in one.held])
    await two.pass_once()
    assert one.held == two.held == list(runtime.store.partitions)
    seen: dict[int, list[str]] = {p: [] for p in runtime.store.partitions}
    for _ in range(4):
        await transcripts(runtime, who, 2)
        await settle(runtime)
        for p in runtime.store.partitions:
            seen[p] = sorted(set(seen[p]) | set(await log_ids(runtime, p)), key=id_key)
        await anyio.sleep(0.005)
        async with anyio.create_task_group() as tg:
            for p in runtime.store.partitions:
                for _ in range(2):
                    tg.start_soon(one.archive_partition, p)
                    tg.start_soon(two.archive_partition, p)
    assert one.stats.lost_races + two.stats.lost_races > 0  # they did race for generations
    for racer in (one, two):
        assert "disagree" not in racer.stats.last_error
        assert "not the archive" not in racer.stats.last_error
        await racer.release_all()
    await archive_everything(runtime, new_archiver(runtime))
    for p in runtime.store.partitions:
        assert await _all_pages(runtime, archive, p) == seen[p]
    found = await verify(runtime.store, archive)
    assert found.ok, found.problems


async def test_a_failing_archive_stops_trimming_and_loses_nothing(
    arch_runtime: Runtime, archive: ArchiveStore
) -> None:
    runtime = arch_runtime
    faulty = FaultyArchive(archive)
    runtime.archive = faulty
    who = await owners(runtime, 2)
    await transcripts(runtime, who, 3)
    await settle(runtime)
    archiver = new_archiver(runtime)
    await archive_everything(runtime, archiver)  # a first part archived and trimmed
    await transcripts(runtime, who, 3)
    await settle(runtime)
    before = {p: await log_ids(runtime, p) for p in runtime.store.partitions}
    ledgers = {o.account_id: await runtime.redis.xlen(runtime.store.keys.ledger(o.account_id))
               for o in who}  # fmt: skip

    faulty.failing = {"put", "get", "list", "delete"}  # S3 down, or the disk full
    await anyio.sleep(0.005)
    for _ in range(3):
        await archiver.pass_once()
    for p in runtime.store.partitions:
        assert await log_ids(runtime, p) == before[p]  # not one entry trimmed
    for owner in who:
        assert (
            await runtime.redis.xlen(runtime.store.keys.ledger(owner.account_id))
            == ledgers[owner.account_id]
        )
    statuses = await archive_status(runtime.store)
    errors = [s.error for s in statuses if before[s.partition]]
    assert errors
    assert all("injected fault" in e for e in errors)
    gauges = archive_gauges(statuses, configured=True)  # what /metrics shows
    assert {p for p, v in gauges["clipstream_archive_error"].items() if v} == {
        p for p, ids in before.items() if ids
    }
    assert sum(gauges["clipstream_archive_lag_entries"].values()) > 0
    assert archiver.stats.errors > 0

    faulty.failing = set()
    await archive_everything(runtime, archiver)
    assert all(not s.error for s in await archive_status(runtime.store))
    for p in runtime.store.partitions:
        assert await log_ids(runtime, p) == []
    assert (await verify(runtime.store, archive)).ok


async def test_verify_finds_a_damaged_or_missing_segment(
    arch_runtime: Runtime, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    runtime = arch_runtime
    archive = open_archive(f"file://{tmp_path / 'archive'}")
    runtime.archive = archive
    who = await owners(runtime, 3)
    archiver = new_archiver(runtime)
    for _ in range(2):  # two rounds: at least two segments, wherever the owners' partitions are
        await transcripts(runtime, who, 2)
        await settle(runtime)
        await archive_everything(runtime, archiver)
    assert (await verify(runtime.store, archive)).ok
    segments = sorted((tmp_path / "archive").glob("p*/log/*.jsonl.zst"))
    assert len(segments) >= 2
    damaged = bytearray(segments[0].read_bytes())
    damaged[-6] ^= 0x01
    segments[0].write_bytes(bytes(damaged))
    segments[1].unlink()
    found = await verify(runtime.store, archive)
    assert not found.ok
    assert any(segments[0].name in p and "sha256" in p for p in found.problems)
    assert any(segments[1].name in p and "missing" in p for p in found.problems)
    partition = int(segments[0].parent.parent.name[1:])
    with pytest.raises(ArchiveCorrupt):
        await _all_pages(runtime, archive, partition)


async def test_entries_a_consumer_group_never_acknowledged_are_not_trimmed(
    arch_runtime: Runtime,
) -> None:
    runtime = arch_runtime
    store = runtime.store
    who = await owners(runtime, 2)
    await transcripts(runtime, who, 2)
    await settle(runtime)
    await transcripts(runtime, who, 2)
    # A consumer group of someone's own on the logs (workers keep none there), whose reader died
    # between its read and its ack: what it read stays pending, while the projector folds
    # everything.
    delivered: dict[int, list[str]] = {}
    for p in store.partitions:
        log = store.keys.log(p)
        await runtime.redis.xgroup_create(log, "audit", id="0")
        rows = await runtime.redis.xreadgroup("audit", "dead-reader", {log: ">"}, count=1000)
        ids = [entry_id.decode() for _, entries in rows for entry_id, _ in entries]
        if ids:
            delivered[p] = ids
    assert delivered
    from projections.projector import Projector

    await Projector(runtime).run_until_idle()
    await archive_everything(runtime, new_archiver(runtime))
    for p, ids in delivered.items():
        pending = await runtime.redis.xpending(store.keys.log(p), "audit")
        assert pending["min"].decode() == ids[0]
        hot = await log_ids(runtime, p)
        assert hot  # archived, folded, out of the hot window: only the pending entry holds it
        assert hot[0] == ids[0]
        assert ids == hot[: len(ids)]
