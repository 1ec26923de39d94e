"""Copying one partition into its archive: the next log segment, the next ledger segment, and the
create-only commit of the manifest generation that lists them.

Order, so that a crash anywhere leaves no gap and no duplicate:

    1. the segment object (create-only; a name already there must hold the same bytes)
    2. what the segment lets Redis forget (engine.archive.retention; idempotent)
    3. manifest generation N+1 (create-only: a second archiver that got there first wins, and
       this one reads its generation instead)
    4. (engine.archive.archiver) the Redis mirror of the position, then trimming

A crash after 1 leaves a segment no manifest lists. The next archiver of the partition finds it
(its name starts with the position's successor), reads exactly its range from Redis again, and
writes it again: the same entries encode to the same bytes, so the write finds the object there
with an equal sha256 and goes on to 2 and 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.exceptions import RedisError

from engine.archive import manifest as mf
from engine.archive import retention
from engine.archive.catalog import latest_manifest
from engine.archive.segments import (
    MAX_SEQ,
    Encoded,
    LedgerSegmentInfo,
    SegmentInfo,
    encode_ledger,
    encode_log,
    ledger_range_of,
    ledger_segment_name,
    ledger_segment_prefix,
    log_names_after,
    log_range_of,
    log_segment_name,
    log_segments_dir,
    parse_id,
    sha256,
    successor,
)
from engine.archive.stores import ArchiveStore
from engine.connection import RedisClient, as_str
from engine.errors import ArchiveCorrupt, StoreUnavailable
from engine.log.keys import Keys
from engine.settings import Settings


@dataclass(frozen=True, slots=True)
class Cut:
    """When a segment is cut. A log segment takes at most ``max_entries`` entries older than the
    hot window; it waits until it has ``min_entries`` or its oldest entry has been out of the hot
    window for ``max_wait_ms``. A ledger segment is cut at most every ``max_wait_ms``."""

    min_entries: int = 2_000
    max_entries: int = 20_000
    max_wait_ms: int = 30_000

    @classmethod
    def of(cls, settings: Settings) -> Cut:
        """The cut ``CLIPSTREAM_ARCHIVE_SEGMENT_ENTRIES`` and ``_SEGMENT_MS`` configure."""
        entries = settings.archive_segment_entries
        return cls(entries, max(entries, 20_000), settings.archive_segment_ms)


@dataclass(slots=True)
class Copier:
    """What copying needs: Redis and its key names, the archive, and who is writing."""

    redis: RedisClient
    keys: Keys
    archive: ArchiveStore
    writer: str
    hot_ms: int
    cut: Cut

    # -- the log ----------------------------------------------------------------------------------
    async def log_segment(
        self, partition: int, manifest: mf.Manifest, now_ms: int, *, recover: bool
    ) -> mf.Manifest | None:
        """Archive the next log segment of ``partition``: the manifest generation that lists it
        (not committed yet), or None when there is nothing to archive yet."""
        start = successor(manifest.position)
        rows = await self._orphan_log_rows(partition, manifest.position) if recover else None
        if rows is None:
            through = now_ms - self.hot_ms - 1
            if through < parse_id(start)[0]:
                return None
            rows = await self._xrange(
                self.keys.log(partition), start, f"{through}-{MAX_SEQ}", self.cut.max_entries
            )
            if not rows or not self._ripe(rows, through):
                return None
        first, last = rows[0][0], rows[-1][0]
        name = log_segment_name(partition, first, last)
        encoded = encode_log(rows)
        await self._put(name, encoded)
        await retention.forget_charges(self.redis, self.keys, partition, rows)
        info = SegmentInfo(
            name=name,
            first=first,
            last=last,
            count=len(rows),
            bytes=len(encoded.data),
            raw_bytes=encoded.raw_bytes,
            sha256=encoded.sha256,
        )
        return mf.with_log_segment(manifest, info, writer=self.writer, now_ms=now_ms)

    def _ripe(self, rows: Sequence[tuple[str, dict[bytes, bytes]]], through: int) -> bool:
        """A segment is cut when it is full enough or its oldest entry has waited long enough."""
        if len(rows) >= self.cut.min_entries:
            return True
        return parse_id(rows[0][0])[0] <= through - self.cut.max_wait_ms

    async def _orphan_log_rows(
        self, partition: int, position: str
    ) -> list[tuple[str, dict[bytes, bytes]]] | None:
        """The rows of a segment a crashed archiver wrote right after ``position`` but never
        listed, read from Redis again (None when there is none, or Redis no longer holds exactly
        its range)."""
        names = await self.archive.list(
            log_segments_dir(partition), after=log_names_after(partition, position)
        )
        if not names:
            return None
        first, last = log_range_of(names[0])
        following = await self._xrange(self.keys.log(partition), f"({position}", "+", 1)
        if not following or following[0][0] != first:
            return None  # not the segment that comes next (a losing racer's, or a stale one)
        rows = await self._xrange(self.keys.log(partition), first, last, None)
        if not rows or rows[-1][0] != last:
            return None
        return rows

    # -- the ledgers ------------------------------------------------------------------------------
    async def ledger_segment(
        self, partition: int, manifest: mf.Manifest, now_ms: int, *, recover: bool
    ) -> mf.Manifest | None:
        """Archive every ledger entry of the partition's accounts after the manifest's
        ``ledger_through`` and out of the hot window: the next manifest generation, or None."""
        after = manifest.ledger_through
        through = None
        if recover:
            names = await self.archive.list(ledger_segment_prefix(partition, after))
            through = ledger_range_of(names[0])[1] if names else None
        if through is None:
            through = now_ms - self.hot_ms - 1
            if through - after < self.cut.max_wait_ms:
                return None
        rows = await self._ledger_rows(partition, after, through)
        if not rows:
            return None
        name = ledger_segment_name(partition, after, through)
        encoded = encode_ledger(rows)
        await self._put(name, encoded)
        info = LedgerSegmentInfo(
            name=name,
            after_ms=after,
            through_ms=through,
            count=len(rows),
            bytes=len(encoded.data),
            raw_bytes=encoded.raw_bytes,
            sha256=encoded.sha256,
            accounts=sorted({account for account, _, _ in rows}),
        )
        return mf.with_ledger_segment(manifest, info, writer=self.writer, now_ms=now_ms)

    async def _ledger_rows(
        self, partition: int, after: int, through: int
    ) -> list[tuple[str, str, dict[str, str]]]:
        try:
            accounts = sorted(as_str(a) for a in await self.redis.smembers(
                self.keys.accounts(partition)))  # fmt: skip
            pipe = self.redis.pipeline(transaction=False)
            for account in accounts:
                pipe.xrange(self.keys.ledger(account), f"{after + 1}-0", f"{through}-{MAX_SEQ}")
            replies = await pipe.execute() if accounts else []
        except RedisError as exc:
            raise StoreUnavailable(f"reading ledgers of partition {partition}: {exc}") from exc
        return [
            (account, as_str(entry_id), {as_str(k): as_str(v) for k, v in fields.items()})
            for account, rows in zip(accounts, replies, strict=True)
            for entry_id, fields in rows
        ]

    # -- objects and the manifest -----------------------------------------------------------------
    async def _put(self, name: str, encoded: Encoded) -> None:
        """Write a segment create-only; a name already taken must hold the very same bytes."""
        await self._put_bytes(name, encoded.data, encoded.sha256)

    async def _put_bytes(self, name: str, data: bytes, digest: str) -> None:
        if await self.archive.put_new(name, data):
            return
        existing = await self.archive.get(name)
        if existing is None or sha256(existing) != digest:
            raise ArchiveCorrupt(
                f"{name} already holds other bytes than this archiver's: two archivers disagree, "
                "or the object was damaged (clipstream archive verify)"
            )

    async def commit(self, partition: int, new: mf.Manifest) -> tuple[mf.Manifest, bool]:
        """Write manifest generation ``new`` create-only: (the current manifest, True) when it
        was written, (the generation another archiver wrote first, False) otherwise."""
        new = await self._roll_volumes(partition, new)
        name = mf.manifest_name(partition, new.generation)
        if await self.archive.put_new(name, mf.encode(new)):
            await self._prune(partition, new.generation)
            return new, True
        return await latest_manifest(self.archive, partition), False

    async def _roll_volumes(self, partition: int, manifest: mf.Manifest) -> mf.Manifest:
        """Freeze the oldest segments into a volume when the manifest lists too many (the same
        segments always make the same volume, so a retry writes the very same object)."""
        if len(manifest.segments) > mf.MAX_SEGMENTS:
            info, data = mf.log_volume(partition, manifest.segments[: mf.VOLUME_SEGMENTS])
            await self._put_bytes(info.name, data, info.sha256)
            manifest = mf.with_volume(manifest, "log", info)
        if len(manifest.ledger_segments) > mf.MAX_SEGMENTS:
            ledger = manifest.ledger_segments[: mf.VOLUME_SEGMENTS]
            info, data = mf.ledger_volume(partition, ledger)
            await self._put_bytes(info.name, data, info.sha256)
            manifest = mf.with_volume(manifest, "ledger", info)
        return manifest

    async def _prune(self, partition: int, generation: int) -> None:
        """Delete generations older than the last few (every one lists all the segments)."""
        old = generation - mf.KEEP_GENERATIONS
        if old >= 1:
            await self.archive.delete(mf.manifest_name(partition, old))

    async def _xrange(
        self, key: str, start: str, end: str, count: int | None
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        try:
            rows = await self.redis.xrange(key, start, end, count=count)
        except RedisError as exc:
            raise StoreUnavailable(f"reading {key}: {exc}") from exc
        return [(as_str(entry_id), dict(fields)) for entry_id, fields in rows]
