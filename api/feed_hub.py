"""The realtime hub: one per API process, it tails the feed streams (``projections.feed``) of the
owners that have subscribers and fans each entry out to them; ``api.realtime`` serves the
subscriptions over WebSocket and SSE.

Each entry is rendered once (``api.render.feed_event``) whatever the number of subscribers, and
offered to each subscriber's bounded buffer without waiting: a full buffer closes that subscriber
(``SLOW_CONSUMER``), who resumes with its last cursor (a stream entry id). A subscription without
a cursor, or with one older than what the feed keeps, starts with a ``reset`` snapshot of the
owner's active executions.
"""

from __future__ import annotations

import heapq
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from redis.exceptions import RedisError, ResponseError

from api import render
from api.loop_probe import LoopProbe, Samples
from api.render import Message
from api.sessions import Revocations, Session, sessions_after
from engine import clock
from engine.connection import as_str
from engine.runtime import Runtime
from projections.feed import owner_feed_key, read_entry
from projections.queries import Queries

log = logging.getLogger("clipstream.feed")

SLOW_CONSUMER = "slow consumer; resume with your cursor"
SESSION_EXPIRED = "session expired"
SESSION_REVOKED = "session revoked"
BUFFER = 1_000  # messages a subscriber may fall behind before it is closed
HISTORY_PAGE = 500
_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")


