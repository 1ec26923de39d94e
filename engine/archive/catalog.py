"""Reading what a partition's archive holds: its latest manifest, its segments (those of its
volumes too), each checked against the sha256 the manifest records."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import anyio.to_thread

from engine.archive import manifest as mf
from engine.archive.segments import (
    LedgerSegmentInfo,
    SegmentInfo,
    decompress,
    id_key,
    ledger_rows,
    log_rows,
    sha256,
)
from engine.archive.stores import ArchiveStore
from engine.errors import ArchiveCorrupt


async def manifest_names(archive: ArchiveStore, partition: int) -> list[tuple[int, str]]:
    """Every manifest generation of ``partition`` with its object name, oldest first."""
    found = []
    for name in await archive.list(mf.manifest_dir(partition)):
        generation = mf.generation_of(name)
        if generation is not None:
            found.append((generation, name))
    return sorted(found)


async def latest_manifest(archive: ArchiveStore, partition: int) -> mf.Manifest:
    """The highest generation of ``partition``'s manifest (an empty one when none was written)."""
    names = await manifest_names(archive, partition)
    if not names:
        return mf.Manifest(partition=partition)
    generation, name = names[-1]
    data = await archive.get(name)
    if data is None:  # pruned between the listing and the read: list again
        return await latest_manifest(archive, partition)
    try:
        manifest = mf.decode(data)
    except Exception as exc:
        raise ArchiveCorrupt(f"{name} is not a readable manifest: {exc}") from exc
    if manifest.partition != partition or manifest.generation != generation:
        raise ArchiveCorrupt(f"{name} names partition {manifest.partition} generation "
                             f"{manifest.generation}")  # fmt: skip
    return manifest


async def segment_bytes(
    archive: ArchiveStore, info: SegmentInfo | LedgerSegmentInfo, *, in_thread: bool = False
) -> bytes:
    """A segment's lines, decompressed; ArchiveCorrupt when it is missing or its bytes do not
    match the manifest's sha256. ``in_thread``: checked and decompressed in a worker thread (both
    release the GIL), so the caller's loop goes on meanwhile."""
    data = await archive.get(info.name)
    if data is None:
        raise ArchiveCorrupt(f"{info.name} is listed in the manifest but missing")
    try:
        if in_thread:
            return await anyio.to_thread.run_sync(decompress, data, info.sha256)
        return decompress(data, info.sha256)
    except ArchiveCorrupt as exc:
        raise ArchiveCorrupt(f"{info.name}: {exc}") from exc


async def log_segment(
    archive: ArchiveStore, info: SegmentInfo
) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """The (entry id, fields) rows of a log segment."""
    return log_rows(await segment_bytes(archive, info))


async def ledger_segment(
    archive: ArchiveStore, info: LedgerSegmentInfo
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The (account, entry id, fields) rows of a ledger segment."""
    return ledger_rows(await segment_bytes(archive, info))


async def _volume(archive: ArchiveStore, info: mf.VolumeInfo) -> bytes:
    data = await archive.get(info.name)
    if data is None:
        raise ArchiveCorrupt(f"{info.name} is listed in the manifest but missing")
    if sha256(data) != info.sha256:
        raise ArchiveCorrupt(f"{info.name}: volume checksum mismatch (sha256)")
    return data


async def log_segments(
    archive: ArchiveStore, manifest: mf.Manifest, after: str = "0-0"
) -> AsyncGenerator[SegmentInfo, None]:
    """The manifest's log segments in order, those of its volumes first, skipping what ends at or
    before ``after`` (a volume that does is not even read)."""
    low = id_key(after)
    for volume in manifest.volumes:
        if id_key(volume.last) > low:
            for info in mf.decode_log_volume(await _volume(archive, volume)):
                if id_key(info.last) > low:
                    yield info
    for info in manifest.segments:
        if id_key(info.last) > low:
            yield info


async def ledger_segments(
    archive: ArchiveStore, manifest: mf.Manifest
) -> AsyncIterator[LedgerSegmentInfo]:
    """The manifest's ledger segments in order, those of its volumes first."""
    for volume in manifest.ledger_volumes:
        for info in mf.decode_ledger_volume(await _volume(archive, volume)):
            yield info
    for info in manifest.ledger_segments:
        yield info
