"""An OpenAI-compatible embeddings endpoint over HTTP.

    POST {base}/embeddings
        {"model", "input": [str, ...]}
    ->  {"model", "data": [{"index", "embedding": [float, ...]}], "usage": {"prompt_tokens"}}

Cost comes from the usage the provider reports, at the catalogue's unit price; a server that
reports no usage is charged by the usual four-characters-a-token estimate. The vectors are put
back in input order by their ``index``.
"""

from __future__ import annotations

import math

import httpx
import msgspec

from engine.errors import ToolError
from engine.providers.base import Embeddings, ProviderCall, embed_cost, text_tokens
from engine.providers.config import ProviderConfig
from engine.providers.http import HttpProvider, bearer


class _Vector(msgspec.Struct):
    embedding: list[float]
    index: int = -1


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0


class _EmbeddingsResponse(msgspec.Struct):
    data: list[_Vector]
    model: str = ""
    usage: _Usage | None = None


class HttpEmbedder:
    """Embeddings from an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama …)."""

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        headers = bearer(config.embedder_key)
        self.model = config.embedder_model
        self.http = HttpProvider(
            name="embedder",
            base_url=config.embedder_url,
            timeout_s=config.timeout_s,
            headers=headers,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def embed(
        self, *, texts: list[str], call: ProviderCall, model: str | None = None
    ) -> Embeddings:
        """One vector per text, in order."""
        asked = model or self.model
        body = {"model": asked, "input": texts}
        answer = await self.http.call(
            "POST", "embeddings", _EmbeddingsResponse, call=call, json=body
        )
        ordered = sorted(answer.data, key=lambda v: v.index) if answer.data else []
        if len(ordered) != len(texts) or any(
            not v.embedding or not all(math.isfinite(x) for x in v.embedding) for v in ordered
        ):
            raise ToolError(
                "provider_bad_response",
                f"embedder answered {len(answer.data)} vectors for {len(texts)} texts",
                retryable=False,
            )
        if answer.usage is not None and answer.usage.prompt_tokens > 0:
            tokens = answer.usage.prompt_tokens
        else:
            tokens = sum(text_tokens(t) for t in texts)
        vectors = [v.embedding for v in ordered]
        return Embeddings(vectors, {"tokens": tokens}, embed_cost(tokens), answer.model or asked)
