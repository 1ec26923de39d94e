"""Simulated providers: a transcriber, an LLM, an embedder and YouTube with no network, for
embedded mode, tests and benchmarks.

Outputs are deterministic, derived from the inputs through a SHA-256 seed, so the same request
always yields the same transcript or completion. Each call sleeps ``settings.sim_latency_ms``.

Cost model (micro-coins; 1 coin = 1,000,000):
    transcriber   100 per started second of audio        (0.006 coins a minute)
    llm           1 per prompt token + 3 per completion token (a token ~ 4 characters)
    embedder      20 per 1,000 tokens embedded (rounded up); 16-dimensional unit vectors
    youtube       free; usage counts the Data API's quota units a real call would spend

Failure injection:
    * ``settings.sim_fail_rate``: that share of calls fail retryably (``provider_unavailable``).
      Whether a call fails depends only on its idempotency key and attempt, so a run can be
      reproduced exactly.
    * a per-call override, ``{"sim": {...}}`` in the step input or the step params (tests):
        fail_attempts: n     the first n attempts fail retryably
        fail: "fatal"        every attempt fails non-retryably (``provider_rejected``)
        fail: "retryable"    every attempt fails retryably
        fail: "rate_limited" every attempt fails like an HTTP 429 (code ``rate_limited``) with
                             ``retry_after_ms`` (default 1000) as its Retry-After
        hang: true           the call never returns (until cancelled or timed out)
        now_ms: n            the time a channel listing is taken (default: now)
        latency_ms: n        this call's latency instead of the configured one
        retry_after_ms: n    the retryable failures carry this provider hint

Every call carries an idempotency key (execution id + step index, the same for every attempt) so
that a real provider that honours one never bills a retried call twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from typing import Any

import anyio

from engine.clock import now_ms
from engine.errors import ToolError
from engine.language import DEFAULT_LANG
from engine.providers.base import (
    AUDIO_MICRO_PER_SECOND,
    EMBED_MICRO_PER_1K_TOKENS,
    LLM_MICRO_PER_COMPLETION_TOKEN,
    LLM_MICRO_PER_PROMPT_TOKEN,
    ChannelListing,
    ChannelVideo,
    Completion,
    Embeddings,
    ProviderCall,
    Transcription,
    VideoMetadata,
    audio_cost,
    embed_cost,
    llm_cost,
    text_tokens,
)
from engine.settings import Settings

__all__ = [
    "AUDIO_MICRO_PER_SECOND",
    "EMBED_MICRO_PER_1K_TOKENS",
    "LLM_MICRO_PER_COMPLETION_TOKEN",
    "LLM_MICRO_PER_PROMPT_TOKEN",
    "SIM_MODEL",
    "Completion",
    "SimCall",
    "SimEmbedder",
    "SimLLM",
    "SimTranscriber",
    "SimYouTube",
    "Transcription",
    "seed_of",
    "simulate_call",
    "tokens_of",
]

SIM_MODEL = "sim-1"
# The simulation's calls are provider calls like any other (the name predates the HTTP providers).
SimCall = ProviderCall

_WORDS = [
    "stream",
    "clip",
    "video",
    "channel",
    "signal",
    "market",
    "story",
    "moment",
    "crowd",
    "voice",
    "light",
    "city",
    "river",
    "data",
    "model",
    "engine",
    "future",
    "question",
    "answer",
    "people",
    "world",
    "energy",
    "music",
    "camera",
    "review",
    "research",
    "network",
    "detail",
    "pattern",
    "summary",
    "history",
    "science",
    "design",
    "garden",
    "journey",
    "ocean",
    "mountain",
]
# The word each byte of a simulated transcript's stream stands for.
_BYTE_WORDS = tuple(_WORDS[b % len(_WORDS)] for b in range(256))


_WORD_BITS = len(_WORDS).bit_length()


def _choices(rng: random.Random, count: int) -> list[str]:
    """``[rng.choice(_WORDS) for _ in range(count)]``, the same words from the same draws of
    ``rng`` (random.Random.choice takes ``bit_length`` bits, again while they reach past the
    list), without its two Python calls per word."""
    bits, n = rng.getrandbits, len(_WORDS)
    out = []
    for _ in range(count):
        r = bits(_WORD_BITS)
        while r >= n:
            r = bits(_WORD_BITS)
        out.append(_WORDS[r])
    return out


def _joined(*parts: object) -> bytes:
    return "\x1f".join(str(p) for p in parts).encode()


def seed_of(*parts: object) -> int:
    """A stable 64-bit seed from the parts (never Python's randomised ``hash``)."""
    digest = hashlib.sha256(_joined(*parts)).digest()
    return int.from_bytes(digest[:8], "big")


def tokens_of(text: str) -> int:
    """The usual rough estimate: a token is about four characters."""
    return max(1, math.ceil(len(text) / 4))


async def simulate_call(settings: Settings, call: ProviderCall) -> None:
    """Wait the latency, then fail when the failure injection says so (the shared prologue)."""
    sim = call.overrides
    if sim.get("hang"):
        await anyio.sleep_forever()
    latency = int(sim.get("latency_ms", settings.sim_latency_ms))
    if latency > 0:
        await anyio.sleep(latency / 1000)
    retry_after = sim.get("retry_after_ms")
    hint = int(retry_after) if retry_after is not None else None
    fail = sim.get("fail")
    if fail == "fatal":
        raise ToolError("provider_rejected", "simulated provider refused the call", retryable=False)
    if fail == "rate_limited":
        raise ToolError(
            "rate_limited",
            f"simulated provider rate limit (attempt {call.attempt})",
            retryable=True,
            retry_after_ms=1000 if hint is None else hint,
        )
    if fail == "retryable" or call.attempt <= int(sim.get("fail_attempts", 0)):
        raise ToolError(
            "provider_unavailable",
            f"simulated provider failure (attempt {call.attempt})",
            retryable=True,
            retry_after_ms=hint,
        )
    rate = settings.sim_fail_rate
    if rate > 0 and seed_of(call.idempotency_key, call.attempt) / 2**64 < rate:
        raise ToolError(
            "provider_unavailable",
            f"simulated provider failure at rate {rate} (attempt {call.attempt})",
            retryable=True,
            retry_after_ms=hint,
        )


class SimTranscriber:
    """Deterministic transcripts from the item's identity and language."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def transcribe(self, *, media: str, lang: str, call: ProviderCall) -> Transcription:
        """Transcribe ``media`` (a source URL or external id) in ``lang``."""
        await simulate_call(self.settings, call)
        segments, seconds = _sim_transcript(media, lang)
        usage = {"audio_seconds": seconds}
        return Transcription(lang, segments, usage, audio_cost(seconds))

    def known_duration_s(self, media: str, lang: str) -> int | None:
        """The audio seconds :meth:`transcribe` will report for ``media`` (no call: the
        simulation knows its videos)."""
        return _sim_seconds(media, lang)


def _sim_transcript(media: str, lang: str) -> tuple[list[dict[str, Any]], int]:
    """The simulated transcript of ``media`` in ``lang`` and its audio length in seconds."""
    data, segments, seconds = _sim_segments(media, lang)
    transcript = [
        {"start_ms": start, "end_ms": end, "text": _sim_text(data, first, count)}
        for first, count, start, end in segments
    ]
    return transcript, seconds


def _sim_seconds(media: str, lang: str) -> int:
    """The audio length :func:`_sim_transcript` gives, without writing its text."""
    return _sim_segments(media, lang)[2]


def _sim_segments(media: str, lang: str) -> tuple[bytes, list[tuple[int, int, int, int]], int]:
    """The simulated transcript's shape: the byte stream its words come from, per segment (the
    byte of its first word, its word count, start and end ms), and its audio seconds."""
    # Every choice is one byte of a SHAKE-256 stream of the inputs: as deterministic as a
    # seeded random.Random, at a fraction of its cost (the benchmarks call this thousands of
    # times a second). 12 segments of at most 17 bytes each, plus one, fit in 256 bytes.
    data = hashlib.shake_256(_joined("transcribe", media, lang)).digest(256)
    segments: list[tuple[int, int, int, int]] = []
    clock = 0
    at = 1
    for _ in range(4 + data[0] % 9):  # 4-12 segments
        count = 5 + data[at] % 10  # 5-14 words
        first = at + 1
        at += 1 + count
        duration = count * (300 + data[at] * 151 // 256)  # 300-450 ms per spoken word
        segments.append((first, count, clock, clock + duration))
        clock += duration + 100 + data[at + 1] * 701 // 256  # a 100-800 ms pause
        at += 2
    return data, segments, math.ceil(clock / 1000)


def _sim_text(data: bytes, first: int, count: int) -> str:
    """A segment's sentence: ``count`` words, one per byte of ``data`` from ``first``."""
    return " ".join([_BYTE_WORDS[b] for b in data[first : first + count]]).capitalize() + "."


