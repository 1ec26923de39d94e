"""The realtime hub: one per API process, it tails the feed streams (``projections.feed``) of the
owners that have subscribers here and fans each entry out to them; ``api.realtime`` serves the
subscriptions over WebSocket and SSE.

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

Each entry is rendered and encoded once (:class:`Frame`: the WebSocket text, and the SSE frame
when a stream asks) whatever the number of subscribers, and offered to each subscriber's bounded
queue without waiting: a full queue closes that subscriber (``SLOW_CONSUMER``), who resumes with
its last cursor (a stream entry id). A subscription is a deque of shared frames and a wake-up
flag, nothing per message. A subscription without a cursor, or with one older than what the feed
keeps, starts with a ``reset`` snapshot of the owner's active executions.

A subscription of a session token ends when the token expires (``SESSION_EXPIRED``: one timer
for the process, by the second) or when the account's sessions are revoked
(``SESSION_REVOKED``: api.sessions, pushed to every process); one of an API key (SSE) when that
key is revoked (``KEY_REVOKED``, pushed the same way).
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from redis.exceptions import RedisError, ResponseError

from api import render
from api.loop_probe import LoopProbe, Samples
from api.render import Message, encode
from api.rounds import Round
from api.sessions import Revocations, Session, sessions_after
from engine import clock, meters
from engine.connection import as_str
from engine.runtime import Runtime
from projections.feed import live_feeds, live_key, owner_feed_key, read_entry
from projections.queries import Queries

log = logging.getLogger("clipstream.feed")

SLOW_CONSUMER = "slow consumer; resume with your cursor"
SESSION_EXPIRED = "session expired"
SESSION_REVOKED = "session revoked"
KEY_REVOKED = "api key revoked"
BUFFER = 1_000  # messages a subscriber may fall behind before it is closed
HISTORY_PAGE = 500
PING_S = 15.0  # an idle subscriber's ping, every one to two of these
SWEEP_MS = 5_000  # how often every subscribed feed is read, notified or not
READ_KEYS = 1_000  # feeds named in one read
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


class Frame:
    """One message, rendered and encoded once for every subscriber that gets it: ``text`` for
    the WebSocket, :attr:`sse` (encoded on first use) for Server-Sent Events."""

    __slots__ = ("_sse", "cursor", "is_event", "message", "order", "text")

    def __init__(self, message: Message, sse: bytes | None = None) -> None:
        self.message = message
        self.cursor: str = message.get("cursor", "")
        self.order = cursor_key(self.cursor) if self.cursor else (0, 0)
        self.is_event: bool = message["type"] == "event"
        self.text = encode(message).decode()
        self._sse = sse

    @property
    def sse(self) -> bytes:
        """The SSE frame: ``id:`` is the cursor, ``event:`` the message type."""
        if self._sse is None:
            kind = self.message["type"]
            self._sse = f"id: {self.cursor}\nevent: {kind}\ndata: {self.text}\n\n".encode()
        return self._sse


# What an idle subscriber gets every ``FeedHub.ping_s`` (an SSE comment on a stream).
PING = Frame({"type": "ping"}, sse=b": ping\n\n")


class Subscription:
    """One client's view of its owner's feed: :meth:`receive_frame` gives the history after the
    cursor (or a ``reset``), then the live tail, deduplicated by cursor.

    It is kept small (10,000 of them per process): its queue is allocated on the first frame
    and its wake-up is a bare future while the client waits, nothing per message.
    """

    __slots__ = (
        "_history_after",
        "_pending",
        "_queue",
        "_wake",
        "hub",
        "idle",
        "key",
        "key_hash",
        "last",
        "live",
        "on_close",
        "owner",
        "reason",
        "session",
        "slot",
    )

    def __init__(
        self, hub: FeedHub, owner: str, key: str, session: Session | None, key_hash: str | None
    ) -> None:
        self.hub, self.owner, self.key = hub, owner, key
        self.session = session  # the session token it was opened with, which ends it
        self.key_hash = key_hash  # or the sha256 of the API key (SSE), whose revocation ends it
        self.reason: str | None = None
        self.last = (0, 0)  # the newest cursor handed out: older live entries are duplicates
        self.live = "0-0"  # where the live tail starts (history is read up to here)
        self.idle = False  # nothing handed out since the hub's last ping round
        self.slot = 0  # which of the hub's ping slices it is in
        self._queue: deque[Frame] | None = None
        # While the client waits for a frame (asyncio's future: uvicorn serves on asyncio, and
        # an anyio Event costs a kilobyte per connection).
        self._wake: asyncio.Future[None] | None = None
        self._pending: list[Frame] = []  # a reset or a page of history, handed out first
        self._history_after: str | None = None  # more history to page through after this id
        self.on_close: Callable[[], object] | None = None  # told when the hub closes it

    # called by the hub (no await: the fan-out never waits for a client)
    def offer(self, frame: Frame) -> None:
        if self.reason is not None:
            return
        if self._queue is None:
            self._queue = deque()
        elif len(self._queue) >= self.hub.buffer:
            meters.FEED_SLOW_CLOSES.inc()
            self.close(SLOW_CONSUMER)
            return
        self._queue.append(frame)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def close(self, reason: str) -> None:
        """End the subscription: ``receive`` raises :class:`FeedClosed` from now on."""
        if self.reason is None:
            self.reason = reason
            self._queue = None  # whatever was queued is dropped: the client resumes by cursor
            self._wake_up()
            self.hub.unsubscribe(self)
            if self.on_close is not None:
                self.on_close()

    @property
    def closed(self) -> bool:
        return self.reason is not None

    def poll(self) -> Frame | None:
        """The next queued frame if one is ready now (None: await :meth:`receive_frame`)."""
        if self.reason is not None:
            raise FeedClosed(self.reason)
        if self._pending or self._history_after is not None:
            return None
        while self._queue:
            frame = self._queue.popleft()
            if frame.is_event and frame.order <= self.last:
                continue
            self.last = max(self.last, frame.order)
            self.idle = False
            return frame
        return None

    async def receive_frame(self) -> Frame:
        """The next frame; FeedClosed once the hub closed the subscription."""
        while True:
            if self.reason is not None:
                raise FeedClosed(self.reason)
            if not self._pending and self._history_after is not None:
                await self._next_page()
            if self._pending:
                frame = self._pending.pop(0)
            elif self._queue:
                frame = self._queue.popleft()
            else:
                # Nothing queued: the deque (a 64-slot block) goes until the next frame, so an
                # idle subscriber holds none.
                self._queue = None
                self._wake = asyncio.get_running_loop().create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
                continue
            if frame.is_event and frame.order <= self.last:
                continue  # already handed out by the history read
            self.last = max(self.last, frame.order)
            self.idle = False
            return frame

    async def receive(self) -> Message:
        """The next message; FeedClosed once the hub closed the subscription."""
        return (await self.receive_frame()).message

    async def _next_page(self) -> None:
        after = self._history_after
        assert after is not None
        rows = await self.hub.redis.xrange(self.key, f"({after}", self.live, count=HISTORY_PAGE)
        self._pending = [Frame(event_message(as_str(i), f)) for i, f in rows]
        self._history_after = as_str(rows[-1][0]) if len(rows) == HISTORY_PAGE else None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except FeedClosed:
            raise StopAsyncIteration from None


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
        self._idle_round: Round[Subscription] = Round()  # api.rounds: a slice per tick
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
            frame = Frame(event_message(as_str(entry_id), fields))
            part.positions[key] = frame.cursor
            for sub in list(subs):
                sub.offer(frame)

    def delivered(self, frame: Frame) -> None:
        """Record that ``frame`` (an event) was just written to a client."""
        self.deliveries.add(time.time() * 1000 - frame.order[0])

    async def _ping_idle(self) -> None:
        """A ping to each subscriber that was handed nothing for a round (``ping_s``): one timer
        for the process, not one per connection, visiting one slice of the subscribers at a time
        (:class:`api.rounds.Round`), so 10,000 idle connections never wake at once (a burst of
        thousands of sends would hold up the events behind it)."""
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
        # Trimmed to nothing: whatever came after the cursor is gone.
        oldest_kept = cursor_key(as_str(first[0])) if first else cursor_key(last)
        return after < oldest_kept

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
