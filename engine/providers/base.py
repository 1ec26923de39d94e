"""What a provider is, whatever is behind it (the simulation or an HTTP service).

Four kinds, one protocol each: :class:`Transcriber`, :class:`LLM`, :class:`Embedder` and
:class:`YouTube`. Tools
only ever see these protocols, so a tool runs the same against the simulated providers (tests,
embedded mode, benchmarks) and the HTTP ones (production). Every call takes a
:class:`ProviderCall`: who asks (the idempotency key), which attempt, and the simulation's test
overrides (ignored by HTTP providers).

Costs are micro-coins (1 coin = 1,000,000); usage counts the provider's own units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeGuard

ProviderKindName = Literal["transcriber", "llm", "youtube", "embedder"]

# The unit prices every provider charges by (the catalogue lists them; see engine.tools.catalog).
AUDIO_MICRO_PER_SECOND = 100
LLM_MICRO_PER_PROMPT_TOKEN = 1
LLM_MICRO_PER_COMPLETION_TOKEN = 3
EMBED_MICRO_PER_1K_TOKENS = 20  # 0.00002 coin per 1,000 tokens embedded


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One provider call: its idempotency key, the attempt, and the simulation's overrides.

    The key is the step's (execution id + step index), the same for every attempt, so a provider
    that honours one never bills a retried call twice. A step that makes several calls gives each
    one its own stable key with :meth:`sub`, so no two different requests ever share a key.
    """

    idempotency_key: str
    attempt: int
    overrides: dict[str, Any] = field(default_factory=dict)

    def sub(self, label: str) -> ProviderCall:
        """The same call's key, qualified for a secondary request (``<key>:<label>``)."""
        return replace(self, idempotency_key=f"{self.idempotency_key}:{label}")


def span_seconds(segment: Any) -> tuple[float, float] | None:
    """A timed segment's start and end in seconds, the unit clients read: a segment stored with
    ``start_ms``/``end_ms`` (every transcript stored so far, and claims documents stored before
    2026-12-05) or one already in seconds (``start``/``end``); None when it has neither pair."""
    if not isinstance(segment, dict):
        return None
    start, end = segment.get("start"), segment.get("end")
    if _number(start) and _number(end):
        return start, end
    start, end = segment.get("start_ms"), segment.get("end_ms")
    if _number(start) and _number(end):
        return start / 1000, end / 1000
    return None


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Transcription:
    """A transcriber's answer: timed segments (``{"start_ms", "end_ms", "text"}``: transcripts are
    stored in milliseconds, shown in seconds by :func:`span_seconds`), usage and cost."""

    lang: str
    segments: list[dict[str, Any]]
    usage: dict[str, int]
    cost: int

    @property
    def text(self) -> str:
        return " ".join(s["text"] for s in self.segments)


@dataclass(frozen=True, slots=True)
class Completion:
    """An LLM's answer with its token usage, cost and the model that answered."""

    text: str
    usage: dict[str, int]
    cost: int
    model: str = ""


@dataclass(frozen=True, slots=True)
class Embeddings:
    """An embedder's answer: one vector per input text, in order, with usage, cost and the model
    that made them."""

    vectors: list[list[float]]
    usage: dict[str, int]
    cost: int
    model: str = ""


@dataclass(frozen=True, slots=True)
class VideoMetadata:
    """One video as the YouTube Data API describes it."""

    video_id: str
    title: str
    description: str
    channel_id: str
    channel_title: str
    published_at: str  # ISO 8601, as the API gives it
    duration_s: int
    tags: list[str]
    usage: dict[str, int]


@dataclass(frozen=True, slots=True)
class ChannelVideo:
    """One upload of a channel."""

    video_id: str
    title: str
    published_at: str


@dataclass(frozen=True, slots=True)
class ChannelListing:
    """A channel's uploads, newest first, as far as the listing went."""

    channel_id: str
    title: str
    videos: list[ChannelVideo]
    usage: dict[str, int]


