"""The realtime hub: one per API process, it tails the feed streams (``projections.feed``) of the
owners that have subscribers here and fans each entry out to them; ``api.realtime.endpoints``
serves the subscriptions over WebSocket and SSE.

Reading costs what the events cost, not what the subscribers are. Each partition's projector
commit that appends feed entries also appends one entry to the partition's *live* stream naming
the feeds it touched (``projections.feed``). One reader per partition blocks on that one key
(whatever the number of subscribed owners), and on a notification reads only the named feeds
that have subscribers here, from the hub's own position in each (so a missed or trimmed
notification delays, never loses: every ``sweep_ms`` the reader also reads every subscribed feed
from its position, which catches entries written without a notification). Several API
processes each read every notification of the partitions they tail, and each owner's feed only
for their own subscribers: Redis's load grows with the processes by one small read per
notification each.

Each event of an entry is rendered and encoded once (``api.realtime.subscription.Frame``)
whatever the number of subscribers, and offered to each subscription
(``api.realtime.subscription.Subscription``: its bounded queue, its history, its close reasons)
without waiting: a full queue closes that subscriber (``SLOW_CONSUMER``), who resumes with its
last cursor (a stream entry id: ``projections.feed`` says which an event carries). A
subscription without a cursor, or with one older than what the feed keeps, starts with a
``reset`` snapshot of the owner's active executions.

A subscription of a session token ends when the token expires (``SESSION_EXPIRED``: one timer
for the process, by the second) or when the account's sessions are revoked
(``SESSION_REVOKED``: api.sessions, pushed to every process); one of an API key (SSE) when that
key is revoked (``KEY_REVOKED``, pushed the same way).
"""

from __future__ import annotations

import gc
import heapq
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from redis.exceptions import RedisError, ResponseError

from api import render
from api.loop_probe import LoopProbe, Samples
from api.realtime.rounds import Round
from api.realtime.subscription import (
    HISTORY_PAGE,
    KEY_REVOKED,
    PING,
    SESSION_EXPIRED,
    SESSION_REVOKED,
    Frame,
    Subscription,
    cursor_key,
    event_frames,
    valid_cursor,
)
from api.render import Message
from api.sessions import Revocations, Session, sessions_after
from engine import clock
from engine.connection import as_str
from engine.runtime import Runtime
from projections.feed import before, live_feeds, live_key, owner_feed_key
from projections.queries import Queries

log = logging.getLogger("clipstream.feed")

BUFFER = 1_000  # messages a subscriber may fall behind before it is closed
PING_S = 15.0  # an idle subscriber's ping, every one to two of these
SWEEP_MS = 5_000  # how often every subscribed feed is read, notified or not
READ_KEYS = 1_000  # feeds named in one read


class _Partition:
    """What one partition's reader tails: the live stream, and the subscribed feeds' positions."""

    __slots__ = ("dirty", "live", "live_key", "positions", "scope", "swept", "wake")

    def __init__(self, live_key: str) -> None:
        self.live_key = live_key
        self.live = "$"  # the last live entry read ("$": not read yet)
        self.positions: dict[str, str] = {}  # feed key -> the last entry id read
        self.dirty: set[str] = set()  # feeds to read now (a notification, a join, the sweep)
        self.wake = anyio.Event()
        self.scope: anyio.CancelScope | None = None
        self.swept = 0.0  # monotonic time of the last sweep


