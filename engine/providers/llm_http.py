"""An OpenAI-compatible chat-completions LLM over HTTP.

    POST {base}/chat/completions
        {"model", "messages": [{"role": "system"|"user", "content"}], "max_tokens"}
    ->  {"model", "choices": [{"message": {"content"}}],
         "usage": {"prompt_tokens", "completion_tokens"}}

Cost comes from the usage the provider reports, at the catalogue's unit prices; a server that
reports no usage is charged by the usual four-characters-a-token estimate.
"""

from __future__ import annotations

import httpx
import msgspec

from engine.errors import ToolError
from engine.providers.base import Completion, ProviderCall, llm_cost
from engine.providers.config import ProviderConfig
from engine.providers.http import HttpProvider, bearer


def _tokens(text: str) -> int:
    return max(1, -(-len(text) // 4))


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ChatResponse(msgspec.Struct):
    choices: list[_Choice]
    model: str = ""
    usage: _Usage | None = None


class HttpLLM:
    """Chat completions from an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama …)."""

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        headers = bearer(config.llm_key)
        self.model = config.llm_model or ""
        self.http = HttpProvider(
            name="llm",
            base_url=config.llm_url,
            timeout_s=config.timeout_s,
            headers=headers,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def complete(
        self,
        *,
        prompt: str,
        max_tokens: int,
        call: ProviderCall,
        model: str | None = None,
        system: str | None = None,
    ) -> Completion:
        """One chat completion of ``prompt`` (after ``system``, when given)."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        asked = model or self.model
        body = {"model": asked, "messages": messages, "max_tokens": max_tokens}
        answer = await self.http.call(
            "POST", "chat/completions", _ChatResponse, call=call, json=body
        )
        if not answer.choices:
            raise ToolError(
                "provider_bad_response", "llm provider answered without a choice", retryable=False
            )
        text = answer.choices[0].message.content or ""
        if answer.usage is not None:
            prompt_tokens = answer.usage.prompt_tokens
            completion_tokens = answer.usage.completion_tokens
        else:
            prompt_tokens = sum(_tokens(m["content"]) for m in messages)
            completion_tokens = _tokens(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        cost = llm_cost(prompt_tokens, completion_tokens)
        return Completion(text, usage, cost, answer.model or asked)
