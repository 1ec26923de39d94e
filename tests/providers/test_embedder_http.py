"""The HTTP embedder (an OpenAI-compatible embeddings endpoint) against a local stub server."""

from __future__ import annotations

import pytest

from engine.errors import ToolError
from engine.providers.base import ProviderCall, embed_cost
from engine.providers.config import ProviderConfig
from engine.providers.embedder_http import HttpEmbedder
from tests.providers.stub import reply, scripted, stub_server

pytestmark = pytest.mark.anyio


def embedder(url: str) -> HttpEmbedder:
    config = ProviderConfig(
        modes={"embedder": "http"},
        embedder_url=url,
        embedder_key="em-key-abcdef",
        embedder_model="text-embedding-3-small",
        timeout_s=5.0,
    )
    return HttpEmbedder(config)


async def test_embeddings_in_input_order_with_usage_and_cost() -> None:
    body = {
        "model": "text-embedding-3-small",
        "data": [
            {"index": 1, "embedding": [0.0, 1.0]},
            {"index": 0, "embedding": [1.0, 0.0]},
        ],
        "usage": {"prompt_tokens": 1500, "total_tokens": 1500},
    }
    async with stub_server(scripted(reply(200, body))) as server:
        provider = embedder(server.url)
        got = await provider.embed(texts=["first", "second"], call=ProviderCall("e:1:embed", 2))
        await provider.aclose()
    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/embeddings")
    assert sent.json() == {"model": "text-embedding-3-small", "input": ["first", "second"]}
    assert sent.headers["idempotency-key"] == "e:1:embed"
    assert sent.headers["authorization"] == "Bearer em-key-abcdef"
    assert got.vectors == [[1.0, 0.0], [0.0, 1.0]]
    assert got.usage == {"tokens": 1500}
    assert got.cost == embed_cost(1500) == 30  # the provider's usage, passed through
    assert got.model == "text-embedding-3-small"


@pytest.mark.parametrize(
    ("answer", "code", "retryable"),
    [
        (reply(429, {}, retry_after="2"), "rate_limited", True),
        (reply(503, {}), "provider_unavailable", True),
        (reply(400, {"error": "bad input"}), "provider_rejected", False),
        (reply(200, {"data": []}), "provider_bad_response", False),
        (reply(200, {"data": [{"index": 0, "embedding": []}]}), "provider_bad_response", False),
    ],
)
async def test_failures(
    answer: tuple[int, dict[str, str], bytes], code: str, retryable: bool
) -> None:
    async with stub_server(scripted(answer)) as server:
        provider = embedder(server.url)
        with pytest.raises(ToolError) as caught:
            await provider.embed(texts=["x"], call=ProviderCall("e:0", 1))
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == (code, retryable)


def test_the_embedder_defaults_to_the_llm_service() -> None:
    env = {
        "CLIPSTREAM_PROVIDERS": "embedder=http",
        "CLIPSTREAM_LLM_URL": "http://127.0.0.1:8/v1",
        "CLIPSTREAM_LLM_KEY": "llm-key-abcdef",
    }
    config = ProviderConfig.from_env(env)
    assert (config.embedder_url, config.embedder_key, config.embedder_model) == (
        "http://127.0.0.1:8/v1",
        "llm-key-abcdef",
        "text-embedding-3-small",
    )
    assert "llm-key-abcdef" not in repr(config)
    config = ProviderConfig.from_env(
        {
            "CLIPSTREAM_PROVIDERS": "embedder=http",
            "CLIPSTREAM_EMBEDDER_MODEL": "m",
            "CLIPSTREAM_EMBEDDER_URL": "http://127.0.0.1:9/v1/",
        }
    )
    assert (config.embedder_url, config.embedder_model) == ("http://127.0.0.1:9/v1", "m")
