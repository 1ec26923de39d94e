"""Blobs: large step outputs stored once under their content hash, in their owner's partition.

A step's blob is usually written by its append (``AppendOp.blobs``, engine.log.event_log), so an
event never names a blob that is not stored; :meth:`Blobs.put` is for content stored on its own.
"""

from __future__ import annotations

from engine.log.context import StoreContext


class Blobs:
    """Content-addressed blobs: ``{prefix}{{pN}}:blob:{sha256}`` (engine.log.keys)."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    async def put(self, partition: int, sha256: str, data: bytes) -> None:
        """Store a large output once under its content hash (a second put is a no-op)."""
        await self._ctx.redis.set(self._ctx.keys.blob(partition, sha256), data, nx=True)

    async def get(self, partition: int, sha256: str) -> bytes | None:
        """The blob stored under ``sha256`` in ``partition`` (None when there is none)."""
        data = await self._ctx.redis.get(self._ctx.keys.blob(partition, sha256))
        return bytes(data) if data is not None else None
