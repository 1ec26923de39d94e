"""``embed``: vectors of a transcript, through the embeddings provider.

It embeds the transcript the step works on (found like a document step's, engine.tools.sources:
the previous step's transcript blob, usually the ``transcribe`` step a transcript request with
``embed: true`` puts before it), one vector per segment (consecutive segments grouped when there
are more than :data:`MAX_INPUTS`, so one call carries them all), and its cost (the embedder's,
plus the transcriber's when the transcript had to be made) is passed through.

The output is a blob, the JSON of ``{"kind": "embedding", "model", "dims", "transcript": {ref},
"vectors": [{"start_ms", "end_ms", "text_chars", "vector"}]}``, stored once beside the
transcript's; StepCompleted.output is its preview: ``{"kind": "embedding", "item_id", "lang",
"model", "dims", "count", "sha256"}``. ``GET /v1/items/{id}/transcript`` shows its status.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from engine.errors import ToolError
from engine.log.events import StepSpec
from engine.providers.base import embed_cost, estimate_audio_cost
from engine.tools.base import StepResult, Tool, ToolContext, ToolParams
from engine.tools.retry import RetryPolicy
from engine.tools.sources import transcript_for
from engine.tools.transcribe import expected_transcript_chars, known_duration

MAX_INPUTS = 256  # texts in one embeddings call
_encoder = msgspec.json.Encoder()


class EmbedParams(ToolParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params of an ``embed`` step."""

    model: str | None = None  # None: the provider's configured model


class Embed(Tool):
    tool_id = "embed"
    description = "Vectors of the item's transcript, one per segment, for search and similarity."
    provider_kind = "embedder"
    also_uses = ("transcriber",)
    params_schema = EmbedParams
    retry = RetryPolicy(max_attempts=4, base_ms=200, max_ms=10_000)
    timeout_s = 120.0
    estimate_note = (
        "the transcript's characters (the previous transcribe step's chars, else 16 a second of "
        "the audio's known length, or of 600 s) at a "
        "token per 4 characters, at the embedder's price; without a transcript yet, its "
        "transcription too (estimated as transcribe's)"
    )

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        previous = input.get("previous")
        output = previous.get("output") if isinstance(previous, dict) else None
        chars = output.get("chars") if isinstance(output, dict) else None
        if isinstance(chars, int) and output is not None and output.get("kind") == "transcript":
            return embed_cost(max(1, -(-chars // 4)))
        chars = expected_transcript_chars(input)
        return embed_cost(max(1, -(-chars // 4))) + estimate_audio_cost(known_duration(input))

    async def run(self, ctx: ToolContext) -> StepResult:
        params = ctx.params(EmbedParams)
        transcript = await transcript_for(ctx)
        pieces = _pieces(transcript.segments, transcript.text)
        if not pieces:
            raise ToolError("invalid_input", "the transcript has no text to embed", retryable=False)
        embedder = ctx.provider_set.embedder(ctx.settings)
        result = await embedder.embed(
            texts=[p["text"] for p in pieces], call=ctx.call.sub("embed"), model=params.model
        )
        dims = len(result.vectors[0]) if result.vectors else 0
        vectors = [
            {
                "start_ms": p["start_ms"],
                "end_ms": p["end_ms"],
                "text_chars": len(p["text"]),
                "vector": v,
            }
            for p, v in zip(pieces, result.vectors, strict=True)
        ]
        blob = _encoder.encode(
            {
                "kind": "embedding",
                "model": result.model,
                "dims": dims,
                "transcript": transcript.reference(),
                "vectors": vectors,
            }
        )
        digest = hashlib.sha256(blob).hexdigest()
        preview = {
            "kind": "embedding",
            "item_id": ctx.input.get("item_id"),
            "lang": transcript.lang,
            "model": result.model,
            "dims": dims,
            "count": len(vectors),
            "sha256": digest,
        }
        usage = {**transcript.usage, "embedding_tokens": result.usage.get("tokens", 0)}
        cost = transcript.cost + result.cost
        return StepResult(output=preview, blob=blob, blob_sha256=digest, usage=usage, cost=cost)


def _pieces(segments: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """What is embedded: the segments (timed), grouped into at most :data:`MAX_INPUTS` pieces;
    the whole text as one piece when there are no segments."""
    timed = [s for s in segments if isinstance(s.get("text"), str) and s["text"].strip()]
    if not timed:
        return [{"start_ms": None, "end_ms": None, "text": text}] if text.strip() else []
    size = -(-len(timed) // MAX_INPUTS)
    return [
        {
            "start_ms": group[0].get("start_ms"),
            "end_ms": group[-1].get("end_ms"),
            "text": " ".join(s["text"] for s in group),
        }
        for group in (timed[i : i + size] for i in range(0, len(timed), size))
    ]
