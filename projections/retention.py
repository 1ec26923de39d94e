"""View retention (``CLIPSTREAM_VIEW_RETENTION_SECONDS``, off by default): the views of
executions finished longer ago than it are evicted from the live projection, with their index
entries, so Redis keeps only recent views.

An evicted execution is still whole in the log: ``GET /v1/executions/{id}`` folds it from the
archive on demand (projections.queries, engine.archive.reader: slower, still correct). It no longer
appears in the owner's or reporter's lists. The sweep runs in the archiver role (api.cli.archive),
only where an archive is configured: without one an evicted view could not be read back.
"""

from __future__ import annotations

import logging

import anyio
from redis.exceptions import RedisError

from engine.clock import now_ms
from engine.connection import as_str
from engine.runtime import Runtime
from projections.namespace import Namespace, current_version, valid_name
from projections.views import ExecutionView, decode_view, is_active

log = logging.getLogger("clipstream.retention")

BATCH = 500
INTERVAL_S = 30.0

# Evict one partition's views: delete each view and take it out of its indexes, all in one slot.
# KEYS[1] all-executions zset  then per view 4 keys: view, owner zset, reporter zset (or the view
# key again), runs zset (or the view key again)  ARGV: the execution ids, in the same order
_EVICT = """
local k = 2
for i = 1, #ARGV do
  redis.call('DEL', KEYS[k])
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[k + 1], ARGV[i])
  if KEYS[k + 2] ~= KEYS[k] then redis.call('ZREM', KEYS[k + 2], ARGV[i]) end
  if KEYS[k + 3] ~= KEYS[k] then redis.call('ZREM', KEYS[k + 3], ARGV[i]) end
  k = k + 4
end
return #ARGV
"""


class ViewRetention:
    """Evicts old finished views: ``run(stop)`` in the archiver role, ``sweep()`` for tests."""

    def __init__(self, runtime: Runtime, *, interval_s: float = INTERVAL_S) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.interval_s = interval_s
        self.retention_ms = runtime.settings.view_retention_seconds * 1000
        self.evicted = 0
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
        """Evict every view finished before now minus the retention; how many were evicted."""
        if self.retention_ms <= 0:
            return 0
        keys = self.runtime.store.keys
        version = await current_version(self.redis, keys)
        cutoff = now_ms() - self.retention_ms
        evicted = 0
        for p in self.runtime.store.partitions:
            ns = Namespace(keys, p, version)
            offset = 0
            while True:
                ids = await self.redis.zrangebyscore(
                    ns.all, "-inf", cutoff, start=offset, num=BATCH
                )
                if not ids:
                    break
                old = await self._finished_before(ns, [as_str(x) for x in ids], cutoff)
                if old:
                    await self._evict(keys=_evict_keys(ns, old), args=[v.execution_id for v in old])
                    evicted += len(old)
                offset += len(ids) - len(old)  # the evicted left the index; the rest stay
                if len(ids) < BATCH:
                    break
        self.evicted += evicted
        return evicted

    async def _finished_before(
        self, ns: Namespace, execution_ids: list[str], cutoff: int
    ) -> list[ExecutionView]:
        pipe = self.redis.pipeline(transaction=False)
        for xid in execution_ids:
            pipe.get(ns.view(xid))
        views = []
        for raw in await pipe.execute():
            if raw is None:
                continue
            view = decode_view(raw)
            if not is_active(view) and view.finished_at is not None and view.finished_at < cutoff:
                views.append(view)
        return views


def _evict_keys(ns: Namespace, views: list[ExecutionView]) -> list[str]:
    keys = [ns.all]
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
