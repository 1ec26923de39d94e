"""The event store: one deployment's streams, and its parts by responsibility.

:class:`EventStore` opens the store (the partition count, fixed when the store is created, and the
worker group on every log and work stream) and hands out its parts, which share one
:class:`engine.log.context.StoreContext` (client, settings, key names):

    store.log        engine.log.event_log.EventLog   expected-version appends (with their blobs,
                                                     money moves and lease ends), histories, the
                                                     partition logs read by range
    store.admission  engine.log.admission.Admission  requests: fee, idempotency, seq 1, the ready
                                                     list; the guarded schedule forms
    store.leases     engine.log.leases.Leases        dispatch, renew, takeover, release, dead
                                                     letters, the worker group on the logs
    store.blobs      engine.log.blobs.Blobs          large outputs stored once by content hash
    store.revival    engine.log.revival.Revival      a dead letter retried: queued again, once

Only these parts issue stream commands; each runs its own Lua scripts (kept at the end of its
module).
"""

from __future__ import annotations

from redis.exceptions import RedisError, ResponseError

from engine.connection import RedisClient
from engine.errors import ConfigError, StoreError, StoreUnavailable
from engine.log.admission import Admission
from engine.log.blobs import Blobs
from engine.log.context import StoreContext
from engine.log.event_log import EventLog
from engine.log.keys import WORKER_GROUP, Keys
from engine.log.leases import Leases
from engine.log.revival import Revival
from engine.settings import Settings


class EventStore:
    """One deployment's event store: :meth:`open` it, then use its parts."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._ctx = StoreContext(redis, settings, Keys(settings.prefix, settings.partitions))
        self.log = EventLog(self._ctx)
        self.admission = Admission(self._ctx)
        self.leases = Leases(self._ctx)
        self.blobs = Blobs(self._ctx)
        self.revival = Revival(self._ctx)

    @property
    def redis(self) -> RedisClient:
        """The Redis client the store runs on."""
        return self._ctx.redis

    @property
    def settings(self) -> Settings:
        """The settings the store was made with."""
        return self._ctx.settings

    @property
    def keys(self) -> Keys:
        """Every key name, with the partition count :meth:`open` settled."""
        return self._ctx.keys

    @property
    def partitions(self) -> range:
        """The store's partitions, ``0 … P-1``."""
        return range(self._ctx.keys.partitions)

    async def open(self) -> None:
        """Record (or read back) the partition count, create the worker group on every work
        stream, and drop the one older versions kept on the partition logs.

        The partition count is fixed when the store is first created; a process configured with
        another explicit count refuses to start rather than route owners to the wrong partition.
        """
        redis, settings = self.redis, self.settings
        try:
            await redis.hsetnx(self.keys.meta, "partitions", settings.partitions)
            stored = int(await redis.hget(self.keys.meta, "partitions") or 0)
        except RedisError as exc:
            raise StoreUnavailable(f"cannot reach Redis: {exc}") from exc
        if stored != settings.partitions:
            if settings.partitions_explicit:
                raise ConfigError(
                    f"CLIPSTREAM_PARTITIONS={settings.partitions} but this store was "
                    f"created with {stored} partitions; the count cannot change"
                )
            self._ctx.keys = Keys(settings.prefix, stored)
        for p in self.partitions:
            # The log is created with a group, as the work stream is, so that it exists from the
            # start (status and the archiver read it); workers read the logs through that group
            # until 2026-12-05, nothing does now, and left in place its position would hold the
            # log's trim floor forever: it is dropped again at once.
            for stream in (self.keys.log(p), self.keys.work(p)):
                try:
                    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise StoreError(str(exc)) from exc
            try:
                await redis.xgroup_destroy(self.keys.log(p), WORKER_GROUP)
            except ResponseError as exc:
                raise StoreError(str(exc)) from exc
