"""The archiver role's loop: each partition archived by one archiver at a time, then trimmed.

Any number of archivers may run. Each partition is held through a lease (``SET NX PX`` on
``{pN}:archive:lease``, renewed every pass), so they split the partitions; the lease is only an
economy. What keeps two archivers from corrupting the archive is that every object is written
create-only and each manifest generation can be written once (engine.archive.copy).

A pass, for every partition held:

    1. log segments (engine.archive.copy), each committed in a new manifest generation, then
       mirrored into ``{pN}:archive`` (the position the trim floor and ``status`` read)
    2. a ledger segment, committed the same way, then the ledgers trimmed to it
    3. the log trimmed to its floor (engine.archive.trim); every 10 s the feeds to their window
       and every ledger to what the archive holds

An archive store that fails (S3 errors, a full disk) stops 1-3 for that partition: the error is
recorded in ``{pN}:archive`` (``clipstream archive status``) and the pass is tried again later;
nothing is trimmed that the archive does not hold. Without an archive only the feeds are kept to
their window: nothing that replay needs is ever trimmed.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
from redis.exceptions import RedisError

from engine import meters
from engine.archive import manifest as mf
from engine.archive import retention
from engine.archive.catalog import latest_manifest
from engine.archive.copy import Copier, Cut
from engine.archive.segments import id_key, successor
from engine.archive.stores import ArchiveStore
from engine.archive.trim import Consumers, read_floor, redis_time_ms, trim_log
from engine.connection import as_str
from engine.errors import ArchiveCorrupt, ArchiveError, StoreError
from engine.log.store import EventStore

log = logging.getLogger("clipstream.archiver")

LEASE_MS = 30_000
FEED_EVERY_S = 10.0
SEGMENTS_PER_PASS = 20  # per partition, so one partition's backlog does not starve the others

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class ArchiverStats:
    """Counters since the archiver started (logs, metrics, tests)."""

    segments: int = 0
    ledger_segments: int = 0
    entries: int = 0
    trimmed: int = 0
    errors: int = 0
    lost_races: int = 0  # manifest generations another archiver wrote first
    last_error: str = ""


@dataclass(slots=True)
class _Held:
    manifest: mf.Manifest
    recover: bool = True  # look for a segment a crashed archiver left unlisted
    feeds_trimmed: float = field(default=0.0)


class Archiver:
    """Archives and trims partitions: ``run(stop)`` for the role, ``run_until_idle()`` for tests."""

    def __init__(
        self,
        store: EventStore,
        archive: ArchiveStore | None,
        consumers: Consumers,
        *,
        archiver_id: str | None = None,
        cut: Cut | None = None,
        interval_s: float = 1.0,
        partitions: Sequence[int] | None = None,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.archive = archive
        self.consumers = consumers
        self.archiver_id = archiver_id or f"arc_{secrets.token_hex(6)}"
        self.interval_s = interval_s
        self.hot_ms = store.settings.hot_ms
        self.cut = cut or Cut.of(store.settings)
        self.partitions = list(partitions if partitions is not None else store.partitions)
        self.stats = ArchiverStats()
        self._held: dict[int, _Held] = {}
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        if self.partitions:  # archivers started together begin on different partitions
            shift = secrets.randbelow(len(self.partitions))
            self.partitions = self.partitions[shift:] + self.partitions[:shift]

    @property
    def held(self) -> list[int]:
        return sorted(self._held)

    def _copier(self, archive: ArchiveStore) -> Copier:
        keys = self.store.keys
        return Copier(self.redis, keys, archive, self.archiver_id, self.hot_ms, self.cut)

    # -- loops ------------------------------------------------------------------------------------
    async def run(self, stop: anyio.Event | None = None) -> None:
        """Archive and trim until ``stop`` is set; failures are recorded and retried."""
        stop = stop or anyio.Event()
        await retention.index_accounts(self.redis, self.store.keys)
        try:
            while not stop.is_set():
                try:
                    worked = await self.pass_once()
                except (StoreError, OSError, ConnectionError) as exc:
                    log.warning("archiver pass failed, retrying: %s", exc)
                    worked = False
                if not worked:
                    with anyio.move_on_after(self.interval_s):
                        await stop.wait()
                else:
                    await anyio.lowlevel.checkpoint()
        finally:
            await self.release_all()

    async def run_until_idle(self) -> None:
        """Passes until one archives nothing (tests: with ``Cut(min_entries=1)``)."""
        await retention.index_accounts(self.redis, self.store.keys)
        try:
            while await self.pass_once():
                pass
        finally:
            await self.release_all()

    async def pass_once(self) -> bool:
        """One pass over the partitions (leases first): True when a segment was archived."""
        await self._maintain_leases()
        worked = False
        for p in list(self._held):
            if await self.archive_partition(p):
                worked = True
        return worked

    # -- one partition ----------------------------------------------------------------------------
    async def archive_partition(self, partition: int) -> bool:
        """One pass over a partition this archiver holds: copy, commit, mirror, trim. True when a
        log segment was archived. Archive errors are recorded, not raised."""
        held = self._held[partition]
        worked = False
        try:
            if self.archive is not None:
                worked = await self._copy(partition, held, self.archive)
                await self._trim(partition, held)
            await self._trim_feeds(partition, held)
        except ArchiveError as exc:
            self.stats.errors += 1
            self.stats.last_error = str(exc)
            log.warning("partition %d: archiving stopped: %s", partition, exc)
            await self._record_error(partition, exc)
            held.recover = True  # the next attempt starts from what the archive holds
            held.manifest = await self._reload(partition, held.manifest)
            return False
        return worked

    async def _copy(self, partition: int, held: _Held, archive: ArchiveStore) -> bool:
        copier = self._copier(archive)
        now = await redis_time_ms(self.redis)
        await self._check_no_gap(partition, held, archive)
        recover, held.recover = held.recover, False
        worked = False
        for n in range(SEGMENTS_PER_PASS):
            new = await copier.log_segment(
                partition, held.manifest, now, recover=recover and n == 0
            )
            if new is None:
                break
            held.manifest, won = await copier.commit(partition, new)
            if not won:
                self.stats.lost_races += 1
                break
            self.stats.segments += 1
            meters.ARCHIVE_SEGMENTS.labels("log").inc()
            self.stats.entries += new.segments[-1].count
            worked = True
            await self._mirror(partition, held.manifest)
        new = await copier.ledger_segment(partition, held.manifest, now, recover=recover)
        if new is not None:
            held.manifest, won = await copier.commit(partition, new)
            await self._mirror(partition, held.manifest)  # before the trim: readers go by it
            if won:
                self.stats.ledger_segments += 1
                meters.ARCHIVE_SEGMENTS.labels("ledger").inc()
                segment = new.ledger_segments[-1]
                await retention.trim_ledgers(
                    self.redis, self.store.keys, segment.accounts, segment.through_ms
                )
        return worked

    async def _check_no_gap(self, partition: int, held: _Held, archive: ArchiveStore) -> None:
        """Catch up with what another archiver committed meanwhile; ArchiveCorrupt when Redis was
        trimmed past what this archive holds (the archive was replaced or lost): archiving on
        would leave a gap."""
        raw = await self.redis.hget(self.store.keys.archive(partition), "trimmed_below")
        trimmed = as_str(raw) if raw else "0-0"
        if id_key(trimmed) <= id_key(successor(held.manifest.position)):
            return
        held.manifest = await latest_manifest(archive, partition)
        if id_key(trimmed) > id_key(successor(held.manifest.position)):
            raise ArchiveCorrupt(
                f"partition {partition}: the log was trimmed below {trimmed} but this archive "
                f"ends at {held.manifest.position}: it is not the archive those entries went to"
            )

    async def _trim(self, partition: int, held: _Held) -> None:
        keys = self.store.keys
        low = await read_floor(
            self.redis, keys, partition, held.manifest.position, self.hot_ms, self.consumers
        )
        # Recorded before the trim: a reader that finds the hot log starting later than it
        # expected checks this afterwards and goes back to the archive (engine.archive.reader).
        await self.redis.hset(
            keys.archive(partition),
            mapping={"trimmed_below": low.floor, "held_by": low.held_by},
        )
        removed = await trim_log(self.redis, keys, partition, low)
        self.stats.trimmed += removed

    async def _trim_feeds(self, partition: int, held: _Held) -> None:
        if time.monotonic() - held.feeds_trimmed < FEED_EVERY_S:
            return
        held.feeds_trimmed = time.monotonic()
        now = await redis_time_ms(self.redis)
        # The mirrored ledger position, which readers go by (never ahead of what they see).
        mirrored = await self.redis.hget(self.store.keys.archive(partition), "ledger_through")
        through = int(mirrored or 0) if self.archive is not None else 0
        await retention.trim_feeds(
            self.redis, self.store.keys, partition, now - self.hot_ms, through
        )

    # -- the mirror in Redis ----------------------------------------------------------------------
    async def _mirror(self, partition: int, manifest: mf.Manifest) -> None:
        """Copy the manifest's positions into ``{pN}:archive`` (what the trim floor, ``status``
        and readers use), and clear the last error."""
        assert self.archive is not None
        await self.redis.hset(
            self.store.keys.archive(partition),
            mapping={
                "position": manifest.position,
                "entries": manifest.entries,
                "bytes": manifest.bytes,
                "segments": len(manifest.segments) + sum(v.count for v in manifest.volumes),
                "generation": manifest.generation,
                "ledger_through": manifest.ledger_through,
                "ledger_entries": manifest.ledger_entries,
                "ledger_segments": len(manifest.ledger_segments)
                + sum(v.count for v in manifest.ledger_volumes),
                "archive": self.archive.url,
                "archiver": self.archiver_id,
                "updated_at": int(time.time() * 1000),
                "error": "",
            },
        )

    async def _record_error(self, partition: int, exc: Exception) -> None:
        try:
            await self.redis.hset(
                self.store.keys.archive(partition),
                mapping={"error": str(exc)[:500], "error_at": int(time.time() * 1000)},
            )
        except RedisError as err:
            log.warning("partition %d: could not record the archive error: %s", partition, err)

    async def _reload(self, partition: int, fallback: mf.Manifest) -> mf.Manifest:
        if self.archive is None:
            return fallback
        try:
            return await latest_manifest(self.archive, partition)
        except ArchiveError:
            return fallback

    # -- leases -----------------------------------------------------------------------------------
    async def _maintain_leases(self) -> None:
        keys = self.store.keys
        for p in list(self._held):
            args = [self.archiver_id, LEASE_MS]
            if int(await self._renew(keys=[keys.archive_lease(p)], args=args)) != 1:
                log.info("partition %d: archive lease lost", p)
                del self._held[p]
        for p in self.partitions:
            if p in self._held:
                continue
            if await self.redis.set(keys.archive_lease(p), self.archiver_id, nx=True, px=LEASE_MS):
                try:
                    manifest = await self._load(p)
                except ArchiveError as exc:
                    await self._record_error(p, exc)
                    await self._release(keys=[keys.archive_lease(p)], args=[self.archiver_id])
                    continue
                self._held[p] = _Held(manifest)

    async def _load(self, partition: int) -> mf.Manifest:
        if self.archive is None:
            return mf.Manifest(partition=partition)
        manifest = await latest_manifest(self.archive, partition)
        await self._mirror(partition, manifest)
        return manifest

    async def release_all(self) -> None:
        held, self._held = list(self._held), {}
        with anyio.CancelScope(shield=True):
            for p in held:
                try:
                    lease = self.store.keys.archive_lease(p)
                    await self._release(keys=[lease], args=[self.archiver_id])
                except Exception as exc:  # stopping: the lease expires on its own
                    log.debug("release of partition %d failed: %s", p, exc)