class FeedClosed(Exception):
    """The hub closed this subscription (``reason`` says why); the client resumes with its last
    cursor."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cursor_key(cursor: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


def valid_cursor(cursor: str) -> bool:
    """A cursor of the shape this feed hands out (a stream entry id)."""
    return _CURSOR.match(cursor) is not None


def event_message(entry_id: str, fields: Mapping[bytes, bytes]) -> Message:
    """The ``event`` message of one feed entry (as XRANGE/XREAD give it), rendered."""
    return render.feed_event(read_entry(entry_id, fields))


class Subscription:
    """One client's view of its owner's feed: :meth:`receive` gives the history after the
    cursor (or a ``reset``), then the live tail, deduplicated by cursor."""

    def __init__(
        self, hub: FeedHub, owner: str, key: str, buffer: int, session: Session | None = None
    ) -> None:
        self.hub, self.owner, self.key = hub, owner, key
        self.session = session  # None: an API key (SSE), which no expiry or revocation ends
        self._send, self._recv = anyio.create_memory_object_stream[Message](buffer)
        self.reason: str | None = None
        self.closed = anyio.Event()
        self.last = (0, 0)  # the newest cursor handed out: older live entries are duplicates
        self.live = "0-0"  # where the live tail starts (history is read up to here)
        self._pending: list[Message] = []  # a reset or a page of history, handed out first
        self._history_after: str | None = None  # more history to page through after this id

    # called by the hub (no await: the fan-out never waits for a client)
    def offer(self, message: Message) -> None:
        if self.reason is not None:
            return
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            self.close(SLOW_CONSUMER)

    def close(self, reason: str) -> None:
        """End the subscription: ``receive`` raises :class:`FeedClosed` from now on."""
        if self.reason is None:
            self.reason = reason
            self._send.close()
            self._recv.close()  # whatever was buffered is dropped: the client resumes by cursor
            self.closed.set()
            self.hub.unsubscribe(self)

    async def receive(self) -> Message:
        """The next message; FeedClosed once the hub closed the subscription."""
        while True:
            if self.reason is not None:
                raise FeedClosed(self.reason)
            if not self._pending and self._history_after is not None:
                await self._next_page()
            if self._pending:
                message = self._pending.pop(0)
            else:
                try:
                    message = await self._recv.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    raise FeedClosed(self.reason or "closed") from None
            cursor = cursor_key(message["cursor"])
            if message["type"] == "event" and cursor <= self.last:
                continue  # already handed out by the history read
            self.last = max(self.last, cursor)
            return message

    async def _next_page(self) -> None:
        after = self._history_after
        assert after is not None
        rows = await self.hub.redis.xrange(self.key, f"({after}", self.live, count=HISTORY_PAGE)
        self._pending = [event_message(as_str(i), f) for i, f in rows]
        self._history_after = as_str(rows[-1][0]) if len(rows) == HISTORY_PAGE else None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except FeedClosed:
            raise StopAsyncIteration from None


@dataclass(slots=True)
class _Group:
    """The feed keys of one partition, tailed by one reader with one XREAD (one hash slot)."""

    positions: dict[str, str]  # key -> the last entry id read
    wake: anyio.Event
    scope: anyio.CancelScope | None = None


class FeedHub:
    """Tails the feeds of the owners that have subscribers, for one API process.

    ``run()`` (a task for the life of the app) starts one reader per partition, each tailing its
    partition's subscribed feeds with one XREAD (one hash slot, so the same on a cluster). One XREAD
    over every key would be fewer connections, but with a thousand owners building that one command
    costs redis-py milliseconds per read and every event waits for it. A reader blocks at most
    ``block_ms`` and is woken at once when a new owner's key joins its group. Fan-out is
    ``send_nowait`` into each subscriber's bounded buffer: a full buffer closes that subscriber,
    never waits for it.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        buffer: int = BUFFER,
        block_ms: int = 1_000,
        snapshot_limit: int = 100,
    ) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.keys = runtime.store.keys
        self.buffer = buffer
        self.block_ms = block_ms
        self.snapshot_limit = snapshot_limit
        self._groups = [_Group({}, anyio.Event()) for _ in runtime.store.partitions]
        self._subscribers: dict[str, set[Subscription]] = {}
        # Sessions by the second they expire in, and a heap of those seconds (api.sessions).
        self._expiring: dict[int, set[Subscription]] = {}
        self._seconds: list[int] = []
        self.sweep_s = 1.0  # how often sessions that expired are closed
        # The server's side of each delivery (feed entry -> write returned) and the loop's health.
        self.deliveries = Samples()
        self.probe = LoopProbe()
        self.running = False

    def _group(self, key_partition: int) -> _Group:
        return self._groups[key_partition]

    async def run(self) -> None:
        """Read until cancelled."""
        self.running = True
        try:
            async with anyio.create_task_group() as tg:
                for group in self._groups:
                    tg.start_soon(self._reader, group)
                tg.start_soon(Revocations(self.runtime, self.revoke).run)
                tg.start_soon(self._sweep_expired)
                tg.start_soon(self.probe.run)
        finally:
            self.running = False
            for subs in list(self._subscribers.values()):
                for sub in list(subs):
                    sub.close("server shutting down")

    async def _reader(self, group: _Group) -> None:
        failures = 0
        while True:
            if not group.positions:
                await group.wake.wait()
                group.wake = anyio.Event()
                continue
            streams = dict(group.positions)
            reply: Any = None
            with anyio.CancelScope() as scope:
                group.scope = scope
                try:
                    reply = await self.redis.xread(streams, count=HISTORY_PAGE, block=self.block_ms)
                    failures = 0
                except (RedisError, OSError) as exc:
                    failures += 1
                    log.warning("feed read failed, retrying: %s", exc)
                    await anyio.sleep(min(0.05 * 2**failures, 1.0))
            group.scope = None
            if scope.cancelled_caught or not reply:
                continue  # a key joined (re-read with it), or nothing new within the block
            self._dispatch(group, reply)

    def _dispatch(self, group: _Group, reply: Any) -> None:
        items = reply.items() if isinstance(reply, dict) else reply
        for raw_key, rows in items:
            key = as_str(raw_key)
            if key not in group.positions:
                continue
            if rows and isinstance(rows[0], list) and len(rows) == 1:
                rows = rows[0]  # RESP3 shape
            subs = self._subscribers.get(key, set())
            for entry_id, fields in rows:
                message = event_message(as_str(entry_id), fields)
                group.positions[key] = message["cursor"]
                for sub in list(subs):
                    sub.offer(message)

    def delivered(self, cursor: str) -> None:
        """Record that an event message of the feed entry ``cursor`` was just written."""
        self.deliveries.add(time.time() * 1000 - int(cursor.partition("-")[0]))

    # -- sessions that end (api.sessions) -------------------------------------------------------
    def revoke(self, account: str, after_ms: int) -> None:
        """Close ``account``'s subscriptions of sessions issued at or before ``after_ms``."""
        for sub in list(self._subscribers.get(owner_feed_key(self.keys, account), ())):
            if sub.session is not None and sub.session.revoked_by(after_ms):
                sub.close(SESSION_REVOKED)

    async def _sweep_expired(self) -> None:
        """Close each subscription whose session token expired (one timer for the process)."""
        while True:
            await anyio.sleep(self.sweep_s)
            now_s = clock.now_ms() / 1000
            while self._seconds and self._seconds[0] <= now_s:
                for sub in list(self._expiring.pop(heapq.heappop(self._seconds), ())):
                    sub.close(SESSION_EXPIRED)

    def _expires(self, sub: Subscription, session: Session) -> None:
        second = -(-session.expires_ms // 1000)
        bucket = self._expiring.get(second)
        if bucket is None:
            bucket = self._expiring[second] = set()
            heapq.heappush(self._seconds, second)
            if len(self._seconds) > 2 * len(self._expiring) + 1_024:  # seconds left by closes
                self._seconds = sorted(self._expiring)
        bucket.add(sub)

    # -- subscribing ------------------------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(
        self, owner: str, since: str | None, session: Session | None = None
    ) -> AsyncIterator[Subscription]:
        """A subscription to ``owner``'s feed after ``since`` (None: start with a ``reset``),
        ended when ``session`` expires or is revoked."""
        key = owner_feed_key(self.keys, owner)
        sub = Subscription(self, owner, key, self.buffer, session)
        try:
            await self._join(sub)
            if session is not None:
                self._expires(sub, session)
                # Read after joining: a revocation from now on reaches this subscription through
                # the revocations stream, one from before is in the account's record.
                if session.revoked_by(await sessions_after(self.runtime, owner)):
                    sub.close(SESSION_REVOKED)
            if since is None or not valid_cursor(since) or await self._trimmed(key, since):
                sub._pending = [await self._reset(owner, sub.live)]
            else:
                sub.last = cursor_key(since)
                if cursor_key(since) < cursor_key(sub.live):
                    sub._history_after = since
            yield sub
        finally:
            sub.close("unsubscribed")

    async def _join(self, sub: Subscription) -> None:
        """Register ``sub`` and fix where its live tail starts: the hub's position for the key
        (or the stream's last id when nobody tails it yet), taken before any history is read."""
        key = sub.key
        group = self._group(self.keys.partition(sub.owner))
        if key not in group.positions:
            newest = await self.redis.xrevrange(key, "+", "-", count=1)
            start = as_str(newest[0][0]) if newest else "0-0"
            if key not in group.positions:  # nobody joined it during the await
                group.positions[key] = start
                if group.scope is not None:
                    group.scope.cancel()  # re-read with the new key now, not after the block
                group.wake.set()
        sub.live = group.positions[key]
        self._subscribers.setdefault(key, set()).add(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.session is not None:
            second = -(-sub.session.expires_ms // 1000)
            bucket = self._expiring.get(second)
            if bucket is not None:
                bucket.discard(sub)
                if not bucket:
                    del self._expiring[second]
        subs = self._subscribers.get(sub.key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subscribers[sub.key]
            self._group(self.keys.partition(sub.owner)).positions.pop(sub.key, None)

    async def _trimmed(self, key: str, since: str) -> bool:
        """True when entries after ``since`` may be gone (trimmed, or the cursor is not ours)."""
        try:
            info = await self.redis.xinfo_stream(key)
        except ResponseError:
            return since != "0-0"  # no feed at all: only the empty cursor is still valid
        deleted = as_str(info.get("max-deleted-entry-id") or b"0-0")
        last = as_str(info.get("last-generated-id") or b"0-0")
        after = cursor_key(since)
        if cursor_key(deleted) > after or after > cursor_key(last):
            return True
        # Servers that do not track the deleted id: anything removed, and the cursor before the
        # first entry kept, may hide a gap.
        first = info.get("first-entry")
        removed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
        if not removed:
            return False
        # Trimmed to nothing: whatever came after the cursor is gone.
        oldest_kept = cursor_key(as_str(first[0])) if first else cursor_key(last)
        return after < oldest_kept

    async def _reset(self, owner: str, cursor: str) -> Message:
        page = await Queries(self.runtime).list_executions(
            owner, active=True, limit=self.snapshot_limit, cursor=None
        )
        return render.feed_reset(cursor, page)
