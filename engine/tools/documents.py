"""What the document tools (summary_review, extract_claims) share: a document's blob and preview,
and the cost estimate of an LLM pass over a transcript that may still have to be fetched."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from engine.errors import ToolError
from engine.providers.base import Completion
from engine.providers.sim import estimate_audio_cost, estimate_llm_cost
from engine.tools.base import StepResult, ToolContext
from engine.tools.sources import Transcript, transcript_for

MAX_CONTEXT_CHARS = 48_000  # what we send of a long transcript; providers cap context anyway
EXCERPT_CHARS = 280
_encoder = msgspec.json.Encoder()


async def llm_over_transcript(
    ctx: ToolContext, *, lang: str | None, max_tokens: int, model: str | None, system: str
) -> tuple[Transcript, Completion]:
    """The step's transcript (found or fetched) and one LLM pass over it: the step's prompt
    followed by the transcript (cut at MAX_CONTEXT_CHARS)."""
    transcript = await transcript_for(ctx, lang=lang)
    if not transcript.text.strip():
        raise ToolError("invalid_input", "the transcript is empty", retryable=False)
    prompt = "\n\n".join(
        part for part in (ctx.spec.prompt_text.strip(), transcript.text[:MAX_CONTEXT_CHARS]) if part
    )
    answer = await ctx.provider_set.llm(ctx.settings).complete(
        prompt=prompt, max_tokens=max_tokens, call=ctx.call, model=model, system=system
    )
    return transcript, answer


def item_of(input: dict[str, Any]) -> Any:
    """The item a step works on: its own input's, else the one the previous step named (the API
    may only fill the first step's input)."""
    if input.get("item_id"):
        return input["item_id"]
    previous = input.get("previous")
    output = previous.get("output") if isinstance(previous, dict) else None
    return output.get("item_id") if isinstance(output, dict) else None


def has_transcript(input: dict[str, Any]) -> bool:
    """True when the step will find a transcript without calling the transcriber."""
    previous = input.get("previous") or {}
    if isinstance(previous, dict) and previous.get("output_ref"):
        return True
    return bool(input.get("transcript_ref") or input.get("text"))


def estimate_document_cost(input: dict[str, Any], max_tokens: int) -> int:
    """Upper estimate: the transcriber when there is no transcript yet, plus the LLM pass."""
    previous = input.get("previous") or {}
    ref = previous.get("output_ref") if isinstance(previous, dict) else None
    size = int(ref.get("size") or 0) if isinstance(ref, dict) else len(str(input.get("text", "")))
    llm = estimate_llm_cost(min(size or MAX_CONTEXT_CHARS, MAX_CONTEXT_CHARS), max_tokens)
    return llm + (0 if has_transcript(input) else estimate_audio_cost())


def document_result(
    doc: dict[str, Any],
    preview: dict[str, Any],
    transcript: Transcript,
    usage: dict[str, int],
    cost: int,
) -> StepResult:
    """A document stored once as a blob (its JSON), with a small preview as the step's output.
    Both name the transcript the document was made from."""
    blob = _encoder.encode({**doc, "transcript": transcript.reference()})
    out = {
        **preview,
        "transcript_sha256": transcript.sha256,
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    return StepResult(output=out, blob=blob, usage=usage, cost=cost)
