"""``llm_prompt``: the step's prompt over the previous step's output, through the LLM provider.

The previous step's output comes from the step input's ``"previous"`` (see engine.run.plan): when it
names a blob (a transcript, say) the blob's ``text`` is used, otherwise its inline output. The
first step of a workflow has no previous output and prompts over the step input's ``text``, if
any.

The output is a blob, the JSON of ``{"kind": "completion", "text", "model", "sent"}``, where
``sent`` is what was sent: ``{"prompt", "model", "max_tokens"}`` (engine.tools.asking: the
rendered prompt whole; the model asked for, or the provider's when the step names none).
StepCompleted.output carries the completion inline (completions are short) with ``sent`` cut to
its head: ``{"kind": "completion", "text", "model", "sent": {"prompt", "prompt_chars", "model",
"max_tokens"}}``. A step summary shows ``sent`` as the step's input;
``GET /v1/executions/{id}/steps/{index}`` reads the blob for the whole prompt.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from engine.errors import ToolError
from engine.log.events import StepSpec
from engine.providers.base import estimate_llm_cost
from engine.tools.asking import ask
from engine.tools.base import StepResult, Tool, ToolContext, ToolParams, estimate_params
from engine.tools.retry import RetryPolicy

_MAX_CONTEXT_CHARS = 48_000  # what we send of a long transcript; providers cap context anyway
_encoder = msgspec.json.Encoder()


class LlmPromptParams(ToolParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params of an ``llm_prompt`` step."""

    model: str | None = None  # None: the provider's configured model
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=8192)] = 512


class LlmPrompt(Tool):
    tool_id = "llm_prompt"
    description = "Run the step's prompt over the previous step's output with an LLM."
    provider_kind = "llm"
    params_schema = LlmPromptParams
    retry = RetryPolicy(max_attempts=4, base_ms=200, max_ms=10_000)
    timeout_s = 120.0

    estimate_note = (
        "the rendered prompt (the prompt text and the previous output, cut to its context "
        "limit) at a token per 4 characters, plus an expected completion of 72 tokens (fewer when "
        "max_tokens is lower), at the LLM's prices"
    )

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        params = estimate_params(spec, LlmPromptParams)
        prompt_chars = len(spec.prompt_text) + 2 + min(_context_chars(input), _MAX_CONTEXT_CHARS)
        return estimate_llm_cost(prompt_chars, params.max_tokens)

    async def run(self, ctx: ToolContext) -> StepResult:
        params = ctx.params(LlmPromptParams)
        context = await _context_text(ctx)
        prompt = f"{ctx.spec.prompt_text}\n\n{context[:_MAX_CONTEXT_CHARS]}".strip()
        if not prompt:
            raise ToolError(
                "invalid_input", "llm_prompt has no prompt and no input", retryable=False
            )
        result, sent = await ask(
            ctx, prompt=prompt, max_tokens=params.max_tokens, model=params.model
        )
        answer = {"kind": "completion", "text": result.text, "model": result.model}
        blob = _encoder.encode({**answer, "sent": sent.whole()})
        output = {**answer, "sent": sent.head()}
        return StepResult(output=output, blob=blob, usage=result.usage, cost=result.cost)


def _context_chars(input: dict[str, Any]) -> int:
    """About what :func:`_context_text` reads: a previous completion's or transcript's text length,
    else the previous output's blob size (its text is part of it, what it sent is not), or its
    inline output's JSON, or the input's text."""
    previous = input.get("previous")
    if not isinstance(previous, dict):
        return len(str(input.get("text") or ""))
    output = previous.get("output")
    if isinstance(output, dict) and output.get("kind") == "completion":
        return len(str(output.get("text") or ""))  # its blob also holds the prompt it answered
    chars = output.get("chars") if isinstance(output, dict) else None
    if isinstance(output, dict) and output.get("kind") == "transcript" and isinstance(chars, int):
        return chars  # its text's length (the blob's size also counts its segments)
    ref = previous.get("output_ref")
    if isinstance(ref, dict) and isinstance(ref.get("size"), int):
        return max(0, int(ref["size"]) - _sent_chars(output))  # its blob less what it sent
    return len(msgspec.json.encode(previous.get("output") or {}))


def _sent_chars(output: Any) -> int:
    """About how much of a document's blob says what its LLM pass was sent (engine.tools.asking):
    left out of what a following prompt reads."""
    sent = output.get("sent") if isinstance(output, dict) else None
    if not isinstance(sent, dict):
        return 0
    chars = sent.get("prompt_chars")
    whole = chars if isinstance(chars, int) and not isinstance(chars, bool) else 0
    return whole + len(str(sent.get("system") or ""))


async def _context_text(ctx: ToolContext) -> str:
    previous = ctx.input.get("previous")
    if not isinstance(previous, dict):
        return str(ctx.input.get("text") or "")
    ref = previous.get("output_ref")
    if isinstance(ref, dict) and ref.get("sha256"):
        data = await ctx.load_blob(str(ref["sha256"]))
        if data is None:
            # The blob is written before its StepCompleted, so this is lost data, not a race.
            raise ToolError("internal", f"blob {ref['sha256']} is missing", retryable=False)
        decoded = msgspec.json.decode(data)
        if isinstance(decoded, dict) and isinstance(decoded.get("text"), str):
            return str(decoded["text"])
        if isinstance(decoded, dict) and "sent" in decoded:
            # A document (claims): itself, not the prompt it was made with.
            return msgspec.json.encode({k: v for k, v in decoded.items() if k != "sent"}).decode()
        return data.decode(errors="replace")
    output = previous.get("output") or {}
    if isinstance(output, dict) and isinstance(output.get("text"), str):
        return str(output["text"])
    return msgspec.json.encode(output).decode()
