"""Finished views at rest: packed once their hot window has passed, evicted past the view
retention. Both run in the archiver role (api.cli.archive), on the live projection version.

Packing: the view of an execution finished longer ago than ``CLIPSTREAM_HOT_SECONDS`` is
rewritten as one zstd frame of its JSON (``projections.views.pack_view``; every reader decodes
both forms), only if it is still what was read (compare-and-set). A finished view is never
written again by the projector (no event follows a terminal one), so what a finished execution
keeps in Redis shrinks from about 1.5 KB of JSON to about 0.6 KB. Each partition keeps a
watermark (``{ns}:packed``: the created_at through which every view was looked at) so a sweep only
reads what is new; views still running at the watermark wait in ``{ns}:unpacked``.

Eviction (``CLIPSTREAM_VIEW_RETENTION_SECONDS``, off by default, only with an archive): the views
of executions finished longer ago than it are deleted with their index entries. An evicted
execution is still whole in the log: ``GET /v1/executions/{id}`` folds it from the archive on
demand (projections.queries, engine.archive.reader: slower, still correct). It no longer appears
in the owner's or reporter's lists.
"""

from __future__ import annotations

import logging

import anyio
from redis.exceptions import RedisError

from engine.clock import now_ms
from engine.connection import as_str
from engine.runtime import Runtime
from projections.namespace import Namespace, current_version, stored_views, valid_name
from projections.views import ExecutionView, decode_view, is_active, is_packed, pack_view

log = logging.getLogger("clipstream.retention")

BATCH = 500
INTERVAL_S = 30.0

# Replace a view by its packed form only if it is still the one read.
# KEYS[1] view  ARGV[1] the view as read  ARGV[2] packed  -> 1 packed, 0 it changed meanwhile
_PACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# Evict one partition's views: delete each view and take it out of its indexes, all in one slot,
# only if the view is still the one read (compare-and-set, as _PACK: an execution retried since
# is running again, and the projector writes a running view's indexes only when they change).
# KEYS[1] all-executions zset  KEYS[2] views waiting to be packed  then per view 4 keys: view,
# owner zset, reporter zset (or the view key again), runs zset (or the view key again)
# ARGV: per view its execution id and the view as read, in the same order  -> how many evicted
_EVICT = """
local k, evicted = 3, 0
for i = 1, #ARGV, 2 do
  local xid = ARGV[i]
  if redis.call('GET', KEYS[k]) == ARGV[i + 1] then
    redis.call('DEL', KEYS[k])
    redis.call('ZREM', KEYS[1], xid)
    redis.call('ZREM', KEYS[2], xid)
    redis.call('ZREM', KEYS[k + 1], xid)
    if KEYS[k + 2] ~= KEYS[k] then redis.call('ZREM', KEYS[k + 2], xid) end
    if KEYS[k + 3] ~= KEYS[k] then redis.call('ZREM', KEYS[k + 3], xid) end
    evicted = evicted + 1
  end
  k = k + 4
end
return evicted
"""


