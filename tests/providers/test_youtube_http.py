"""The YouTube Data API provider against a local stub server."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from engine.errors import ToolError
from engine.providers.base import ProviderCall
from engine.providers.config import ProviderConfig
from engine.providers.youtube_http import HttpYouTube, iso_duration_s
from tests.providers.stub import Answer, Request, reply, scripted, stub_server

pytestmark = pytest.mark.anyio

KEY = "AIza-test-key-0123456789"
CALL = ProviderCall("exe_9:0", 1)
VIDEO = {
    "items": [
        {
            "id": "dQw4w9WgXcQ",
            "snippet": {
                "title": "A title",
                "description": "A description",
                "channelId": "UCuAXFkgsw1L7xaCfnd5JJOw",
                "channelTitle": "A channel",
                "publishedAt": "2009-10-25T06:57:33Z",
                "tags": ["a", "b"],
            },
            "contentDetails": {"duration": "PT3M33S"},
        }
    ]
}


def config(url: str) -> ProviderConfig:
    return ProviderConfig(
        modes={"llm": "sim", "transcriber": "sim", "youtube": "http"},
        youtube_url=url,
        youtube_key=KEY,
        timeout_s=5.0,
    )


def test_iso_durations() -> None:
    assert iso_duration_s("PT3M33S") == 213
    assert iso_duration_s("PT1H") == 3600
    assert iso_duration_s("P1DT2S") == 86_402
    assert iso_duration_s("P0D") == 0
    assert iso_duration_s("garbage") == 0


async def test_video_metadata_over_a_socket(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with stub_server(scripted(reply(200, VIDEO))) as server:
        provider = HttpYouTube(config(server.url))
        got = await provider.video(video_id="dQw4w9WgXcQ", call=CALL)
        await provider.aclose()
    [sent] = server.requests
    assert (sent.method, sent.path) == ("GET", "/videos")
    assert sent.query == {"id": "dQw4w9WgXcQ", "part": "snippet,contentDetails", "key": KEY}
    assert sent.headers["idempotency-key"] == "exe_9:0"
    assert (got.title, got.channel_id, got.duration_s, got.tags) == (
        "A title",
        "UCuAXFkgsw1L7xaCfnd5JJOw",
        213,
        ["a", "b"],
    )
    assert got.published_at == "2009-10-25T06:57:33Z"
    assert got.usage == {"quota_units": 1}
    # httpx logs the request URL, key and all: the filter redacts it.
    assert any("/videos" in r.getMessage() for r in caplog.records)
    assert all(KEY not in r.getMessage() for r in caplog.records)


async def test_unknown_video_is_not_found() -> None:
    async with stub_server(scripted(reply(200, {"items": []}))) as server:
        provider = HttpYouTube(config(server.url))
        with pytest.raises(ToolError) as caught:
            await provider.video(video_id="xxxxxxxxxxx", call=CALL)
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("not_found", False)


@pytest.mark.parametrize(
    ("answer", "code", "retryable"),
    [
        (reply(429, {}, retry_after="5"), "rate_limited", True),
        (reply(500, {}), "provider_unavailable", True),
        (reply(403, {"error": {"message": "quotaExceeded"}}), "provider_rejected", False),
        (reply(400, {"error": {"message": "keyInvalid"}}), "provider_rejected", False),
    ],
)
async def test_video_failures(answer: Answer, code: str, retryable: bool) -> None:
    async with stub_server(scripted(answer)) as server:
        provider = HttpYouTube(config(server.url))
        with pytest.raises(ToolError) as caught:
            await provider.video(video_id="dQw4w9WgXcQ", call=CALL)
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert KEY not in caught.value.message


def _channel_api(total: int) -> Any:
    """A fake Data API over httpx.MockTransport: one channel, ``total`` uploads, pages of 50."""
    seen: list[httpx.Request] = []
    videos = [
        {"title": f"v{n}", "id": f"vid{n:08d}", "at": f"2024-01-{1 + n % 28:02d}T00:00:00Z"}
        for n in range(total)
    ]

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        q = dict(request.url.params)
        if request.url.path.endswith("/channels"):
            if q.get("forHandle") not in ("@known", None) and q.get("id") != "UC" + "a" * 22:
                return httpx.Response(200, json={"items": []})
            return httpx.Response(
                200,
                json={
                    "items": [
                        {
                            "id": "UC" + "a" * 22,
                            "snippet": {"title": "Known"},
                            "contentDetails": {"relatedPlaylists": {"uploads": "UUaaa"}},
                        }
                    ]
                },
            )
        assert request.url.path.endswith("/playlistItems")
        assert q["playlistId"] == "UUaaa"
        start = int(q.get("pageToken", "0"))
        size = int(q["maxResults"])
        chunk = videos[start : start + size]
        page: dict[str, Any] = {
            "items": [
                {
                    "snippet": {"title": v["title"], "publishedAt": "1999-01-01T00:00:00Z"},
                    "contentDetails": {"videoId": v["id"], "videoPublishedAt": v["at"]},
                }
                for v in chunk
            ]
        }
        if start + size < total:
            page["nextPageToken"] = str(start + size)
        return httpx.Response(200, json=page)

    return handle, seen


async def test_channel_listing_pages_through_uploads() -> None:
    handle, seen = _channel_api(120)
    provider = HttpYouTube(
        config("http://yt.test/youtube/v3"), transport=httpx.MockTransport(handle)
    )
    got = await provider.channel_videos(channel="@known", max_videos=110, call=CALL)
    await provider.aclose()
    assert got.channel_id == "UC" + "a" * 22
    assert got.title == "Known"
    assert [v.video_id for v in got.videos] == [f"vid{n:08d}" for n in range(110)]
    assert got.videos[0].published_at == "2024-01-01T00:00:00Z"  # videoPublishedAt wins
    assert got.usage == {"quota_units": 4}  # the channel and three pages
    assert [dict(r.url.params).get("maxResults") for r in seen[1:]] == ["50", "50", "10"]
    keys = [r.headers["idempotency-key"] for r in seen]
    assert keys == ["exe_9:0", "exe_9:0:page1", "exe_9:0:page2", "exe_9:0:page3"]
    assert dict(seen[0].url.params)["forHandle"] == "@known"


async def test_channel_by_id_and_a_short_channel() -> None:
    handle, seen = _channel_api(3)
    provider = HttpYouTube(config("http://yt.test/v3"), transport=httpx.MockTransport(handle))
    got = await provider.channel_videos(channel="UC" + "a" * 22, max_videos=50, call=CALL)
    await provider.aclose()
    assert len(got.videos) == 3
    assert dict(seen[0].url.params)["id"] == "UC" + "a" * 22
    assert got.usage == {"quota_units": 2}


async def test_unknown_channel_is_not_found() -> None:
    handle, _ = _channel_api(3)
    provider = HttpYouTube(config("http://yt.test/v3"), transport=httpx.MockTransport(handle))
    with pytest.raises(ToolError) as caught:
        await provider.channel_videos(channel="@nobody", max_videos=5, call=CALL)
    await provider.aclose()
    assert caught.value.code == "not_found"


async def test_channel_sync_over_a_socket_with_a_failing_page() -> None:
    pages = iter([reply(503, {}, retry_after="2")])

    async def handle(request: Request) -> Answer:
        if request.path == "/channels":
            return reply(
                200,
                {
                    "items": [
                        {"id": "UCx", "contentDetails": {"relatedPlaylists": {"uploads": "UU1"}}}
                    ]
                },
            )
        return next(pages)

    async with stub_server(handle) as server:
        provider = HttpYouTube(config(server.url))
        with pytest.raises(ToolError) as caught:
            await provider.channel_videos(channel="@known", max_videos=5, call=CALL)
        await provider.aclose()
    assert (caught.value.code, caught.value.retry_after_ms) == ("provider_unavailable", 2000)
    assert [r.path for r in server.requests] == ["/channels", "/playlistItems"]
