"""``extract_claims``: the factual claims made in the item's transcript, each pinned to the
moment it is said.

Input: the transcript as for summary_review (engine.tools.sources). The LLM is asked for a JSON
array of strings; an answer in another shape is read line by line (bullets and numbers
stripped), then sentence by sentence, so a model that ignores the format still yields claims.
Each claim is matched to the transcript segment sharing the most words with it.

Output: a document blob, the JSON of ``{"kind": "claims", "item_id", "lang", "model", "claims":
[{"text", "start", "end"}], "transcript", "sent"}`` (times in seconds, as transcript segments are
shown, null when no segment matches: a document stored before 2026-12-05 holds ``start_ms`` and
``end_ms``, which the API shows in seconds; ``sent`` is what the LLM was sent, whole:
engine.tools.asking), and a preview: ``{"kind": "claims", "item_id", "model", "count",
"transcript_sha256", "transcript_chars", "sha256", "sent"}`` (``sent`` with the prompt's head).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from engine.log.events import StepSpec
from engine.providers.base import span_seconds
from engine.tools.base import StepResult, ToolContext, ToolParams, estimate_params
from engine.tools.documents import (
    DocumentTool,
    document_result,
    estimate_document_cost,
    item_of,
    llm_over_transcript,
)

SYSTEM_PROMPT = (
    "List the checkable factual claims made in this video transcript. Answer with a JSON array "
    "of strings, one self-contained claim each, in the order they are made, and nothing else."
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s*")
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_WORD = re.compile(r"\w+")


class ExtractClaimsParams(ToolParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params of an ``extract_claims`` step."""

    model: str | None = None  # None: the provider's configured model
    max_tokens: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 1000
    max_claims: Annotated[int, msgspec.Meta(ge=1, le=200)] = 25
    lang: str | None = None  # the transcript's language, when one has to be fetched


def parse_claims(answer: str, limit: int) -> list[str]:
    """The claims in an LLM's ``answer``: a JSON array of strings (or of ``{"claim"|"text"}``
    objects), else one per line, else one per sentence; blanks and repeats dropped."""
    found: list[str] = []
    try:
        decoded = msgspec.json.decode(answer.strip().removeprefix("```json").strip("`\n "))
    except msgspec.DecodeError:
        decoded = None
    if isinstance(decoded, list):
        for entry in decoded:
            if isinstance(entry, dict):
                entry = entry.get("claim") or entry.get("text")
            if isinstance(entry, str):
                found.append(entry)
    else:
        lines = [_BULLET.sub("", line) for line in answer.splitlines()]
        lines = [line for line in lines if line.strip()]
        found = lines if len(lines) > 1 else [m.group(0) for m in _SENTENCE.finditer(answer)]
    claims: list[str] = []
    seen: set[str] = set()
    for claim in found:
        text = " ".join(claim.split())
        if text and text.lower() not in seen:
            seen.add(text.lower())
            claims.append(text)
    return claims[:limit]


def locate(claim: str, segments: list[dict[str, Any]]) -> dict[str, Any]:
    """``claim`` with the start and end, in seconds, of the segment sharing the most words with
    it (null when none shares a word)."""
    words = set(_WORD.findall(claim.lower()))
    best, best_overlap = None, 0
    for segment in segments:
        overlap = len(words & set(_WORD.findall(str(segment.get("text", "")).lower())))
        if overlap > best_overlap:
            best, best_overlap = segment, overlap
    span = span_seconds(best)
    if span is None:
        return {"text": claim, "start": None, "end": None}
    return {"text": claim, "start": span[0], "end": span[1]}


class ExtractClaims(DocumentTool):
    tool_id = "extract_claims"
    description = "The factual claims made in the item's transcript, each with its timestamp."
    params_schema = ExtractClaimsParams

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        params = estimate_params(spec, ExtractClaimsParams)
        return estimate_document_cost(
            input, spec, max_tokens=params.max_tokens, system=SYSTEM_PROMPT
        )

    async def run(self, ctx: ToolContext) -> StepResult:
        params = ctx.params(ExtractClaimsParams)
        transcript, answer, sent = await llm_over_transcript(
            ctx,
            lang=params.lang,
            max_tokens=params.max_tokens,
            model=params.model,
            system=SYSTEM_PROMPT,
        )
        claims = [
            locate(c, transcript.segments) for c in parse_claims(answer.text, params.max_claims)
        ]
        item_id = item_of(ctx.input)
        doc = {
            "kind": "claims",
            "item_id": item_id,
            "lang": transcript.lang,
            "model": answer.model,
            "claims": claims,
        }
        preview = {
            "kind": "claims",
            "item_id": item_id,
            "model": answer.model,
            "count": len(claims),
        }
        return document_result(doc, preview, transcript, answer, sent)
