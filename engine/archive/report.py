"""What ``clipstream archive status | verify | export`` show (no printing here: api.cli.archive
draws it), and the archive's figures for metrics (:func:`archive_status`)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import orjson
from redis.exceptions import RedisError, ResponseError

from engine.archive import catalog
from engine.archive.manifest import Manifest
from engine.archive.reader import log_pages
from engine.archive.segments import (
    LedgerSegmentInfo,
    SegmentInfo,
    decompress,
    id_key,
    ledger_rows,
    log_rows,
    partition_dir,
    sha256,
)
from engine.archive.stores import ArchiveStore
from engine.connection import as_str
from engine.errors import ArchiveCorrupt, ArchiveError, StoreUnavailable
from engine.log.store import EventStore

# -- status --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition's archive as Redis mirrors it, with the hot log beside it."""

    partition: int
    position: str  # last entry archived ("0-0": none)
    archived_entries: int
    archived_bytes: int
    segments: int
    ledger_through: int
    log_length: int  # entries in Redis now
    lag_entries: int  # entries added to the log and not archived yet
    lag_ms: int  # how far the archive's position is behind the log's last entry
    trimmed_below: str
    held_by: str  # what sets the trim floor (archive, hot window, a projection, a group)
    error: str
    archiver: str


async def archive_status(store: EventStore) -> list[PartitionStatus]:
    """Every partition's archive position, lag, sizes, trim floor and last error."""
    out = []
    try:
        for p in store.partitions:
            mirror = {
                as_str(k): as_str(v)
                for k, v in (await store.redis.hgetall(store.keys.archive(p))).items()
            }
            try:
                info = await store.redis.xinfo_stream(store.keys.log(p))
            except ResponseError:  # no log yet
                info = {}
            position = mirror.get("position", "0-0")
            archived = int(mirror.get("entries", 0))
            last = info.get("last-entry")
            last_id = as_str(last[0]) if last else position
            out.append(
                PartitionStatus(
                    partition=p,
                    position=position,
                    archived_entries=archived,
                    archived_bytes=int(mirror.get("bytes", 0)),
                    segments=int(mirror.get("segments", 0)),
                    ledger_through=int(mirror.get("ledger_through", 0)),
                    log_length=int(info.get("length", 0)),
                    lag_entries=max(0, int(info.get("entries-added", 0)) - archived),
                    lag_ms=max(0, id_key(last_id)[0] - id_key(position)[0]) if archived else 0,
                    trimmed_below=mirror.get("trimmed_below", "0-0"),
                    held_by=mirror.get("held_by", ""),
                    error=mirror.get("error", ""),
                    archiver=mirror.get("archiver", ""),
                )
            )
    except RedisError as exc:
        raise StoreUnavailable(f"reading the archive status: {exc}") from exc
    return out


def archive_gauges(
    statuses: Sequence[PartitionStatus], configured: bool
) -> dict[str, dict[int, float]]:
    """The archive's figures as metric families by partition, for a scrape (``/metrics``):
    ``clipstream_archive_configured`` (0: nothing replay needs is trimmed), the position's
    time, the lag in entries and seconds, archived bytes, entries kept in Redis, and 1 where the
    last attempt failed."""
    return {
        "clipstream_archive_configured": {-1: 1.0 if configured else 0.0},
        "clipstream_archive_position_ms": {
            s.partition: float(id_key(s.position)[0]) for s in statuses
        },
        "clipstream_archive_lag_entries": {s.partition: float(s.lag_entries) for s in statuses},
        "clipstream_archive_lag_seconds": {s.partition: s.lag_ms / 1000 for s in statuses},
        "clipstream_archive_bytes": {s.partition: float(s.archived_bytes) for s in statuses},
        "clipstream_log_entries_hot": {s.partition: float(s.log_length) for s in statuses},
        "clipstream_archive_error": {s.partition: 1.0 if s.error else 0.0 for s in statuses},
    }


# -- verify --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Verification:
    """What ``archive verify`` found: ``problems`` (empty: the archive is sound) and
    ``warnings`` (objects no manifest lists: left by a crash or a lost race, harmless)."""

    partitions: int = 0
    segments: int = 0
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(
    store: EventStore, archive: ArchiveStore, partitions: Sequence[int] | None = None
) -> Verification:
    """Check every segment against its manifest: present, its sha256, its zstd frame, its
    lines in order and within its named range, its count; segments in order with no overlap,
    ledger segments with no gap; the manifest's totals and position; and, where Redis still holds
    the entries between two segments, that none is missing from the archive."""
    result = Verification()
    for p in partitions if partitions is not None else store.partitions:
        result.partitions += 1
        try:
            manifest = await catalog.latest_manifest(archive, p)
        except ArchiveError as exc:
            result.problems.append(f"p{p}: {exc}")
            continue
        try:
            logs = [info async for info in catalog.log_segments(archive, manifest)]
            ledgers = [info async for info in catalog.ledger_segments(archive, manifest)]
        except ArchiveError as exc:  # a volume missing or damaged
            result.problems.append(f"p{p}: {exc}")
            continue
        await _verify_log(store, archive, manifest, logs, result)
        await _verify_ledger(archive, manifest, ledgers, result)
        await _orphans(archive, manifest, logs, ledgers, result)
    return result


