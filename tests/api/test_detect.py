"""Item type detection: the table of sources the API accepts, and the ones it refuses."""

from __future__ import annotations

import pytest

from engine.errors import InvalidRequest
from engine.resources.items import detect

VIDEO = "dQw4w9WgXcQ"
CHANNEL = "UC" + "a" * 22


@pytest.mark.parametrize(
    ("source", "kind", "external_id"),
    [
        (f"https://www.youtube.com/watch?v={VIDEO}", "youtube_video", VIDEO),
        (f"https://youtube.com/watch?feature=share&v={VIDEO}", "youtube_video", VIDEO),
        (f"https://m.youtube.com/watch?v={VIDEO}&t=42", "youtube_video", VIDEO),
        (f"https://youtu.be/{VIDEO}", "youtube_video", VIDEO),
        (f"youtu.be/{VIDEO}?si=abc", "youtube_video", VIDEO),
        (f"https://www.youtube.com/shorts/{VIDEO}", "youtube_video", VIDEO),
        ("https://www.youtube.com/@mkbhd", "youtube_channel", "@mkbhd"),
        ("https://www.youtube.com/@mkbhd/videos", "youtube_channel", "@mkbhd"),
        (f"https://www.youtube.com/channel/{CHANNEL}", "youtube_channel", CHANNEL),
        ("https://www.youtube.com/c/LinusTechTips", "youtube_channel", "LinusTechTips"),
        ("@veritasium", "youtube_channel", "@veritasium"),
        ("  @veritasium  ", "youtube_channel", "@veritasium"),
        ("https://twitter.com/jack", "twitter", "jack"),
        ("https://x.com/elonmusk", "twitter", "elonmusk"),
        ("https://x.com/jack/status/20", "twitter", "20"),
        ("twitter:jack", "twitter", "jack"),
        ("x:@jack", "twitter", "jack"),
        ("https://example.com/podcast.rss", "rss", "https://example.com/podcast.rss"),
        ("https://example.com/atom.xml", "rss", "https://example.com/atom.xml"),
        ("https://blog.example.com/feed", "rss", "https://blog.example.com/feed"),
        ("https://blog.example.com/feed/", "rss", "https://blog.example.com/feed/"),
        ("http://example.com/rss.feed", "rss", "http://example.com/rss.feed"),
    ],
)
def test_detects(source: str, kind: str, external_id: str) -> None:
    detected = detect(source)
    assert (detected.type, detected.external_id) == (kind, external_id)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("hello world", "cannot classify"),
        ("https://example.com/page.html", "cannot classify"),
        ("ftp://example.com/feed.rss", "cannot classify"),
        ("https://www.youtube.com/watch?v=short", "video id"),
        ("https://youtu.be/", "video id"),
        ("https://www.youtube.com/watch", "video id"),
        ("https://www.youtube.com/channel/XYZ", "channel id"),
        ("https://www.youtube.com/about", "neither a video nor a channel"),
        ("@a", "handle"),
        ("https://twitter.com/", "must name an account"),
        ("https://x.com/search?q=1", "must name an account"),
        ("https://x.com/this_handle_is_far_too_long", "handle"),
        ("https://x.com/jack/status/abc", "tweet id"),
        ("https://" + "a" * 3000 + ".com/feed", "longer than"),
    ],
)
def test_refuses_naming_why(source: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        detect(source)
