"""A transcription service over HTTP, with this small JSON API:

    POST {base}/transcriptions
        {"source": str, "lang": str}          a media URL or an external id, and its language
    ->  200 {"text": str,
             "segments": [{"start": number, "end": number, "text": str}],
             "duration_s": number,
             "lang": str}                     (lang optional: the one asked for by default)

Segment times in seconds (``start``/``end``, the shape of Whisper-style APIs' segments) or in
milliseconds (``start_ms``/``end_ms`` integers); a segment with neither pair, or with a time that
is negative or not finite, is a bad answer. ``duration`` is read when ``duration_s`` is absent (a
Whisper-style ``verbose_json`` answer); fields beyond these are ignored. Transcripts are stored
with ``start_ms``/``end_ms`` whichever the service used (the API shows seconds).

``Authorization: Bearer <key>`` when a key is configured, ``Idempotency-Key`` on every call; the
usual status mapping (engine.providers.http). Cost: every started second of the duration, at
the catalogue's audio price. A service that answers text without segments gets one segment
spanning the whole duration.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import msgspec

from engine.errors import ToolError
from engine.providers.base import ProviderCall, Transcription, audio_cost
from engine.providers.config import ProviderConfig
from engine.providers.http import HttpProvider, bearer


class _Segment(msgspec.Struct):
    text: str
    start: float | None = None  # seconds
    end: float | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def in_ms(self) -> dict[str, Any]:
        """The segment as transcripts store it, in milliseconds; ToolError when it has no times
        or unusable ones."""
        if self.start is not None and self.end is not None:
            start, end = _ms(self.start), _ms(self.end)
        elif self.start_ms is not None and self.end_ms is not None:
            start, end = self.start_ms, self.end_ms
        else:
            raise _bad(f"a segment has neither start/end nor start_ms/end_ms: {self.text[:80]!r}")
        if start < 0 or end < start:
            raise _bad(f"a segment runs from {start} ms to {end} ms")
        return {"start_ms": start, "end_ms": end, "text": self.text}


def _ms(seconds: float) -> int:
    if not math.isfinite(seconds):
        raise _bad(f"a segment time is {seconds}")
    return round(seconds * 1000)


def _bad(message: str) -> ToolError:
    return ToolError("provider_bad_response", f"transcriber answered {message}", retryable=False)


class _TranscriptionResponse(msgspec.Struct):
    text: str
    duration_s: float | None = None
    duration: float | None = None  # a Whisper-style answer's name for it
    segments: list[_Segment] = msgspec.field(default_factory=list)
    lang: str | None = None


class HttpTranscriber:
    """Transcripts from the transcription service at ``CLIPSTREAM_TRANSCRIBER_URL``."""

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not config.transcriber_url:
            raise ValueError("the http transcriber needs transcriber_url")
        key = config.transcriber_key
        self.http = HttpProvider(
            name="transcriber",
            base_url=config.transcriber_url,
            timeout_s=config.timeout_s,
            headers=bearer(key),
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    def known_duration_s(self, media: str, lang: str) -> int | None:
        """Unknown before the call: the service says how long the audio was in its answer."""
        return None

    async def transcribe(self, *, media: str, lang: str, call: ProviderCall) -> Transcription:
        """Transcribe ``media`` in ``lang``."""
        answer = await self.http.call(
            "POST",
            "transcriptions",
            _TranscriptionResponse,
            call=call,
            json={"source": media, "lang": lang},
        )
        duration = answer.duration_s if answer.duration_s is not None else answer.duration
        if duration is None:
            raise _bad("no duration_s (nor duration)")
        if not math.isfinite(duration) or duration < 0:
            raise _bad(f"duration_s={duration}")
        segments = [s.in_ms() for s in answer.segments]
        if not segments and answer.text.strip():
            end = max(1, round(duration * 1000))
            segments = [{"start_ms": 0, "end_ms": end, "text": answer.text.strip()}]
        seconds = math.ceil(duration)
        usage = {"audio_seconds": seconds}
        return Transcription(answer.lang or lang, segments, usage, audio_cost(seconds))
