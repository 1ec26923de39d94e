"""The YouTube tools: ``youtube_metadata`` (one video) and ``channel_sync`` (a channel's uploads).

``youtube_metadata`` input: ``external_id`` (the video id) or ``source`` (a video URL). Output,
inline (it is small): ``{"kind": "video_metadata", "video_id", "title", "description",
"channel_id", "channel_title", "published_at", "duration_s", "tags"}``, the description cut to
:data:`MAX_DESCRIPTION_CHARS`.

``channel_sync`` input: ``channel``, ``external_id`` or ``source``: a channel id (``UC…``), a
handle (``@name``) or a channel URL (``…/@name``, ``…/channel/UC…``). Output: a blob, the JSON of
``{"kind": "channel_videos", "channel_id", "title", "videos": [{"video_id", "title",
"published_at"}]}`` newest first, and the preview ``{"kind": "channel_videos", "channel_id",
"title", "count", "newest_published_at", "sha256"}``.

The YouTube Data API charges quota, not coins: usage counts quota units and cost is 0.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from engine.errors import ToolError
from engine.log.events import StepSpec
from engine.tools.base import StepResult, Tool, ToolContext, ToolParams
from engine.tools.retry import RetryPolicy

MAX_DESCRIPTION_CHARS = 2_000
_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_CHANNEL_ID = re.compile(r"UC[A-Za-z0-9_-]{22}")
_HANDLE = re.compile(r"@[A-Za-z0-9._-]{3,30}")
_YOUTUBE_HOSTS = ("youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com")
_encoder = msgspec.json.Encoder()


def video_id_of(text: str) -> str | None:
    """The video id in ``text``: a bare id, or a watch / youtu.be / shorts / embed / live URL."""
    text = text.strip()
    if _VIDEO_ID.fullmatch(text):
        return text
    parts = urlsplit(text if "://" in text else f"https://{text}")
    host = (parts.hostname or "").lower()
    path = [p for p in parts.path.split("/") if p]
    candidate: str | None = None
    if host in ("youtu.be", "www.youtu.be") and path:
        candidate = path[0]
    elif host in _YOUTUBE_HOSTS:
        if path[:1] == ["watch"]:
            candidate = next(iter(parse_qs(parts.query).get("v", [])), None)
        elif len(path) >= 2 and path[0] in ("shorts", "embed", "live", "v"):
            candidate = path[1]
    if candidate and _VIDEO_ID.fullmatch(candidate):
        return candidate
    return None


def channel_of(text: str) -> str | None:
    """The channel in ``text`` as the API takes it: a ``UC…`` id or an ``@handle``."""
    text = text.strip()
    if _CHANNEL_ID.fullmatch(text) or _HANDLE.fullmatch(text):
        return text
    parts = urlsplit(text if "://" in text else f"https://{text}")
    if (parts.hostname or "").lower() not in _YOUTUBE_HOSTS:
        return None
    path = [p for p in parts.path.split("/") if p]
    if path and _HANDLE.fullmatch(path[0]):
        return path[0]
    if len(path) >= 2 and path[0] == "channel" and _CHANNEL_ID.fullmatch(path[1]):
        return path[1]
    return None


def _first_str(input: dict[str, Any], *keys: str) -> list[str]:
    return [str(input[k]) for k in keys if isinstance(input.get(k), str) and input[k].strip()]


class YoutubeMetadataParams(ToolParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params of a ``youtube_metadata`` step (only the common ones)."""


class YoutubeMetadata(Tool):
    tool_id = "youtube_metadata"
    description = "A YouTube video's title, description, channel, publication date and length."
    provider_kind = "youtube"
    params_schema = YoutubeMetadataParams
    retry = RetryPolicy(max_attempts=4, base_ms=250, max_ms=10_000)
    timeout_s = 30.0

    estimate_note = "0: the YouTube Data API bills quota units, not coins"

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        return 0

    async def run(self, ctx: ToolContext) -> StepResult:
        ctx.params(YoutubeMetadataParams)
        candidates = _first_str(ctx.input, "external_id", "source")
        video_id = next((v for v in map(video_id_of, candidates) if v), None)
        if video_id is None:
            raise ToolError(
                "invalid_input", "youtube_metadata needs a YouTube video id or URL",
                retryable=False,
            )  # fmt: skip
        v = await ctx.provider_set.youtube(ctx.settings).video(video_id=video_id, call=ctx.call)
        output = {
            "kind": "video_metadata",
            "video_id": v.video_id,
            "title": v.title,
            "description": v.description[:MAX_DESCRIPTION_CHARS],
            "channel_id": v.channel_id,
            "channel_title": v.channel_title,
            "published_at": v.published_at,
            "duration_s": v.duration_s,
            "tags": v.tags,
        }
        return StepResult(output=output, usage=dict(v.usage), cost=0)


class ChannelSyncParams(ToolParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params of a ``channel_sync`` step."""

    max_videos: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50


class ChannelSync(Tool):
    tool_id = "channel_sync"
    description = "A YouTube channel's newest uploads: id, title and publication date of each."
    provider_kind = "youtube"
    params_schema = ChannelSyncParams
    retry = RetryPolicy(max_attempts=4, base_ms=250, max_ms=10_000)
    timeout_s = 60.0

    estimate_note = "0: the YouTube Data API bills quota units, not coins"

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        return 0

    async def run(self, ctx: ToolContext) -> StepResult:
        params = ctx.params(ChannelSyncParams)
        candidates = _first_str(ctx.input, "channel", "external_id", "source")
        channel = next((c for c in map(channel_of, candidates) if c), None)
        if channel is None:
            raise ToolError(
                "invalid_input", "channel_sync needs a channel id, @handle or channel URL",
                retryable=False,
            )  # fmt: skip
        listing = await ctx.provider_set.youtube(ctx.settings).channel_videos(
            channel=channel, max_videos=params.max_videos, call=ctx.call
        )
        videos = [
            {"video_id": v.video_id, "title": v.title, "published_at": v.published_at}
            for v in listing.videos
        ]
        blob = _encoder.encode(
            {
                "kind": "channel_videos",
                "channel_id": listing.channel_id,
                "title": listing.title,
                "videos": videos,
            }
        )
        digest = hashlib.sha256(blob).hexdigest()
        preview = {
            "kind": "channel_videos",
            "channel_id": listing.channel_id,
            "title": listing.title,
            "count": len(videos),
            "newest_published_at": max((v["published_at"] for v in videos), default=None),
            "sha256": digest,
        }
        usage = dict(listing.usage)
        return StepResult(output=preview, blob=blob, blob_sha256=digest, usage=usage, cost=0)
