"""The HTTP transcriber against a local stub server."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import ToolError
from engine.providers.base import ProviderCall, audio_cost
from engine.providers.config import ProviderConfig
from engine.providers.transcriber_http import HttpTranscriber
from tests.providers.stub import reply, scripted, stub_server

pytestmark = pytest.mark.anyio

SEGMENTS = [
    {"start_ms": 0, "end_ms": 1500, "text": "Hello world."},
    {"start_ms": 1600, "end_ms": 3000, "text": "Second line."},
]


def transcriber(url: str, timeout_s: float = 5.0) -> HttpTranscriber:
    config = ProviderConfig(
        modes={"llm": "sim", "transcriber": "http", "youtube": "sim"},
        transcriber_url=url,
        transcriber_key="tr-key-abcdef",
        timeout_s=timeout_s,
    )
    return HttpTranscriber(config)


async def test_transcription_request_usage_and_cost() -> None:
    body = {"text": "Hello world. Second line.", "segments": SEGMENTS, "duration_s": 3.2}
    async with stub_server(scripted(reply(200, body))) as server:
        provider = transcriber(server.url)
        got = await provider.transcribe(
            media="https://youtu.be/x", lang="fr", call=ProviderCall("e:0", 3)
        )
        await provider.aclose()
    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/transcriptions")
    assert sent.json() == {"source": "https://youtu.be/x", "lang": "fr"}
    assert sent.headers["idempotency-key"] == "e:0"
    assert sent.headers["authorization"] == "Bearer tr-key-abcdef"
    assert got.segments == SEGMENTS
    assert got.lang == "fr"
    assert got.usage == {"audio_seconds": 4}
    assert got.cost == audio_cost(4)


async def test_text_without_segments_becomes_one_segment() -> None:
    body = {"text": "Only text.", "duration_s": 2, "lang": "de"}
    async with stub_server(scripted(reply(200, body))) as server:
        provider = transcriber(server.url)
        got = await provider.transcribe(media="m", lang="en", call=ProviderCall("e:0", 1))
        await provider.aclose()
    assert got.segments == [{"start_ms": 0, "end_ms": 2000, "text": "Only text."}]
    assert got.lang == "de"


async def test_segments_in_seconds_are_stored_in_ms() -> None:
    """A Whisper-style answer: segments with ``start``/``end`` seconds (and fields of its own),
    ``duration`` for ``duration_s``; a service may mix both segment shapes."""
    body = {
        "task": "transcribe",
        "duration": 3.2,
        "text": "Hello world. Second line.",
        "segments": [
            {"id": 0, "seek": 0, "start": 0, "end": 1.5, "text": "Hello world.", "tokens": [1]},
            {"start_ms": 1600, "end_ms": 3000, "text": "Second line."},
        ],
    }
    async with stub_server(scripted(reply(200, body))) as server:
        provider = transcriber(server.url)
        got = await provider.transcribe(media="m", lang="en", call=ProviderCall("e:0", 1))
        await provider.aclose()
    assert got.segments == SEGMENTS
    assert got.usage == {"audio_seconds": 4}


@pytest.mark.parametrize(
    "segment",
    [
        {"text": "no times"},
        {"start": 1.0, "text": "no end"},
        {"start": -1.0, "end": 1.0, "text": "negative"},
        {"start": 2.0, "end": 1.0, "text": "ends before it starts"},
        {"start_ms": 1.5, "end_ms": 2, "text": "ms not an integer"},
    ],
)
async def test_a_segment_without_usable_times_is_a_bad_response(segment: dict[str, Any]) -> None:
    body = {"text": "x", "duration_s": 3, "segments": [segment]}
    async with stub_server(scripted(reply(200, body))) as server:
        provider = transcriber(server.url)
        with pytest.raises(ToolError) as caught:
            await provider.transcribe(media="m", lang="en", call=ProviderCall("e:0", 1))
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("provider_bad_response", False)


@pytest.mark.parametrize(
    ("answer", "code", "retryable", "after"),
    [
        (reply(429, {}, retry_after="3"), "rate_limited", True, 3000),
        (reply(503, {}, retry_after="1"), "provider_unavailable", True, 1000),
        (reply(502, b"bad gateway"), "provider_unavailable", True, None),
        (reply(404, {"error": "no such media"}), "not_found", False, None),
        (reply(422, {"error": "unsupported language"}), "provider_rejected", False, None),
        (reply(200, {"text": "x"}), "provider_bad_response", False, None),
    ],
)
async def test_failures(
    answer: tuple[int, dict[str, str], bytes], code: str, retryable: bool, after: int | None
) -> None:
    async with stub_server(scripted(answer)) as server:
        provider = transcriber(server.url)
        with pytest.raises(ToolError) as caught:
            await provider.transcribe(media="m", lang="en", call=ProviderCall("e:0", 1))
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable, caught.value.retry_after_ms) == (
        code,
        retryable,
        after,
    )


async def test_hang_times_out_and_the_key_is_stable_across_attempts() -> None:
    ok = reply(200, {"text": "Done.", "segments": [], "duration_s": 1})
    async with stub_server(scripted("hang", ok)) as server:
        provider = transcriber(server.url, timeout_s=0.2)
        with pytest.raises(ToolError) as caught:
            await provider.transcribe(media="m", lang="en", call=ProviderCall("exe:1", 1))
        got = await provider.transcribe(media="m", lang="en", call=ProviderCall("exe:1", 2))
        await provider.aclose()
    assert caught.value.code == "timeout"
    assert caught.value.retryable
    assert got.text == "Done."
    assert [r.headers["idempotency-key"] for r in server.requests] == ["exe:1", "exe:1"]


async def test_an_unreachable_service_is_retryable() -> None:
    async with stub_server(scripted(reply(200, {}))) as server:
        url = server.url
    provider = transcriber(url)  # the server is gone: connection refused
    with pytest.raises(ToolError) as caught:
        await provider.transcribe(media="m", lang="en", call=ProviderCall("e:0", 1))
    await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("provider_unavailable", True)
