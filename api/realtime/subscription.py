"""One client's subscription to its owner's realtime feed, as the hub (``api.realtime.hub``)
fills it and the WebSocket and SSE endpoints (``api.realtime.endpoints``) drain it.

A subscription is a deque of shared frames and a wake-up future, nothing per message: each event
of a feed entry is rendered and encoded once (:class:`Frame`: the WebSocket text, and the SSE
frame when a stream asks) whatever the number of subscribers. It hands out the history after the
client's cursor first (paged from the feed stream), then the live tail, and never the same event
twice (deduplicated by its place in the feed, projections.feed.position). The hub closes it with
a reason (:class:`FeedClosed`): a client that fell
``buffer`` messages behind (``SLOW_CONSUMER``), a session that expired or was revoked, an API key
that was revoked; the client resumes with its last cursor.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec
import orjson

from api import render
from api.render import Message, encode
from api.sessions import Session
from engine import meters
from engine.connection import as_str
from projections.feed import position, read_entries

SLOW_CONSUMER = "slow consumer; resume with your cursor"
SESSION_EXPIRED = "session expired"
SESSION_REVOKED = "session revoked"
KEY_REVOKED = "api key revoked"
HISTORY_PAGE = 500  # feed entries read per page of history
_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")

log = logging.getLogger("clipstream.feed")


class Hub(Protocol):
    """What a subscription needs of the hub that fills it."""

    buffer: int  # messages a subscriber may fall behind before it is closed
    redis: Any  # the history is read from the feed stream

    def unsubscribe(self, sub: Subscription) -> None: ...


class FeedClosed(Exception):
    """The hub closed this subscription (``reason`` says why); the client resumes with its last
    cursor."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cursor_key(cursor: str) -> tuple[int, int, int]:
    """Where a cursor (a stream entry id) is in the feed: past every event of its entry
    (projections.feed.position), comparable with a frame's ``order``."""
    return position(cursor)


def valid_cursor(cursor: str) -> bool:
    """A cursor of the shape this feed hands out (a stream entry id)."""
    return _CURSOR.match(cursor) is not None


def event_frames(entry_id: str, fields: Mapping[bytes, bytes]) -> list[Frame]:
    """The ``event`` frames of one feed entry (as XRANGE/XREAD give it), one per event, rendered.
    An entry this version cannot read (a newer projector's, or damaged) is logged and gives none:
    one bad entry must not stop the feed of everyone after it."""
    try:
        entries = read_entries(entry_id, fields)
    except (KeyError, ValueError, msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        log.error("feed entry %s is unreadable, skipped: %r", entry_id, exc)
        return []
    return [Frame(render.feed_event(e), order=e.order) for e in entries]


class Frame:
    """One message, rendered and encoded once for every subscriber that gets it: ``text`` for
    the WebSocket, :attr:`sse` (encoded on first use) for Server-Sent Events."""

    __slots__ = ("_sse", "cursor", "is_event", "message", "order", "text")

    def __init__(
        self, message: Message, sse: bytes | None = None, order: tuple[int, int, int] | None = None
    ) -> None:
        self.message = message
        self.cursor: str = message.get("cursor", "")
        if order is None:
            order = cursor_key(self.cursor) if self.cursor else (0, 0, 0)
        self.order = order  # where it is in the feed: its event's place, or past its cursor
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
    cursor (or a ``reset``), then the live tail, deduplicated by each event's place in the feed.

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
        self, hub: Hub, owner: str, key: str, session: Session | None, key_hash: str | None
    ) -> None:
        self.hub, self.owner, self.key = hub, owner, key
        self.session = session  # the session token it was opened with, which ends it
        self.key_hash = key_hash  # or the sha256 of the API key (SSE), whose revocation ends it
        self.reason: str | None = None
        self.last = (0, 0, 0)  # the newest event handed out: older live ones are duplicates
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
        self._pending = [frame for i, f in rows for frame in event_frames(as_str(i), f)]
        self._history_after = as_str(rows[-1][0]) if len(rows) == HISTORY_PAGE else None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except FeedClosed:
            raise StopAsyncIteration from None
