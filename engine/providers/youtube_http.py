"""The YouTube Data API v3 over HTTP.

    GET {base}/videos?id=<id>&part=snippet,contentDetails&key=<key>
    GET {base}/channels?forHandle=@name|id=UC…&part=snippet,contentDetails&key=<key>
    GET {base}/playlistItems?playlistId=<uploads>&part=snippet,contentDetails&maxResults=50
        &pageToken=…&key=<key>

A channel's uploads are read from its uploads playlist (one quota unit a page) rather than
``search`` (a hundred units a call). Usage counts the quota units spent; the API costs no coins.
"""

from __future__ import annotations

import re

import httpx
import msgspec

from engine.errors import ToolError
from engine.providers.base import ChannelListing, ChannelVideo, ProviderCall, VideoMetadata
from engine.providers.config import ProviderConfig
from engine.providers.http import HttpProvider

PAGE_SIZE = 50  # the API's largest page
_DURATION = re.compile(
    r"P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


def iso_duration_s(text: str) -> int:
    """``PT1H2M3S`` (ISO 8601, as the API gives durations) in whole seconds; 0 when unreadable
    (live streams answer ``P0D``)."""
    match = _DURATION.fullmatch(text or "")
    if match is None:
        return 0
    d, h, m, s = (match.group(g) for g in "dhms")
    return int(d or 0) * 86_400 + int(h or 0) * 3600 + int(m or 0) * 60 + int(float(s or 0))


# The API's camelCase fields, read into snake_case attributes.
class _VideoSnippet(msgspec.Struct, rename="camel"):
    title: str = ""
    description: str = ""
    channel_id: str = ""
    channel_title: str = ""
    published_at: str = ""
    tags: list[str] = msgspec.field(default_factory=list)


class _VideoDetails(msgspec.Struct, rename="camel"):
    duration: str = ""


class _Video(msgspec.Struct, rename="camel"):
    id: str
    snippet: _VideoSnippet = msgspec.field(default_factory=_VideoSnippet)
    content_details: _VideoDetails = msgspec.field(default_factory=_VideoDetails)


class _VideoList(msgspec.Struct, rename="camel"):
    items: list[_Video] = msgspec.field(default_factory=list)


class _Related(msgspec.Struct, rename="camel"):
    uploads: str = ""


class _ChannelDetails(msgspec.Struct, rename="camel"):
    related_playlists: _Related = msgspec.field(default_factory=_Related)


class _ChannelSnippet(msgspec.Struct, rename="camel"):
    title: str = ""


class _Channel(msgspec.Struct, rename="camel"):
    id: str
    snippet: _ChannelSnippet = msgspec.field(default_factory=_ChannelSnippet)
    content_details: _ChannelDetails = msgspec.field(default_factory=_ChannelDetails)


class _ChannelList(msgspec.Struct, rename="camel"):
    items: list[_Channel] = msgspec.field(default_factory=list)


class _ItemSnippet(msgspec.Struct, rename="camel"):
    title: str = ""
    published_at: str = ""


class _ItemDetails(msgspec.Struct, rename="camel"):
    video_id: str = ""
    video_published_at: str = ""


class _PlaylistItem(msgspec.Struct, rename="camel"):
    snippet: _ItemSnippet = msgspec.field(default_factory=_ItemSnippet)
    content_details: _ItemDetails = msgspec.field(default_factory=_ItemDetails)


class _PlaylistPage(msgspec.Struct, rename="camel"):
    items: list[_PlaylistItem] = msgspec.field(default_factory=list)
    next_page_token: str | None = None


class HttpYouTube:
    """Video metadata and channel uploads from the YouTube Data API."""

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not config.youtube_key:
            raise ValueError("the http youtube provider needs youtube_key")
        self._key = config.youtube_key
        self.http = HttpProvider(
            name="youtube",
            base_url=config.youtube_url,
            timeout_s=config.timeout_s,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def video(self, *, video_id: str, call: ProviderCall) -> VideoMetadata:
        """One video's snippet and duration; ``not_found`` when the API lists no such video."""
        params = {"id": video_id, "part": "snippet,contentDetails", "key": self._key}
        found = await self.http.call("GET", "videos", _VideoList, call=call, params=params)
        if not found.items:
            raise ToolError("not_found", f"no YouTube video {video_id!r}", retryable=False)
        v = found.items[0]
        return VideoMetadata(
            video_id=v.id,
            title=v.snippet.title,
            description=v.snippet.description,
            channel_id=v.snippet.channel_id,
            channel_title=v.snippet.channel_title,
            published_at=v.snippet.published_at,
            duration_s=iso_duration_s(v.content_details.duration),
            tags=list(v.snippet.tags),
            usage={"quota_units": 1},
        )

    async def channel_videos(
        self, *, channel: str, max_videos: int, call: ProviderCall
    ) -> ChannelListing:
        """The channel's newest uploads, page by page through its uploads playlist."""
        params = {"part": "snippet,contentDetails", "key": self._key}
        if channel.startswith("@"):
            params["forHandle"] = channel
        else:
            params["id"] = channel
        found = await self.http.call("GET", "channels", _ChannelList, call=call, params=params)
        if not found.items:
            raise ToolError("not_found", f"no YouTube channel {channel!r}", retryable=False)
        ch = found.items[0]
        uploads = ch.content_details.related_playlists.uploads
        videos: list[ChannelVideo] = []
        pages = 0
        token: str | None = None
        while uploads and len(videos) < max_videos:
            page_params = {
                "playlistId": uploads,
                "part": "snippet,contentDetails",
                "maxResults": str(min(PAGE_SIZE, max_videos - len(videos))),
                "key": self._key,
            }
            if token:
                page_params["pageToken"] = token
            pages += 1
            # Each page is its own request, so it gets its own stable idempotency key.
            page = await self.http.call(
                "GET", "playlistItems", _PlaylistPage, call=call.sub(f"page{pages}"),
                params=page_params,
            )  # fmt: skip
            for item in page.items[: max_videos - len(videos)]:
                details = item.content_details
                if not details.video_id:
                    continue
                published = details.video_published_at or item.snippet.published_at
                videos.append(ChannelVideo(details.video_id, item.snippet.title, published))
            token = page.next_page_token
            if not token:
                break
        return ChannelListing(ch.id, ch.snippet.title, videos, {"quota_units": 1 + pages})