class ViewRetention:
    """Packs finished views past the hot window and evicts those past the view retention:
    ``run(stop)`` in the archiver role, ``sweep()`` for tests."""

    def __init__(self, runtime: Runtime, *, interval_s: float | None = None) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        settings = runtime.settings
        self.hot_ms = settings.hot_ms
        self.retention_ms = settings.view_retention_seconds * 1000 if runtime.archive else 0
        windows = [w for w in (settings.hot_seconds, settings.view_retention_seconds) if w > 0]
        # A sweep every quarter of the shorter window (30 s at most).
        self.interval_s = interval_s or min(INTERVAL_S, max(1.0, min(windows, default=4) / 4))
        self.packed = 0
        self.evicted = 0
        self._pack = self.redis.register_script(_PACK)
        self._evict = self.redis.register_script(_EVICT)

    async def run(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except (RedisError, OSError) as exc:
                log.warning("view retention sweep failed, retrying: %s", exc)
            with anyio.move_on_after(self.interval_s):
                await stop.wait()

    async def sweep(self) -> int:
        """Pack, then evict, in every partition of the live version; how many were evicted."""
        keys = self.runtime.store.keys
        version = await current_version(self.redis, keys)
        now = now_ms()
        evicted = 0
        for p in self.runtime.store.partitions:
            ns = Namespace(keys, p, version)
            await self._pack_partition(ns, now - self.hot_ms)
            if self.retention_ms > 0:
                evicted += await self._evict_partition(ns, now - self.retention_ms)
        self.evicted += evicted
        return evicted

    # -- packing ----------------------------------------------------------------------------------
    async def _pack_partition(self, ns: Namespace, cutoff: int) -> None:
        """Pack the views finished before ``cutoff`` that were created after the watermark, and
        those waiting in ``{ns}:unpacked``; move the watermark."""
        waiting = [as_str(x) for x in await self.redis.zrange(ns.unpacked, 0, BATCH - 1)]
        if waiting:
            await self._pack_some(ns, waiting, cutoff)
        while True:
            mark = await self.redis.get(ns.packed)
            low = f"({as_str(mark)}" if mark is not None else "-inf"
            rows = await self.redis.zrangebyscore(
                ns.all, low, cutoff, start=0, num=BATCH, withscores=True
            )
            if not rows:
                return
            top = int(rows[-1][1])
            ids = {as_str(m) for m, _ in rows}
            # Members sharing the last score may straddle the batch: take them all.
            ids |= {as_str(m) for m in await self.redis.zrangebyscore(ns.all, top, top)}
            await self._pack_some(ns, sorted(ids), cutoff)
            await self.redis.set(ns.packed, top)
            if len(rows) < BATCH:
                return

    async def _pack_some(self, ns: Namespace, execution_ids: list[str], cutoff: int) -> None:
        raws = await stored_views(self.redis, ns, execution_ids)
        later: dict[str, int] = {}
        done: list[str] = []
        for xid, raw in zip(execution_ids, raws, strict=True):
            if raw is None or is_packed(raw):
                done.append(xid)
                continue
            view = decode_view(raw)
            if is_active(view) or view.finished_at is None or view.finished_at >= cutoff:
                later[xid] = view.created_at
                continue
            if int(await self._pack(keys=[ns.view(xid)], args=[raw, pack_view(raw)])) == 1:
                self.packed += 1
            done.append(xid)
        if later:
            await self.redis.zadd(ns.unpacked, later)
        if done:
            await self.redis.zrem(ns.unpacked, *done)

    # -- eviction ---------------------------------------------------------------------------------
    async def _evict_partition(self, ns: Namespace, cutoff: int) -> int:
        evicted = offset = 0
        while True:
            ids = await self.redis.zrangebyscore(ns.all, "-inf", cutoff, start=offset, num=BATCH)
            if not ids:
                return evicted
            old = await self._finished_before(ns, [as_str(x) for x in ids], cutoff)
            gone = 0
            if old:
                args = [a for view, raw in old for a in (view.execution_id, raw)]
                keys = _evict_keys(ns, [view for view, _ in old])
                gone = int(await self._evict(keys=keys, args=args))
                evicted += gone
            offset += len(ids) - gone  # the evicted left the index; the rest stay
            if len(ids) < BATCH:
                return evicted

    async def _finished_before(
        self, ns: Namespace, execution_ids: list[str], cutoff: int
    ) -> list[tuple[ExecutionView, bytes]]:
        """The views among ``execution_ids`` finished before ``cutoff``, each with its stored
        bytes (what the eviction compares with)."""
        views = []
        for raw in await stored_views(self.redis, ns, execution_ids):
            if raw is None:
                continue
            view = decode_view(raw)
            if not is_active(view) and view.finished_at is not None and view.finished_at < cutoff:
                views.append((view, raw))
        return views


def _evict_keys(ns: Namespace, views: list[ExecutionView]) -> list[str]:
    keys = [ns.all, ns.unpacked]
    for view in views:
        own = ns.view(view.execution_id)
        reporter = view.reporter_id
        has_reporter = reporter is not None and valid_name(reporter)
        keys += [
            own,
            ns.owned(view.owner),
            ns.reporter(view.owner, reporter) if has_reporter and reporter else own,
            ns.runs(view.owner, reporter) if has_reporter and reporter else own,
        ]
    return keys
