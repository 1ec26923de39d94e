"""``transcribe``: an item's transcript, as text and timed segments.

Step input (set by the API in ``ExecutionRequested.step_inputs[0]``)::

    {"item_id": str, "source": str, "external_id": str | None, "lang": str | None,
     "text": str | None}

With ``text`` the client supplied the transcript: no provider call, no cost, and the text is cut
into sentence segments timed at a speaking pace. Otherwise the transcriber provider is called.

The output is ALWAYS a blob, the JSON of
``{"lang", "text", "segments": [{"start_ms", "end_ms", "text"}], "origin"}`` (``origin`` is
``provided``, ``simulated``, or ``transcribed`` by the HTTP transcriber), and
StepCompleted.output is a small preview:
``{"kind": "transcript", "item_id", "lang", "chars", "segments", "sha256"}``. The projections
index transcripts from exactly this shape.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from engine.errors import ToolError
from engine.language import DEFAULT_LANG
from engine.log.events import StepSpec
from engine.providers.base import DEFAULT_AUDIO_SECONDS, estimate_audio_cost
from engine.providers.sim import SimTranscriber
from engine.tools.base import StepResult, Tool, ToolContext, ToolParams
from engine.tools.retry import RetryPolicy

_MS_PER_WORD = 400  # about 150 words a minute
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_encoder = msgspec.json.Encoder()


class TranscribeParams(ToolParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params of a ``transcribe`` step."""

    lang: str | None = None


class Transcribe(Tool):
    tool_id = "transcribe"
    description = "The item's transcript: full text and timed segments."
    provider_kind = "transcriber"
    params_schema = TranscribeParams
    retry = RetryPolicy(max_attempts=4, base_ms=200, max_ms=10_000)
    timeout_s = 600.0

    estimate_note = (
        "0 with text given; else the audio's length: the item's known duration (the request's "
        "duration_s, from the transcriber when it knows it without a call, as the simulation "
        f"does, or a previous youtube_metadata step's duration_s), else {DEFAULT_AUDIO_SECONDS} s"
    )

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        if input.get("text"):
            return 0
        return estimate_audio_cost(known_duration(input))

    async def run(self, ctx: ToolContext) -> StepResult:
        params = ctx.params(TranscribeParams)
        item_id = ctx.input.get("item_id")
        lang = ctx.input.get("lang") or params.lang or DEFAULT_LANG
        text = ctx.input.get("text")
        usage: dict[str, int] = {}
        cost = 0
        if text:
            segments = segments_of(str(text))
            origin = "provided"
        else:
            media = ctx.input.get("external_id") or ctx.input.get("source") or item_id
            if not media:
                raise ToolError(
                    "invalid_input", "transcribe needs a source, an external id or an item id",
                    retryable=False,
                )  # fmt: skip
            transcriber = ctx.provider_set.transcriber(ctx.settings)
            result = await transcriber.transcribe(media=str(media), lang=str(lang), call=ctx.call)
            segments, usage, cost = result.segments, result.usage, result.cost
            origin = "simulated" if isinstance(transcriber, SimTranscriber) else "transcribed"
        full_text = " ".join(s["text"] for s in segments)
        blob = _encoder.encode(
            {"lang": lang, "text": full_text, "segments": segments, "origin": origin}
        )
        digest = hashlib.sha256(blob).hexdigest()
        preview = {
            "kind": "transcript",
            "item_id": item_id,
            "lang": lang,
            "chars": len(full_text),
            "segments": len(segments),
            "sha256": digest,
        }
        return StepResult(output=preview, blob=blob, blob_sha256=digest, usage=usage, cost=cost)


def known_duration(input: dict[str, Any]) -> int | None:
    """The audio length in seconds a step's input knows: ``duration_s`` set at the request, or
    the previous step's (a ``youtube_metadata`` step) output; None when unknown."""
    previous = input.get("previous")
    for found in (
        input.get("duration_s"),
        previous.get("output", {}).get("duration_s") if isinstance(previous, dict) else None,
    ):
        if isinstance(found, int) and not isinstance(found, bool) and found >= 0:
            return found
    return None


# The characters of transcript a second of speech makes (about 150 words a minute; the simulated
# transcriber makes 14-19): what an estimate takes a transcript not yet fetched to be.
CHARS_PER_AUDIO_SECOND = 16


def expected_transcript_chars(input: dict[str, Any]) -> int:
    """The length a step's transcript is estimated at before it is read: its known audio length
    (:func:`known_duration`, else the default a transcription is estimated at) at
    :data:`CHARS_PER_AUDIO_SECOND`."""
    seconds = known_duration(input)
    return (DEFAULT_AUDIO_SECONDS if seconds is None else seconds) * CHARS_PER_AUDIO_SECOND


def segments_of(text: str) -> list[dict[str, Any]]:
    """A supplied transcript cut into sentences, timed at a steady speaking pace."""
    segments: list[dict[str, Any]] = []
    clock = 0
    for match in _SENTENCE.finditer(text):
        sentence = " ".join(match.group(0).split())
        if not sentence:
            continue
        duration = max(1, len(sentence.split())) * _MS_PER_WORD
        segments.append({"start_ms": clock, "end_ms": clock + duration, "text": sentence})
        clock += duration
    return segments
