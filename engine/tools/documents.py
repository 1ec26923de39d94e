"""What the document tools (summary_review, extract_claims) share: what they declare
(:class:`DocumentTool`: an LLM over a transcript, retries, timeout, the estimate's note), the LLM
pass over a transcript (through engine.tools.asking, as llm_prompt's, so the step says what it
sent), a document's blob and preview, and the cost estimate of that pass over a transcript that
may still have to be fetched."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import msgspec

from engine.errors import ToolError
from engine.log.events import StepSpec
from engine.providers.base import Completion, estimate_audio_cost, estimate_llm_cost
from engine.tools.asking import Sent, ask
from engine.tools.base import ProviderKind, StepResult, Tool, ToolContext
from engine.tools.retry import RetryPolicy
from engine.tools.sources import Transcript, merged_usage, transcript_for
from engine.tools.transcribe import expected_transcript_chars, known_duration

MAX_CONTEXT_CHARS = 48_000  # what we send of a long transcript; providers cap context anyway
EXCERPT_CHARS = 280
_encoder = msgspec.json.Encoder()


async def llm_over_transcript(
    ctx: ToolContext, *, lang: str | None, max_tokens: int, model: str | None, system: str
) -> tuple[Transcript, Completion, Sent]:
    """The step's transcript (found or fetched), one LLM pass over it (the step's prompt followed
    by the transcript, cut at MAX_CONTEXT_CHARS) and what that pass sent."""
    transcript = await transcript_for(ctx, lang=lang)
    if not transcript.text.strip():
        raise ToolError("invalid_input", "the transcript is empty", retryable=False)
    prompt = "\n\n".join(
        part for part in (ctx.spec.prompt_text.strip(), transcript.text[:MAX_CONTEXT_CHARS]) if part
    )
    answer, sent = await ask(ctx, prompt=prompt, max_tokens=max_tokens, model=model, system=system)
    return transcript, answer, sent


def item_of(input: dict[str, Any]) -> Any:
    """The item a step works on: its own input's, else the one the previous step named (the API
    may only fill the first step's input)."""
    if input.get("item_id"):
        return input["item_id"]
    previous = input.get("previous")
    output = previous.get("output") if isinstance(previous, dict) else None
    return output.get("item_id") if isinstance(output, dict) else None


# Step outputs whose blob is a transcript or names the one it was made from (engine.tools.sources).
_TRANSCRIPT_BEARING = frozenset({"transcript", "summary", "claims"})


def _previous_blob_kind(input: dict[str, Any]) -> str | None:
    """The kind of the previous step's output when it was stored as a blob, else None."""
    previous = input.get("previous")
    if not isinstance(previous, dict) or not previous.get("output_ref"):
        return None
    output = previous.get("output")
    kind = output.get("kind") if isinstance(output, dict) else None
    return kind if isinstance(kind, str) else ""


def has_transcript(input: dict[str, Any]) -> bool:
    """True when the step will find a transcript without calling the transcriber (the order of
    engine.tools.sources.transcript_for)."""
    if _previous_blob_kind(input) in _TRANSCRIPT_BEARING:
        return True
    ref = input.get("transcript_ref")
    if isinstance(ref, dict) and isinstance(ref.get("sha256"), str):
        return True
    text = input.get("text")
    return isinstance(text, str) and bool(text.strip())


def _transcript_chars(input: dict[str, Any]) -> int:
    """The transcript text the LLM pass sends, estimated: the previous transcript's length (else
    its blob's size, which holds its text), the length a previous document names for its
    transcript, the text the client gave, else what the audio's known length makes
    (:func:`expected_transcript_chars`); never more than the most that is sent."""
    kind = _previous_blob_kind(input)
    previous: dict[str, Any] = input.get("previous") or {}  # a blob kind: the previous output
    if kind == "transcript":
        chars = previous["output"].get("chars")
        if isinstance(chars, int) and not isinstance(chars, bool):
            return min(chars, MAX_CONTEXT_CHARS)  # its text's length
        size = previous["output_ref"].get("size")
        if isinstance(size, int):
            return min(size, MAX_CONTEXT_CHARS)
    if kind in ("summary", "claims"):
        chars = previous["output"].get("transcript_chars")
        if isinstance(chars, int) and not isinstance(chars, bool):
            return min(chars, MAX_CONTEXT_CHARS)
    text = input.get("text")
    given = isinstance(text, str) and text.strip() and not input.get("transcript_ref")
    if kind not in _TRANSCRIPT_BEARING and given:
        return min(len(str(text)), MAX_CONTEXT_CHARS)
    return min(expected_transcript_chars(input), MAX_CONTEXT_CHARS)


def estimate_document_cost(
    input: dict[str, Any], spec: StepSpec, *, max_tokens: int, system: str
) -> int:
    """Estimate of :func:`llm_over_transcript`: the transcriber when there is no transcript
    yet, plus the LLM pass over the prompt it builds (the step's prompt, two newlines and the
    transcript) under ``system``."""
    prompt_chars = len(spec.prompt_text.strip()) + 2 + _transcript_chars(input)
    llm = estimate_llm_cost(prompt_chars, max_tokens, len(system))
    return llm + (0 if has_transcript(input) else estimate_audio_cost(known_duration(input)))


class DocumentTool(Tool):
    """A tool that writes a document from an LLM pass over the item's transcript (fetching the
    transcript first when there is none yet)."""

    provider_kind: ClassVar[ProviderKind] = "llm"
    also_uses: ClassVar[tuple[ProviderKind, ...]] = ("transcriber",)
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=4, base_ms=500, max_ms=20_000)
    timeout_s: ClassVar[float] = 180.0
    estimate_note: ClassVar[str] = (
        "the transcript and the instructions at a token per 4 characters plus an expected "
        "completion of 72 tokens (fewer when max_tokens is lower), at the LLM's prices; "
        "without a transcript yet, its "
        "transcription too (estimated as transcribe's)"
    )


def document_result(
    doc: dict[str, Any],
    preview: dict[str, Any],
    transcript: Transcript,
    answer: Completion,
    sent: Sent,
) -> StepResult:
    """A document stored once as a blob (its JSON), with a small preview as the step's output.
    Both name the transcript the document was made from and say what the LLM was sent (the blob
    whole, the preview its head: engine.tools.asking). Its usage and cost are the transcript's
    (when it had to be fetched) and the LLM's together."""
    usage = merged_usage(transcript.usage, answer.usage)
    cost = transcript.cost + answer.cost
    blob = _encoder.encode({**doc, "transcript": transcript.reference(), "sent": sent.whole()})
    digest = hashlib.sha256(blob).hexdigest()
    out = {
        **preview,
        "transcript_sha256": transcript.sha256,
        "transcript_chars": len(transcript.text),
        "sha256": digest,
        "sent": sent.head(),
    }
    return StepResult(output=out, blob=blob, blob_sha256=digest, usage=usage, cost=cost)