async def _verify_log(
    store: EventStore,
    archive: ArchiveStore,
    manifest: Manifest,
    segments: list[SegmentInfo],
    result: Verification,
) -> None:
    p = manifest.partition
    previous: SegmentInfo | None = None
    for info in segments:
        result.segments += 1
        ids = await _segment_ids(archive, info, result)
        if ids is not None:
            result.entries += len(ids)
            if ids and (ids[0] != info.first or ids[-1] != info.last or len(ids) != info.count):
                result.problems.append(f"{info.name}: its lines do not match the manifest")
            if any(id_key(a) >= id_key(b) for a, b in itertools.pairwise(ids)):
                result.problems.append(f"{info.name}: entries out of order")
        if previous is not None:
            if id_key(info.first) <= id_key(previous.last):
                result.problems.append(f"{info.name} overlaps {previous.name}")
            elif await _missing_between(store, p, previous.last, info.first):
                result.problems.append(f"gap: Redis holds entries between {previous.name} and "
                                       f"{info.name} that no segment has")  # fmt: skip
        previous = info
    if (sum(s.count for s in segments), sum(s.bytes for s in segments)) != (
        manifest.entries,
        manifest.bytes,
    ):
        result.problems.append(f"p{p}: the manifest's totals do not add up")
    if segments and manifest.position != segments[-1].last:
        result.problems.append(f"p{p}: the manifest's position is not its last segment's end")


async def _segment_ids(
    archive: ArchiveStore, info: SegmentInfo, result: Verification
) -> list[str] | None:
    data = await archive.get(info.name)
    if data is None:
        result.problems.append(f"{info.name}: listed in the manifest but missing")
        return None
    if sha256(data) != info.sha256:
        result.problems.append(f"{info.name}: sha256 mismatch (the object was damaged)")
        return None
    try:
        return [entry_id for entry_id, _ in log_rows(decompress(data))]
    except ArchiveCorrupt as exc:
        result.problems.append(f"{info.name}: {exc}")
        return None


async def _missing_between(store: EventStore, partition: int, last: str, first: str) -> bool:
    try:
        rows = await store.redis.xrange(store.keys.log(partition), f"({last}", f"({first}", count=1)
    except RedisError:
        return False
    return bool(rows)


async def _verify_ledger(
    archive: ArchiveStore,
    manifest: Manifest,
    segments: list[LedgerSegmentInfo],
    result: Verification,
) -> None:
    after = 0
    for info in segments:
        result.segments += 1
        if info.after_ms != after:
            result.problems.append(f"{info.name}: ledger gap or overlap after {after}")
        after = info.through_ms
        data = await archive.get(info.name)
        if data is None or sha256(data) != info.sha256:
            result.problems.append(f"{info.name}: missing or sha256 mismatch")
            continue
        try:
            rows = list(ledger_rows(decompress(data)))
        except ArchiveCorrupt as exc:
            result.problems.append(f"{info.name}: {exc}")
            continue
        if len(rows) != info.count or sorted({a for a, _, _ in rows}) != info.accounts:
            result.problems.append(f"{info.name}: its lines do not match the manifest")
    if after != manifest.ledger_through:
        result.problems.append(f"p{manifest.partition}: ledger position is not its last segment's")


async def _orphans(
    archive: ArchiveStore,
    manifest: Manifest,
    logs: list[SegmentInfo],
    ledgers: list[LedgerSegmentInfo],
    result: Verification,
) -> None:
    listed = {s.name for s in logs} | {s.name for s in ledgers}
    listed |= {v.name for v in [*manifest.volumes, *manifest.ledger_volumes]}
    for kind in ("log", "ledger", "volumes"):
        for name in await archive.list(f"{partition_dir(manifest.partition)}/{kind}/"):
            if name not in listed:
                result.warnings.append(f"{name}: not in the manifest (a crashed or losing write)")


# -- export --------------------------------------------------------------------------------------


async def export_lines(
    store: EventStore, archive: ArchiveStore | None, partitions: Sequence[int], since: str
) -> AsyncIterator[bytes]:
    """JSON lines ``{"partition", "id", "event"}`` of the given partitions' logs after stream id
    ``since``: the archive, then the hot tail (an entry that is not JSON comes as ``raw``)."""
    for p in partitions:
        async for entries in log_pages(store, archive, p, since):
            for entry in entries:
                head = b'{"partition":%d,"id":"%s",' % (p, entry.entry_id.encode())
                if entry.event is not None:
                    yield head + b'"event":' + entry.raw + b"}"
                else:
                    yield head + b'"raw":' + orjson.dumps(entry.raw.decode(errors="replace")) + b"}"
