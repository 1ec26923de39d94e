"""Items: the sources an owner tracks (a YouTube video or channel, a Twitter/X account, a feed).

An item is stored as JSON under ``keys.resource(owner, "item", id)`` and indexed in the owner's
zset ``keys.resource_index(owner, "item")`` through the shared resource storage
(``engine.resources.store``: ordering, pages, ownership checks and guarded writes are there).
Deleting an item takes it out of every collection holding it in the same script.

Type detection (:func:`detect`) is pure:

    youtube_video    youtube.com/watch?v=ID, youtu.be/ID, youtube.com/shorts/ID (also /live/,
                     /embed/); ID is 11 characters of [A-Za-z0-9_-]
    youtube_channel  youtube.com/@handle, /channel/UC…, /c/name, /user/name, or a bare @handle
    twitter          twitter.com/NAME or x.com/NAME (also …/status/ID), or twitter:NAME / x:NAME
    rss              any http(s) URL whose path ends in .rss, .xml or feed (…/feed included)

A bare ``@handle`` is a YouTube handle (that is how YouTube spells them); a Twitter/X handle
without a URL is written ``twitter:NAME`` or ``x:@NAME``.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import msgspec

from engine.clock import now_ms
from engine.errors import InvalidRequest
from engine.log.ids import new_id
from engine.resources.relations import COLLECTION_ITEMS, ITEM_COLLECTIONS
from engine.resources.store import Kind, Store, retrying
from engine.runtime import Runtime

ItemType = Literal["youtube_video", "youtube_channel", "twitter", "rss"]
MAX_SOURCE = 2048

_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YT_HANDLE = re.compile(r"^@[A-Za-z0-9._-]{3,30}$")
_CHANNEL_ID = re.compile(r"^UC[A-Za-z0-9_-]{22}$")
_YT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_TW_HANDLE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
_TW_PREFIXED = re.compile(r"^(?:twitter|x):@?(?P<handle>.*)$", re.IGNORECASE)
_YOUTUBE_HOSTS = frozenset({"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com"})
_YOUTU_BE_HOSTS = frozenset({"youtu.be", "www.youtu.be"})
_TWITTER_HOSTS = frozenset(
    {"twitter.com", "www.twitter.com", "mobile.twitter.com", "x.com", "www.x.com", "mobile.x.com"}
)
# First path segments of twitter.com / x.com that are pages, not accounts.
_TWITTER_PAGES = frozenset(
    {"home", "explore", "search", "i", "settings", "notifications", "messages", "login",
     "signup", "intent", "share", "hashtag", "tos", "privacy", "compose"}
)  # fmt: skip
_UNCLASSIFIABLE = (
    "source: cannot classify it; expected a YouTube video or channel URL, an @handle, "
    "a twitter.com/x.com URL (or twitter:NAME), or an RSS feed URL"
)


class Detected(msgspec.Struct, frozen=True, kw_only=True):
    """What a source is: its type and the id the platform knows it by."""

    type: ItemType
    external_id: str


class Item(msgspec.Struct, frozen=True, kw_only=True):
    """A stored item. ``created_at`` is ms since the epoch."""

    item_id: str
    owner: str
    source: str
    type: ItemType
    external_id: str
    created_at: int


ITEMS: Kind[Item] = Kind(prefix="itm", key="item", noun="item", type=Item)


# -- detection (pure) ----------------------------------------------------------------------------


def detect(source: str) -> Detected:
    """Classify ``source``; InvalidRequest naming why when it cannot be classified."""
    text = source.strip()
    if not text:
        raise InvalidRequest("source: must not be empty")
    if len(text) > MAX_SOURCE:
        raise InvalidRequest(f"source: longer than {MAX_SOURCE} characters")
    if text.startswith("@"):
        if not _YT_HANDLE.match(text):
            raise InvalidRequest("source: not a valid YouTube handle (@ and 3-30 characters)")
        return Detected(type="youtube_channel", external_id=text)
    prefixed = _TW_PREFIXED.match(text)
    if prefixed:
        return _twitter_handle(prefixed.group("handle"))
    if "://" not in text:
        text = "https://" + text  # "youtu.be/…" typed without a scheme
    return _detect_url(text)


def _detect_url(url: str) -> Detected:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise InvalidRequest("source: not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or "." not in host:
        raise InvalidRequest(_UNCLASSIFIABLE)
    segments = [s for s in parts.path.split("/") if s]
    if parts.path.lower().rstrip("/").endswith((".rss", ".xml", "feed")):
        return Detected(type="rss", external_id=url)
    if host in _YOUTU_BE_HOSTS:
        return _video(segments[0] if segments else "")
    if host in _YOUTUBE_HOSTS:
        return _youtube(segments, parse_qs(parts.query))
    if host in _TWITTER_HOSTS:
        return _twitter(segments)
    raise InvalidRequest(_UNCLASSIFIABLE)


def _video(video_id: str) -> Detected:
    if not _VIDEO_ID.match(video_id):
        raise InvalidRequest("source: a YouTube video id is 11 characters of A-Z a-z 0-9 _ -")
    return Detected(type="youtube_video", external_id=video_id)


def _youtube(segments: list[str], query: dict[str, list[str]]) -> Detected:
    head = segments[0] if segments else ""
    if head == "watch":
        return _video(query.get("v", [""])[0])
    if head in ("shorts", "live", "embed") and len(segments) >= 2:
        return _video(segments[1])
    if head.startswith("@"):
        if not _YT_HANDLE.match(head):
            raise InvalidRequest("source: not a valid YouTube handle (@ and 3-30 characters)")
        return Detected(type="youtube_channel", external_id=head)
    if head == "channel" and len(segments) >= 2:
        if not _CHANNEL_ID.match(segments[1]):
            raise InvalidRequest("source: a YouTube channel id is UC and 22 characters")
        return Detected(type="youtube_channel", external_id=segments[1])
    if head in ("c", "user") and len(segments) >= 2 and _YT_NAME.match(segments[1]):
        return Detected(type="youtube_channel", external_id=segments[1])
    raise InvalidRequest("source: a YouTube URL that is neither a video nor a channel")


def _twitter(segments: list[str]) -> Detected:
    if not segments or segments[0].lower() in _TWITTER_PAGES:
        raise InvalidRequest("source: a twitter.com/x.com URL must name an account")
    if len(segments) >= 3 and segments[1] == "status":
        if not segments[2].isdigit():
            raise InvalidRequest("source: a tweet id is a number")
        _twitter_handle(segments[0])
        return Detected(type="twitter", external_id=segments[2])
    return _twitter_handle(segments[0])


def _twitter_handle(handle: str) -> Detected:
    if not _TW_HANDLE.match(handle):
        raise InvalidRequest("source: a Twitter/X handle is 1-15 letters, digits or _")
    return Detected(type="twitter", external_id=handle)


# -- storage -------------------------------------------------------------------------------------


async def create_item(runtime: Runtime, owner: str, source: str, *, reuse: bool = False) -> Item:
    """Classify ``source`` and store it as a new item of ``owner``.

    Every item is listed under its source (detected type and external id). With ``reuse``, the
    owner's oldest item of the same source is returned instead of a new one, and concurrent calls
    for one new source make exactly one item. Without it a new item is always made (a client may
    track a source twice).
    """
    detected = detect(source)
    st = Store(runtime)
    by_source = st.keys.item_source(owner, detected.type, detected.external_id)

    async def attempt() -> Item | None:
        holders = await st.members(by_source) if reuse else []
        if holders:  # in id order: the oldest first
            return await get_item(runtime, owner, holders[0])
        item = Item(
            item_id=new_id("itm"),
            owner=owner,
            source=source.strip(),
            type=detected.type,
            external_id=detected.external_id,
            created_at=now_ms(),
        )
        key = st.record(owner, ITEMS, item.item_id)
        txn = st.txn().within(st.index(owner, ITEMS), runtime.settings.quotas.items, "items")
        txn.insert(key, item, st.index(owner, ITEMS), item.item_id)
        if reuse:  # nobody made an item of this source meanwhile
            txn.exactly(by_source, [])
        txn.add(by_source, item.item_id)
        return item if await txn.commit() else None

    return await retrying(attempt)


async def resolve_source(runtime: Runtime, owner: str, source: str) -> Item:
    """The owner's item for ``source``: the one holding the same detected type and id, else a new
    one (concurrent calls for one new source make one item). InvalidRequest for a source that
    cannot be classified."""
    return await create_item(runtime, owner, source, reuse=True)


async def get_item(runtime: Runtime, owner: str, item_id: str) -> Item:
    """The owner's item; NotFound when it is missing, malformed or someone else's."""
    item, _ = await Store(runtime).load(owner, ITEMS, item_id)
    return item


async def list_items(
    runtime: Runtime, owner: str, *, limit: int, cursor: str | None
) -> tuple[list[Item], str | None]:
    """A page of the owner's items, newest first, and the cursor of the next page (None: last)."""
    st = Store(runtime)
    return await st.list(owner, ITEMS, st.index(owner, ITEMS), limit=limit, cursor=cursor)


async def delete_item(runtime: Runtime, owner: str, item_id: str) -> None:
    """Delete the owner's item and take it out of every collection holding it; NotFound when
    there is none."""
    st = Store(runtime)

    async def attempt() -> bool | None:
        item, raw = await st.load(owner, ITEMS, item_id)
        key = st.record(owner, ITEMS, item_id)
        holders_key = st.children(owner, ITEM_COLLECTIONS, item_id)
        holders = await st.members(holders_key)
        txn = st.txn().unchanged(key, raw).exactly(holders_key, holders)
        for collection_id in holders:
            txn.remove(st.children(owner, COLLECTION_ITEMS, collection_id), item_id)
        txn.delete(holders_key).delete(key).remove(st.index(owner, ITEMS), item_id)
        txn.remove(st.keys.item_source(owner, item.type, item.external_id), item_id)
        return True if await txn.commit() else None

    await retrying(attempt)
