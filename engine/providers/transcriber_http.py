"""A transcription service over HTTP, with this small JSON API:

    POST {base}/transcriptions
        {"source": str, "lang": str}          a media URL or an external id, and its language
    ->  200 {"text": str,
             "segments": [{"start_ms": int, "end_ms": int, "text": str}],
             "duration_s": number,
             "lang": str}                     (lang optional: the one asked for by default)

``Authorization: Bearer <key>`` when a key is configured, ``Idempotency-Key`` on every call; the
usual status mapping (engine.providers.http). Cost: every started second of ``duration_s``, at
the catalogue's audio price. A service that answers text without segments gets one segment
spanning the whole duration.
"""

from __future__ import annotations

import math

import httpx
import msgspec

from engine.errors import ToolError
from engine.providers.base import ProviderCall, Transcription, audio_cost
from engine.providers.config import ProviderConfig
from engine.providers.http import HttpProvider, bearer


class _Segment(msgspec.Struct):
    start_ms: int
    end_ms: int
    text: str


class _TranscriptionResponse(msgspec.Struct):
    text: str
    duration_s: float
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
        if not math.isfinite(answer.duration_s) or answer.duration_s < 0:
            raise ToolError(
                "provider_bad_response",
                f"transcriber answered duration_s={answer.duration_s}",
                retryable=False,
            )
        segments = [
            {"start_ms": s.start_ms, "end_ms": s.end_ms, "text": s.text} for s in answer.segments
        ]
        if not segments and answer.text.strip():
            end = max(1, round(answer.duration_s * 1000))
            segments = [{"start_ms": 0, "end_ms": end, "text": answer.text.strip()}]
        seconds = math.ceil(answer.duration_s)
        usage = {"audio_seconds": seconds}
        return Transcription(answer.lang or lang, segments, usage, audio_cost(seconds))
