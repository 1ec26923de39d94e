"""The simulated providers: the same inputs always give the same outputs, usage and cost;
different inputs differ; failure injection does what the hooks say."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.errors import ToolError
from engine.providers import sim
from engine.providers.base import ProviderCall, audio_cost, llm_cost
from engine.providers.sim import SimLLM, SimTranscriber, SimYouTube
from engine.settings import Settings

pytestmark = pytest.mark.anyio

FAST = Settings(sim_latency_ms=0)
NOW_MS = 1_790_000_000_000  # 2026-09-21


def call(attempt: int = 1, **sim: Any) -> ProviderCall:
    return ProviderCall("exe_x:0", attempt, sim)


async def test_transcriber_is_deterministic_and_costs_its_duration() -> None:
    t = SimTranscriber(FAST)
    a = await t.transcribe(media="vid-a", lang="en", call=call())
    again = await t.transcribe(media="vid-a", lang="en", call=call(attempt=3))
    other = await t.transcribe(media="vid-b", lang="en", call=call())
    assert a == again
    assert a.segments != other.segments
    assert a.cost == audio_cost(a.usage["audio_seconds"])
    assert a.usage["audio_seconds"] * 1000 >= a.segments[-1]["end_ms"]


async def test_the_duration_known_before_a_call_is_the_one_the_call_reports() -> None:
    t = SimTranscriber(FAST)
    for n in range(200):
        media, lang = f"vid-{n}", ("en", "pt", "ja")[n % 3]
        done = await t.transcribe(media=media, lang=lang, call=call())
        assert t.known_duration_s(media, lang) == done.usage["audio_seconds"]


async def test_llm_is_deterministic_and_system_prompt_counts() -> None:
    llm = SimLLM(FAST)
    a = await llm.complete(prompt="p", max_tokens=100, call=call())
    b = await llm.complete(prompt="p", max_tokens=100, call=call(attempt=2))
    s = await llm.complete(prompt="p", max_tokens=100, call=call(), system="be brief")
    assert a == b
    assert s.text != a.text
    assert s.usage["prompt_tokens"] > a.usage["prompt_tokens"]
    assert a.cost == llm_cost(a.usage["prompt_tokens"], a.usage["completion_tokens"])
    assert (await llm.complete(prompt="p", max_tokens=100, call=call(), model="m")).model == "m"
    assert a.model == "sim-1"


async def test_youtube_is_deterministic() -> None:
    yt = SimYouTube(FAST)
    v = await yt.video(video_id="dQw4w9WgXcQ", call=call())
    assert v == await yt.video(video_id="dQw4w9WgXcQ", call=call())
    assert v.title != (await yt.video(video_id="aaaaaaaaaaa", call=call())).title
    assert v.channel_id.startswith("UC")
    assert len(v.channel_id) == 24
    at = call(now_ms=NOW_MS)
    listing = await yt.channel_videos(channel="@someone", max_videos=500, call=at)
    again = await yt.channel_videos(channel="@someone", max_videos=500, call=at)
    assert listing == again
    assert 5 <= len(listing.videos) <= 60
    dates = [v.published_at for v in listing.videos]
    assert dates == sorted(dates, reverse=True)  # newest first
    capped = await yt.channel_videos(channel="@someone", max_videos=3, call=at)
    assert capped.videos == listing.videos[:3]


async def test_a_later_channel_listing_keeps_the_videos_and_adds_the_new_ones() -> None:
    yt = SimYouTube(FAST)
    before = await yt.channel_videos(channel="@someone", max_videos=500, call=call(now_ms=NOW_MS))
    week_ms = 7 * 86_400_000
    after = await yt.channel_videos(
        channel="@someone", max_videos=500, call=call(now_ms=NOW_MS + week_ms)
    )
    newest = max(v.published_at for v in before.videos)
    added = [v for v in after.videos if v.published_at > newest]
    assert added, "a week later a channel uploading every 6-72 hours has new videos"
    assert after.videos[: len(added)] == added  # newest first
    assert after.videos[len(added) :] == before.videos[: len(after.videos) - len(added)]
    # Uploads are recent: the newest is in this slot or the one before (slots are at most 72 h).
    assert newest >= "2026-09-15T14:13:20Z"


@pytest.mark.parametrize(
    ("sim", "code", "retryable", "after"),
    [
        ({"fail": "fatal"}, "provider_rejected", False, None),
        ({"fail": "retryable"}, "provider_unavailable", True, None),
        ({"fail": "rate_limited"}, "rate_limited", True, 1000),
        ({"fail": "rate_limited", "retry_after_ms": 5}, "rate_limited", True, 5),
        ({"fail_attempts": 2, "retry_after_ms": 40}, "provider_unavailable", True, 40),
    ],
)
async def test_failure_injection(
    sim: dict[str, Any], code: str, retryable: bool, after: int | None
) -> None:
    for provider_call in (
        SimYouTube(FAST).video(video_id="x", call=call(**sim)),
        SimLLM(FAST).complete(prompt="p", max_tokens=5, call=call(**sim)),
    ):
        with pytest.raises(ToolError) as caught:
            await provider_call
        assert (caught.value.code, caught.value.retryable, caught.value.retry_after_ms) == (
            code,
            retryable,
            after,
        )


async def test_fail_attempts_then_succeeds() -> None:
    yt = SimYouTube(FAST)
    assert await yt.video(video_id="x", call=call(attempt=3, fail_attempts=2))


async def test_failure_rate_is_reproducible() -> None:
    settings = Settings(sim_latency_ms=0, sim_fail_rate=0.5)
    outcomes = []
    for _ in range(2):
        run = []
        for n in range(40):
            try:
                await SimLLM(settings).complete(
                    prompt="p", max_tokens=5, call=ProviderCall(f"e:{n}", 1)
                )
                run.append(True)
            except ToolError:
                run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 5 < outcomes[0].count(False) < 35


def test_the_llm_words_are_the_ones_random_choice_picks() -> None:
    # The simulation's outputs must not change when its word picking gets cheaper: the golden
    # outputs, estimates and benchmarks rest on them.
    for seed in range(200):
        rng, reference = random.Random(seed), random.Random(seed)
        count = reference.randint(24, 60)
        assert sim._choices(rng, rng.randint(24, 60)) == [
            reference.choice(sim._WORDS) for _ in range(count)
        ]
        assert rng.random() == reference.random()  # the same draws were taken
