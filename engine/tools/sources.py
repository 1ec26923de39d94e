"""Where a document step (summary, claims) finds the transcript it works on, in this order:

1. the previous step's output (``input["previous"]``, see engine.run.plan): a transcript blob, or a
   document blob that names its own transcript (``{"transcript": {"sha256"}}``) or carries it
   inline (``{"transcript": {"lang", "text", "segments", "origin"}}``);
2. ``input["transcript_ref"] = {"sha256"}``: a transcript blob the item already has;
3. ``input["text"]``: a transcript the client supplied;
4. otherwise the transcriber provider is called for the item (its usage and cost are this
   step's), with the step's idempotency key qualified ``:transcript``.

Documents record where their transcript came from with :meth:`Transcript.reference`, so the step
after them finds the same transcript again without paying for it twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.errors import ToolError
from engine.language import DEFAULT_LANG
from engine.providers.sim import SimTranscriber
from engine.tools.base import ToolContext
from engine.tools.transcribe import segments_of

_MAX_HOPS = 4  # document -> transcript chains are one hop; this only stops a cycle


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcript a tool works on, where it came from, and what getting it cost."""

    text: str
    segments: list[dict[str, Any]]
    lang: str
    origin: str  # "step" (an earlier blob), "provided", "simulated" or "transcribed"
    sha256: str | None = None  # the blob it was read from
    usage: dict[str, int] = field(default_factory=dict)
    cost: int = 0

    def reference(self) -> dict[str, Any]:
        """How a document names this transcript: by blob when there is one, else inline."""
        if self.sha256 is not None:
            return {"sha256": self.sha256}
        return {
            "lang": self.lang,
            "text": self.text,
            "segments": self.segments,
            "origin": self.origin,
        }


async def transcript_for(ctx: ToolContext, *, lang: str | None = None) -> Transcript:
    """The transcript this step works on (see the module docstring)."""
    previous = ctx.input.get("previous")
    if isinstance(previous, dict):
        ref = previous.get("output_ref")
        if isinstance(ref, dict) and isinstance(ref.get("sha256"), str):
            found = await _from_blob(ctx, ref["sha256"], _MAX_HOPS)
            if found is not None:
                return found
    ref = ctx.input.get("transcript_ref")
    if isinstance(ref, dict) and isinstance(ref.get("sha256"), str):
        found = await _from_blob(ctx, ref["sha256"], _MAX_HOPS)
        if found is not None:
            return found
    want = str(lang or ctx.input.get("lang") or DEFAULT_LANG)
    text = ctx.input.get("text")
    if isinstance(text, str) and text.strip():
        segments = segments_of(text)
        return Transcript(_joined(segments), segments, want, "provided")
    return await _fetch(ctx, want)


async def _from_blob(ctx: ToolContext, sha256: str, hops: int) -> Transcript | None:
    data = await ctx.load_blob(sha256)
    if data is None:
        # Blobs are written with the StepCompleted naming them: a missing one is lost data.
        raise ToolError("internal", f"blob {sha256} is missing", retryable=False)
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    inline = _inline(doc)
    if inline is not None and doc.get("kind", "transcript") == "transcript":
        return Transcript(inline.text, inline.segments, inline.lang, "step", sha256=sha256)
    named = doc.get("transcript")
    if isinstance(named, dict):
        if isinstance(named.get("sha256"), str) and hops > 1:
            return await _from_blob(ctx, named["sha256"], hops - 1)
        return _inline(named)
    return None


def _inline(doc: dict[str, Any]) -> Transcript | None:
    """A transcript written out in ``doc`` (``text`` and ``segments``), if it is one."""
    text, segments = doc.get("text"), doc.get("segments")
    if not isinstance(text, str) or not isinstance(segments, list):
        return None
    lang = str(doc.get("lang") or DEFAULT_LANG)
    return Transcript(text, segments, lang, str(doc.get("origin") or "step"))


async def _fetch(ctx: ToolContext, lang: str) -> Transcript:
    media = ctx.input.get("external_id") or ctx.input.get("source") or ctx.input.get("item_id")
    if not media:
        raise ToolError(
            "invalid_input",
            "no transcript before this step, and no source, external id or item id to fetch one",
            retryable=False,
        )
    transcriber = ctx.provider_set.transcriber(ctx.settings)
    got = await transcriber.transcribe(media=str(media), lang=lang, call=ctx.call.sub("transcript"))
    origin = "simulated" if isinstance(transcriber, SimTranscriber) else "transcribed"
    return Transcript(
        got.text, got.segments, got.lang, origin, usage=dict(got.usage), cost=got.cost
    )


def _joined(segments: list[dict[str, Any]]) -> str:
    return " ".join(str(s["text"]) for s in segments)


def merged_usage(*usages: dict[str, int]) -> dict[str, int]:
    """Usage of several provider calls of one step, unit by unit."""
    total: dict[str, int] = {}
    for usage in usages:
        for unit, amount in usage.items():
            total[unit] = total.get(unit, 0) + amount
    return total
