"""The projector: keeps the views of the live projection version current with the partition logs.

Per partition it holds a lease (``SET NX PX``, renewed while it works), so several projector
processes split the partitions instead of racing for them; each asks only for its share of them
(about P/N of N live projectors, projections.membership) and hands back what falls outside it when
another joins, so the work spreads evenly and moves when one joins, leaves or dies. For each batch:

    XRANGE log (checkpoint, +]  →  the touched views (from memory, else GET)  →  pure fold  →
    one Lua call writes views + indexes + transcript pointers + checkpoint, only if the checkpoint
    is unchanged

The running executions' views it committed stay in its memory while it holds their partition
(projections.view_cache), so the next batch of an execution reads nothing back; a view's indexes
and transcript pointers are written when they change (a view stored as active is in every index
already, a transcript it held has its pointer). A new index therefore reaches the views already
running through a replay into a new version, as any change of what a projection writes does.

The compare-and-set on the checkpoint is what makes it safe, not the lease: a projector that lost
its lease (paused, partitioned) and writes late finds the checkpoint moved, discards its batch and
reads again. A crash anywhere leaves either the old checkpoint and old views or both new, so
nothing is skipped and nothing applied twice (and a duplicate event is a no-op in the fold anyway).

A pass takes one batch of every partition held, ``CLIPSTREAM_PROJECTOR_LANES`` of them at once
(:meth:`Projector.pass_once`), and goes on round robin while any has a backlog, for half a second
at most: their batches share nothing but the view cache, whose entries are per partition.

The live version is re-read every pass: after ``replay.switch`` the projector continues from the
new namespace's checkpoint.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from engine import meters
from engine.connection import as_str
from engine.errors import StoreError
from engine.runtime import Runtime
from projections import membership, scripts
from projections.batch import fold_entries, repair
from projections.feed import FeedRecord, feed_records
from projections.namespace import (
    Namespace,
    current_version,
    stored_views,
)
from projections.view_cache import ViewCache
from projections.views import ExecutionView, decode_view

log = logging.getLogger("clipstream.projector")

_IDLE_MIN_S = 0.002  # the first rest after a pass with nothing, and the rest after a trickle
_IDLE_MAX_S = 0.05
_CHECK_MAX_S = 1.0  # the longest between two looks at the members and leases


def _pass_budget_s(lease_ms: int) -> float:
    """How long a pass goes on folding partitions with a backlog: half the time between two
    looks at the leases (:meth:`Projector._maintain_leases`), so a pass never delays one much."""
    return min(lease_ms / 3000, _CHECK_MAX_S) / 2


def rest_after(worked: bool, behind: bool, idle: float) -> tuple[float, float]:
    """How long :meth:`Projector.run` rests after a pass, and the rest after the next one that
    folds nothing: none while a backlog is left (``behind``); a short one after a trickle, or a
    projector that has caught up would poll every partition back to back to fold an entry or two
    each time (half a core at 200 events/s); after a pass with nothing, ``idle``, doubled each
    time up to ``_IDLE_MAX_S``."""
    if worked:
        return (0.0 if behind else _IDLE_MIN_S), _IDLE_MIN_S
    return idle, min(idle * 2, _IDLE_MAX_S)


class PassOrder:
    """Which partition a lane of a pass folds next (:meth:`Projector.pass_once`): each held one
    once, then, while any had a backlog (a full batch) and the pass is within ``budget_s``, again
    those that had entries, round robin; one that had nothing rests until the next pass."""

    def __init__(self, partitions: Iterable[int], full: int, budget_s: float) -> None:
        self._ready = deque(partitions)
        self._full = full
        self._until = time.monotonic() + budget_s
        self._backlogs: set[int] = set()
        self._waiting: list[int] = []  # had entries before any backlog: queued again if one is

    @property
    def behind(self) -> bool:
        """True while a partition's last batch was full: more is waiting in its log."""
        return bool(self._backlogs)

    def next(self) -> int | None:
        """The next partition to fold (None: the pass is over for this lane)."""
        return self._ready.popleft() if self._ready else None

    def folded(self, partition: int, entries: int) -> None:
        """``partition``'s batch took ``entries`` log entries."""
        if entries >= self._full:
            self._backlogs.add(partition)
        else:
            self._backlogs.discard(partition)
        if not entries or time.monotonic() >= self._until:
            return
        if not self._backlogs:
            self._waiting.append(partition)
            return
        self._ready.extend(self._waiting)  # another round, after the others
        self._waiting.clear()
        self._ready.append(partition)