class Transcriber(Protocol):
    """Speech to text."""

    async def transcribe(self, *, media: str, lang: str, call: ProviderCall) -> Transcription:
        """Transcribe ``media`` (a source URL or an external id) in ``lang``."""
        ...

    def known_duration_s(self, media: str, lang: str) -> int | None:
        """The audio length of ``media`` in seconds when the provider knows it without a call
        (the simulation does), else None: what a transcription's cost estimate is made from."""
        ...


class LLM(Protocol):
    """Chat completions."""

    async def complete(
        self,
        *,
        prompt: str,
        max_tokens: int,
        call: ProviderCall,
        model: str | None = None,
        system: str | None = None,
    ) -> Completion:
        """Complete ``prompt`` (under ``system`` instructions) in at most ``max_tokens`` tokens,
        with ``model`` or the provider's configured one."""
        ...


class Embedder(Protocol):
    """Text to vectors."""

    async def embed(
        self, *, texts: list[str], call: ProviderCall, model: str | None = None
    ) -> Embeddings:
        """One vector per text of ``texts``, with ``model`` or the provider's configured one."""
        ...


class YouTube(Protocol):
    """Video and channel metadata."""

    async def video(self, *, video_id: str, call: ProviderCall) -> VideoMetadata:
        """The metadata of one video; ToolError ``not_found`` when there is no such video."""
        ...

    async def channel_videos(
        self, *, channel: str, max_videos: int, call: ProviderCall
    ) -> ChannelListing:
        """A channel's newest uploads (at most ``max_videos``). ``channel`` is a channel id
        (``UC…``) or a handle (``@name``)."""
        ...


def llm_cost(prompt_tokens: int, completion_tokens: int) -> int:
    """What a completion costs, in micro-coins."""
    return (
        prompt_tokens * LLM_MICRO_PER_PROMPT_TOKEN
        + completion_tokens * LLM_MICRO_PER_COMPLETION_TOKEN
    )


def audio_cost(seconds: int) -> int:
    """What transcribing ``seconds`` of audio costs, in micro-coins."""
    return seconds * AUDIO_MICRO_PER_SECOND


DEFAULT_AUDIO_SECONDS = 600  # the audio length a transcription is estimated at when unknown


def embed_cost(tokens: int) -> int:
    """What embedding ``tokens`` tokens costs, in micro-coins (rounded up)."""
    return -(-tokens * EMBED_MICRO_PER_1K_TOKENS // 1000)


def text_tokens(text: str) -> int:
    """The usual estimate of a text's tokens: one per four characters, at least one."""
    return max(1, math.ceil(len(text) / 4))


def estimate_audio_cost(seconds: int | None = None) -> int:
    """Estimate of a transcription: its known audio length, else :data:`DEFAULT_AUDIO_SECONDS`."""
    return audio_cost(DEFAULT_AUDIO_SECONDS if seconds is None else seconds)


# The completion an LLM step is estimated at: about what the simulated LLM returns on average
# (24-60 words, 41-110 tokens), and the stated default for an HTTP LLM, whose answers' length
# cannot be known before they come. ``max_tokens`` below it lowers the estimate to itself.
EXPECTED_COMPLETION_TOKENS = 72


def estimate_llm_cost(prompt_chars: int, max_tokens: int, system_chars: int = 0) -> int:
    """Estimate of a completion: the prompt and system instructions at a token per four
    characters, each rounded up as the providers count them, and the expected completion
    (:data:`EXPECTED_COMPLETION_TOKENS`, at most ``max_tokens``). A longer answer or a tokenizer
    that makes more tokens is charged past the reservation up to the balance, as any cost is."""
    prompt_tokens = max(1, math.ceil(prompt_chars / 4)) + math.ceil(system_chars / 4)
    return llm_cost(prompt_tokens, min(max_tokens, EXPECTED_COMPLETION_TOKENS))
