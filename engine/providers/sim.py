"""Simulated providers: a transcriber and an LLM with no network, for embedded mode, tests and
benchmarks.

Outputs are deterministic, derived from the inputs through a SHA-256 seed, so the same request
always yields the same transcript or completion. Each call sleeps ``settings.sim_latency_ms``.

Cost model (micro-coins; 1 coin = 1,000,000):
    transcriber   100 per started second of audio        (0.006 coins a minute)
    llm           1 per prompt token + 3 per completion token (a token ~ 4 characters)

Failure injection:
    * ``settings.sim_fail_rate``: that share of calls fail retryably (``provider_unavailable``).
      Whether a call fails depends only on its idempotency key and attempt, so a run can be
      reproduced exactly.
    * a per-call override, ``{"sim": {...}}`` in the step input or the step params (tests):
        fail_attempts: n     the first n attempts fail retryably
        fail: "fatal"        every attempt fails non-retryably (``provider_rejected``)
        fail: "retryable"    every attempt fails retryably
        hang: true           the call never returns (until cancelled or timed out)
        latency_ms: n        this call's latency instead of the configured one
        retry_after_ms: n    the retryable failures carry this provider hint

Every call carries an idempotency key (execution id + step index, the same for every attempt) so
that a real provider that honours one never bills a retried call twice.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

import anyio

from engine.errors import ToolError
from engine.settings import Settings

AUDIO_MICRO_PER_SECOND = 100
LLM_MICRO_PER_PROMPT_TOKEN = 1
LLM_MICRO_PER_COMPLETION_TOKEN = 3

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


@dataclass(frozen=True, slots=True)
class SimCall:
    """One simulated provider call: who asks, which attempt, and the test overrides."""

    idempotency_key: str
    attempt: int
    overrides: dict[str, Any] = field(default_factory=dict)


def _joined(*parts: object) -> bytes:
    return "\x1f".join(str(p) for p in parts).encode()


def seed_of(*parts: object) -> int:
    """A stable 64-bit seed from the parts (never Python's randomised ``hash``)."""
    digest = hashlib.sha256(_joined(*parts)).digest()
    return int.from_bytes(digest[:8], "big")


def tokens_of(text: str) -> int:
    """The usual rough estimate: a token is about four characters."""
    return max(1, math.ceil(len(text) / 4))


async def simulate_call(settings: Settings, call: SimCall) -> None:
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


@dataclass(frozen=True, slots=True)
class Transcription:
    """A transcriber's answer: timed segments, usage and cost."""

    lang: str
    segments: list[dict[str, Any]]
    usage: dict[str, int]
    cost: int

    @property
    def text(self) -> str:
        return " ".join(s["text"] for s in self.segments)


class SimTranscriber:
    """Deterministic transcripts from the item's identity and language."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def transcribe(self, *, media: str, lang: str, call: SimCall) -> Transcription:
        """Transcribe ``media`` (a source URL or external id) in ``lang``."""
        await simulate_call(self.settings, call)
        # Every choice is one byte of a SHAKE-256 stream of the inputs: as deterministic as a
        # seeded random.Random, at a fraction of its cost (the benchmarks call this thousands of
        # times a second). 12 segments of at most 17 bytes each, plus one, fit in 256 bytes.
        data = hashlib.shake_256(_joined("transcribe", media, lang)).digest(256)
        segments: list[dict[str, Any]] = []
        clock = 0
        at = 1
        for _ in range(4 + data[0] % 9):  # 4-12 segments
            count = 5 + data[at] % 10  # 5-14 words
            words = [_WORDS[b % len(_WORDS)] for b in data[at + 1 : at + 1 + count]]
            at += 1 + count
            duration = len(words) * (300 + data[at] * 151 // 256)  # 300-450 ms per spoken word
            text = " ".join(words).capitalize() + "."
            segments.append({"start_ms": clock, "end_ms": clock + duration, "text": text})
            clock += duration + 100 + data[at + 1] * 701 // 256  # a 100-800 ms pause
            at += 2
        seconds = math.ceil(clock / 1000)
        usage = {"audio_seconds": seconds}
        return Transcription(lang, segments, usage, seconds * AUDIO_MICRO_PER_SECOND)


@dataclass(frozen=True, slots=True)
class Completion:
    """An LLM's answer with its token usage and cost."""

    text: str
    usage: dict[str, int]
    cost: int


class SimLLM:
    """Deterministic completions from the prompt."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def complete(self, *, prompt: str, max_tokens: int, call: SimCall) -> Completion:
        """Complete ``prompt`` with at most ``max_tokens`` tokens."""
        await simulate_call(self.settings, call)
        rng = random.Random(seed_of("llm", prompt))
        words = [rng.choice(_WORDS) for _ in range(rng.randint(12, 60))]
        text = " ".join(words).capitalize() + "."
        while tokens_of(text) > max_tokens and len(text) > 1:
            text = text[: max(1, len(text) - 4 * (tokens_of(text) - max_tokens))]
        prompt_tokens = tokens_of(prompt)
        completion_tokens = tokens_of(text)
        cost = (
            prompt_tokens * LLM_MICRO_PER_PROMPT_TOKEN
            + completion_tokens * LLM_MICRO_PER_COMPLETION_TOKEN
        )
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        return Completion(text, usage, cost)


def estimate_audio_cost(seconds: int = 600) -> int:
    """Upper estimate of a transcription before the audio length is known (10 minutes)."""
    return seconds * AUDIO_MICRO_PER_SECOND


def estimate_llm_cost(prompt_chars: int, max_tokens: int) -> int:
    """Upper estimate of a completion: the prompt plus every allowed completion token."""
    return (
        max(1, math.ceil(prompt_chars / 4)) * LLM_MICRO_PER_PROMPT_TOKEN
        + max_tokens * LLM_MICRO_PER_COMPLETION_TOKEN
    )
