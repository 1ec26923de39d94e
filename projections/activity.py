"""Executions accepted, done and in error over the last minutes, counted from the partition logs.

The operator console's rate chart. An :class:`Activity` lives in one API process: each time it is
asked (``GET /admin/overview``) it reads the partition logs past where it stopped, counts the
``ExecutionRequested``, ``ExecutionCompleted`` and ``ExecutionFailed``/``ExecutionCancelled``
entries into buckets of ``BUCKET_MS`` by the time in their stream id, and forgets buckets older
than ``WINDOW_MS``. Only each entry's tag is read (its first bytes), never the whole event.

Its cost is bounded: at most ``budget`` entries per partition per call. When the logs grow faster
than that, the counts lag behind and ``current_to`` says up to when they are complete. It starts
``WINDOW_MS`` back at its first call, so a console opened on a running system shows the past
minutes at once (what the archive has trimmed from the logs is not counted: the hot window keeps an
hour by default). Every API process counts on its own; they all read the same logs, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import anyio
from redis.exceptions import RedisError

from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import StoreUnavailable
from engine.log.entries import raw_entry_from_row
from engine.log.store import EventStore

BUCKET_MS = 10_000
WINDOW_MS = 10 * 60_000
PAGE = 2_000

# Which tags count as what.
KINDS = {
    "ExecutionRequested": "requested",
    "ExecutionCompleted": "done",
    "ExecutionFailed": "error",
    "ExecutionCancelled": "error",
}


@dataclass(slots=True)
class Bucket:
    """Counts of one ``BUCKET_MS`` starting at ``start`` (ms)."""

    start: int
    requested: int = 0
    done: int = 0
    error: int = 0


def bucket_of(ms: int) -> int:
    return ms - ms % BUCKET_MS


def count(buckets: dict[int, Bucket], entries: Iterable[tuple[int, str | None]]) -> None:
    """Add ``(time ms, event tag)`` pairs to ``buckets`` (pure)."""
    for ms, tag in entries:
        kind = KINDS.get(tag or "")
        if kind is None:
            continue
        start = bucket_of(ms)
        bucket = buckets.get(start)
        if bucket is None:
            bucket = buckets[start] = Bucket(start)
        setattr(bucket, kind, getattr(bucket, kind) + 1)


def series(buckets: dict[int, Bucket], now: int, window_ms: int = WINDOW_MS) -> list[Bucket]:
    """Every bucket of the last ``window_ms`` up to ``now``, oldest first, empty ones included."""
    last = bucket_of(now)
    first = last - (window_ms // BUCKET_MS - 1) * BUCKET_MS
    return [buckets.get(start) or Bucket(start) for start in range(first, last + 1, BUCKET_MS)]


class Activity:
    """The counts of one process (see the module docstring)."""

    def __init__(self, budget: int = 20_000) -> None:
        self.budget = budget
        self.buckets: dict[int, Bucket] = {}
        self.cursors: dict[int, str] = {}
        self.current_to = 0  # counts are complete up to this time (ms)
        self._lock = anyio.Lock()

    async def refresh(self, store: EventStore, now: int | None = None) -> None:
        """Count what the logs gained since the last call (up to ``budget`` per partition)."""
        now = now_ms() if now is None else now
        async with self._lock:
            complete = now
            for p in store.partitions:
                cursor = self.cursors.get(p) or f"{now - WINDOW_MS}-0"
                cursor, caught_up = await self._read(store, p, cursor)
                self.cursors[p] = cursor
                if not caught_up:
                    complete = min(complete, int(cursor.split("-", 1)[0]))
            self.current_to = complete
            oldest = bucket_of(now) - WINDOW_MS
            for start in [s for s in self.buckets if s < oldest]:
                del self.buckets[start]

    async def _read(self, store: EventStore, partition: int, cursor: str) -> tuple[str, bool]:
        log = store.keys.log(partition)
        read = 0
        while read < self.budget:
            try:
                rows = await store.redis.xrange(log, f"({cursor}", "+", count=PAGE)
            except RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc
            if not rows:
                return cursor, True
            pairs = []
            for entry_id, fields in rows:
                raw = raw_entry_from_row(entry_id, fields)
                pairs.append((int(raw.entry_id.split("-", 1)[0]), raw.event_type))
            count(self.buckets, pairs)
            cursor = as_str(rows[-1][0])
            read += len(rows)
            if len(rows) < PAGE:
                return cursor, True
        return cursor, False

    def points(self, now: int | None = None) -> list[Bucket]:
        """The last ``WINDOW_MS`` as buckets, oldest first."""
        return series(self.buckets, now_ms() if now is None else now)
