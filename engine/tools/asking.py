"""One LLM call of a step and what it sent: the one path every tool that prompts the LLM takes
(llm_prompt, summary_review, extract_claims), so each step says what it sent the same way.

:func:`ask` calls the LLM provider and returns its answer with a :class:`Sent`: the rendered
prompt whole, the model (the one asked for, or the provider's when the step names none), the
max_tokens and the system prompt, if any. A tool stores :meth:`Sent.whole` in its output's blob
under ``"sent"`` and :meth:`Sent.head` in its inline output (StepCompleted.output) under ``"sent"``:
the prompt cut to :data:`SENT_HEAD_CHARS` with ``prompt_chars`` its whole length. A step summary
(api.render.step) shows ``sent`` as the step's input, saying the cut;
``GET /v1/executions/{id}/steps/{index}`` reads the blob for the whole prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.providers.base import Completion
from engine.tools.base import ToolContext

SENT_HEAD_CHARS = 1000  # of the prompt, in the step's inline output (the blob has it whole)


@dataclass(frozen=True, slots=True)
class Sent:
    """What one LLM call was sent."""

    prompt: str
    model: str
    max_tokens: int
    system: str | None = None

    def whole(self) -> dict[str, Any]:
        """Everything sent, for the output's blob."""
        sent: dict[str, Any] = {
            "prompt": self.prompt,
            "model": self.model,
            "max_tokens": self.max_tokens,
        }
        if self.system is not None:
            sent["system"] = self.system
        return sent

    def head(self) -> dict[str, Any]:
        """What was sent with the prompt cut to :data:`SENT_HEAD_CHARS` and ``prompt_chars`` its
        whole length, for the step's inline output."""
        return {
            **self.whole(),
            "prompt": self.prompt[:SENT_HEAD_CHARS],
            "prompt_chars": len(self.prompt),
        }


async def ask(
    ctx: ToolContext, *, prompt: str, max_tokens: int, model: str | None, system: str | None = None
) -> tuple[Completion, Sent]:
    """The LLM's answer to ``prompt`` (under ``system``, when given) and what was sent."""
    answer = await ctx.provider_set.llm(ctx.settings).complete(
        prompt=prompt, max_tokens=max_tokens, call=ctx.call, model=model, system=system
    )
    return answer, Sent(prompt, model or answer.model, max_tokens, system)
