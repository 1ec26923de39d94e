"""``summary_review``: a summary and a short critical review of the item's transcript, by the LLM.

Input: the transcript comes from the step before (or the item, or the transcriber: see
engine.tools.sources). The step's ``prompt_text``, when set, adds the workflow author's
instructions.

Output: a document blob, the JSON of ``{"kind": "summary", "item_id", "lang", "model", "length",
"text", "instructions", "transcript", "sent"}`` (``text`` is the summary and review, ``sent`` what
the LLM was sent, whole: engine.tools.asking), and a preview as StepCompleted.output: ``{"kind":
"summary", "item_id", "model", "chars", "excerpt", "transcript_sha256", "transcript_chars",
"sha256", "sent"}`` (``sent`` with the prompt's head). Usage and cost add the transcriber's, when
it had to be called.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from engine.log.events import StepSpec
from engine.tools.base import StepResult, ToolContext, ToolParams, estimate_params
from engine.tools.documents import (
    EXCERPT_CHARS,
    DocumentTool,
    document_result,
    estimate_document_cost,
    item_of,
    llm_over_transcript,
)

Length = Literal["short", "medium", "long"]
_WORDS: dict[Length, int] = {"short": 80, "medium": 200, "long": 450}


class SummaryReviewParams(ToolParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params of a ``summary_review`` step."""

    model: str | None = None  # None: the provider's configured model
    max_tokens: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 800
    length: Length = "medium"
    lang: str | None = None  # the transcript's language, when one has to be fetched


def system_prompt(length: Length) -> str:
    """The instructions every summary_review call starts with."""
    return (
        "You summarise video transcripts for a newsroom. Write a summary of about "
        f"{_WORDS[length]} words, then a short review: what is well supported, what is "
        "asserted without evidence, and what is missing. Plain text, no preamble."
    )


class SummaryReview(DocumentTool):
    tool_id = "summary_review"
    description = "A summary and short critical review of the item's transcript, as a document."
    params_schema = SummaryReviewParams

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        params = estimate_params(spec, SummaryReviewParams)
        return estimate_document_cost(
            input, spec, max_tokens=params.max_tokens, system=system_prompt(params.length)
        )

    async def run(self, ctx: ToolContext) -> StepResult:
        params = ctx.params(SummaryReviewParams)
        transcript, answer, sent = await llm_over_transcript(
            ctx,
            lang=params.lang,
            max_tokens=params.max_tokens,
            model=params.model,
            system=system_prompt(params.length),
        )
        item_id = item_of(ctx.input)
        doc = {
            "kind": "summary",
            "item_id": item_id,
            "lang": transcript.lang,
            "model": answer.model,
            "length": params.length,
            "text": answer.text,
            "instructions": ctx.spec.prompt_text,
        }
        preview = {
            "kind": "summary",
            "item_id": item_id,
            "model": answer.model,
            "chars": len(answer.text),
            "excerpt": answer.text[:EXCERPT_CHARS],
        }
        return document_result(doc, preview, transcript, answer, sent)