SIM_EMBED_DIMS = 16
SIM_EMBED_MODEL = "sim-embed-1"


class SimEmbedder:
    """Deterministic unit vectors from each text."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def embed(
        self, *, texts: list[str], call: ProviderCall, model: str | None = None
    ) -> Embeddings:
        """One :data:`SIM_EMBED_DIMS`-dimensional unit vector per text."""
        await simulate_call(self.settings, call)
        vectors = []
        for text in texts:
            data = hashlib.shake_256(_joined("embed", text)).digest(SIM_EMBED_DIMS)
            raw = [b / 127.5 - 1.0 for b in data]
            norm = math.sqrt(sum(x * x for x in raw)) or 1.0
            vectors.append([round(x / norm, 6) for x in raw])
        tokens = sum(text_tokens(t) for t in texts)
        return Embeddings(vectors, {"tokens": tokens}, embed_cost(tokens), model or SIM_EMBED_MODEL)


class SimLLM:
    """Deterministic completions from the prompt."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def complete(
        self,
        *,
        prompt: str,
        max_tokens: int,
        call: ProviderCall,
        model: str | None = None,
        system: str | None = None,
    ) -> Completion:
        """Complete ``prompt`` with at most ``max_tokens`` tokens; ``system`` instructions count
        as prompt tokens and change the answer."""
        await simulate_call(self.settings, call)
        seed = seed_of("llm", prompt) if system is None else seed_of("llm", system, prompt)
        rng = random.Random(seed)
        words = _choices(rng, rng.randint(24, 60))
        text = " ".join(words).capitalize() + "."
        while tokens_of(text) > max_tokens and len(text) > 1:
            text = text[: max(1, len(text) - 4 * (tokens_of(text) - max_tokens))]
        prompt_tokens = tokens_of(prompt) + (tokens_of(system) if system else 0)
        completion_tokens = tokens_of(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        return Completion(
            text, usage, llm_cost(prompt_tokens, completion_tokens), model or SIM_MODEL
        )


_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_PAGE = 50  # what one playlistItems page of the real API holds


def _sim_id(length: int, *parts: object) -> str:
    digest = hashlib.sha256(_joined("id", *parts)).digest()
    return "".join(_ID_ALPHABET[b % 64] for b in digest[:length])


def _iso(seconds: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimYouTube:
    """Deterministic video metadata and channel listings from the ids asked for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def video(self, *, video_id: str, call: ProviderCall) -> VideoMetadata:
        """One video's metadata (every id exists in the simulation)."""
        await simulate_call(self.settings, call)
        rng = random.Random(seed_of("video", video_id))
        title = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))).title()
        description = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 40)))
        channel_id = "UC" + _sim_id(22, "channel-of", video_id)
        return VideoMetadata(
            video_id=video_id,
            title=title,
            description=description.capitalize() + ".",
            channel_id=channel_id,
            channel_title=rng.choice(_WORDS).title() + " " + rng.choice(_WORDS).title(),
            published_at=_iso(rng.randrange(0, 5 * 365 * 86_400)),
            # The simulated transcriber's length of the same video, so the two agree (a real
            # video's metadata and its audio do).
            duration_s=_sim_seconds(video_id, DEFAULT_LANG),
            tags=sorted({rng.choice(_WORDS) for _ in range(rng.randint(0, 6))}),
            usage={"quota_units": 1},
        )

    async def channel_videos(
        self, *, channel: str, max_videos: int, call: ProviderCall
    ) -> ChannelListing:
        """A channel's newest uploads, newest first, at most ``max_videos`` (and 5-60, by channel).

        The channel uploads once per slot of 6 to 72 hours (by channel), at a time and under an
        id fixed by the slot: a later listing shows the same videos and the ones uploaded since,
        as a real channel would (schedule runs rely on it). The listing is taken at the call's
        ``now_ms`` hook (tests), else now."""
        await simulate_call(self.settings, call)
        channel_id = channel if channel.startswith("UC") else "UC" + _sim_id(22, "handle", channel)
        rng = random.Random(seed_of("channel", channel_id))
        total = rng.randint(5, 60)
        slot_s = rng.randint(6, 72) * 3_600
        now_s = int(call.overrides.get("now_ms", now_ms())) // 1000
        slot = now_s // slot_s
        videos: list[ChannelVideo] = []
        while len(videos) < min(total, max_videos):
            upload = random.Random(seed_of("upload", channel_id, slot))
            published = slot * slot_s + upload.randrange(slot_s)
            if published <= now_s:
                title = " ".join(upload.choice(_WORDS) for _ in range(upload.randint(3, 8)))
                videos.append(
                    ChannelVideo(_sim_id(11, channel_id, slot), title.title(), _iso_at(published))
                )
            slot -= 1
        # A real listing spends one unit on the channel and one per page of uploads.
        usage = {"quota_units": 1 + max(1, math.ceil(len(videos) / _PAGE))}
        title = " ".join(w.title() for w in rng.sample(_WORDS, 2))
        return ChannelListing(channel_id, title, videos, usage)


def _iso_at(epoch_s: int) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