class FeedHub:
    """Tails the feeds of the owners that have subscribers, for one API process.

    ``run()`` (a task for the life of the app) starts one reader per partition (one hash slot
    each, so the same on a cluster), the revocations reader, the expiry timer and the loop probe.
    A reader with no subscribed feed sleeps until one joins; one whose feed joined is woken at
    once to read it.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        buffer: int = BUFFER,
        block_ms: int = 1_000,
        snapshot_limit: int = 100,
        sweep_ms: int = SWEEP_MS,
    ) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.keys = runtime.store.keys
        self.buffer = buffer
        self.block_ms = block_ms
        self.sweep_ms = sweep_ms
        self.snapshot_limit = snapshot_limit
        self._partitions = [_Partition(live_key(self.keys, p)) for p in runtime.store.partitions]
        self._subscribers: dict[str, set[Subscription]] = {}
        # Sessions by the second they expire in, and a heap of those seconds (api.sessions).
        self._expiring: dict[int, set[Subscription]] = {}
        self._seconds: list[int] = []
        self.sweep_s = 1.0  # how often sessions that expired are closed
        self.ping_s = PING_S  # an idle subscriber gets a ping within one to two of these
        self._idle_round: Round[Subscription] = Round()  # api.realtime.rounds: a slice per tick
        self.freeze_every = 0  # freeze the collector's view every this many joins (0: never)
        # The server's side of each delivery (feed entry -> write returned) and the loop's health.
        self.deliveries = Samples()
        self.probe = LoopProbe()
        self.running = False

    @property
    def subscriptions(self) -> int:
        """Subscriptions held now."""
        return sum(len(subs) for subs in self._subscribers.values())

    async def run(self) -> None:
        """Read until cancelled."""
        self.running = True
        try:
            async with anyio.create_task_group() as tg:
                for part in self._partitions:
                    tg.start_soon(self._reader, part)
                tg.start_soon(Revocations(self.runtime, self.revoke, self.revoke_key).run)
                tg.start_soon(self._sweep_expired)
                tg.start_soon(self._ping_idle)
                tg.start_soon(self.probe.run)
        finally:
            self.running = False
            for subs in list(self._subscribers.values()):
                for sub in list(subs):
                    sub.close("server shutting down")

    # -- reading ----------------------------------------------------------------------------------
    async def _reader(self, part: _Partition) -> None:
        failures = 0
        while True:
            if not part.positions:
                await part.wake.wait()
                part.wake = anyio.Event()
                continue
            try:
                if part.live == "$":
                    newest = await self.redis.xrevrange(part.live_key, "+", "-", count=1)
                    part.live = as_str(newest[0][0]) if newest else "0-0"
                    part.dirty.update(part.positions)  # whatever came before is read below
                now = time.monotonic()
                if (now - part.swept) * 1000 >= self.sweep_ms:
                    part.dirty.update(part.positions)
                    part.swept = now
                if not part.dirty:
                    await self._wait_notification(part)
                await self._read_feeds(part)
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("feed read failed, retrying: %s", exc)
                part.dirty.update(part.positions)  # read everything once Redis is back
                await anyio.sleep(min(0.05 * 2**failures, 1.0))

    async def _wait_notification(self, part: _Partition) -> None:
        """Block on the partition's live stream until a notification (or a join, or the time
        of the next sweep); mark the feeds it names that have subscribers here."""
        left_ms = self.sweep_ms - (time.monotonic() - part.swept) * 1000
        block = max(1, min(self.block_ms, int(left_ms)))
        reply: Any = None
        with anyio.CancelScope() as scope:
            part.scope = scope
            reply = await self.redis.xread({part.live_key: part.live}, count=1_000, block=block)
        part.scope = None
        for _key, rows in _streams(reply):
            for entry_id, fields in rows:
                part.live = as_str(entry_id)
                for feed in live_feeds(fields):
                    if feed in part.positions:
                        part.dirty.add(feed)

    async def _read_feeds(self, part: _Partition) -> None:
        """Read the dirty feeds from the hub's positions and fan their entries out."""
        while part.dirty:
            batch: dict[str, str] = {}
            while part.dirty and len(batch) < READ_KEYS:
                key = part.dirty.pop()
                position = part.positions.get(key)
                if position is not None:
                    batch[key] = position
            if not batch:
                return
            try:
                reply = await self.redis.xread(batch, count=HISTORY_PAGE)
            except BaseException:
                part.dirty.update(batch)
                raise
            for raw_key, rows in _streams(reply):
                key = as_str(raw_key)
                if rows and len(rows) == HISTORY_PAGE:
                    part.dirty.add(key)  # a full page: there may be more
                self._dispatch(part, key, rows)

    def _dispatch(self, part: _Partition, key: str, rows: list[Any]) -> None:
        subs = self._subscribers.get(key, set())
        for entry_id, fields in rows:
            if key not in part.positions:
                return  # its last subscriber was just closed (too slow)
            frames = event_frames(as_str(entry_id), fields)
            part.positions[key] = as_str(entry_id)
            for frame in frames:
                for sub in list(subs):
                    sub.offer(frame)

    def delivered(self, frame: Frame) -> None:
        """Record that ``frame`` (an event) was just written to a client."""
        self.deliveries.add(time.time() * 1000 - frame.order[0])

    async def _ping_idle(self) -> None:
        """A ping to each subscriber that was handed nothing for a round (``ping_s``): one timer
        for the process, not one per connection, visiting one slice of the subscribers at a time
        (:class:`api.realtime.rounds.Round`), so 10,000 idle connections never wake at once (a
        burst of thousands of sends would hold up the events behind it)."""
        while True:
            await anyio.sleep(self.ping_s / self._idle_round.slices)
            for sub in self._idle_round.next_slice():
                if sub.idle:
                    sub.offer(PING)
                sub.idle = True

    # -- sessions that end (api.sessions) -------------------------------------------------------
    def revoke(self, account: str, after_ms: int) -> None:
        """Close ``account``'s subscriptions of sessions issued at or before ``after_ms``."""
        for sub in list(self._subscribers.get(owner_feed_key(self.keys, account), ())):
            if sub.session is not None and sub.session.revoked_by(after_ms):
                sub.close(SESSION_REVOKED)

    def revoke_key(self, account: str, key_hash: str) -> None:
        """Close ``account``'s subscriptions of the API key whose sha256 is ``key_hash``."""
        for sub in list(self._subscribers.get(owner_feed_key(self.keys, account), ())):
            if sub.key_hash == key_hash:
                sub.close(KEY_REVOKED)

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
        self,
        owner: str,
        since: str | None,
        session: Session | None = None,
        key_hash: str | None = None,
    ) -> AsyncIterator[Subscription]:
        """A subscription to ``owner``'s feed after ``since`` (None: start with a ``reset``),
        ended when ``session`` expires or is revoked, or the API key whose sha256 is
        ``key_hash`` is revoked (:meth:`open`, closed when the block ends)."""
        sub = await self.open(owner, since, session, key_hash)
        try:
            yield sub
        finally:
            sub.close("unsubscribed")

    async def open(
        self,
        owner: str,
        since: str | None,
        session: Session | None = None,
        key_hash: str | None = None,
    ) -> Subscription:
        """A subscription as :meth:`subscribe` gives it, which the caller closes. (The WebSocket
        holds one per connection: no generator frame kept alive for its lifetime.)"""
        key = owner_feed_key(self.keys, owner)
        sub = Subscription(self, owner, key, session, key_hash)
        try:
            await self._join(sub)
            if session is not None:
                self._expires(sub, session)
                # Read after joining: a revocation from now on reaches this subscription through
                # the revocations stream, one from before is in the account's record.
                if session.revoked_by(await sessions_after(self.runtime, owner)):
                    sub.close(SESSION_REVOKED)
            # Likewise a key revoked between the request's authentication and the join.
            if key_hash is not None and not await self.redis.exists(self.keys.api_key(key_hash)):
                sub.close(KEY_REVOKED)
            if sub.closed:
                return sub  # its first receive says why: no history or snapshot to read
            if since is None or not valid_cursor(since) or await self._trimmed(key, since):
                sub._pending = [Frame(await self._reset(owner, sub.live))]
            else:
                sub.last = cursor_key(since)
                if cursor_key(since) < cursor_key(sub.live):
                    sub._history_after = since
        except BaseException:
            sub.close("unsubscribed")
            raise
        return sub

    async def _join(self, sub: Subscription) -> None:
        """Register ``sub`` and fix where its live tail starts: the hub's position for the key
        (or the stream's last id when nobody tails it yet), taken before any history is read."""
        key = sub.key
        part = self._partitions[self.keys.partition(sub.owner)]
        if key not in part.positions:
            newest = await self.redis.xrevrange(key, "+", "-", count=1)
            start = as_str(newest[0][0]) if newest else "0-0"
            if key not in part.positions:  # nobody joined it during the await
                part.positions[key] = start
                # Read it at once: a notification for it may have been read before it joined.
                part.dirty.add(key)
                if part.scope is not None:
                    part.scope.cancel()
                part.wake.set()
        sub.live = part.positions[key]
        self._subscribers.setdefault(key, set()).add(sub)
        sub.slot = self._idle_round.join(sub)
        if self.freeze_every and self._idle_round.joined % self.freeze_every == 0:
            # What connections hold lives as long as they do, and a full collection walks all
            # of it (hundreds of ms at 10,000). Frozen, it is never walked again; a closed
            # connection leaves no cyclic garbage (none found closing 2,000, cleanly or killed),
            # so nothing is kept that a collection would have freed.
            gc.freeze()

    @property
    def subscribers(self) -> int:
        """Subscriptions open in this process right now (a gauge of /metrics)."""
        return sum(len(subs) for subs in self._subscribers.values())

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.session is not None:
            second = -(-sub.session.expires_ms // 1000)
            bucket = self._expiring.get(second)
            if bucket is not None:
                bucket.discard(sub)
                if not bucket:
                    del self._expiring[second]
        self._idle_round.leave(sub, sub.slot)
        subs = self._subscribers.get(sub.key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subscribers[sub.key]
            part = self._partitions[self.keys.partition(sub.owner)]
            part.positions.pop(sub.key, None)
            part.dirty.discard(sub.key)

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
        if not first:
            return after < cursor_key(last)  # trimmed to nothing: whatever came after is gone
        # No entry lies between the one just before the oldest kept and it: a cursor there (the
        # one a client stopped halfway through that entry has, projections.feed) lost nothing.
        return after < cursor_key(before(as_str(first[0])))

    async def _reset(self, owner: str, cursor: str) -> Message:
        page = await Queries(self.runtime).list_executions(
            owner, active=True, limit=self.snapshot_limit, cursor=None
        )
        return render.feed_reset(cursor, page)


def _streams(reply: Any) -> list[tuple[Any, list[Any]]]:
    """An XREAD reply as (key, entries) pairs, RESP2 or RESP3."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    out: list[tuple[Any, list[Any]]] = []
    for key, rows in items:
        if rows and isinstance(rows[0], list) and len(rows) == 1:
            rows = rows[0]  # RESP3 shape
        out.append((key, rows))
    return out