@dataclass(slots=True)
class ProjectorStats:
    """Counters since the projector started (for logs, status and tests)."""

    events: int = 0
    batches: int = 0
    skipped: int = 0  # undecodable log entries
    gaps: int = 0  # executions whose events could not all be applied
    conflicts: int = 0  # batches discarded because another projector moved the checkpoint
    errors: int = 0  # passes that failed on Redis and were retried
    handed_over: int = 0  # leases given back to even the partitions out among projectors
    views_remembered: int = 0  # views of a batch taken from memory (projections.view_cache)
    views_read: int = 0  # views of a batch read from Redis


class CommitConflict(Exception):
    """Another projector moved the checkpoint; the batch was discarded."""


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """What one folded batch of a partition writes in its commit: the ``views`` it changed, the
    checkpoint moving from ``after`` to ``new``, the ``skipped`` (undecodable) entries, the
    ``feed`` entries of its events and the views as ``stored`` before it (where known)."""

    views: Sequence[ExecutionView]
    after: str
    new: str
    skipped: int
    feed: Sequence[FeedRecord]
    stored: Mapping[str, ExecutionView]


class Projector:
    """Folds partition logs into views: ``run(stop)`` for a process, ``run_until_idle()`` for
    tests and tools."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        partitions: Sequence[int] | None = None,
        version: int | None = None,
        feed: bool = True,
    ) -> None:
        self.runtime = runtime
        self.feed = feed  # append to the owners' realtime feeds
        self.store = runtime.store
        self.redis = runtime.redis
        self.partitions = list(partitions if partitions is not None else self.store.partitions)
        # A projector given its own partitions (a tool, a test) folds those and is no member: the
        # members split the partitions among themselves (projections.membership).
        self._member = partitions is None
        self.projector_id = f"prj_{secrets.token_hex(8)}"
        self.stats = ProjectorStats()
        self._fixed_version = version
        self.version = version if version is not None else 0  # resolved on the first pass
        self.behind = False  # the last pass left a partition with a full batch folded
        self._held: dict[int, str] = {}  # partition -> checkpoint we read from
        # The running executions' views this projector committed.
        self._cache = ViewCache(runtime.settings.projector_views)
        self._leases_checked = 0.0
        self._commit = self.redis.register_script(scripts.COMMIT)
        self._renew = self.redis.register_script(scripts.RENEW)
        self._release = self.redis.register_script(scripts.RELEASE)
        # Spread projectors started together over different partitions first.
        if self.partitions:
            shift = secrets.randbelow(len(self.partitions))
            self.partitions = self.partitions[shift:] + self.partitions[:shift]

    @property
    def held(self) -> list[int]:
        """The partitions this projector currently holds a lease on."""
        return sorted(self._held)

    def ns(self, partition: int) -> Namespace:
        return Namespace(self.store.keys, partition, self.version)

    # -- loops ------------------------------------------------------------------------------------
    async def run(self, stop: anyio.Event | None = None) -> None:
        """Fold until ``stop`` is set (or the task is cancelled); Redis errors are logged and
        retried, never fatal. Leases are given back on the way out."""
        stop = stop or anyio.Event()
        idle = _IDLE_MIN_S
        try:
            while not stop.is_set():
                try:
                    worked = await self.pass_once()
                except (StoreError, OSError, ConnectionError) as exc:
                    self.stats.errors += 1
                    log.warning("projector pass failed, retrying: %s", exc)
                    worked, idle = False, _IDLE_MAX_S
                except Exception as exc:  # a bug must not end the process silently
                    self.stats.errors += 1
                    log.exception("projector pass failed: %s", exc)
                    worked, idle = False, _IDLE_MAX_S
                rest, idle = rest_after(worked, self.behind, idle)
                if rest == 0:
                    await anyio.lowlevel.checkpoint()  # let the other tasks of this process run
                    continue
                with anyio.move_on_after(rest):
                    await stop.wait()
        finally:
            await self._release_all()

    async def run_until_idle(self) -> None:
        """Fold until every partition's checkpoint is at its log's tail.

        Partitions another live projector holds are waited for (it moves their checkpoints); those
        of a dead one are taken over once its lease expires.
        """
        try:
            while True:
                if await self.pass_once(acquire=True):
                    continue
                if await self.caught_up():
                    return
                await anyio.sleep(0.01)
        finally:
            await self._release_all()

    async def pass_once(self, *, acquire: bool = False) -> bool:
        """A batch of every held partition, and more of those with a backlog for a while; True
        when any entry was folded.

        ``CLIPSTREAM_PROJECTOR_LANES`` partitions at once, each lane taking the next partition
        when its batch is committed: while one batch waits on its read or its commit, another is
        folded, so the process does not sit idle through every round trip. While some partition
        has a backlog, the partitions that had entries go round again (:class:`PassOrder`), for
        half the time between two looks at the leases (:func:`_pass_budget_s`): were every
        partition folded once per pass, the lanes would set off together at every pass and stay
        in step, every lane waiting on its commit while the others queue behind it in Redis; and
        a partition with a trickle of entries waits one round behind a backlog, not the whole
        pass. One that had nothing new rests until the next pass (polling it every round would
        cost the backlog's lanes a round trip each time). Partitions share nothing but the view
        cache, whose entries are per partition, and a partition is in one lane at a time. A lane
        that fails stops the others from taking more partitions (those in flight finish), and
        its error is raised once every lane has stopped."""
        await self._sync_version()
        await self._maintain_leases(force=acquire)
        settings = self.runtime.settings
        order = PassOrder(self._held, settings.batch, _pass_budget_s(settings.lease_ms))
        worked = False
        failure: Exception | None = None

        async def lane() -> None:
            nonlocal worked, failure
            while failure is None and (partition := order.next()) is not None:
                try:
                    folded = await self.step(partition)
                except Exception as exc:
                    failure = failure or exc
                    return
                worked = worked or folded > 0
                order.folded(partition, folded)

        async with anyio.create_task_group() as lanes:
            for _ in range(min(settings.projector_lanes, len(self._held))):
                lanes.start_soon(lane)
        if failure is not None:
            raise failure
        self.behind = order.behind
        return worked

    async def caught_up(self) -> bool:
        """True when every partition's checkpoint (ours or another projector's) is at the tail."""
        for p in self.partitions:
            ckpt = self._held.get(p)
            if ckpt is None:
                ckpt = await self._read_ckpt(self.ns(p))
            if await self.store.log.read_log(p, ckpt, 1):
                return False
        return True

    # -- one batch --------------------------------------------------------------------------------
    async def step(self, partition: int) -> int:
        """Fold one batch of ``partition`` and commit it; the number of log entries consumed."""
        try:
            return await self._step(partition)
        except BaseException:
            # The commit may or may not have landed: read the partition's views back.
            self._cache.forget(partition)
            raise

    async def _step(self, partition: int) -> int:
        ns = self.ns(partition)
        after = self._held[partition]
        entries = await self.store.log.read_log(partition, after, self.runtime.settings.batch)
        if not entries:
            return 0
        touched = list(dict.fromkeys(e.event.execution_id for e in entries if e.event is not None))
        views = await self._load(ns, touched)
        loaded = dict(views)  # views are frozen: a shallow copy keeps the state before the batch
        trail: list[ExecutionView | None] | None = [] if self.feed else None
        folded = fold_entries(views, entries, trail)
        await repair(self.store, views, folded)
        new = entries[-1].entry_id
        write = BatchWrite(
            views=[views[x] for x in touched if x in folded.changed],
            after=after,
            new=new,
            skipped=folded.skipped,
            feed=feed_records(loaded, entries, views, trail) if self.feed else [],
            stored=loaded,
        )
        try:
            await self._write(ns, write)
        except CommitConflict:
            self._cache.forget(partition)
            return 0
        self._held[partition] = new
        self._cache.keep(partition, views.values())
        self.stats.batches += 1
        self.stats.events += folded.events
        self.stats.skipped += folded.skipped
        self.stats.gaps += folded.gaps
        if folded.skipped:
            log.warning("partition %d: skipped %d undecodable entries", partition, folded.skipped)
        return len(entries)

    async def _load(self, ns: Namespace, execution_ids: Sequence[str]) -> dict[str, ExecutionView]:
        """The stored views of ``execution_ids`` (those that have one): from this projector's
        memory where it committed them, the others read in one round trip."""
        views = self._cache.take(ns.partition, execution_ids)
        missing = [xid for xid in execution_ids if xid not in views]
        self.stats.views_remembered += len(views)
        self.stats.views_read += len(missing)
        meters.PROJECTOR_VIEWS.labels("memory").inc(len(views))
        meters.PROJECTOR_VIEWS.labels("redis").inc(len(missing))
        if not missing:
            return views
        raws = await stored_views(self.redis, ns, missing)
        for xid, raw in zip(missing, raws, strict=True):
            if raw is not None:
                try:
                    views[xid] = decode_view(raw)
                except ValueError:
                    # A view we cannot read (an older shape): rebuilt from its stream by repair.
                    log.warning("unreadable view %s: refolding it", xid)
        return views

    async def _write(self, ns: Namespace, write: BatchWrite) -> None:
        """The one atomic write of a batch; CommitConflict when the checkpoint moved."""
        ttl = self.runtime.settings.stream_retention_ms
        keys, args = scripts.commit_args(
            ns, write.views, write.after, write.new, write.skipped, write.feed, ttl, write.stored
        )
        result = await self._commit(keys=keys, args=args)
        if int(result[0]) != 1:
            current = as_str(result[1])
            self.stats.conflicts += 1
            log.info(
                "partition %d: checkpoint moved to %s by another projector", ns.partition, current
            )
            self._held[ns.partition] = current
            raise CommitConflict(current)

    # -- version and leases -----------------------------------------------------------------------
    async def _sync_version(self) -> None:
        if self._fixed_version is not None:
            return
        version = await current_version(self.redis, self.store.keys)
        if version != self.version:
            if self.version:
                log.info("projection version %d -> %d", self.version, version)
            await self._give_back()
            self.version = version
            self._leases_checked = 0.0  # take the new namespace's partitions at once

    async def _maintain_leases(self, *, force: bool) -> None:
        """Every third of the lease (every second at most, so a join is seen soon): announce this
        projector, renew the leases it holds, give back those outside its share of the partitions
        (projections.membership) and take the free ones inside it. ``force`` (run_until_idle,
        which must drain every partition) checks at once, takes any free partition, inside its
        share or not, and gives none back."""
        lease_ms = self.runtime.settings.lease_ms
        now = time.monotonic()
        if not force and now - self._leases_checked < min(lease_ms / 3000, _CHECK_MAX_S):
            return
        self._leases_checked = now
        mine = set(self.partitions)
        if self._member:
            members = await membership.announce(
                self.redis, self.store.keys, self.projector_id, int(time.time() * 1000), lease_ms
            )
            mine &= set(membership.share(self.store.partitions, members, self.projector_id))
        for p in list(self._held):
            ns = self.ns(p)
            if p not in mine and not force:
                await self._release(keys=[ns.lease], args=[self.projector_id])
                del self._held[p]
                self._cache.forget(p)
                self.stats.handed_over += 1
                log.info("partition %d: handed over (outside this projector's share)", p)
            elif int(await self._renew(keys=[ns.lease], args=[self.projector_id, lease_ms])) != 1:
                log.info("partition %d: lease lost", p)
                del self._held[p]
                self._cache.forget(p)
        for p in self.partitions:
            if p in self._held or (p not in mine and not force):
                continue
            ns = self.ns(p)
            if await self.redis.set(ns.lease, self.projector_id, nx=True, px=lease_ms):
                self._cache.forget(p)  # others may have written its views since we last held it
                self._held[p] = await self._read_ckpt(ns)

    async def _read_ckpt(self, ns: Namespace) -> str:
        raw = await self.redis.get(ns.ckpt)
        return as_str(raw) if raw is not None else "0-0"

    async def _release_all(self) -> None:
        """Goodbye: leave the members and give every lease back (a clean stop)."""
        if self._member:
            with anyio.CancelScope(shield=True):
                try:
                    await membership.withdraw(self.redis, self.store.keys, self.projector_id)
                except Exception as exc:  # shutting down: the announcement runs out on its own
                    log.debug("withdrawing from the members failed: %s", exc)
        await self._give_back()

    async def _give_back(self) -> None:
        """Give every lease back (a clean stop, or a switch to another projection version)."""
        self._cache.clear()
        if not self._held:
            return
        held, self._held = list(self._held), {}
        with anyio.CancelScope(shield=True):
            for p in held:
                try:
                    await self._release(keys=[self.ns(p).lease], args=[self.projector_id])
                except Exception as exc:  # shutting down: the lease expires on its own
                    log.debug("release of partition %d failed: %s", p, exc)
